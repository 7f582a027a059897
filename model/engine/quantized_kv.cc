#include "model/engine/quantized_kv.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/engine/capacity.h"
#include "model/engine/cpu_gemv.h"
#include "model/engine/cpu_packed_attention.h"
#include "model/engine/kv_quant.h"

namespace kvgrid {
namespace {

// Resizes v to n, handing storage back when it is mostly unused (eviction frees memory).
template <typename T>
void ResizeAndTrim(std::vector<T>& v, size_t n) {
  v.resize(n);
  if (v.capacity() > 2 * n + 64) v.shrink_to_fit();
}

// A residual after a flush: room for `room` elements (it refills to R entries, and the values'
// to R + 1), and no more — a prefill's residual held the whole prompt.
void TrimResidual(std::vector<float>& v, size_t room) {
  room = std::max(room, v.size());
  if (v.capacity() <= room + room / 4) return;
  std::vector<float> trimmed;
  trimmed.reserve(room);
  trimmed.assign(v.begin(), v.end());
  v.swap(trimmed);
}

// Makes room for `extra` more elements the way the float cache grows (GrownCapacity), not by
// std::vector's doubling, so that allocated bytes compare like for like.
template <typename T>
void Reserve(std::vector<T>& v, size_t extra) {
  const int64_t needed = static_cast<int64_t>(v.size() + extra);
  if (needed > static_cast<int64_t>(v.capacity())) {
    v.reserve(GrownCapacity(static_cast<int64_t>(v.capacity()), needed));
  }
}

template <typename T>
int64_t CapacityBytes(const std::vector<T>& v) {
  return static_cast<int64_t>(v.capacity() * sizeof(T));
}

template <typename T>
int64_t SizeBytes(const std::vector<T>& v) {
  return static_cast<int64_t>(v.size() * sizeof(T));
}

using Run = QuantizedLayer::KeptRun;

std::vector<Run> RunsOf(const int64_t* keep, int64_t k) {
  std::vector<Run> runs;
  for (int64_t j = 0; j < k; ++j) {
    if (!runs.empty() && runs.back().first + runs.back().length == keep[j]) {
      ++runs.back().length;
    } else {
      runs.push_back({keep[j], 1});
    }
  }
  return runs;
}

// Moves the kept rows that lie in [lo, hi) to the front of `rows` (row i at rows + (i - lo) *
// width), in order; returns how many there are.
template <typename T>
int64_t CompactRows(T* rows, int64_t width, const std::vector<Run>& runs, int64_t lo, int64_t hi) {
  int64_t out = 0;
  for (const Run& r : runs) {
    const int64_t first = std::max(r.first, lo), end = std::min(r.first + r.length, hi);
    if (first >= end) continue;
    if (out != first - lo) {
      std::memmove(rows + out * width, rows + (first - lo) * width, (end - first) * width * sizeof(T));
    }
    out += end - first;
  }
  return out;
}

}  // namespace

QuantizedLayer::QuantizedLayer(int64_t num_heads, int64_t head_dim, const KvDtype& kv)
    : d_(head_dim), words_(head_dim * kv.bits / 32), value_groups_(head_dim / kv.group), kv_(kv),
      heads_(num_heads) {}

int64_t QuantizedLayer::quantized_keys(int64_t h) const {
  return static_cast<int64_t>(heads_[h].key_codes.size()) / words_;
}

int64_t QuantizedLayer::quantized_values(int64_t h) const {
  return static_cast<int64_t>(heads_[h].value_codes.size()) / words_;
}

void QuantizedLayer::Append(const float* k, const float* v, int64_t m, int64_t token_stride,
                            int64_t head_stride, const int64_t* positions) {
  for (int64_t h = 0; h < static_cast<int64_t>(heads_.size()); ++h) {
    Head& head = heads_[h];
    Reserve(head.key_residual, m * d_);
    Reserve(head.value_residual, m * d_);
    Reserve(head.positions, m);
    for (int64_t t = 0; t < m; ++t) {
      const float* kt = k + t * token_stride + h * head_stride;
      const float* vt = v + t * token_stride + h * head_stride;
      head.key_residual.insert(head.key_residual.end(), kt, kt + d_);
      head.value_residual.insert(head.value_residual.end(), vt, vt + d_);
      head.positions.push_back(positions[t]);
    }
  }
}

void QuantizedLayer::Flush() {
  // Heads are independent (and hold equal counts): a flush with more than a decode step's one
  // value to quantise runs them side by side on the intra-op threads.
  const Head& first = heads_[0];
  const int64_t n = static_cast<int64_t>(first.positions.size());
  const bool large = n - static_cast<int64_t>(first.key_codes.size()) / words_ >= kv_.residual ||
                     n - static_cast<int64_t>(first.value_codes.size()) / words_ > kv_.residual + 1;
  const int64_t H = static_cast<int64_t>(heads_.size());
  at::parallel_for(0, H, large ? 1 : H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) FlushHead(heads_[h]);
  });
}

