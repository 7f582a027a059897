// The fused batch-1 float32 CPU attention kernels over one KvCache layer (beside cpu_gemv.h's
// matrix-vector products): rotary on q/k by position mode, the cache append, scores, softmax and
// the weighted sum in one pass per head, plus the attention statistics a policy asks for. The
// generic tensor path in gpt_neox.cc computes the same math (tests compare them).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/engine/kv_cache.h"
#include "model/engine/kv_policy.h"

namespace kvgrid {

class CpuAttention {
 public:
  // inv_freq: the rotary inverse frequencies [rotary_dims / 2]; cos/sin are tabulated for
  // positions [0, table_positions) and computed past them.
  CpuAttention(int64_t num_heads, int64_t head_dim, int64_t rotary_dims, std::vector<float> inv_freq,
               int64_t table_positions);

  // One-token decode step (any positional mode, no padding). qkv: the fused QKV row [H][q k v][d]
  // (rotated in place). The cache records `text_position` for the new slot; q/k are rotated
  // there, or at the slot in shifted/rerotate mode. Returns the attention output [1,1,H*d] and
  // sets *probs [1,H,1,n] and *q_out [1,H,1,d].
  torch::Tensor Decode(int64_t layer, const torch::Tensor& qkv, int64_t text_position,
                       KvCache& cache, torch::Tensor* probs, torch::Tensor* q_out) const;
  // m new tokens (prefill, a chunk of it, a PPL window), no padding, any positional mode: q/k
  // rotation, cache append, then per (head, 128-query block) one GEMM for the scores, the causal
  // mask on the diagonal block only, softmax in place and one GEMM into the output's final
  // [1,m,H*d] layout. Sets *q_out [1,H,m,d] (rotated), *keys_out (as attended) and what `needs`
  // asks for, computed block by block: *received [1,H,n] float64 and *probs [1,H,r,n] (the last r
  // rows).
  torch::Tensor Prefill(int64_t layer, const torch::Tensor& qkv, const torch::Tensor& text_positions,
                        KvCache& cache, const AttentionNeeds& needs, torch::Tensor* probs,
                        torch::Tensor* received, torch::Tensor* q_out, torch::Tensor* keys_out) const;
  // Shifted mode caches keys before rotary: a copy of the layer's live keys [1,H,n,d], each
  // rotated at its logical index (its slot's rank), as they are attended.
  torch::Tensor KeysRotatedAtSlots(const LayerCache& lc) const;
  // Rotates one head vector x[0..d) in place to `position` (NeoX half split on the first r dims).
  void RotateHead(float* x, int64_t position) const;

 private:
  // cos/sin of rotary pair i at `position` (table for trained positions, computed past it).
  void RotaryCosSin(int64_t position, int64_t i, float* c, float* s) const;

  int64_t heads_, head_dim_, rotary_dims_;
  std::vector<float> inv_freq_;
  std::vector<float> cos_, sin_;  // [position][rotary_dims / 2]
};

}  // namespace kvgrid
