#include "model/engine/cpu_packed_attention.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <vector>

#include "model/engine/cpu_features.h"

namespace kvgrid {
namespace {

// ---- portable: unpack a row into floats, then plain loops ----

// Unpacks one row of `words` packed codes into floats (compile-time shifts: no division per code).
template <int kBits>
inline void UnpackRow(const uint32_t* row, int64_t words, float* out) {
  constexpr int kPerWord = 32 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  for (int64_t w = 0; w < words; ++w) {
    const uint32_t word = row[w];
    for (int j = 0; j < kPerWord; ++j) out[w * kPerWord + j] = static_cast<float>((word >> (kBits * j)) & kMask);
  }
}

constexpr int64_t kMaxDim = 512;  // head_dim bound of the vector path's stack buffers

// One row's codes as floats: on the stack up to kMaxDim channels, else on the heap.
class CodeBuffer {
 public:
  explicit CodeBuffer(int64_t d) : data_(d <= kMaxDim ? stack_ : (heap_.resize(d), heap_.data())) {}
  float* data() { return data_; }

 private:
  float stack_[kMaxDim];
  std::vector<float> heap_;
  float* data_;
};

template <int kBits>
void KeyScoresPortable(const uint32_t* rows, int64_t n, int64_t d, const float* qs, float qz,
                       float scale, float* scores) {
  const int64_t W = d * kBits / 32;
  CodeBuffer buffer(d);
  float* codes = buffer.data();
  for (int64_t e = 0; e < n; ++e) {
    UnpackRow<kBits>(rows + e * W, W, codes);
    float dot = qz;
    for (int64_t c = 0; c < d; ++c) dot += qs[c] * codes[c];
    scores[e] = dot * scale;
  }
}

template <int kBits>
void ValueSumPortable(const float* p, const uint32_t* rows, int64_t n, int64_t d, int64_t G,
                      const float* scale, const float* zero, float* out) {
  const int64_t W = d * kBits / 32, groups = d / G;
  CodeBuffer buffer(d);
  float* codes = buffer.data();
  for (int64_t t = 0; t < n; ++t) {
    UnpackRow<kBits>(rows + t * W, W, codes);
    for (int64_t g = 0; g < groups; ++g) {
      const float ps = p[t] * scale[t * groups + g], pz = p[t] * zero[t * groups + g];
      for (int64_t c = g * G; c < (g + 1) * G; ++c) out[c] += ps * codes[c] + pz;
    }
  }
}

// ---- AVX2/FMA: 8 uint32 lanes per chunk of a row ----
// int8 and int4 load 8 words (a word's 4 or 8 codes in one lane); int2 loads 4 words widened to
// 8 lanes of 16 bits (8 codes each). Either way lane l of chunk k holds channels
// k*8*P + l*P + j, j < P (P = 4 for int8, else 8), code j at bits [kBits*j, kBits*j + kBits).
constexpr int PerLane(int bits) { return bits == 8 ? 4 : 8; }
template <int kBits>
constexpr int kPerLane = PerLane(kBits);
template <int kBits>
constexpr int kWordsPerChunk = kBits == 2 ? 4 : 8;

bool Fits(int64_t d, int bits, int64_t group) {
  return (bits == 2 || bits == 4 || bits == 8) && d <= kMaxDim && d % (8 * PerLane(bits)) == 0 &&
         (group == 0 || group % PerLane(bits) == 0);
}

#if defined(__x86_64__)
template <int kBits>
KVGRID_TARGET_AVX2 inline __m256i LoadChunk(const uint32_t* words) {
  if constexpr (kBits == 2) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words)));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words));
  }
}

KVGRID_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int kBits>
KVGRID_TARGET_AVX2 void KeyScoresAvx2(const uint32_t* rows, int64_t n, int64_t d, const float* qs,
                               float qz, float scale, float* scores) {
  constexpr int P = kPerLane<kBits>;
  const int64_t W = d * kBits / 32, chunks = d / (8 * P);
  // qs in lane order: qp[(k*P + j)*8 + l] = qs[k*8*P + l*P + j].
  alignas(32) float qp[kMaxDim];
  for (int64_t k = 0; k < chunks; ++k) {
    for (int j = 0; j < P; ++j) {
      for (int l = 0; l < 8; ++l) qp[(k * P + j) * 8 + l] = qs[k * 8 * P + l * P + j];
    }
  }
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  for (int64_t e = 0; e < n; ++e) {
    const uint32_t* row = rows + e * W;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t k = 0; k < chunks; ++k) {
      __m256i v = LoadChunk<kBits>(row + k * kWordsPerChunk<kBits>);
      const float* q = qp + k * P * 8;
      for (int j = 0; j < P; j += 2) {
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), _mm256_load_ps(q + j * 8), a0);
        v = _mm256_srli_epi32(v, kBits);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), _mm256_load_ps(q + j * 8 + 8), a1);
        v = _mm256_srli_epi32(v, kBits);
      }
    }
    scores[e] = (qz + Sum8(_mm256_add_ps(a0, a1))) * scale;
  }
}

