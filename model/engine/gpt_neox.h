// GPT-NeoX (Pythia) forward pass in LibTorch, numerically matching Hugging Face transformers'
// GPTNeoXForCausalLM (eager attention): parallel or sequential residual, partial rotary
// (rotary_pct, NeoX half-split pairs), explicit positions, an explicit KV cache (kv_cache.h) and
// an optional KV policy applied right after each layer's attention.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/engine/cpu_attention.h"
#include "model/engine/dtype_device.h"
#include "model/engine/kv_cache.h"
#include "model/engine/kv_policy.h"
#include "model/checkpoint/checkpoint.h"

namespace kvgrid {

struct LayerWeights {
  torch::Tensor ln1_w, ln1_b, ln2_w, ln2_b;
  torch::Tensor qkv_w, qkv_b, dense_w, dense_b;
  torch::Tensor fc_in_w, fc_in_b, fc_out_w, fc_out_b;
};

struct ModelWeights {
  torch::Tensor embed;  // [V, h]
  std::vector<LayerWeights> layers;
  torch::Tensor final_ln_w, final_ln_b;
  torch::Tensor lm_head;  // [V, h]
};

enum class LogitsRows { kNone, kLast, kAll };

struct ForwardRequest {
  torch::Tensor ids;        // [B, m] int64
  torch::Tensor positions;  // [B, m] int64 true text positions
  torch::Tensor valid;      // [B, m] bool; undefined = every token is real
  LogitsRows logits = LogitsRows::kLast;
  int64_t logits_start = 0; // with kAll: only rows >= logits_start get logits (saves the LM head)
  ForwardPhase phase = ForwardPhase::kPrefill;
  bool evict = true;        // run the policy after each layer's attention
  int64_t tokens_seen = 0;  // true tokens processed before this forward
  int64_t prompt_length = 0;
};

struct ForwardStats {
  double policy_ms = 0;     // time spent in policy scoring + eviction (summed over layers)
  int64_t kv_tokens_max = 0;  // largest n any layer held while attending (kv-policies §2.7.2)
};

struct ForwardOutput {
  torch::Tensor logits;                // [B, rows, V] float32 (rows = 1 for kLast)
  std::vector<torch::Tensor> hidden;   // when requested: embeddings, each layer's output, final LN
};

class GptNeoxModel {
 public:
  // Loads a Hugging Face model directory: config.json and the weights in any form
  // model/checkpoint/checkpoint.h reads (safetensors, pytorch_model.bin, either sharded).
  static absl::StatusOr<std::unique_ptr<GptNeoxModel>> Load(const std::string& dir,
                                                            torch::ScalarType dtype,
                                                            torch::Device device);
  static absl::StatusOr<std::unique_ptr<GptNeoxModel>> FromCheckpoint(
      const ModelConfig& config, std::shared_ptr<const Checkpoint> checkpoint, torch::ScalarType dtype,
      torch::Device device);

  const ModelConfig& config() const { return config_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }
  int64_t ParameterBytes() const;

  // kv: the cache's storage type (core/kv_dtype.h); quantised caches need batch 1, float32 on
  // CPU and position mode original (Forward refuses the rest, naming kv_dtype).
  KvCache NewCache(int64_t batch, PositionMode mode, const KvDtype& kv = {}) const;

  // Batch-1 float32 CPU attention runs in fused kernels (model/engine/cpu_attention.h)
  // unless this is turned off; off, every forward takes the generic tensor-op path. Both compute
  // the same math: the switch exists so tests and benchmarks can compare them side by side.
  // It is read when a cache is made (NewCache): fused caches reuse evicted slots.
  void set_fused_cpu_attention(bool enabled) { fused_cpu_attention_ = enabled; }

  // One forward over req.ids with `cache` (appended to; pruned by `policy` if given).
  absl::StatusOr<ForwardOutput> Forward(const ForwardRequest& req, KvCache& cache,
                                        KvPolicy* policy = nullptr, ForwardStats* stats = nullptr,
                                        bool capture_hidden = false);

 private:
  GptNeoxModel(ModelConfig config, ModelWeights weights, torch::ScalarType dtype,
               torch::Device device, std::shared_ptr<const Checkpoint> checkpoint);
  torch::Tensor Attention(int64_t layer, const torch::Tensor& x, const ForwardRequest& req,
                          bool padded, KvCache& cache, KvPolicy* policy, ForwardStats* stats);
  // What a layer's attention hands the policy, in slot order: keys as attended [B,H,n,d], the
  // rotated queries [B,H,m,d] and the statistics of AttentionNeeds (LayerView's probs, received).
  struct AttendedLayer {
    torch::Tensor keys, queries, probs, received;
  };
  // Runs the policy after a layer's attention: its sinks + window rule directly, or SelectKeep on
  // a view in logical order, then evicts.
  void ApplyPolicy(int64_t layer, const ForwardRequest& req, KvCache& cache, KvPolicy* policy,
                   ForwardStats* stats, const AttendedLayer& attended);
  // cache.Keep() (KeepWithHoles() for a policy whose heads keep uneven counts), plus rerotate
  // mode's re-rotation of the kept keys.
  void KeepEntries(int64_t layer, KvCache& cache, const torch::Tensor& keep,
                   bool uneven_heads = false);
  // Causal attention of q [B,H,m,d], the entries [before, before + m) of keys/values [B,H,n,d],
  // in blocks of 128 query rows (the generic tensor path); key_allowed [B,1|H,n] bool, when
  // defined, masks slots. Returns out [B,H,m,d] and the statistics `needs` asks for.
  struct BlockedAttentionOutput {
    torch::Tensor out, probs, received;
  };
  BlockedAttentionOutput BlockedAttention(const torch::Tensor& q, const torch::Tensor& keys,
                                          const torch::Tensor& values, int64_t before,
                                          const torch::Tensor& key_allowed,
                                          const AttentionNeeds& needs) const;
  bool UsesFusedCpuAttention(int64_t batch) const;
  // The LayerView fields every policy gets (layer, counts, phase, rotary).
  LayerView BaseView(int64_t layer, const ForwardRequest& req, int64_t n) const;
  // A KIVI-quantised cache's attention (quantized_kv.h): decode rows read the packed codes,
  // several rows attend through BlockedAttention on the dequantised entries; then the policy,
  // then KIVI's flush.
  torch::Tensor QuantizedAttention(int64_t layer, const torch::Tensor& x, const ForwardRequest& req,
                                   KvCache& cache, KvPolicy* policy, ForwardStats* stats);
  void ApplyPolicyQuantized(int64_t layer, const ForwardRequest& req, KvCache& cache,
                            KvPolicy* policy, ForwardStats* stats, const AttendedLayer& attended,
                            const torch::Tensor& new_keys);
  absl::Status CheckQuantizedCache(const KvCache& cache, const KvPolicy* policy) const;
  torch::Tensor Mlp(const LayerWeights& w, const torch::Tensor& x) const;
  torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const;
  torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& positions) const;

  ModelConfig config_;
  ModelWeights w_;
  torch::ScalarType dtype_;
  torch::ScalarType compute_dtype_;
  torch::Device device_;
  torch::Tensor inv_freq_;  // [rotary_dims/2] float32
  std::unique_ptr<const CpuAttention> cpu_attention_;  // the fused batch-1 float32 CPU kernels
  std::shared_ptr<const Checkpoint> checkpoint_;  // keeps memory-mapped weights alive
  bool fused_cpu_attention_ = true;
};

}  // namespace kvgrid
