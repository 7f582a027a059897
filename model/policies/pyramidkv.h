// PyramidKV per-layer budgets (kv-policies.md §3.5), exposed for tests.
#pragma once

#include <cstdint>

namespace kvgrid {
namespace policies {

// KVCache-Factory (pyramidkv/pyramidkv_utils.py PyramidKVCluster), integers, capacity C includes
// the window: entries layer `layer` keeps (selected prefix + window), or n when nothing is
// compressed. n < C: n; C <= n < 2(C-w): C (plain SnapKV); else the pyramid
// (m_max - layer*step) + w. With one layer the pyramid degenerates to plain SnapKV (C).
int64_t PyramidBudgetKvCacheFactory(int64_t n, int64_t capacity, int64_t window, int64_t beta,
                                    int64_t num_layers, int64_t layer);

// kvpress (kvpress/presses/pyramidkv_press.py get_layer_budget), floats then Python round, window
// counted inside: entries layer `layer` keeps, given the mean kept count n*(1-cr) = n*ratio;
// falls back to round(kept_mean) (uniform SnapKV) when not n >= m_max >= m_min >= w.
int64_t PyramidBudgetKvpress(int64_t n, double kept_mean, int64_t window, int64_t beta,
                             int64_t num_layers, int64_t layer);

}  // namespace policies
}  // namespace kvgrid
