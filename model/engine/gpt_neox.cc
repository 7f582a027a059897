#include "model/engine/gpt_neox.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/engine/cpu_attention.h"
#include "model/engine/cpu_gemv.h"
#include "model/engine/weight_reader.h"

namespace kvgrid {
namespace {

// t [1,H,...,n] on the CPU with the slot axis last, reordered into logical order (slot
// lc.order[h][i] -> index i) with plain loops: per-step policies read their statistics and
// positions this way after every layer of every decode step.
template <typename T>
torch::Tensor ReorderSlotAxisTyped(const torch::Tensor& t, const LayerCache& lc) {
  const torch::Tensor src = t.contiguous();
  torch::Tensor out = torch::empty_like(src);
  const int64_t H = src.size(1), n = src.size(-1), rows = src.numel() / std::max<int64_t>(H * n, 1);
  const T* s = src.data_ptr<T>();
  T* o = out.data_ptr<T>();
  for (int64_t h = 0; h < H; ++h) {
    const int64_t* order = lc.order[h].data();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t base = (h * rows + r) * n;
      for (int64_t i = 0; i < n; ++i) o[base + i] = s[base + order[i]];
    }
  }
  return out;
}

// The dtypes ReorderSlotAxisCpu handles (every statistic and position a view carries).
bool ReordersWithPlainLoops(const torch::Tensor& t) {
  const auto d = t.scalar_type();
  return t.device().is_cpu() && t.size(0) == 1 &&
         (d == torch::kFloat || d == torch::kDouble || d == torch::kLong);
}

torch::Tensor ReorderSlotAxisCpu(const torch::Tensor& t, const LayerCache& lc) {
  switch (t.scalar_type()) {
    case torch::kFloat: return ReorderSlotAxisTyped<float>(t, lc);
    case torch::kDouble: return ReorderSlotAxisTyped<double>(t, lc);
    default: return ReorderSlotAxisTyped<int64_t>(t, lc);  // kLong (ReordersWithPlainLoops)
  }
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

GptNeoxModel::GptNeoxModel(ModelConfig config, ModelWeights weights, torch::ScalarType dtype,
                           torch::Device device, std::shared_ptr<const Checkpoint> checkpoint)
    : config_(std::move(config)), w_(std::move(weights)), dtype_(dtype), device_(device),
      checkpoint_(std::move(checkpoint)) {
  // CPU LibTorch 1.13 has no float16 GEMM: 16-bit weights are stored in 16 bits and computed in
  // float32 on CPU (bfloat16 computes natively). On CUDA everything runs in the model dtype.
  compute_dtype_ = (dtype == torch::kFloat16 && device.is_cpu()) ? torch::kFloat32 : dtype;
  int64_t r = config_.rotary_dims();
  inv_freq_ = 1.0 / torch::pow(torch::tensor(config_.rotary_base, torch::kFloat64).to(torch::kFloat32),
                               torch::arange(0, r, 2, torch::kInt64).to(torch::kFloat32) / static_cast<float>(r));
  // The fused CPU kernels tabulate cos/sin of every trained position.
  cpu_attention_ = std::make_unique<const CpuAttention>(
      config_.num_heads, config_.head_dim(), r,
      std::vector<float>(inv_freq_.data_ptr<float>(), inv_freq_.data_ptr<float>() + inv_freq_.numel()),
      std::max<int64_t>(config_.max_position_embeddings, 2048));
  inv_freq_ = inv_freq_.to(device_);
}

absl::StatusOr<std::unique_ptr<GptNeoxModel>> GptNeoxModel::Load(const std::string& dir,
                                                                 torch::ScalarType dtype,
                                                                 torch::Device device) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir + "/config.json"));
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(dir));
  return FromCheckpoint(config, std::move(checkpoint), dtype, device);
}

