#include "model/engine/cpu_gemv.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "model/engine/cpu_features.h"

namespace kvgrid {
namespace {

// ---- portable row dot products ----
inline float ToFloat(float v) { return v; }
inline float ToFloat(c10::Half v) { return static_cast<float>(v); }
inline float ToFloat(c10::BFloat16 v) { return static_cast<float>(v); }

template <typename T>
float DotPortable(const T* row, const float* x, int64_t n) {
  float acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) acc[j] += ToFloat(row[i + j]) * x[i + j];
  }
  float s = acc[0] + acc[1] + acc[2] + acc[3];
  for (; i < n; ++i) s += ToFloat(row[i]) * x[i];
  return s;
}

// ---- AVX2 + FMA + F16C row dot products (8 floats per register, 4 independent chains) ----
#if defined(__x86_64__)
KVGRID_TARGET_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
KVGRID_TARGET_AVX2 inline __m256 Load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
KVGRID_TARGET_AVX2 inline __m256 Load8(const c10::BFloat16* p) {
  __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

template <typename T>
KVGRID_TARGET_AVX2 float DotAvx2(const T* row, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load8(row + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load8(row + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load8(row + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load8(row + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load8(row + i), _mm256_loadu_ps(x + i), a0);
  __m256 s8 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_hadd_ps(s4, s4);
  s4 = _mm_hadd_ps(s4, s4);
  float s = _mm_cvtss_f32(s4);
  for (; i < n; ++i) s += ToFloat(row[i]) * x[i];
  return s;
}

// out[0..d) = sum_j p[j] * V[j * d ..]: 64 columns at a time in 8 independent accumulators (one
// pass over V for d <= 64, as in Pythia's heads), so the FMAs are not latency-bound.
KVGRID_TARGET_AVX2 void WeightedSumAvx2(const float* p, const float* V, int64_t n, int64_t d, float* out) {
  int64_t e = 0;
  for (; e + 64 <= d; e += 64) {
    __m256 a[8];
    for (auto& r : a) r = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      const __m256 w = _mm256_set1_ps(p[j]);
      const float* v = V + j * d + e;
      for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * r), a[r]);
    }
    for (int r = 0; r < 8; ++r) _mm256_storeu_ps(out + e + 8 * r, a[r]);
  }
  for (; e + 8 <= d; e += 8) {
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(V + j * d + e), a0);
    _mm256_storeu_ps(out + e, a0);
  }
  for (; e < d; ++e) {
    float acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += p[j] * V[j * d + e];
    out[e] = acc;
  }
}

#endif

template <typename T>
void GemvRows(const T* w, const float* x, const float* b, float* y, int64_t out, int64_t in) {
  // ~64 KiB of weights per task keeps the split fine enough for 2..64 threads.
  const int64_t grain = std::max<int64_t>(1, (64 * 1024) / (in * static_cast<int64_t>(sizeof(T))));
  at::parallel_for(0, out, grain, [&](int64_t begin, int64_t end) {
#if defined(__x86_64__)
    if (CpuHasAvx2FmaF16c()) {
      for (int64_t o = begin; o < end; ++o) y[o] = DotAvx2(w + o * in, x, in) + (b ? b[o] : 0.f);
      return;
    }
#endif
    for (int64_t o = begin; o < end; ++o) y[o] = DotPortable(w + o * in, x, in) + (b ? b[o] : 0.f);
  });
}

}  // namespace

void AttentionScoresF32(const float* q, const float* K, int64_t n, int64_t d, float scale,
                        float* scores) {
#if defined(__x86_64__)
  if (CpuHasAvx2FmaF16c()) {
    for (int64_t j = 0; j < n; ++j) scores[j] = DotAvx2(K + j * d, q, d) * scale;
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) scores[j] = DotPortable(K + j * d, q, d) * scale;
}

void AttentionWeightedSumF32(const float* p, const float* V, int64_t n, int64_t d, float* out) {
#if defined(__x86_64__)
  if (CpuHasAvx2FmaF16c()) {
    WeightedSumAvx2(p, V, n, d, out);
    return;
  }
#endif
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t e = 0; e < d; ++e) out[e] += p[j] * V[j * d + e];
  }
}

torch::Tensor CpuGemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b) {
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.device().is_cpu(), "CpuGemv: bad weight");
  const int64_t out = w.size(0), in = w.size(1);
  TORCH_CHECK(x.numel() == in, "CpuGemv: x has ", x.numel(), " elements, weight expects ", in);
  torch::Tensor xf = x.to(torch::kFloat32).contiguous();
  torch::Tensor bf = b.defined() ? b.to(torch::kFloat32).contiguous() : torch::Tensor();
  torch::Tensor y = torch::empty({out}, torch::kFloat32);
  const float* xp = xf.data_ptr<float>();
  const float* bp = bf.defined() ? bf.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  switch (w.scalar_type()) {
    case torch::kFloat32: GemvRows(w.data_ptr<float>(), xp, bp, yp, out, in); break;
    case torch::kFloat16: GemvRows(w.data_ptr<c10::Half>(), xp, bp, yp, out, in); break;
    case torch::kBFloat16: GemvRows(w.data_ptr<c10::BFloat16>(), xp, bp, yp, out, in); break;
    default: TORCH_CHECK(false, "CpuGemv: unsupported weight dtype ", w.scalar_type());
  }
  return x.scalar_type() == torch::kFloat32 ? y : y.to(x.scalar_type());
}

}  // namespace kvgrid
