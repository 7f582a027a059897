// Run-time CPU feature checks for the hand-vectorised CPU kernels (cpu_gemv, cpu_packed_attention),
// which compile their AVX2 paths with __attribute__((target)) and pick them only where the CPU has
// the instructions, so one binary serves any x86-64 machine.
#pragma once

// The target attribute of those AVX2 paths: exactly the features CpuHasAvx2FmaF16c() checks.
#if defined(__x86_64__)
#define KVGRID_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace kvgrid {

inline bool CpuHasAvx2FmaF16c() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

}  // namespace kvgrid
