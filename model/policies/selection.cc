#include "model/policies/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "model/engine/kv_cache.h"

namespace kvgrid {
namespace policies {

void RequireSingleSequence(const LayerView& view, const std::string& policy) {
  const torch::Tensor& t = view.keys.defined() ? view.keys : view.probs;
  TORCH_CHECK(t.defined(), "KV policy '", policy, "': layer ", view.layer,
              " view has neither keys nor attention probabilities");
  TORCH_CHECK(t.size(0) == 1, "KV policy '", policy, "' supports batch size 1 only (got batch ",
              t.size(0), "); use --batch 1 or the 'full' policy");
}

torch::Tensor AttentionReceived(const LayerView& view) {
  if (view.received.defined()) return view.received;
  TORCH_CHECK(view.probs.defined(), "the policy needs the attention received by the slots of layer ",
              view.layer);
  return view.probs.to(torch::kDouble).sum(2);
}

torch::Tensor NewKeys(const LayerView& view) {
  if (view.new_keys.defined()) return view.new_keys;
  TORCH_CHECK(view.keys.defined(), "the policy needs the new keys of layer ", view.layer);
  return view.keys.narrow(2, view.n - view.new_tokens, view.new_tokens);
}

int64_t FloorRatio(int64_t n, double ratio) {
  return static_cast<int64_t>(std::floor(static_cast<double>(n) * ratio));
}

int64_t CeilRatio(int64_t n, double ratio) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(n) * ratio));
}

int64_t RoundHalfEven(double x) {
  return static_cast<int64_t>(std::nearbyint(x));  // default rounding mode: to nearest, ties even
}

Budget Budget::FromSpec(const PolicySpec& spec, const std::string& count_key,
                        const std::string& ratio_key) {
  Budget b;
  if (spec.Has(count_key)) {
    b.count = spec.Int(count_key);
  } else {
    b.ratio = spec.Real(ratio_key, 1.0);
  }
  return b;
}

int64_t Budget::Resolve(int64_t length) const {
  if (!is_ratio()) return count;
  return std::max<int64_t>(1, FloorRatio(length, ratio));
}

namespace {

// Ranks slots as TopKAscending promises: higher score first, equal scores -> lower slot first,
// NaN after every number (where torch's stable sort of -score puts it).
template <typename T>
struct RanksBefore {
  const T* s;
  bool operator()(int64_t a, int64_t b) const {
    const bool na = std::isnan(s[a]), nb = std::isnan(s[b]);
    if (na || nb) return na == nb ? a < b : nb;
    return s[a] > s[b] || (s[a] == s[b] && a < b);
  }
};

template <typename T>
void TopKRows(const T* scores, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  std::vector<int64_t> idx;
  std::vector<char> kept;
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = scores + r * n;
    int64_t* o = out + r * k;
    const RanksBefore<T> before{s};
    if (k == n - 1) {
      // One eviction (per-step policies): drop the last-ranked slot, one pass. The last-ranked
      // is the lowest score, the latest of equal ones, a NaN (the latest) before any number —
      // RanksBefore's order, with one comparison per slot (this runs every layer of every step).
      int64_t worst = 0;
      T lowest = s[0];
      bool lowest_nan = std::isnan(lowest);
      for (int64_t j = 1; j < n; ++j) {
        if (lowest_nan) {
          if (std::isnan(s[j])) worst = j;
        } else if (!(s[j] > lowest)) {  // s[j] <= lowest, or s[j] is NaN
          worst = j;
          lowest = s[j];
          lowest_nan = std::isnan(lowest);
        }
      }
      for (int64_t j = 0, w = 0; j < n; ++j) {
        if (j != worst) o[w++] = j;
      }
      continue;
    }
    idx.resize(n);
    for (int64_t j = 0; j < n; ++j) idx[j] = j;
    if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), before);
    kept.assign(n, 0);
    for (int64_t j = 0; j < k; ++j) kept[idx[j]] = 1;
    for (int64_t j = 0, w = 0; j < n; ++j) {
      if (kept[j]) o[w++] = j;
    }
  }
}

}  // namespace

void TopKAscendingRow(const double* scores, int64_t n, int64_t k, int64_t* out) {
  TORCH_CHECK(k >= 0 && k <= n, "top-k: k=", k, " outside [0, ", n, "]");
  TopKRows(scores, 1, n, k, out);
}