void QuantizedLayer::FlushHead(Head& head) {
  const int64_t n = static_cast<int64_t>(head.positions.size());
  const int64_t key_residual = n - static_cast<int64_t>(head.key_codes.size()) / words_;
  // Keys: whole blocks of R once the residual holds R (prefill of L: the first R*floor(L/R)).
  FlushKeys(head, key_residual / kv_.residual * kv_.residual);
  // Values: every entry older than the newest R.
  const int64_t value_residual = n - static_cast<int64_t>(head.value_codes.size()) / words_;
  if (value_residual > kv_.residual) FlushValues(head, value_residual - kv_.residual);
}

void QuantizedLayer::FlushKeys(Head& head, int64_t count) {
  if (count == 0) return;
  const int64_t G = kv_.group;
  std::vector<uint8_t> codes(G * d_);
  Reserve(head.key_scale, count / G * d_);
  Reserve(head.key_zero, count / G * d_);
  Reserve(head.key_codes, count * words_);
  Reserve(head.key_group_size, count / G);
  for (int64_t g = 0; g < count / G; ++g) {
    const float* x = head.key_residual.data() + g * G * d_;  // G entries x d channels
    const size_t at = head.key_scale.size();
    head.key_scale.resize(at + d_);
    head.key_zero.resize(at + d_);
    for (int64_t c = 0; c < d_; ++c) {  // per channel, over the group's G entries
      QuantizeGroup(x + c, d_, G, kv_.bits, codes.data() + c, d_, &head.key_scale[at + c],
                    &head.key_zero[at + c]);
    }
    const size_t row = head.key_codes.size();
    head.key_codes.resize(row + G * words_);
    for (int64_t t = 0; t < G; ++t) {
      PackCodes(codes.data() + t * d_, d_, kv_.bits, head.key_codes.data() + row + t * words_);
    }
    head.key_group_size.push_back(static_cast<int32_t>(G));
  }
  head.key_residual.erase(head.key_residual.begin(), head.key_residual.begin() + count * d_);
  TrimResidual(head.key_residual, kv_.residual * d_);
}

void QuantizedLayer::FlushValues(Head& head, int64_t count) {
  const int64_t G = kv_.group;
  std::vector<uint8_t> codes(d_);
  Reserve(head.value_scale, count * value_groups_);
  Reserve(head.value_zero, count * value_groups_);
  Reserve(head.value_codes, count * words_);
  for (int64_t t = 0; t < count; ++t) {
    const float* x = head.value_residual.data() + t * d_;
    const size_t at = head.value_scale.size();
    head.value_scale.resize(at + value_groups_);
    head.value_zero.resize(at + value_groups_);
    for (int64_t g = 0; g < value_groups_; ++g) {  // per entry, over G consecutive channels
      QuantizeGroup(x + g * G, 1, G, kv_.bits, codes.data() + g * G, 1, &head.value_scale[at + g],
                    &head.value_zero[at + g]);
    }
    const size_t row = head.value_codes.size();
    head.value_codes.resize(row + words_);
    PackCodes(codes.data(), d_, kv_.bits, head.value_codes.data() + row);
  }
  head.value_residual.erase(head.value_residual.begin(), head.value_residual.begin() + count * d_);
  TrimResidual(head.value_residual, (kv_.residual + 1) * d_);
}

void QuantizedLayer::Keep(const int64_t* keep, int64_t head_stride, int64_t k) {
  std::vector<Run> runs;
  for (int64_t h = 0; h < static_cast<int64_t>(heads_.size()); ++h) {
    if (h == 0 || head_stride != 0) runs = RunsOf(keep + h * head_stride, k);
    KeepHead(heads_[h], runs, k);
  }
}

