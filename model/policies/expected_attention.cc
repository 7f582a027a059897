// expected_attention: the attention future queries are expected to give each entry, times its
// value norm (NVIDIA/kvpress kvpress/presses/expected_attention_press.py at 8bb29b9, 0.5.4;
// kv-policies-next.md §2; docs/kv-policies.md §3.10). Per layer and head:
//   queries: the pre-RoPE queries of this forward whose text position is >= n_sink (prefill;
//     kvpress drops the first n_sink hidden states), or in the decoding variant the layer's last
//     256 pre-RoPE queries minus the first n_sink of them (kvpress DecodingPress's buffer);
//   mu = their mean, Sigma = their covariance with divisor N (population), the products in
//     float32 (the keys' and queries' precision here), the rest in float64;
//   R = the rotary rotation averaged over the next n_future_positions positions (from the
//     position after the last query's), identity outside the rotary dims; mu' = R mu,
//     Sigma' = R Sigma R^T;
//   for each non-sink entry t (text position >= n_sink), z_t = k_t.mu'/sqrt(d)
//     + [use_covariance] k_t^T Sigma' k_t / (2d) with k_t the key as attended (rotated);
//   p = softmax_t(z) over the non-sink entries; score_t = (p_t + epsilon) * ||v_t|| with
//     use_vnorm, else p_t; sinks score the layer's maximum over every head + 1.
// Then kvpress ScorerPress's per-head top k (selection.h). No query yet (a prompt of at most
// n_sink tokens): mu = 0 and Sigma = 0.
#include "model/policies/expected_attention.h"

#include <cmath>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {

std::pair<torch::Tensor, torch::Tensor> QueryStatistics(const torch::Tensor& queries) {
  // In the queries' own precision (the engine's float32: the [d,N]x[N,d] product is the
  // expensive part), returned as float64.
  const torch::Tensor& q = queries;
  const int64_t H = q.size(0), N = q.size(1), d = q.size(2);
  if (N == 0) return {torch::zeros({H, d}, torch::kDouble), torch::zeros({H, d, d}, torch::kDouble)};
  torch::Tensor mean = q.mean(1);
  const torch::Tensor centred = q - mean.unsqueeze(1);
  torch::Tensor cov = torch::matmul(centred.transpose(1, 2), centred) / static_cast<double>(N);
  return {mean.to(torch::kDouble), cov.to(torch::kDouble)};
}

torch::Tensor AveragedRotation(int64_t head_dim, int64_t rotary_dims, double base, int64_t first,
                               int64_t count) {
  torch::Tensor r = torch::eye(head_dim, torch::kDouble);
  auto a = r.accessor<double, 2>();
  const int64_t half = rotary_dims / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = std::pow(base, -2.0 * static_cast<double>(i) / rotary_dims);
    double c = 0, s = 0;
    for (int64_t p = first; p < first + count; ++p) {
      c += std::cos(static_cast<double>(p) * theta);
      s += std::sin(static_cast<double>(p) * theta);
    }
    c /= static_cast<double>(count);
    s /= static_cast<double>(count);
    a[i][i] = c;
    a[i + half][i + half] = c;
    a[i][i + half] = -s;
    a[i + half][i] = s;
  }
  return r;
}

torch::Tensor Unrotate(const torch::Tensor& x, const torch::Tensor& positions, int64_t rotary_dims,
                       double base) {
  const int64_t half = rotary_dims / 2;
  if (half == 0) return x;
  const torch::Tensor& xd = x;  // computed in x's precision; the angles in float64
  torch::Tensor theta = torch::pow(torch::full({half}, base, torch::kDouble),
                                   torch::arange(half, torch::kDouble) * (-2.0 / rotary_dims));
  torch::Tensor angle = positions.to(torch::kCPU, torch::kDouble).unsqueeze(-1) * theta;  // [m,h]
  torch::Tensor c = angle.cos().to(x.scalar_type()), s = angle.sin().to(x.scalar_type());
  torch::Tensor x1 = xd.narrow(-1, 0, half), x2 = xd.narrow(-1, half, half);
  // Inverse of x1' = x1 c - x2 s, x2' = x2 c + x1 s (GptNeoxModel::Rotate).
  torch::Tensor parts = torch::cat({x1 * c + x2 * s, x2 * c - x1 * s}, -1);
  if (rotary_dims == xd.size(-1)) return parts;
  return torch::cat({parts, xd.narrow(-1, rotary_dims, xd.size(-1) - rotary_dims)}, -1);
}

