#include "worker/workloads/memory_probe.h"

#include <fstream>
#include <string>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && defined(KVGRID_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#define KVGRID_CUDA 1
#else
#define KVGRID_CUDA 0
#endif

namespace kvgrid {
namespace {

int64_t ReadVmHwmBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

}  // namespace

bool MemoryProbe::CudaCompiledIn() { return KVGRID_CUDA == 1; }

void MemoryProbe::Synchronize(torch::Device device) {
#if KVGRID_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#else
  (void)device;
#endif
}

void MemoryProbe::ResetPeak() {
#if KVGRID_CUDA
  if (device_.is_cuda()) {
    Synchronize(device_);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device_.index());
    return;
  }
#endif
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
}

MemoryPeak MemoryProbe::ReadPeak() {
  MemoryPeak p;
#if KVGRID_CUDA
  if (device_.is_cuda()) {
    Synchronize(device_);
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index());
    p.allocated = stats.allocated_bytes[0].peak;
    p.reserved = stats.reserved_bytes[0].peak;
    return p;
  }
#endif
  p.rss = ReadVmHwmBytes();
  return p;
}

}  // namespace kvgrid