void QuantizedLayer::KeepHead(Head& head, const std::vector<KeptRun>& runs, int64_t k) {
  const int64_t n = static_cast<int64_t>(head.positions.size());
  const int64_t nk = static_cast<int64_t>(head.key_codes.size()) / words_;
  const int64_t nv = static_cast<int64_t>(head.value_codes.size()) / words_;
  // Every array is compacted in place, run by run: kept entries only move towards the front.
  CompactRows(head.positions.data(), 1, runs, 0, n);
  const int64_t out_k = CompactRows(head.key_codes.data(), words_, runs, 0, nk);
  const int64_t out_kr = CompactRows(head.key_residual.data(), d_, runs, nk, n);
  const int64_t out_v = CompactRows(head.value_codes.data(), words_, runs, 0, nv);
  CompactRows(head.value_scale.data(), value_groups_, runs, 0, nv);
  CompactRows(head.value_zero.data(), value_groups_, runs, 0, nv);
  const int64_t out_vr = CompactRows(head.value_residual.data(), d_, runs, nv, n);
  // Key groups: count the survivors of each; a group with none left frees its scale and zero.
  std::vector<int32_t> survivors(head.key_group_size.size(), 0);
  {
    size_t g = 0;
    int64_t group_first = 0;
    for (const Run& r : runs) {
      for (int64_t i = r.first, end = std::min(r.first + r.length, nk); i < end;) {
        while (i >= group_first + head.key_group_size[g]) group_first += head.key_group_size[g++];
        const int64_t take = std::min(end, group_first + head.key_group_size[g]) - i;
        survivors[g] += static_cast<int32_t>(take);
        i += take;
      }
    }
  }
  int64_t out_g = 0;
  for (size_t g = 0; g < survivors.size(); ++g) {
    if (survivors[g] == 0) continue;
    std::memmove(&head.key_scale[out_g * d_], &head.key_scale[g * d_], d_ * sizeof(float));
    std::memmove(&head.key_zero[out_g * d_], &head.key_zero[g * d_], d_ * sizeof(float));
    head.key_group_size[out_g++] = survivors[g];
  }
  ResizeAndTrim(head.positions, k);
  ResizeAndTrim(head.key_codes, out_k * words_);
  ResizeAndTrim(head.key_residual, out_kr * d_);
  ResizeAndTrim(head.key_scale, out_g * d_);
  ResizeAndTrim(head.key_zero, out_g * d_);
  ResizeAndTrim(head.key_group_size, out_g);
  ResizeAndTrim(head.value_codes, out_v * words_);
  ResizeAndTrim(head.value_scale, out_v * value_groups_);
  ResizeAndTrim(head.value_zero, out_v * value_groups_);
  ResizeAndTrim(head.value_residual, out_vr * d_);
}

void QuantizedLayer::AttendHead(const Head& head, const float* qh, float scale, float* oh,
                                float* scores, float* qs) const {
  const int64_t d = d_, W = words_, n = static_cast<int64_t>(head.positions.size());
  const int64_t nk = static_cast<int64_t>(head.key_codes.size()) / W;
  const int64_t nv = static_cast<int64_t>(head.value_codes.size()) / W;
  const int bits = kv_.bits;
  // Quantised keys, group by group: q·k̂ = Σ_c (q_c s_c) code_c + Σ_c q_c m_c.
  int64_t i = 0;
  for (size_t g = 0; g < head.key_group_size.size(); ++g) {
    const float* s = &head.key_scale[g * d];
    const float* z = &head.key_zero[g * d];
    float qz = 0;
    for (int64_t c = 0; c < d; ++c) {
      qs[c] = qh[c] * s[c];
      qz += qh[c] * z[c];
    }
    PackedKeyScores(&head.key_codes[i * W], head.key_group_size[g], d, bits, qs, qz, scale, scores + i);
    i += head.key_group_size[g];
  }
  if (n > nk) AttentionScoresF32(qh, &head.key_residual[0], n - nk, d, scale, scores + nk);
  const float mx = *std::max_element(scores, scores + n);
  float sum = 0;
  for (int64_t t = 0; t < n; ++t) sum += (scores[t] = std::exp(scores[t] - mx));
  const float inv = 1.0f / sum;
  for (int64_t t = 0; t < n; ++t) scores[t] *= inv;
  // Values: Σ_t p_t v̂_t with v̂ = code * s + m per channel group of the entry, then the residual.
  std::fill(oh, oh + d, 0.0f);
  if (n > nv) AttentionWeightedSumF32(scores + nv, &head.value_residual[0], n - nv, d, oh);
  PackedValueSum(scores, head.value_codes.data(), nv, d, bits, kv_.group, head.value_scale.data(),
                 head.value_zero.data(), oh);
}