absl::StatusOr<std::unique_ptr<GptNeoxModel>> GptNeoxModel::FromCheckpoint(
    const ModelConfig& c, std::shared_ptr<const Checkpoint> checkpoint, torch::ScalarType dtype,
    torch::Device device) {
  const int64_t h = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  WeightReader reader(checkpoint);
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> absl::StatusOr<torch::Tensor> {
    const CheckpointTensor* info = checkpoint->Find(name);
    if (info == nullptr) {
      return absl::NotFoundError(absl::StrCat(checkpoint->source(), ": missing tensor '", name, "'"));
    }
    if (info->shape() != shape) {
      std::string want, got;
      for (auto d : shape) absl::StrAppend(&want, want.empty() ? "" : ",", d);
      for (auto d : info->shape()) absl::StrAppend(&got, got.empty() ? "" : ",", d);
      return absl::InvalidArgumentError(absl::StrCat(info->file(), ": tensor '", name, "' has shape [",
                                                     got, "], config.json implies [", want, "]"));
    }
    if (info->dtype() != StDtype::kF32 && info->dtype() != StDtype::kF16 && info->dtype() != StDtype::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(info->file(), ": tensor '", name, "' has dtype ",
                                                     StDtypeName(info->dtype()), "; expected F32, F16 or BF16"));
    }
    ASSIGN_OR_RETURN(torch::Tensor t, reader.Read(*info));
    // Same dtype on the CPU: safetensors stay memory-mapped (zero-copy), torch.save storages are
    // used as read (contiguous() copies only a strided view).
    if (t.scalar_type() == dtype && device.is_cpu()) return t.contiguous();
    return t.to(device, dtype).contiguous();
  };
  ModelWeights w;
  try {
    ASSIGN_OR_RETURN(w.embed, get("gpt_neox.embed_in.weight", {V, h}));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      std::string p = absl::StrCat("gpt_neox.layers.", l, ".");
      LayerWeights lw;
      ASSIGN_OR_RETURN(lw.ln1_w, get(p + "input_layernorm.weight", {h}));
      ASSIGN_OR_RETURN(lw.ln1_b, get(p + "input_layernorm.bias", {h}));
      ASSIGN_OR_RETURN(lw.ln2_w, get(p + "post_attention_layernorm.weight", {h}));
      ASSIGN_OR_RETURN(lw.ln2_b, get(p + "post_attention_layernorm.bias", {h}));
      ASSIGN_OR_RETURN(lw.qkv_w, get(p + "attention.query_key_value.weight", {3 * h, h}));
      ASSIGN_OR_RETURN(lw.dense_w, get(p + "attention.dense.weight", {h, h}));
      if (c.attention_bias) {
        ASSIGN_OR_RETURN(lw.qkv_b, get(p + "attention.query_key_value.bias", {3 * h}));
        ASSIGN_OR_RETURN(lw.dense_b, get(p + "attention.dense.bias", {h}));
      }
      ASSIGN_OR_RETURN(lw.fc_in_w, get(p + "mlp.dense_h_to_4h.weight", {I, h}));
      ASSIGN_OR_RETURN(lw.fc_in_b, get(p + "mlp.dense_h_to_4h.bias", {I}));
      ASSIGN_OR_RETURN(lw.fc_out_w, get(p + "mlp.dense_4h_to_h.weight", {h, I}));
      ASSIGN_OR_RETURN(lw.fc_out_b, get(p + "mlp.dense_4h_to_h.bias", {h}));
      w.layers.push_back(std::move(lw));
    }
    ASSIGN_OR_RETURN(w.final_ln_w, get("gpt_neox.final_layer_norm.weight", {h}));
    ASSIGN_OR_RETURN(w.final_ln_b, get("gpt_neox.final_layer_norm.bias", {h}));
    if (c.tie_word_embeddings && checkpoint->Find("embed_out.weight") == nullptr) {
      w.lm_head = w.embed;
    } else {
      ASSIGN_OR_RETURN(w.lm_head, get("embed_out.weight", {V, h}));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(checkpoint->source(), ": loading weights failed: ", e.what_without_backtrace()));
  }
  return std::unique_ptr<GptNeoxModel>(new GptNeoxModel(c, std::move(w), dtype, device, std::move(checkpoint)));
}

int64_t GptNeoxModel::ParameterBytes() const {
  int64_t bytes = 2 * w_.embed.numel() * w_.embed.element_size();
  for (const auto& l : w_.layers) {
    for (const auto* t : {&l.ln1_w, &l.ln1_b, &l.ln2_w, &l.ln2_b, &l.qkv_w, &l.qkv_b, &l.dense_w,
                          &l.dense_b, &l.fc_in_w, &l.fc_in_b, &l.fc_out_w, &l.fc_out_b}) {
      if (t->defined()) bytes += t->numel() * t->element_size();
    }
  }
  return bytes;
}

