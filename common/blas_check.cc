#include "common/blas_check.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

namespace kvgrid {
namespace {

constexpr const char kRestarted[] = "KVGRID_BLAS_RESTARTED";

template <typename Fn>
Fn Lookup(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

bool CpuHasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

bool CpuHasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

BlasInfo ReadBlasInfo() {
  BlasInfo info;
  auto config = Lookup<char* (*)()>("openblas_get_config");
  auto core = Lookup<char* (*)()>("openblas_get_corename");
  auto threads = Lookup<int (*)()>("openblas_get_num_threads");
  info.openblas = config != nullptr && core != nullptr;
  if (config != nullptr && config() != nullptr) info.config = config();
  if (core != nullptr && core() != nullptr) info.core = core();
  if (threads != nullptr) info.threads = threads();
  if (const char* from = std::getenv(kRestarted)) info.corrected_from = from;
  return info;
}

std::string BetterOpenBlasCore(const std::string& core) {
  // Cores whose kernels use AVX2/FMA (OpenBLAS's corename spellings, compared case-insensitively).
  static const std::set<std::string> kAvx512Cores = {"skylakex", "cooperlake", "sapphirerapids"};
  static const std::set<std::string> kAvx2Cores = {"haswell", "zen", "excavator", "skylakex",
                                                   "cooperlake", "sapphirerapids"};
  std::string c;
  for (char ch : core) c.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
  if (c.empty()) return "";
  // An AVX-512 CPU on AVX2 kernels is a fallback too: OpenBLAS 0.3.21 maps AMD Zen 4 to its
  // Haswell kernels (later releases use the SkylakeX ones); measured on a Zen 4 VM, fp32 TTFT at
  // 512 tokens drops from ~150 to ~100 ms (README "BLAS").
  if (CpuHasAvx512()) return kAvx512Cores.count(c) ? "" : "SKYLAKEX";
  if (CpuHasAvx2()) return kAvx2Cores.count(c) ? "" : "HASWELL";
  return "";
}

void EnsureBlasUsesCpuFeatures(char** argv) {
  const char* keep = std::getenv("KVGRID_BLAS_CORETYPE");
  if (keep != nullptr && std::strcmp(keep, "keep") == 0) return;
  if (std::getenv(kRestarted) != nullptr) return;  // one restart at most
  const BlasInfo info = ReadBlasInfo();
  if (!info.openblas) return;
  const std::string better = BetterOpenBlasCore(info.core);
  if (better.empty()) return;
  std::fprintf(stderr,
               "kvgrid: OpenBLAS chose its '%s' kernels, which do not use this CPU's %s; "
               "restarting with OPENBLAS_CORETYPE=%s (set KVGRID_BLAS_CORETYPE=keep to keep '%s')\n",
               info.core.c_str(), better == "SKYLAKEX" ? "AVX-512" : "AVX2/FMA", better.c_str(),
               info.core.c_str());
  std::fflush(stderr);
  setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
  setenv(kRestarted, info.core.c_str(), 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "kvgrid: restart failed (%s); continuing on OpenBLAS's '%s' kernels\n",
               std::strerror(errno), info.core.c_str());
}

nlohmann::json BlasEnvironment() {
  const BlasInfo info = ReadBlasInfo();
  nlohmann::json j;
  if (!info.openblas) {
    j["blas"] = "unknown (not OpenBLAS)";
    return j;
  }
  j["blas"] = info.config;
  j["blas_core"] = info.core;
  j["blas_threads"] = info.threads;
  if (!info.corrected_from.empty()) j["blas_core_corrected_from"] = info.corrected_from;
  return j;
}

}  // namespace kvgrid