template <int kBits>
KVGRID_TARGET_AVX2 void ValueSumAvx2(const float* p, const uint32_t* rows, int64_t n, int64_t d, int64_t G,
                              const float* scale, const float* zero, float* out) {
  constexpr int P = kPerLane<kBits>;
  constexpr int64_t kMaxChunks = kMaxDim / (8 * P);
  const int64_t W = d * kBits / 32, chunks = d / (8 * P), groups = d / G;
  // Lane l of chunk k lies in one value group (G is a multiple of P): its index, for the gathers.
  __m256i group_of[kMaxChunks];
  for (int64_t k = 0; k < chunks; ++k) {
    alignas(32) int32_t idx[8];
    for (int l = 0; l < 8; ++l) idx[l] = static_cast<int32_t>((k * 8 * P + l * P) / G);
    group_of[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
  }
  __m256 acc[kMaxChunks * P], acc_zero[kMaxChunks];
  for (int64_t i = 0; i < chunks * P; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < chunks; ++k) acc_zero[k] = _mm256_setzero_ps();
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  for (int64_t t = 0; t < n; ++t) {
    const uint32_t* row = rows + t * W;
    const __m256 pt = _mm256_set1_ps(p[t]);
    for (int64_t k = 0; k < chunks; ++k) {
      const __m256 ps = _mm256_mul_ps(pt, _mm256_i32gather_ps(scale + t * groups, group_of[k], 4));
      acc_zero[k] = _mm256_fmadd_ps(pt, _mm256_i32gather_ps(zero + t * groups, group_of[k], 4), acc_zero[k]);
      __m256i v = LoadChunk<kBits>(row + k * kWordsPerChunk<kBits>);
      for (int j = 0; j < P; ++j) {
        acc[k * P + j] = _mm256_fmadd_ps(ps, _mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), acc[k * P + j]);
        v = _mm256_srli_epi32(v, kBits);
      }
    }
  }
  for (int64_t k = 0; k < chunks; ++k) {
    alignas(32) float zl[8], al[8];
    _mm256_store_ps(zl, acc_zero[k]);
    for (int j = 0; j < P; ++j) {
      _mm256_store_ps(al, acc[k * P + j]);
      for (int l = 0; l < 8; ++l) out[k * 8 * P + l * P + j] += al[l] + zl[l];
    }
  }
}
#endif  // __x86_64__

bool UseAvx2(int64_t d, int bits, int64_t group, PackedKernel kernel) {
  return kernel == PackedKernel::kBest && CpuHasAvx2FmaF16c() && Fits(d, bits, group);
}

}  // namespace

bool PackedKernelIsVectorised(int64_t d, int bits, int64_t group) {
  return UseAvx2(d, bits, group, PackedKernel::kBest);
}

void PackedKeyScores(const uint32_t* rows, int64_t n, int64_t d, int bits, const float* qs, float qz,
                     float scale, float* scores, PackedKernel kernel) {
#if defined(__x86_64__)
  if (UseAvx2(d, bits, 0, kernel)) {
    switch (bits) {
      case 2: return KeyScoresAvx2<2>(rows, n, d, qs, qz, scale, scores);
      case 4: return KeyScoresAvx2<4>(rows, n, d, qs, qz, scale, scores);
      default: return KeyScoresAvx2<8>(rows, n, d, qs, qz, scale, scores);
    }
  }
#endif
  switch (bits) {
    case 2: return KeyScoresPortable<2>(rows, n, d, qs, qz, scale, scores);
    case 4: return KeyScoresPortable<4>(rows, n, d, qs, qz, scale, scores);
    default: return KeyScoresPortable<8>(rows, n, d, qs, qz, scale, scores);
  }
}

void PackedValueSum(const float* p, const uint32_t* rows, int64_t n, int64_t d, int bits, int64_t group,
                    const float* scale, const float* zero, float* out, PackedKernel kernel) {
#if defined(__x86_64__)
  if (UseAvx2(d, bits, group, kernel)) {
    switch (bits) {
      case 2: return ValueSumAvx2<2>(p, rows, n, d, group, scale, zero, out);
      case 4: return ValueSumAvx2<4>(p, rows, n, d, group, scale, zero, out);
      default: return ValueSumAvx2<8>(p, rows, n, d, group, scale, zero, out);
    }
  }
#endif
  switch (bits) {
    case 2: return ValueSumPortable<2>(p, rows, n, d, group, scale, zero, out);
    case 4: return ValueSumPortable<4>(p, rows, n, d, group, scale, zero, out);
    default: return ValueSumPortable<8>(p, rows, n, d, group, scale, zero, out);
  }
}

}  // namespace kvgrid
