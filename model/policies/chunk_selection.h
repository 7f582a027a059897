// Chunk selection for chunkkv (kvpress ChunkKVPress; kv-policies-next.md §3), as plain functions
// over [heads][n] scores so the rule is tested on hand-computed examples (chunk_selection_test).
#pragma once

#include <cstdint>
#include <vector>

namespace kvgrid {
namespace policies {

// The keep fraction f = 1 - r that kvpress DecodingPress._find_target_compression_ratio finds
// for an absolute target: r = 1 - target/n, then at most 20 bisection steps until
// int(n * (1 - r)) == target. Returns 1 when target >= n.
double KeepFractionForTarget(int64_t n, int64_t target);

// scores: [heads][n] row-major, higher = kept first. Sums each entry's scores over heads, cuts
// the n entries into chunks of `chunk` (the last one partial when chunk does not divide n),
// scores a chunk by the mean of its entries' sums, keeps the best max(1, int(chunks * keep))
// chunks (equal scores: the lower chunk index first) and returns their entries ascending.
// Requires 1 <= chunk <= n and 0 < keep <= 1.
std::vector<int64_t> SelectChunks(const double* scores, int64_t heads, int64_t n, int64_t chunk,
                                  double keep);

}  // namespace policies
}  // namespace kvgrid
