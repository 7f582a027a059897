// KIVI's asymmetric quantiser and its bit packing (docs/kv-policies.md §4.1; jy-yuan/KIVI
// quant/new_pack.py), torch-free. One group of n numbers with B = 2^bits - 1 levels:
//   m = min, s = (max - m) / B, q = round-half-even(clamp((x - m) / s, 0, B)), x̂ = q * s + m;
// a constant group (s == 0) gets q = 0, so x̂ = m exactly. Codes pack into uint32 words,
// 32 / bits per word, little end first: code j of a word sits at bits [bits*j, bits*j + bits).
#pragma once

#include <cstdint>

namespace kvgrid {

// Quantises x[i * x_stride], i < n, as one group: codes[i * code_stride] in [0, 2^bits - 1],
// *scale = s, *zero = m (float32 arithmetic; KIVI's reference runs it in the model's fp16).
void QuantizeGroup(const float* x, int64_t x_stride, int64_t n, int bits, uint8_t* codes,
                   int64_t code_stride, float* scale, float* zero);

// Packs n codes (n a multiple of 32 / bits) into n * bits / 32 words.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint32_t* words);

// Code i of a packed row.
inline uint32_t CodeAt(const uint32_t* words, int64_t i, int bits) {
  const int64_t per_word = 32 / bits;
  return (words[i / per_word] >> (bits * (i % per_word))) & ((1u << bits) - 1u);
}

}  // namespace kvgrid