absl::Status GptNeoxModel::CheckQuantizedCache(const KvCache& cache, const KvPolicy* policy) const {
  const std::string what = absl::StrCat("kv_dtype ", cache.kv_dtype().ToString());
  RETURN_IF_ERROR(CheckKvDtypeFitsHead(cache.kv_dtype(), config_.head_dim()));
  if (!device_.is_cpu() || compute_dtype_ != torch::kFloat32 || cache.batch() != 1) {
    return absl::UnimplementedError(absl::StrCat(
        what, ": the quantised cache runs on the batch-1 float32 CPU engine only (this run: ",
        device_.str(), ", ", c10::toString(compute_dtype_), ", batch ", cache.batch(), ")"));
  }
  if (cache.mode() != PositionMode::kOriginal) {
    return absl::UnimplementedError(absl::StrCat(
        what, ": needs position_mode original (KIVI quantises keys after rotary at their text "
              "positions; shifted and rerotate change cached keys)"));
  }
  if (policy != nullptr && policy->KeepsUnevenHeads()) {
    return absl::UnimplementedError(absl::StrCat(
        what, ": policy ", policy->name(), " keeps uneven heads; the quantised cache holds no holes"));
  }
  return absl::OkStatus();
}

KvCache GptNeoxModel::NewCache(int64_t batch, PositionMode mode, const KvDtype& kv) const {
  KvCache cache(config_.num_layers, batch, config_.num_heads, config_.head_dim(), compute_dtype_,
                device_, mode, kv);
  // Evicted slots are reused wherever the fused CPU kernels attend (they read each slot's
  // rotation from the cache's bookkeeping). Rerotate mode re-rotates every kept key by its new
  // logical index at each eviction, a pass over the cache that also compacts it.
  cache.set_slot_reuse(UsesFusedCpuAttention(batch) && mode != PositionMode::kRerotate);
  return cache;
}

bool GptNeoxModel::UsesFusedCpuAttention(int64_t batch) const {
  return fused_cpu_attention_ && device_.is_cpu() && batch == 1 && compute_dtype_ == torch::kFloat32;
}

torch::Tensor GptNeoxModel::Linear(const torch::Tensor& x, const torch::Tensor& w,
                                   const torch::Tensor& b) const {
  if (device_.is_cpu() && x.numel() == x.size(-1)) {
    // One row (batch-1 decode, the last prompt row through the LM head): a matrix-vector product.
    // torch::linear would call sgemm with m = 1, which packs (copies) the whole weight matrix on
    // every call; gemv streams each weight once (cpu_gemv.h).
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w.size(0);
    return CpuGemv(w, x.reshape({-1}).to(compute_dtype_), b).view(shape);
  }
  if (w.scalar_type() != compute_dtype_) {
    return torch::linear(x, w.to(compute_dtype_), b.defined() ? b.to(compute_dtype_) : b);
  }
  return torch::linear(x, w, b);
}

// Rotary on the first rotary_dims of the last axis (NeoX half split: pairs i and i + r/2).
// x [B,H,T,d]; positions [B,T] or [T] int64.
torch::Tensor GptNeoxModel::Rotate(const torch::Tensor& x, const torch::Tensor& positions) const {
  const int64_t r = config_.rotary_dims();
  if (r == 0) return x;
  auto pos = positions.dim() == 1 ? positions.unsqueeze(0) : positions;  // [B|1, T]
  auto freqs = pos.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;        // [B,T,r/2]
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);                // [B,1,T,r]
  auto cos = emb.cos().to(x.scalar_type());
  auto sin = emb.sin().to(x.scalar_type());
  auto x_rot = x.narrow(-1, 0, r);
  auto x1 = x_rot.narrow(-1, 0, r / 2);
  auto x2 = x_rot.narrow(-1, r / 2, r / 2);
  auto rotated = x_rot * cos + torch::cat({-x2, x1}, -1) * sin;
  if (r == x.size(-1)) return rotated;
  return torch::cat({rotated, x.narrow(-1, r, x.size(-1) - r)}, -1);
}

void GptNeoxModel::KeepEntries(int64_t layer, KvCache& cache, const torch::Tensor& keep,
                               bool uneven_heads) {
  if (uneven_heads) {
    cache.KeepWithHoles(layer, keep);
  } else {
    cache.Keep(layer, keep);
  }
  if (cache.mode() != PositionMode::kRerotate) return;
  // Re-rotate kept keys from their old logical index to their new one (RoPE composes). Rerotate
  // caches never reuse slots, so the new index is the slot.
  LayerCache& lc = cache.layer(layer);
  const int64_t B = cache.batch(), H = config_.num_heads, d = config_.head_dim(), kept = keep.size(2);
  auto new_slots = torch::arange(kept, torch::TensorOptions().dtype(torch::kInt64).device(device_))
                       .view({1, 1, kept}).expand_as(keep);
  auto delta = (new_slots - keep.clamp_min(0)).reshape({B * H, kept});  // holes: any rotation
  auto k_live = lc.K().reshape({B * H, 1, kept, d});
  auto rotated = Rotate(k_live, delta).reshape({B, H, kept, d});
  lc.keys.narrow(2, 0, kept).copy_(rotated);
}

