// One layer of a KIVI-quantised KV cache (core/kv_dtype.h, docs/kv-policies.md §4), batch 1,
// float32, keys cached after rotary (position mode `original`). Per head, in logical order
// (oldest first):
//   keys:   [0, nk) quantised per channel in groups of G consecutive entries, [nk, n) float32;
//   values: [0, nv) quantised per entry in groups of G channels,          [nv, n) float32.
// Flush() applies KIVI's rules after each forward's attention (and after the eviction policy,
// so a press evicts before anything is quantised): the key residual is quantised in whole blocks
// of R entries when it holds R or more, the values beyond the newest R one entry at a time.
//
// Storage: codes are packed per entry along channels (d * bits / 32 uint32 words), for keys as
// for values, so that evicting an entry removes one row and never re-quantises anything: a key
// group keeps its per-channel scale and zero while any of its entries lives, and the entries it
// lost simply no longer count (KIVI packs keys along tokens for its CUDA GEMV; the bits per entry
// and the dequantised values are the same). Scales and zeros are float32. Bytes count the K/V
// storage as KvCache::AllocatedBytes does for a float cache: codes, scales, zeros, key group
// sizes and the float32 residuals (positions are bookkeeping in both, not counted).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/kv_dtype.h"

namespace kvgrid {

class QuantizedLayer {
 public:
  // Consecutive entries [first, first + length) that an eviction keeps: a per-step eviction keeps
  // nearly everything, so a handful of runs describe it and each moves as one block.
  struct KeptRun {
    int64_t first, length;
  };

  QuantizedLayer(int64_t num_heads, int64_t head_dim, const KvDtype& kv);

  int64_t length() const { return static_cast<int64_t>(heads_[0].positions.size()); }
  // Entries of head h whose key / value is quantised (the rest sit in the float32 residual).
  int64_t quantized_keys(int64_t h) const;
  int64_t quantized_values(int64_t h) const;

  // Appends m entries to the residuals: head h of entry t at k + t * token_stride + h * head_stride
  // (d floats, keys rotated; likewise v); positions[t] is entry t's text position.
  void Append(const float* k, const float* v, int64_t m, int64_t token_stride, int64_t head_stride,
              const int64_t* positions);
  // KIVI's quantisation step (see the header comment).
  void Flush();
  // Head h keeps the logical indices keep[h * head_stride + j], j < k (ascending).
  void Keep(const int64_t* keep, int64_t head_stride, int64_t k);

  // One decode row per head straight from the packed storage: q [H][d] (rotated), scaled by
  // `scale`; writes out [H][d] and, when non-null, probs [H][n] (softmax in float32).
  void AttendOne(const float* q, float scale, float* out, float* probs) const;

  // The entries as attention sees them, dequantised: [1,H,n,d] float32, and positions [1,H,n].
  torch::Tensor Keys() const;
  torch::Tensor Values() const;
  torch::Tensor Positions() const;

  int64_t AllocatedBytes() const;
  int64_t LiveBytes() const;

 private:
  struct Head {
    std::vector<int64_t> positions;       // n
    std::vector<uint32_t> key_codes;      // nk rows of words_ words
    std::vector<float> key_scale, key_zero;  // per key group: d each
    std::vector<int32_t> key_group_size;  // live entries of each key group, oldest group first
    std::vector<float> key_residual;      // (n - nk) * d
    std::vector<uint32_t> value_codes;    // nv rows of words_ words
    std::vector<float> value_scale, value_zero;  // nv * (d / G)
    std::vector<float> value_residual;    // (n - nv) * d
  };
  void FlushHead(Head& head);  // Flush() for one head
  void FlushKeys(Head& head, int64_t count);
  void FlushValues(Head& head, int64_t count);
  void KeepHead(Head& head, const std::vector<KeptRun>& runs, int64_t k);
  // AttendOne for one head: scores [n] (the probabilities on return), qs [d] scratch.
  void AttendHead(const Head& head, const float* qh, float scale, float* oh, float* scores,
                  float* qs) const;
  void DequantizeKeys(const Head& head, float* out) const;    // n * d
  void DequantizeValues(const Head& head, float* out) const;  // n * d

  int64_t d_, words_, value_groups_;
  KvDtype kv_;
  std::vector<Head> heads_;
};

}  // namespace kvgrid
