#include "model/engine/cpu_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "model/engine/cpu_gemv.h"

namespace kvgrid {
namespace {

// Dot product in 8 independent lanes (vectorisable without -ffast-math).
inline float Dot(const float* a, const float* b, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += a[i + l] * b[i + l];
  }
  float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

CpuAttention::CpuAttention(int64_t num_heads, int64_t head_dim, int64_t rotary_dims,
                           std::vector<float> inv_freq, int64_t table_positions)
    : heads_(num_heads), head_dim_(head_dim), rotary_dims_(rotary_dims), inv_freq_(std::move(inv_freq)) {
  // cos/sin of every position in the table (RotaryCosSin), with the torch path's float formula.
  const int64_t half = rotary_dims_ / 2;
  cos_.resize(table_positions * half);
  sin_.resize(table_positions * half);
  for (int64_t j = 0; j < table_positions; ++j) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(j) * inv_freq_[i];
      cos_[j * half + i] = std::cos(angle);
      sin_[j * half + i] = std::sin(angle);
    }
  }
}

void CpuAttention::RotaryCosSin(int64_t position, int64_t i, float* c, float* s) const {
  const int64_t half = rotary_dims_ / 2;
  if (position < static_cast<int64_t>(cos_.size()) / std::max<int64_t>(half, 1)) {
    *c = cos_[position * half + i];
    *s = sin_[position * half + i];
    return;
  }
  const float angle = static_cast<float>(position) * inv_freq_[i];
  *c = std::cos(angle);
  *s = std::sin(angle);
}

void CpuAttention::RotateHead(float* x, int64_t position) const {
  const int64_t half = rotary_dims_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    float c, s;
    RotaryCosSin(position, i, &c, &s);
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
  }
}

torch::Tensor CpuAttention::KeysRotatedAtSlots(const LayerCache& lc) const {
  const int64_t H = heads_, d = head_dim_, n = lc.length;
  torch::Tensor keys = lc.K().clone();  // [1,H,n,d] contiguous
  float* R = keys.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      for (int64_t h = 0; h < H; ++h) {
        RotateHead(R + (h * n + j) * d, lc.in_order() ? j : lc.rank[h][j]);
      }
    }
  });
  return keys;
}