void GptNeoxModel::ApplyPolicy(int64_t layer, const ForwardRequest& req, KvCache& cache,
                               KvPolicy* policy, ForwardStats* stats, const AttendedLayer& attended) {
  if (!policy->ActsAfter(req.phase)) return;
  LayerCache& lc = cache.layer(layer);
  const int64_t n = lc.length, H = config_.num_heads;
  const double t0 = NowMs();
  if (const std::optional<SinkWindowRule> rule = policy->sink_window_rule()) {
    // Positional rule: evict logical [sinks, n - window) directly (a ring buffer after the sinks
    // when slots are reused: the next token takes the slot just freed).
    if (n > rule->sinks + rule->window) {
      if (cache.mode() == PositionMode::kRerotate) {
        auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device_);
        auto keep = torch::cat({torch::arange(0, rule->sinks, opts),
                                torch::arange(n - rule->window, n, opts)})
                        .view({1, 1, -1}).expand({cache.batch(), H, rule->sinks + rule->window})
                        .contiguous();
        KeepEntries(layer, cache, keep);
      } else {
        cache.EvictRange(layer, rule->sinks, n - rule->window);
      }
    }
    if (stats) stats->policy_ms += NowMs() - t0;
    return;
  }
  // Policies see their entries oldest first (logical order), whatever slots they occupy, unless
  // they map slots to logical indices themselves (then nothing is reordered).
  const bool slot_order = !lc.in_order() && policy->ReadsSlotOrder();
  torch::Tensor order;  // [1,H,n] slot of each logical index, built only if a gather needs it
  auto logical = [&](const torch::Tensor& t, int64_t dim) -> torch::Tensor {
    if (lc.in_order() || slot_order || !t.defined()) return t;
    if (dim == t.dim() - 1 && ReordersWithPlainLoops(t)) {
      return ReorderSlotAxisCpu(t, lc);  // statistics and positions: plain loops, every step
    }
    if (!order.defined()) order = cache.LogicalOrder(layer);
    std::vector<int64_t> shape = t.sizes().vec();
    torch::Tensor index = order;
    if (dim == 2 && t.dim() == 4) index = order.unsqueeze(-1);
    if (dim == 3) index = order.unsqueeze(2);
    return t.gather(dim, index.expand(shape));
  };
  const bool key_values = policy->NeedsKeyValues();
  LayerView view = BaseView(layer, req, n);
  view.keys = key_values ? logical(attended.keys, 2) : attended.keys;
  view.values = lc.in_order() ? lc.V()
                : policy->NeedsValues() && !slot_order ? logical(lc.V(), 2) : torch::Tensor();
  view.new_keys = lc.K().narrow(2, n - view.new_tokens, view.new_tokens);  // appended last
  view.queries = attended.queries;
  if (key_values) {  // (not built for the per-step scorers, which read no keys)
    view.query_positions =
        cache.mode() == PositionMode::kOriginal
            ? req.positions.select(0, 0).to(torch::kCPU)
            : torch::arange(n - view.new_tokens, n, torch::kInt64);  // logical indices
  }
  view.probs = logical(attended.probs, 3);
  view.received = logical(attended.received, 2);
  view.positions = logical(lc.Positions(), 2);
  view.holes = lc.Holes();  // (a layer with holes is in logical order)
  view.slot_rank = slot_order ? &lc.rank : nullptr;
  torch::Tensor keep = policy->SelectKeep(view);
  const bool uneven = policy->KeepsUnevenHeads();
  if (keep.defined() && (keep.size(2) < n || uneven)) KeepEntries(layer, cache, keep, uneven);
  if (stats) stats->policy_ms += NowMs() - t0;
}

LayerView GptNeoxModel::BaseView(int64_t layer, const ForwardRequest& req, int64_t n) const {
  LayerView view;
  view.layer = layer;
  view.num_layers = config_.num_layers;
  view.n = n;
  view.new_tokens = req.ids.size(1);
  view.tokens_seen = req.tokens_seen + req.ids.size(1);
  view.prompt_length = req.prompt_length;
  view.phase = req.phase;
  view.rotary_dims = config_.rotary_dims();
  view.rotary_base = config_.rotary_base;
  return view;
}

