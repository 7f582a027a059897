// libFuzzer target for the restricted state-dict unpickler (data.pkl of pytorch_model.bin): any
// byte string must give tensors whose views lie inside their storages, or an error — never a
// crash, a hang, an exception or unbounded memory. Build: -DKVGRID_BUILD_FUZZERS=ON with clang
// (scripts/fuzz.sh); the corpus in tests/engine/state_dict_pickle-corpus also replays in
// checkpoint_files_test on every build.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "model/checkpoint/state_dict_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tensors = kvgrid::ParseStateDictPickle(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/pytorch_model.bin");
  if (!tensors.ok()) return 0;
  for (const auto& t : *tensors) {
    if (t.shape.size() != t.strides.size() || t.storage_offset < 0 || t.storage_numel < 0) __builtin_trap();
    unsigned __int128 last = static_cast<unsigned __int128>(t.storage_offset);
    bool empty = false;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] < 0 || t.strides[d] < 0) __builtin_trap();
      if (t.shape[d] == 0) empty = true;
      else last += static_cast<unsigned __int128>(t.shape[d] - 1) * static_cast<unsigned __int128>(t.strides[d]);
    }
    if (!empty && last >= static_cast<unsigned __int128>(t.storage_numel)) __builtin_trap();
  }
  return 0;
}
