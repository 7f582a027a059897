// libFuzzer target for the safetensors reader: any byte image must give tensors whose byte ranges
// lie inside the data section and match dtype x shape, or an error — never a crash, a hang or an
// exception. Build: -DKVGRID_BUILD_FUZZERS=ON with clang (scripts/fuzz.sh); the corpus in
// tests/engine/safetensors-corpus also replays in model_files_test on every build.
#include <cstddef>
#include <cstdint>

#include "model/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t data_offset = 0;
  auto tensors = kvgrid::ParseSafetensorsBuffer(data, size, "fuzz.safetensors", &data_offset);
  if (!tensors.ok()) return 0;
  if (data_offset > size) __builtin_trap();
  const uint64_t data_size = size - data_offset;
  for (const auto& [name, info] : *tensors) {
    if (info.end < info.begin || info.end > data_size) __builtin_trap();
    if (info.end - info.begin !=
        static_cast<uint64_t>(info.numel()) * static_cast<uint64_t>(kvgrid::StDtypeSize(info.dtype))) {
      __builtin_trap();
    }
  }
  return 0;
}