void GptNeoxModel::ApplyPolicyQuantized(int64_t layer, const ForwardRequest& req, KvCache& cache,
                                        KvPolicy* policy, ForwardStats* stats,
                                        const AttendedLayer& attended, const torch::Tensor& new_keys) {
  if (!policy->ActsAfter(req.phase)) return;
  QuantizedLayer& ql = cache.quantized_layer(layer);
  const int64_t n = ql.length();
  const double t0 = NowMs();
  std::vector<int64_t> keep;
  if (const std::optional<SinkWindowRule> rule = policy->sink_window_rule()) {
    if (n > rule->sinks + rule->window) {
      for (int64_t i = 0; i < rule->sinks; ++i) keep.push_back(i);
      for (int64_t i = n - rule->window; i < n; ++i) keep.push_back(i);
      ql.Keep(keep.data(), 0, static_cast<int64_t>(keep.size()));  // the same row for every head
    }
  } else {
    LayerView view = BaseView(layer, req, n);
    view.keys = attended.keys;
    if (policy->NeedsValues()) view.values = ql.Values();
    view.new_keys = new_keys;
    view.queries = attended.queries;
    view.query_positions = req.positions.select(0, 0).to(torch::kCPU);
    view.probs = attended.probs;
    view.received = attended.received;
    view.positions = ql.Positions();
    torch::Tensor kept = policy->SelectKeep(view);
    if (kept.defined() && kept.size(2) < n) {
      kept = kept.to(torch::kCPU).to(torch::kInt64).contiguous();
      ql.Keep(kept.data_ptr<int64_t>(), kept.size(2), kept.size(2));
    }
  }
  if (stats) stats->policy_ms += NowMs() - t0;
}

torch::Tensor GptNeoxModel::QuantizedAttention(int64_t layer, const torch::Tensor& x,
                                               const ForwardRequest& req, KvCache& cache,
                                               KvPolicy* policy, ForwardStats* stats) {
  const LayerWeights& w = w_.layers[layer];
  const int64_t m = x.size(1), H = config_.num_heads, d = config_.head_dim();
  QuantizedLayer& ql = cache.quantized_layer(layer);
  const bool evict = policy != nullptr && req.evict;
  const AttentionNeeds needs = evict ? policy->attention_needs() : AttentionNeeds{};
  auto qkv = Linear(x, w.qkv_w, w.qkv_b).contiguous();
  auto positions = req.positions.to(torch::kCPU).contiguous().view({m});
  const int64_t* pos = positions.data_ptr<int64_t>();
  if (ql.length() == 0 && m > 1) {
    // A prompt into an empty layer: nothing is quantised yet, so it attends exactly as the float
    // cache does, through the fused prefill kernel on the layer's float storage (its allocation
    // enters the peak); the entries then move into the quantised layer, the float storage
    // released first (like a reallocation's old + new copy, the handover is not counted).
    AttendedLayer attended;
    torch::Tensor out = cpu_attention_->Prefill(layer, qkv, positions, cache, needs, &attended.probs,
                                                &attended.received, &attended.queries, &attended.keys);
    LayerCache& lc = cache.layer(layer);
    auto k = lc.K().contiguous(), v = lc.V().contiguous();  // [1,H,m,d], keys rotated
    lc = LayerCache();
    ql.Append(k.data_ptr<float>(), v.data_ptr<float>(), m, d, m * d, pos);
    cache.UpdatePeak();
    if (stats) stats->kv_tokens_max = std::max(stats->kv_tokens_max, m);
    if (evict) ApplyPolicyQuantized(layer, req, cache, policy, stats, attended, k);
    ql.Flush();
    cache.UpdatePeak();
    return Linear(out, w.dense_w, w.dense_b);
  }
  // Fused QKV rows [m][H][q k v][d]: q and k rotated in place at their text positions (keys are
  // cached after rotary, as KIVI quantises them), then the new entries join the residuals.
  float* rows = qkv.data_ptr<float>();
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      cpu_attention_->RotateHead(rows + (t * H + h) * 3 * d, pos[t]);
      cpu_attention_->RotateHead(rows + (t * H + h) * 3 * d + d, pos[t]);
    }
  }
  const int64_t before = ql.length();
  ql.Append(rows + d, rows + 2 * d, m, 3 * H * d, 3 * d, pos);
  cache.UpdatePeak();
  const int64_t n = ql.length();
  auto heads = qkv.view({1, m, H, 3 * d}).permute({0, 2, 1, 3});  // [1,H,m,3d]
  AttendedLayer attended;
  attended.queries = heads.narrow(-1, 0, d);
  torch::Tensor out;  // [1,m,H*d]
  if (m == 1) {
    // One decode row per head straight from the packed codes (no dequantised copy).
    auto q = attended.queries.contiguous();
    out = torch::empty({1, 1, H * d}, torch::kFloat32);
    if (needs.any()) attended.probs = torch::empty({1, H, 1, n}, torch::kFloat32);
    ql.AttendOne(q.data_ptr<float>(), static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))),
                 out.data_ptr<float>(), needs.any() ? attended.probs.data_ptr<float>() : nullptr);
    if (evict && policy->NeedsKeyValuesNow(layer, req.phase)) attended.keys = ql.Keys();
  } else {
    // Several rows (prefill, a chunk, a PPL window): through the dequantised entries.
    auto keys = ql.Keys();
    BlockedAttentionOutput a = BlockedAttention(attended.queries.contiguous(), keys, ql.Values(),
                                                before, torch::Tensor(), needs);
    out = a.out.permute({0, 2, 1, 3}).reshape({1, m, H * d});
    attended.keys = keys;
    attended.probs = a.probs;
    attended.received = a.received;
  }
  // Positional and attention-only policies read only the keys' shape.
  if (!attended.keys.defined()) attended.keys = torch::zeros({1, 1, 1, 1}).expand({1, H, n, d});
  if (stats) stats->kv_tokens_max = std::max(stats->kv_tokens_max, n);
  if (evict) {
    ApplyPolicyQuantized(layer, req, cache, policy, stats, attended, heads.narrow(-1, d, d));
  }
  ql.Flush();  // after the attention and the policy: a press evicts before anything is quantised
  cache.UpdatePeak();
  return Linear(out, w.dense_w, w.dense_b);
}

