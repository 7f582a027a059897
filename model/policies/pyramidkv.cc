// pyramidkv: SnapKV scores and selection (snapkv.cc) with per-layer budgets that decrease with
// depth (Zefan-Cai/KVCache-Factory pyramidkv/pyramidkv_utils.py PyramidKVCluster for an absolute
// `budget`; NVIDIA/kvpress kvpress/presses/pyramidkv_press.py for a `ratio`; kv-policies.md §3.5,
// §2.7.7). In the decoding variant the same formulas are applied to the current cache length n
// (ratio: kept mean = tokens_seen * ratio).
#include "model/policies/pyramidkv.h"

#include "model/policies/policies.h"
#include "model/policies/snapkv.h"

namespace kvgrid {
namespace policies {

int64_t PyramidBudgetKvCacheFactory(int64_t n, int64_t capacity, int64_t window, int64_t beta,
                                    int64_t num_layers, int64_t layer) {
  const int64_t c = capacity - window;
  if (n < capacity) return n;
  if (n < 2 * c || num_layers < 2) return capacity;
  int64_t min_num = c / beta;
  int64_t max_num = 2 * c - min_num;
  if (max_num >= n - window) {
    max_num = n - window;
    min_num = 2 * c - max_num;
  }
  const int64_t step = (max_num - min_num) / (num_layers - 1);
  return max_num - layer * step + window;
}

int64_t PyramidBudgetKvpress(int64_t n, double kept_mean, int64_t window, int64_t beta,
                             int64_t num_layers, int64_t layer) {
  const double w = static_cast<double>(window);
  const double capacity = w + kept_mean;
  double min_num = (capacity - w) / static_cast<double>(beta);
  double max_num = (capacity - w) * 2 - min_num;
  if (max_num >= static_cast<double>(n) - w) {
    max_num = static_cast<double>(n) - w;
    min_num = (capacity - w) * 2 - max_num;
  }
  if (!(static_cast<double>(n) >= max_num && max_num >= min_num && min_num >= w) ||
      num_layers < 2) {
    return RoundHalfEven(kept_mean);
  }
  const double steps = (max_num - min_num) / static_cast<double>(num_layers - 1);
  return RoundHalfEven(max_num - static_cast<double>(layer) * steps);
}

namespace {

class PyramidKvPolicy : public SnapKvPolicy {
 public:
  explicit PyramidKvPolicy(const PolicySpec& spec)
      : SnapKvPolicy(spec), beta_(spec.Int("beta", 20)) {}

 protected:
  int64_t Target(const LayerView& view, bool decoding) const override {
    if (!budget().is_ratio()) {
      return PyramidBudgetKvCacheFactory(view.n, budget().count, window(), beta_, view.num_layers,
                                         view.layer);
    }
    const double length = static_cast<double>(
        decoding || view.n != view.new_tokens ? view.tokens_seen : view.n);  // chunks: as ScorerPolicy
    return PyramidBudgetKvpress(view.n, length * budget().ratio, window(), beta_, view.num_layers,
                                view.layer);
  }

 private:
  int64_t beta_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewPyramidKvPolicy(const PolicySpec& spec) {
  return std::make_unique<PyramidKvPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
