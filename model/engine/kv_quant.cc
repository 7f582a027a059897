#include "model/engine/kv_quant.h"

#include <algorithm>
#include <cmath>

namespace kvgrid {

void QuantizeGroup(const float* x, int64_t x_stride, int64_t n, int bits, uint8_t* codes,
                   int64_t code_stride, float* scale, float* zero) {
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * x_stride]);
    hi = std::max(hi, x[i * x_stride]);
  }
  const float levels = static_cast<float>((1 << bits) - 1);
  const float s = (hi - lo) / levels;
  *scale = s;
  *zero = lo;
  for (int64_t i = 0; i < n; ++i) {
    if (s == 0.0f) {  // constant group: 0/0 in the reference, 0 on CUDA (x̂ = m)
      codes[i * code_stride] = 0;
      continue;
    }
    // True division, clamp, then round half to even (the default rounding mode, as torch.round):
    // adding and subtracting 2^23 rounds a float in [0, 2^23) to an integer in that mode, exactly
    // as std::nearbyint does, without a libm call per code (no -ffast-math here to fold it away).
    const float t = std::clamp((x[i * x_stride] - lo) / s, 0.0f, levels);
    constexpr float kTwo23 = 8388608.0f;
    codes[i * code_stride] = static_cast<uint8_t>((t + kTwo23) - kTwo23);
  }
}

void PackCodes(const uint8_t* codes, int64_t n, int bits, uint32_t* words) {
  const int64_t per_word = 32 / bits;
  for (int64_t w = 0; w < n / per_word; ++w) {
    uint32_t word = 0;
    for (int64_t j = 0; j < per_word; ++j) {
      word |= static_cast<uint32_t>(codes[w * per_word + j]) << (bits * j);
    }
    words[w] = word;
  }
}

}  // namespace kvgrid
