// The KV cache's storage type, a run axis of its own beside the eviction policy (grid key
// `kv_dtype`, CLI --kv-dtype). `model` stores K/V in the model's dtype; `int8`, `int4` and `int2`
// quantise them as KIVI does (docs/kv-policies.md §4): keys per channel in groups of `group`
// consecutive tokens, values per token in groups of `group` channels, the newest `residual`
// tokens kept in full precision. Text: "model" | "int4" | "int2:group=32,residual=128". No torch.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvgrid {

struct KvDtype {
  int bits = 0;            // 0: the model's dtype (no quantisation); else 8, 4 or 2
  int64_t group = 32;      // G: tokens per key group, channels per value group
  int64_t residual = 128;  // R: full-precision recent tokens (a multiple of G)

  bool quantized() const { return bits != 0; }
  // Canonical text: "model", or "int<bits>" with ":group=..,residual=.." only where they differ
  // from the defaults (KIVI's paper setting G = 32, R = 128).
  std::string ToString() const;
  bool operator==(const KvDtype& o) const {
    return bits == o.bits && (bits == 0 || (group == o.group && residual == o.residual));
  }
  bool operator!=(const KvDtype& o) const { return !(*this == o); }
};

// Parses and validates the text (errors name the offending part).
absl::StatusOr<KvDtype> ParseKvDtype(const std::string& text);

// OK when `kv` can quantise heads of `head_dim` channels (G divides the head dimension).
absl::Status CheckKvDtypeFitsHead(const KvDtype& kv, int64_t head_dim);

}  // namespace kvgrid