torch::Tensor TopKAscending(const torch::Tensor& scores, int64_t k) {
  const int64_t n = scores.size(-1);
  TORCH_CHECK(k >= 0 && k <= n, "top-k: k=", k, " outside [0, ", n, "]");
  std::vector<int64_t> shape = scores.sizes().vec();
  shape.back() = k;
  if (scores.device().is_cpu() && (scores.scalar_type() == torch::kFloat ||
                                   scores.scalar_type() == torch::kDouble)) {
    // Plain loops (selection in O(n) per row): per-step policies call this every token, where a
    // sort and its tensor bookkeeping cost more than the decode step saves.
    torch::Tensor s = scores.contiguous();
    torch::Tensor out = torch::empty(shape, torch::kInt64);
    const int64_t rows = n == 0 ? 0 : s.numel() / n;
    if (s.scalar_type() == torch::kFloat) {
      TopKRows(s.data_ptr<float>(), rows, n, k, out.data_ptr<int64_t>());
    } else {
      TopKRows(s.data_ptr<double>(), rows, n, k, out.data_ptr<int64_t>());
    }
    return out;
  }
  // A stable ascending sort of -score keeps equal scores in slot order: lower index first.
  torch::Tensor order = std::get<1>(scores.neg().sort(/*stable=*/true, /*dim=*/-1,
                                                      /*descending=*/false));
  torch::Tensor top = order.narrow(-1, 0, k);
  return std::get<0>(top.sort(/*dim=*/-1));
}

void HeldScores::Reset(int64_t num_layers) { layers_.assign(num_layers, Layer{}); }

HeldScores::Rows HeldScores::Grow(const LayerView& view, int64_t heads, const std::string& policy) {
  const int64_t n = view.n, m = view.new_tokens;
  Layer& l = layers_.at(view.layer);
  TORCH_CHECK(l.held == n - m, policy, ": layer ", view.layer, " held ", n - m,
              " entries before this forward but the policy scored ", l.held,
              "; call Reset() at the start of every sequence");
  if (l.held == 0) l.heads = heads;
  TORCH_CHECK(l.heads == heads, policy, ": layer ", view.layer, " has ", heads, " heads, not ",
              l.heads);
  if (n > l.stride) {  // grown as the cache grows (GrownCapacity), with room to spare
    const int64_t stride = GrownCapacity(l.stride, n);
    std::vector<double> grown(heads * stride, 0.0);
    for (int64_t h = 0; h < heads; ++h) {
      std::copy(l.scores.begin() + h * l.stride, l.scores.begin() + h * l.stride + l.held,
                grown.begin() + h * stride);
    }
    l.scores.swap(grown);
    l.stride = stride;
  }
  for (int64_t h = 0; h < heads; ++h) {
    std::fill(l.scores.begin() + h * l.stride + l.held, l.scores.begin() + h * l.stride + n, 0.0);
  }
  l.held = n;
  return {l.scores.data(), l.stride};
}

void HeldScores::Keep(int64_t layer, const int64_t* kept, int64_t k) {
  Layer& l = layers_.at(layer);
  for (int64_t h = 0; h < l.heads; ++h) {  // in place: kept[j] >= j
    double* row = l.scores.data() + h * l.stride;
    const int64_t* keep = kept + h * k;
    int64_t j = 0;
    while (j < k && keep[j] == j) ++j;  // entries before the first eviction stay
    for (; j < k; ++j) row[j] = row[keep[j]];
  }
  l.held = k;
}

torch::Tensor TopKPlusTail(const torch::Tensor& prefix_scores, int64_t k, int64_t n) {
  const int64_t p = prefix_scores.size(-1);
  TORCH_CHECK(p <= n, "top-k + tail: prefix ", p, " longer than the cache ", n);
  torch::Tensor head = TopKAscending(prefix_scores, k);
  std::vector<int64_t> shape = prefix_scores.sizes().vec();
  shape.back() = n - p;
  torch::Tensor tail = torch::arange(p, n, head.options()).expand(shape);
  return torch::cat({head, tail}, -1);
}

torch::Tensor SinksAndWindow(int64_t batch, int64_t heads, int64_t n, int64_t sinks,
                             int64_t window, const torch::Device& device) {
  TORCH_CHECK(sinks >= 0 && window >= 0 && sinks + window <= n, "sinks ", sinks, " + window ",
              window, " exceed the cache length ", n);
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  torch::Tensor idx = torch::cat({torch::arange(0, sinks, opts), torch::arange(n - window, n, opts)});
  return idx.view({1, 1, -1}).expand({batch, heads, sinks + window}).contiguous();
}

torch::Tensor ShareAcrossHeads(const torch::Tensor& keep, int64_t heads) {
  return keep.unsqueeze(1).expand({keep.size(0), heads, keep.size(1)}).contiguous();
}

