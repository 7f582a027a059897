// Head-adaptive selection for adakv (kvpress AdaKVPress; kv-policies-next.md §1;
// docs/kv-policies.md §3.10), as a plain function over [heads][n] scores so the rule is tested on
// hand-computed examples (next_policies_test).
#pragma once

#include <cstdint>
#include <vector>

namespace kvgrid {
namespace policies {

// kvpress's safeguard: each head keeps at least int(per_head * alpha) of its best entries, at
// least 1 when alpha > 0 and per_head > 0 (kvpress PR #264).
int64_t SafeguardCount(int64_t per_head, double alpha);

// scores: [heads][n] row-major, higher = kept first; holes: [heads][n] (null = none), slots that
// hold no entry (never kept). The layer keeps K = min(live entries, heads * per_head) entries in
// all: first each head's SafeguardCount(per_head, alpha) best live entries (capped by what it
// holds), then the best of the rest across all heads. Order: safeguarded first, then score
// descending, then position (slot) ascending, then head ascending. Returns each head's kept slots
// ascending; heads keep different numbers of entries, and Σ = K.
std::vector<std::vector<int64_t>> SelectHeadAdaptive(const double* scores, const bool* holes,
                                                     int64_t heads, int64_t n, int64_t per_head,
                                                     double alpha);

}  // namespace policies
}  // namespace kvgrid