void QuantizedLayer::AttendOne(const float* q, float scale, float* out, float* probs) const {
  const int64_t H = static_cast<int64_t>(heads_.size()), n = length(), d = d_;
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> scores(n), qs(d);
    for (int64_t h = h0; h < h1; ++h) {
      float* row = probs != nullptr ? probs + h * n : scores.data();
      AttendHead(heads_[h], q + h * d, scale, out + h * d, row, qs.data());
    }
  });
}

void QuantizedLayer::DequantizeKeys(const Head& head, float* out) const {
  const int64_t nk = static_cast<int64_t>(head.key_codes.size()) / words_;
  int64_t i = 0;
  for (size_t g = 0; g < head.key_group_size.size(); ++g) {
    for (int64_t e = 0; e < head.key_group_size[g]; ++e, ++i) {
      for (int64_t c = 0; c < d_; ++c) {
        out[i * d_ + c] = static_cast<float>(CodeAt(&head.key_codes[i * words_], c, kv_.bits)) *
                              head.key_scale[g * d_ + c] + head.key_zero[g * d_ + c];
      }
    }
  }
  std::memcpy(out + nk * d_, head.key_residual.data(), head.key_residual.size() * sizeof(float));
}

void QuantizedLayer::DequantizeValues(const Head& head, float* out) const {
  const int64_t nv = static_cast<int64_t>(head.value_codes.size()) / words_;
  for (int64_t t = 0; t < nv; ++t) {
    for (int64_t c = 0; c < d_; ++c) {
      const int64_t g = t * value_groups_ + c / kv_.group;
      out[t * d_ + c] = static_cast<float>(CodeAt(&head.value_codes[t * words_], c, kv_.bits)) *
                            head.value_scale[g] + head.value_zero[g];
    }
  }
  std::memcpy(out + nv * d_, head.value_residual.data(), head.value_residual.size() * sizeof(float));
}

torch::Tensor QuantizedLayer::Keys() const {
  const int64_t H = static_cast<int64_t>(heads_.size()), n = length();
  auto t = torch::empty({1, H, n, d_}, torch::kFloat32);
  for (int64_t h = 0; h < H; ++h) DequantizeKeys(heads_[h], t.data_ptr<float>() + h * n * d_);
  return t;
}

torch::Tensor QuantizedLayer::Values() const {
  const int64_t H = static_cast<int64_t>(heads_.size()), n = length();
  auto t = torch::empty({1, H, n, d_}, torch::kFloat32);
  for (int64_t h = 0; h < H; ++h) DequantizeValues(heads_[h], t.data_ptr<float>() + h * n * d_);
  return t;
}

torch::Tensor QuantizedLayer::Positions() const {
  const int64_t H = static_cast<int64_t>(heads_.size()), n = length();
  auto t = torch::empty({1, H, n}, torch::kInt64);
  for (int64_t h = 0; h < H; ++h) {
    std::memcpy(t.data_ptr<int64_t>() + h * n, heads_[h].positions.data(), n * sizeof(int64_t));
  }
  return t;
}

int64_t QuantizedLayer::AllocatedBytes() const {
  int64_t bytes = 0;
  for (const Head& h : heads_) {
    bytes += CapacityBytes(h.key_codes) + CapacityBytes(h.key_scale) +
             CapacityBytes(h.key_zero) + CapacityBytes(h.key_group_size) +
             CapacityBytes(h.key_residual) + CapacityBytes(h.value_codes) +
             CapacityBytes(h.value_scale) + CapacityBytes(h.value_zero) +
             CapacityBytes(h.value_residual);
  }
  return bytes;
}

int64_t QuantizedLayer::LiveBytes() const {
  int64_t bytes = 0;
  for (const Head& h : heads_) {
    bytes += SizeBytes(h.key_codes) + SizeBytes(h.key_scale) +
             SizeBytes(h.key_zero) + SizeBytes(h.key_group_size) + SizeBytes(h.key_residual) +
             SizeBytes(h.value_codes) + SizeBytes(h.value_scale) + SizeBytes(h.value_zero) +
             SizeBytes(h.value_residual);
  }
  return bytes;
}

}  // namespace kvgrid