torch::Tensor Pool1d(const torch::Tensor& scores, int64_t kernel, Pooling pooling) {
  TORCH_CHECK(kernel >= 1 && kernel % 2 == 1, "pooling kernel must be odd, got ", kernel);
  if (kernel == 1 || scores.size(-1) == 0) return scores;
  if (pooling == Pooling::kMax) {
    return torch::max_pool1d(scores, {kernel}, /*stride=*/{1}, /*padding=*/{kernel / 2});
  }
  return torch::avg_pool1d(scores, {kernel}, /*stride=*/{1}, /*padding=*/{kernel / 2},
                           /*ceil_mode=*/false, /*count_include_pad=*/true);
}

torch::Tensor WindowAttention(const torch::Tensor& queries, const torch::Tensor& query_positions,
                              const torch::Tensor& keys, const torch::Tensor& key_positions) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(queries.size(-1)));
  torch::Tensor logits =
      torch::matmul(queries.to(torch::kFloat), keys.to(torch::kFloat).transpose(-1, -2)) * scale;
  torch::Tensor hidden = key_positions.unsqueeze(-2) > query_positions.unsqueeze(-1);
  logits.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
  return torch::softmax(logits, -1);
}

void QueryBuffer::Reset(int64_t num_layers, int64_t capacity) {
  capacity_ = capacity;
  queries_.assign(num_layers, torch::Tensor());
  positions_.assign(num_layers, torch::Tensor());
}

void QueryBuffer::Append(const LayerView& view) {
  TORCH_CHECK(view.queries.defined() && view.positions.defined(),
              "decoding variant needs the layer's queries and positions in the LayerView");
  const int64_t m = view.queries.size(2);
  torch::Tensor q = view.queries.detach();
  torch::Tensor pos = view.positions.narrow(-1, view.n - m, m);
  torch::Tensor& bq = queries_.at(view.layer);
  torch::Tensor& bp = positions_.at(view.layer);
  if (bq.defined()) {
    q = torch::cat({bq, q}, 2);
    pos = torch::cat({bp, pos}, -1);
  }
  const int64_t r = std::min<int64_t>(capacity_, q.size(2));
  bq = q.narrow(2, q.size(2) - r, r).clone();
  bp = pos.narrow(-1, pos.size(-1) - r, r).clone();
}

int64_t QueryBuffer::size(int64_t layer) const {
  const torch::Tensor& q = queries_.at(layer);
  return q.defined() ? q.size(2) : 0;
}

ScorerPolicy::ScorerPolicy(const PolicySpec& spec, int64_t query_buffer)
    : name_(spec.name),
      budget_(Budget::FromSpec(spec)),
      interval_(spec.Int("interval", 0)),
      buffer_capacity_(spec.Int("interval", 0) > 0 ? query_buffer : 0) {}

void ScorerPolicy::Reset(int64_t num_layers) {
  num_layers_ = num_layers;
  decode_steps_.assign(num_layers, 0);
  buffer_.Reset(num_layers, buffer_capacity_);
}

void ScorerPolicy::EnsureLayers(int64_t num_layers) {
  if (num_layers_ != num_layers) Reset(num_layers);
}

int64_t ScorerPolicy::Target(const LayerView& view, bool decoding) const {
  if (!budget_.is_ratio()) return budget_.count;
  // Prefill: floor(n * ratio) of the prompt; a chunked prefill resolves it against the tokens
  // seen so far (the whole prompt at its last chunk), as the decoding variant does.
  return budget_.Resolve(decoding || view.n != view.new_tokens ? view.tokens_seen : view.n);
}

void ScorerPolicy::Observe(const LayerView& view) {
  RequireSingleSequence(view, name_);
  EnsureLayers(view.num_layers);
  TORCH_CHECK(view.layer >= 0 && view.layer < num_layers_, "KV policy '", name_, "': layer ",
              view.layer, " outside [0, ", num_layers_, ")");
  if (buffer_capacity_ > 0) buffer_.Append(view);
  Observed(view);
}

torch::Tensor ScorerPolicy::Select(const LayerView& view, bool decoding, int64_t k) {
  return TopKAscending(Scores(view, decoding), k).to(view.positions.device());
}

torch::Tensor ScorerPolicy::SelectKeep(const LayerView& view) {
  Observe(view);
  const bool decoding = view.phase == ForwardPhase::kDecode;
  if (decoding) {
    if (interval_ == 0) return {};
    if (++decode_steps_[view.layer] < interval_) return {};
    decode_steps_[view.layer] = 0;
  }
  const int64_t k = std::max<int64_t>(1, Target(view, decoding));
  if (k >= view.n) return {};
  return Select(view, decoding, k);
}

}  // namespace policies
}  // namespace kvgrid
