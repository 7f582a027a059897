// libFuzzer target for the grid parser: any input must give a Grid or an error, never a crash,
// a hang or an exception. Build: CC=clang CXX=clang++ cmake -DKVGRID_BUILD_FUZZERS=ON ...;
// run: build/tests/grid/grid_fuzz tests/grid/corpus -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string>

#include "coordinator/grid/grid.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto grid = kvgrid::ParseGridYaml(text, "fuzz.yaml");
  if (grid.ok() && grid->runs.size() != grid->run_keys.size()) __builtin_trap();
  return 0;
}
