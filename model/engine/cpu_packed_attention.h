// The two halves of one decode row's attention over KIVI-packed rows (model/engine/kv_quant.h's
// layout: an entry's d codes packed along channels, little end first), read straight from the
// codes with no dequantised copy. Single-threaded: callers split over heads. With AVX2/FMA
// (checked at run time) a row loads as 8 uint32 lanes, lane l holding a run of consecutive
// channels whose codes are peeled off by shifting, so one FMA handles 8 channels; otherwise, or
// where the layout does not split into such lanes, a portable loop does the same arithmetic.
#pragma once

#include <cstdint>

namespace kvgrid {

enum class PackedKernel { kBest, kPortable };  // kPortable: tests compare the two

// scores[e] = scale * (qz + Σ_c qs[c] * code(e, c)) for the n rows at `rows` (d * bits / 32 words
// each): the entries of one key group, whose dequantised key is code * s + m per channel, with
// qs = q ⊙ s and qz = q · m.
void PackedKeyScores(const uint32_t* rows, int64_t n, int64_t d, int bits, const float* qs, float qz,
                     float scale, float* scores, PackedKernel kernel = PackedKernel::kBest);

// out[c] += Σ_t p[t] * (code(t, c) * scale[t * d/G + c/G] + zero[t * d/G + c/G]) over the n rows
// at `rows`: values quantised per entry in groups of G channels.
void PackedValueSum(const float* p, const uint32_t* rows, int64_t n, int64_t d, int bits, int64_t group,
                    const float* scale, const float* zero, float* out,
                    PackedKernel kernel = PackedKernel::kBest);

// Whether kBest takes the vector path for this layout on this CPU (tests check it ran).
bool PackedKernelIsVectorised(int64_t d, int bits, int64_t group);

}  // namespace kvgrid