torch::Tensor CpuAttention::Decode(int64_t layer, const torch::Tensor& qkv,
                                   int64_t text_position, KvCache& cache,
                                   torch::Tensor* probs, torch::Tensor* q_out) const {
  const int64_t H = heads_, d = head_dim_, r = rotary_dims_;
  float* p = qkv.data_ptr<float>();  // [H][q k v][d]
  const bool shifted = cache.mode() == PositionMode::kShifted;
  const int64_t half = r / 2;
  LayerCache& lc = cache.layer(layer);
  // Rotary on q (and, unless keys are cached before rotary, k) of every head, at the true
  // position, or at the new token's cache slot in shifted/rerotate mode.
  const int64_t rotary_position = cache.mode() == PositionMode::kOriginal ? text_position : lc.length;
  for (int64_t h = 0; h < H; ++h) {
    RotateHead(p + h * 3 * d, rotary_position);
    if (!shifted) RotateHead(p + h * 3 * d + d, rotary_position);
  }
  // The cache records the true text position, whatever position the key was rotated at.
  cache.AppendCpu(layer, p + d, p + 2 * d, 1, H * 3 * d, 3 * d, &text_position);
  // Shifted (pos-shift): cached keys are pre-rotary and the key of logical index j is rotated at
  // j (its slot, unless slots are reused), so the score uses R(j)k_j without materialising the rotated cache: only the first r dims are rotated, and the
  // cos/sin of slot j never change (RotaryCosSin's table).
  auto rotated_dot = [&](const float* q, const float* k, int64_t j) {
    float acc = Dot(q + r, k + r, d - r);
    for (int64_t i = 0; i < half; ++i) {
      float c, s;
      RotaryCosSin(j, i, &c, &s);
      acc += q[i] * (k[i] * c - k[i + half] * s) + q[i + half] * (k[i + half] * c + k[i] * s);
    }
    return acc;
  };
  const int64_t n = lc.length, cap = lc.capacity();
  *probs = torch::empty({1, H, 1, n}, torch::kFloat32);
  torch::Tensor out = torch::empty({1, 1, H * d}, torch::kFloat32);
  const float* keys = lc.keys.data_ptr<float>();
  const float* values = lc.values.data_ptr<float>();
  float* pr = probs->data_ptr<float>();
  float* o = out.data_ptr<float>();
  const bool* holes = lc.holes.defined() ? lc.holes.data_ptr<bool>() : nullptr;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const float* q = p + h * 3 * d;
      const float* K = keys + h * cap * d;
      const float* V = values + h * cap * d;
      float* a = pr + h * n;
      if (shifted && lc.in_order()) {
        for (int64_t j = 0; j < n; ++j) a[j] = rotated_dot(q, K + j * d, j) * scale;
      } else if (shifted) {  // slot j holds the entry of logical index rank[j]
        const int64_t* rank = lc.rank[h].data();
        for (int64_t j = 0; j < n; ++j) a[j] = rotated_dot(q, K + j * d, rank[j]) * scale;
      } else {
        AttentionScoresF32(q, K, n, d, scale, a);
      }
      if (holes != nullptr) {  // slots of this head that hold no entry get no weight
        const bool* hole = holes + h * cap;
        for (int64_t j = 0; j < n; ++j) {
          if (hole[j]) a[j] = std::numeric_limits<float>::lowest();
        }
      }
      const float mx = *std::max_element(a, a + n);
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += (a[j] = std::exp(a[j] - mx));
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < n; ++j) a[j] *= inv;
      AttentionWeightedSumF32(a, V, n, d, o + h * d);
    }
  });
  *q_out = qkv.view({1, 1, H, 3 * d}).permute({0, 2, 1, 3}).narrow(-1, 0, d);
  return out;
}