torch::Tensor ExpectedAttentionScores(const torch::Tensor& mean, const torch::Tensor& covariance,
                                      const torch::Tensor& keys, const torch::Tensor& value_norms,
                                      const torch::Tensor& is_sink, bool use_covariance,
                                      bool use_vnorm, double epsilon) {
  const double d = static_cast<double>(keys.size(-1));
  // The [n,d]x[d,d] products in the keys' precision (float32 in the engine), the rest in float64.
  const torch::Tensor& k = keys;
  torch::Tensor z = (torch::matmul(k, mean.to(k.scalar_type()).unsqueeze(-1)).squeeze(-1) /
                     std::sqrt(d)).to(torch::kDouble);  // [H,n]
  if (use_covariance) {
    z = z + ((torch::matmul(k, covariance.to(k.scalar_type())) * k).sum(-1) / (2.0 * d))
                .to(torch::kDouble);
  }
  const torch::Tensor sink = is_sink.to(torch::kBool).unsqueeze(0).expand_as(z);
  z = z.masked_fill(sink, -std::numeric_limits<double>::infinity());
  torch::Tensor p = torch::softmax(z, -1).nan_to_num(0.0);  // a head of sinks only: all 0
  torch::Tensor scores = use_vnorm ? (p + epsilon) * value_norms.to(torch::kDouble) : p;
  scores = scores.masked_fill(sink, 0.0);
  const torch::Tensor live = scores.masked_select(sink.logical_not());
  const double pad = (live.numel() > 0 ? live.max().item<double>() : 0.0) + 1.0;
  return scores.masked_fill(sink, pad);
}

namespace {

constexpr int64_t kDecodingQueryBuffer = 256;  // kvpress DecodingPress hidden_states_buffer_size

class ExpectedAttentionPolicy : public ScorerPolicy {
 public:
  explicit ExpectedAttentionPolicy(const PolicySpec& spec)
      : ScorerPolicy(spec, 0),
        future_(spec.Int("n_future_positions", 512)),
        sinks_(spec.Int("n_sink", 4)),
        use_covariance_(spec.Str("use_covariance", "true") == "true"),
        use_vnorm_(spec.Str("use_vnorm", "true") == "true"),
        epsilon_(spec.Real("epsilon", 0.0)),
        buffered_(spec.Int("interval", 0) > 0) {}

  bool NeedsValues() const override { return use_vnorm_; }

  void Reset(int64_t num_layers) override {
    ScorerPolicy::Reset(num_layers);
    buffer_.assign(num_layers, torch::Tensor());
  }

  torch::Tensor Scores(const LayerView& view, bool decoding) override {
    const int64_t n = view.n;
    torch::Tensor queries;  // [H,N,d] float64, pre-RoPE
    if (decoding) {
      const torch::Tensor& buffered = buffer_.at(view.layer);
      const int64_t dropped = std::min<int64_t>(sinks_, buffered.size(1));
      queries = buffered.narrow(1, dropped, buffered.size(1) - dropped);
    } else {
      queries = PreRopeQueries(view);
      const torch::Tensor text = view.positions[0][0].narrow(0, n - view.new_tokens, view.new_tokens);
      queries = queries.index({torch::indexing::Slice(), (text >= sinks_).to(queries.device())});
    }
    const int64_t d = view.keys.size(3);
    auto [mean, cov] = QueryStatistics(queries);
    const int64_t next = view.query_positions[view.query_positions.size(0) - 1].item<int64_t>() + 1;
    const torch::Tensor rotation =
        AveragedRotation(d, view.rotary_dims, view.rotary_base, next, future_);
    mean = torch::matmul(mean, rotation.t());                                    // R mu
    cov = torch::matmul(torch::matmul(rotation, cov), rotation.t());             // R S R^T
    const torch::Tensor keys = view.keys[0].to(torch::kCPU, torch::kFloat);      // [H,n,d]
    const torch::Tensor norms =
        use_vnorm_ ? view.values[0].to(torch::kCPU, torch::kFloat).norm(2, -1).to(torch::kDouble)
                   : torch::Tensor();
    const torch::Tensor is_sink = view.positions[0][0].to(torch::kCPU) < sinks_;  // [n]
    return ExpectedAttentionScores(mean, cov, keys, norms, is_sink, use_covariance_, use_vnorm_,
                                   epsilon_)
        .unsqueeze(0);
  }

 protected:
  void Observed(const LayerView& view) override {
    if (!buffered_) return;
    torch::Tensor& b = buffer_.at(view.layer);
    const torch::Tensor q = PreRopeQueries(view);
    b = b.defined() ? torch::cat({b, q}, 1) : q;
    if (b.size(1) > kDecodingQueryBuffer) {
      b = b.narrow(1, b.size(1) - kDecodingQueryBuffer, kDecodingQueryBuffer).clone();
    }
  }

 private:
  // [H,m,d] float32: this forward's queries with their rotation undone.
  static torch::Tensor PreRopeQueries(const LayerView& view) {
    return Unrotate(view.queries[0].to(torch::kCPU, torch::kFloat), view.query_positions,
                    view.rotary_dims, view.rotary_base);
  }

  int64_t future_, sinks_;
  bool use_covariance_, use_vnorm_;
  double epsilon_;
  bool buffered_;
  std::vector<torch::Tensor> buffer_;  // per layer [H,r,d] pre-RoPE queries, r <= 256
};

}  // namespace

std::unique_ptr<KvPolicy> NewExpectedAttentionPolicy(const PolicySpec& spec) {
  return std::make_unique<ExpectedAttentionPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
