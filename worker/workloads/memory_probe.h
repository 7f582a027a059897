// Peak-memory probes per measured phase: the CUDA caching allocator's peak allocated/reserved
// bytes (as torch.cuda.max_memory_allocated() reports, reset per phase) and, on CPU, the
// process's peak resident set (VmHWM, reset through /proc/self/clear_refs).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace kvgrid {

struct MemoryPeak {
  int64_t allocated = -1;  // CUDA only
  int64_t reserved = -1;   // CUDA only
  int64_t rss = -1;        // CPU: process peak RSS in the phase
};

class MemoryProbe {
 public:
  explicit MemoryProbe(torch::Device device) : device_(device) {}
  void ResetPeak();       // start of a phase
  MemoryPeak ReadPeak();  // end of a phase (synchronises the device first)
  static void Synchronize(torch::Device device);
  static bool CudaCompiledIn();

 private:
  torch::Device device_;
};

}  // namespace kvgrid
