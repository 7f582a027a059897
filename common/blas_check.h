// The BLAS kvgrid's matrix products run on, as the process found it, and the one correction
// kvgrid makes to it: OpenBLAS's dynamic dispatch falling back to its generic kernels on a CPU it
// does not recognise (Debian's OpenBLAS 0.3.21 on Intel family 6 model 207 picks "Prescott": fp32
// GEMM 34 instead of ~200 GFLOP/s). No torch; OpenBLAS is looked up at run time (dlsym), so any
// other BLAS simply reports itself as unknown.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvgrid {

struct BlasInfo {
  bool openblas = false;       // OpenBLAS's query functions were found in the process
  std::string config;          // openblas_get_config(), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... Haswell"
  std::string core;            // openblas_get_corename(), e.g. "Haswell", "SkylakeX", "Prescott"
  int threads = 0;             // openblas_get_num_threads()
  std::string corrected_from;  // the core OpenBLAS chose before kvgrid restarted itself ("" if not)
};

BlasInfo ReadBlasInfo();

// The OPENBLAS_CORETYPE to use instead of `core` on this CPU: "SKYLAKEX" when the CPU has
// AVX-512 F/BW/DQ/VL and `core`'s kernels do not use it (generic "Prescott", or AVX2 "Haswell"/
// "Zen" as OpenBLAS 0.3.21 picks for Zen 4), "HASWELL" on an AVX2 + FMA CPU whose `core` uses
// neither; "" when `core` is right (or the CPU has neither, or `core` is empty).
std::string BetterOpenBlasCore(const std::string& core);

// Call first in main(), before any thread starts. When OpenBLAS chose a generic core on a CPU
// with AVX2/AVX-512, logs one line to stderr and re-executes the program (/proc/self/exe, same
// argv) with OPENBLAS_CORETYPE set, since OpenBLAS picks its kernels when it is loaded. Does
// nothing when KVGRID_BLAS_CORETYPE=keep, or after one restart (KVGRID_BLAS_RESTARTED). Returns
// only when no restart happened (or exec failed, which is logged).
void EnsureBlasUsesCpuFeatures(char** argv);

// {"blas": config, "blas_core": core, "blas_threads": n, "blas_core_corrected_from": ...} for
// every result's environment and the report footer.
nlohmann::json BlasEnvironment();

}  // namespace kvgrid