torch::Tensor GptNeoxModel::Attention(int64_t layer, const torch::Tensor& x, const ForwardRequest& req,
                                      bool padded, KvCache& cache, KvPolicy* policy,
                                      ForwardStats* stats) {
  const LayerWeights& w = w_.layers[layer];
  const int64_t B = x.size(0), m = x.size(1), H = config_.num_heads, d = config_.head_dim();
  if (cache.quantized()) return QuantizedAttention(layer, x, req, cache, policy, stats);
  LayerCache& lc = cache.layer(layer);
  const int64_t before = lc.length;
  lc.has_padding = lc.has_padding || padded;
  const bool evict = policy != nullptr && req.evict;
  const AttentionNeeds needs = evict ? policy->attention_needs() : AttentionNeeds{};
  // A cache that reuses slots is only ever attended by the fused kernels (they read its rank).
  if (cache.slot_reuse() || (UsesFusedCpuAttention(B) && !lc.has_padding)) {
    auto qkv = Linear(x, w.qkv_w, w.qkv_b).contiguous();
    auto positions = req.positions.to(torch::kCPU).contiguous().view({m});
    AttendedLayer attended;
    torch::Tensor out;
    if (m > 1) {
      out = cpu_attention_->Prefill(layer, qkv, positions, cache, needs, &attended.probs,
                                &attended.received, &attended.queries, &attended.keys);
    } else {
      out = cpu_attention_->Decode(layer, qkv, positions.data_ptr<int64_t>()[0], cache,
                               &attended.probs, &attended.queries);
      // One query row: the attention each slot received is that row, so a policy that asked for
      // `received` reads `probs` (LayerView::received's documented fallback) — no conversion.
      if (!needs.any()) attended.probs = torch::Tensor();
      // Policies see the keys as attended (rotated at their slot in shifted mode); positional and
      // attention-only policies read just the shape, so the rotation is skipped for them.
      attended.keys = cache.mode() == PositionMode::kShifted && evict && policy->NeedsKeyValues()
                          ? cpu_attention_->KeysRotatedAtSlots(lc)
                          : lc.K();
    }
    if (stats) stats->kv_tokens_max = std::max(stats->kv_tokens_max, lc.length);
    if (evict) ApplyPolicy(layer, req, cache, policy, stats, attended);
    return Linear(out, w.dense_w, w.dense_b);
  }
  // Fused QKV is interleaved per head: [head0: q k v, head1: q k v, ...].
  auto qkv = Linear(x, w.qkv_w, w.qkv_b).view({B, m, H, 3 * d}).permute({0, 2, 1, 3});
  auto q = qkv.narrow(-1, 0, d);
  auto k = qkv.narrow(-1, d, d);
  auto v = qkv.narrow(-1, 2 * d, d);

  auto valid = req.valid.defined() ? req.valid
                                   : torch::ones({B, m}, torch::TensorOptions().dtype(torch::kBool).device(device_));
  torch::Tensor keys;
  switch (cache.mode()) {
    case PositionMode::kOriginal:
      q = Rotate(q, req.positions);
      k = Rotate(k, req.positions);
      cache.Append(layer, k, v, req.positions, valid);
      keys = lc.K();
      break;
    case PositionMode::kRerotate: {
      auto slots = torch::arange(before, before + m, torch::TensorOptions().dtype(torch::kInt64).device(device_));
      q = Rotate(q, slots);
      k = Rotate(k, slots);
      cache.Append(layer, k, v, req.positions, valid);
      keys = lc.K();
      break;
    }
    case PositionMode::kShifted: {
      auto slots = torch::arange(before, before + m, torch::TensorOptions().dtype(torch::kInt64).device(device_));
      q = Rotate(q, slots);
      cache.Append(layer, k, v, req.positions, valid);  // cached before rotary
      keys = Rotate(lc.K(), torch::arange(lc.length, torch::TensorOptions().dtype(torch::kInt64).device(device_)));
      break;
    }
  }
  const int64_t n = lc.length;
  if (stats) stats->kv_tokens_max = std::max(stats->kv_tokens_max, n);
  torch::Tensor key_allowed;  // [B,1|H,n]: left padding and adakv's holes get no weight
  if (lc.has_padding || lc.holes.defined()) {
    key_allowed = lc.Valid().view({B, 1, n});
    if (lc.holes.defined()) key_allowed = key_allowed & lc.Holes().logical_not();
  }
  BlockedAttentionOutput attn = BlockedAttention(q, keys, lc.V(), before, key_allowed, needs);
  auto out = attn.out.permute({0, 2, 1, 3}).reshape({B, m, H * d});
  if (evict) ApplyPolicy(layer, req, cache, policy, stats, {keys, q, attn.probs, attn.received});
  return Linear(out, w.dense_w, w.dense_b);
}