torch::Tensor CpuAttention::Prefill(int64_t layer, const torch::Tensor& qkv,
                                    const torch::Tensor& text_positions, KvCache& cache,
                                    const AttentionNeeds& needs, torch::Tensor* probs,
                                    torch::Tensor* received, torch::Tensor* q_out,
                                    torch::Tensor* keys_out) const {
  const int64_t H = heads_, d = head_dim_, m = qkv.size(1);
  const float* p = qkv.data_ptr<float>();  // [m][H][q k v][d]
  const int64_t* pos = text_positions.data_ptr<int64_t>();
  LayerCache& lc = cache.layer(layer);
  const int64_t before = lc.length;
  const PositionMode mode = cache.mode();
  cache.AppendCpu(layer, p + d, p + 2 * d, m, H * 3 * d, 3 * d, pos);
  const int64_t n = lc.length, cap = lc.capacity();
  float* keys = lc.keys.data_ptr<float>();
  float* values = lc.values.data_ptr<float>();
  // Queries to [H][m][d], rotated; new keys rotated in place in the cache (in shifted mode the
  // cache keeps them before rotary). Rotation is at the true position, or at the cache slot.
  torch::Tensor q = torch::empty({1, H, m, d}, torch::kFloat32);
  float* Q = q.data_ptr<float>();
  at::parallel_for(0, m, 32, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t at = mode == PositionMode::kOriginal ? pos[t] : before + t;
      for (int64_t h = 0; h < H; ++h) {
        float* qh = Q + (h * m + t) * d;
        std::memcpy(qh, p + (t * H + h) * 3 * d, d * sizeof(float));
        RotateHead(qh, at);
        if (mode != PositionMode::kShifted) RotateHead(keys + (h * cap + before + t) * d, at);
      }
    }
  });
  // Shifted (pos-shift): every cached key is attended rotated at its slot index.
  torch::Tensor attended = lc.K();
  const float* K = keys;
  int64_t key_rows = cap;  // rows between heads in K
  if (mode == PositionMode::kShifted) {
    attended = KeysRotatedAtSlots(lc);
    K = attended.data_ptr<float>();
    key_rows = n;
  }
  torch::Tensor out = torch::empty({1, m, H * d}, torch::kFloat32);
  float* O = out.data_ptr<float>();
  // Statistics for the policy, accumulated block by block (never [H, m, n]): the attention each
  // slot received over all m rows (float64, rows added in order) and the last r rows.
  const int64_t r = std::min(needs.last_rows, m), first_kept_row = m - r;
  if (r > 0) *probs = torch::zeros({1, H, r, n}, torch::kFloat32);
  if (needs.received) *received = torch::zeros({1, H, n}, torch::kFloat64);
  double* recv = needs.received ? received->data_ptr<double>() : nullptr;
  float* last = r > 0 ? probs->data_ptr<float>() : nullptr;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const float lowest = std::numeric_limits<float>::lowest();
  const int64_t block = 128, blocks = (m + block - 1) / block;
  // Holes (slots of a head that hold no entry) are among the older slots [0, before).
  const bool* holes = lc.holes.defined() ? lc.holes.data_ptr<bool>() : nullptr;
  auto attend_block = [&](int64_t h, int64_t q0, float* scratch) {
    const int64_t rows = std::min(block, m - q0);
    const int64_t visible = before + q0 + rows;  // keys the block's last query may see
    auto scores = torch::from_blob(scratch, {rows, visible});
    auto q_block = torch::from_blob(Q + (h * m + q0) * d, {rows, d});
    auto k_head = torch::from_blob(const_cast<float*>(K) + h * key_rows * d, {visible, d});
    at::addmm_out(scores, scores, q_block, k_head.t(), /*beta=*/0, /*alpha=*/scale);
    // Causal mask: query i of the block sees keys up to slot before + q0 + i (earlier chunks'
    // slots, in whatever order slot reuse left them, are all older than every new query).
    // Masked scores are the lowest float, so exp() makes them exactly 0 as in Hugging Face's
    // eager path.
    for (int64_t i = 0; i < rows; ++i) {
      float* row = scratch + i * visible;
      std::fill(row + before + q0 + i + 1, row + visible, lowest);
      if (holes != nullptr) {
        const bool* hole = holes + h * cap;
        for (int64_t j = 0; j < before; ++j) {
          if (hole[j]) row[j] = lowest;
        }
      }
    }
    at::_softmax_out(scores, scores, 1, false);
    auto v_head = torch::from_blob(values + h * cap * d, {visible, d});
    auto o_block = torch::from_blob(O + q0 * H * d + h * d, {rows, d}, {H * d, 1});
    at::mm_out(o_block, scores, v_head);
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = scratch + i * visible;
      if (recv != nullptr) {
        double* acc = recv + h * n;
        for (int64_t j = 0; j < visible; ++j) acc[j] += row[j];
      }
      if (last != nullptr && q0 + i >= first_kept_row) {
        std::memcpy(last + (h * r + q0 + i - first_kept_row) * n, row, visible * sizeof(float));
      }
    }
  };
  if (recv != nullptr) {
    // A head's blocks add into one accumulator row: one thread per head.
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      std::vector<float> scratch(std::min(block, m) * n);
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t b = 0; b < blocks; ++b) attend_block(h, b * block, scratch.data());
      }
    });
  } else {
    // Tasks in head-major order: the pool's contiguous split gives each thread whole heads, so
    // the short early blocks and long late blocks balance.
    at::parallel_for(0, H * blocks, 1, [&](int64_t a, int64_t b) {
      std::vector<float> scratch(std::min(block, m) * n);
      for (int64_t task = a; task < b; ++task) {
        attend_block(task / blocks, (task % blocks) * block, scratch.data());
      }
    });
  }
  *q_out = q;
  *keys_out = attended;
  return out;
}

}  // namespace kvgrid