GptNeoxModel::BlockedAttentionOutput GptNeoxModel::BlockedAttention(
    const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values, int64_t before,
    const torch::Tensor& key_allowed, const AttentionNeeds& needs) const {
  const int64_t B = q.size(0), H = q.size(1), m = q.size(2), n = keys.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  // The statistics a policy asked for are gathered block by block (never [B,H,m,n]): the
  // attention each slot received, summed in float64, and the last r rows' probabilities.
  const int64_t last_rows = std::min(needs.last_rows, m);
  BlockedAttentionOutput result;
  if (needs.received) {
    result.received = torch::zeros({B, H, n}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  }
  if (last_rows > 0) {
    result.probs = torch::zeros({B, H, last_rows, n}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  }
  // Queries in blocks of 128 rows: a block's scores stay in cache, and the keys after its last
  // query (all hidden by the causal mask) are neither multiplied nor normalised. Masked scores
  // are the dtype's lowest value, so exp() makes them exactly 0 as in Hugging Face's eager path.
  const int64_t block = 128;
  const double min_value = q.scalar_type() == torch::kFloat32 ? std::numeric_limits<float>::lowest()
                                                              : -65504.0;
  const auto slot_opts = torch::TensorOptions().dtype(torch::kInt64).device(device_);
  std::vector<torch::Tensor> outs;
  for (int64_t q0 = 0; q0 < m; q0 += block) {
    const int64_t rows = std::min(block, m - q0);
    const int64_t visible = before + q0 + rows;  // keys the block's last query may see
    auto scores = torch::matmul(q.narrow(2, q0, rows), keys.narrow(2, 0, visible).transpose(-1, -2)) * scale;
    if (rows > 1 || key_allowed.defined()) {
      auto key_slot = torch::arange(visible, slot_opts).view({1, visible});
      auto query_slot = torch::arange(before + q0, before + q0 + rows, slot_opts).view({rows, 1});
      auto allowed = (key_slot <= query_slot).view({1, 1, rows, visible});
      if (key_allowed.defined()) {
        allowed = allowed & key_allowed.narrow(2, 0, visible).unsqueeze(2);
      }
      scores = scores.masked_fill(allowed.logical_not(), min_value);
    }
    auto p = torch::softmax(scores.to(torch::kFloat32), -1);
    outs.push_back(torch::matmul(p.to(values.scalar_type()), values.narrow(2, 0, visible)));
    if (needs.received) result.received.narrow(2, 0, visible).add_(p.to(torch::kDouble).sum(2));
    // This block's rows among the last `last_rows` of the forward.
    const int64_t first = std::max(q0, m - last_rows), end = q0 + rows;
    if (last_rows > 0 && first < end) {
      result.probs.narrow(2, first - (m - last_rows), end - first).narrow(3, 0, visible)
          .copy_(p.narrow(2, first - q0, end - first));
    }
  }
  result.out = outs.size() == 1 ? outs[0] : torch::cat(outs, 2);  // [B,H,m,d]
  return result;
}

torch::Tensor GptNeoxModel::Mlp(const LayerWeights& w, const torch::Tensor& x) const {
  auto hdn = Linear(x, w.fc_in_w, w.fc_in_b);
  // In place: hdn is this function's own fresh tensor (no 4 MB allocation per layer at prefill).
  torch::gelu_(hdn, config_.hidden_act == "gelu" ? "none" : "tanh");
  return Linear(hdn, w.fc_out_w, w.fc_out_b);
}

absl::StatusOr<ForwardOutput> GptNeoxModel::Forward(const ForwardRequest& req, KvCache& cache,
                                                    KvPolicy* policy, ForwardStats* stats,
                                                    bool capture_hidden) {
  if (req.ids.dim() != 2 || req.positions.sizes() != req.ids.sizes()) {
    return absl::InvalidArgumentError("Forward: ids and positions must both be [batch, tokens]");
  }
  if (req.ids.size(0) != cache.batch()) {
    return absl::InvalidArgumentError("Forward: batch size differs from the cache's");
  }
  if (req.ids.numel() == 0) return absl::InvalidArgumentError("Forward: no tokens");
  if (cache.quantized()) RETURN_IF_ERROR(CheckQuantizedCache(cache, policy));
  auto ids_cpu = req.ids.to(torch::kCPU);
  int64_t lo = ids_cpu.min().item<int64_t>(), hi = ids_cpu.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size) {
    return absl::OutOfRangeError(absl::StrCat("token id ", lo < 0 ? lo : hi,
                                              " is out of the vocabulary [0, ", config_.vocab_size, ")"));
  }
  ForwardOutput out;
  try {
    torch::NoGradGuard no_grad;
    auto ids = req.ids.to(device_);
    const bool padded = req.valid.defined() && !req.valid.all().item<bool>();
    auto x = torch::embedding(w_.embed, ids).to(compute_dtype_);
    if (capture_hidden) out.hidden.push_back(x);
    const int64_t h = config_.hidden_size;
    auto to_c = [&](const torch::Tensor& t) { return t.scalar_type() == compute_dtype_ ? t : t.to(compute_dtype_); };
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const LayerWeights& w = w_.layers[l];
      auto ln1 = torch::layer_norm(x, {h}, to_c(w.ln1_w), to_c(w.ln1_b), config_.layer_norm_eps);
      auto attn = Attention(l, ln1, req, padded, cache, policy, stats);
      if (config_.parallel_residual) {
        auto ln2 = torch::layer_norm(x, {h}, to_c(w.ln2_w), to_c(w.ln2_b), config_.layer_norm_eps);
        x = Mlp(w, ln2).add_(attn).add_(x);  // (mlp + attn) + x, Hugging Face's order, in place
      } else {
        auto res = attn.add_(x);
        auto ln2 = torch::layer_norm(res, {h}, to_c(w.ln2_w), to_c(w.ln2_b), config_.layer_norm_eps);
        x = Mlp(w, ln2).add_(res);
      }
      if (capture_hidden && l + 1 < config_.num_layers) out.hidden.push_back(x);
    }
    if (req.logits == LogitsRows::kNone && !capture_hidden) return out;
    auto rows = req.logits == LogitsRows::kLast ? x.narrow(1, x.size(1) - 1, 1)
                                                : x.narrow(1, req.logits_start, x.size(1) - req.logits_start);
    if (capture_hidden) rows = x;
    auto normed = torch::layer_norm(rows, {h}, to_c(w_.final_ln_w), to_c(w_.final_ln_b), config_.layer_norm_eps);
    if (capture_hidden) {
      out.hidden.push_back(normed);
      if (req.logits == LogitsRows::kLast) normed = normed.narrow(1, normed.size(1) - 1, 1);
    }
    if (req.logits != LogitsRows::kNone) {
      out.logits = Linear(normed, w_.lm_head, torch::Tensor()).to(torch::kFloat32);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("forward pass failed: ", e.what_without_backtrace()));
  }
  return out;
}

}  // namespace kvgrid
