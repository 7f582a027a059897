// engine_bench: the engine's speed on this CPU, as a table (a program, not a test).
//
//   build/bench/engine_bench --model DIR [--threads 2] [--repeats 5] [--warmup 2]
//                            [--dtypes float32,float16,bfloat16]
//                            [--cases ttft512,ttft512-generic,ttft2048,tpot0,tpot512]
//
// DIR is any Pythia-shaped checkpoint; for speed work a random one is as good as the real one:
//   build/kvgrid init-random-model --preset pythia-70m --out /tmp/pythia-70m-random
// For float32, float16 and bfloat16 weights it measures, through the same code as `kvgrid bench`
// (worker/workloads/generation_timing): TTFT for 512- and 2048-token prompts, TPOT over 128 new
// tokens from an empty cache (1-token prompt) and after a 512-token prompt; median, spread and
// N (spread: p10-p90 from 10 samples up, else min-max; reports/statistics.h). For float32 it
// also times the 512-token prompt through the generic tensor-op attention path (the fused CPU
// kernels off), side by side. It measures this machine's memory read bandwidth and the time of
// one LM-head matrix-vector product, and prints floors: "weights read per token / bandwidth"
// next to TPOT, and the float32 weight GEMMs of a 512-token prefill alone, timed in the same
// run, next to TTFT at 512.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/blas_check.h"
#include "common/malloc_tuning.h"
#include "model/engine/cpu_gemv.h"
#include "model/engine/gpt_neox.h"
#include "core/policy_spec.h"
#include "reports/statistics.h"
#include "worker/workloads/generation_timing.h"

namespace kvgrid {
namespace {

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sum of p[0..n) with AVX2 (4 chains of 8 floats) when the CPU has it: fast enough to be bound
// by memory, not by the adds.
#if defined(__x86_64__)
__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float x : lanes) s += x;
  for (; i < n; ++i) s += p[i];
  return s;
}
#endif

float Sum(const float* p, int64_t n) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return SumAvx2(p, n);
#endif
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

// Read bandwidth in GB/s: sum a 512 MiB float buffer with the intra-op pool, best of 5.
double MeasureBandwidth() {
  const int64_t n = 128LL * 1024 * 1024;
  torch::Tensor buf = torch::ones({n}, torch::kFloat32);
  const float* p = buf.data_ptr<float>();
  double best = 1e30;
  volatile float sink = 0;
  for (int r = 0; r < 5; ++r) {
    std::vector<float> partial(at::get_num_threads(), 0.f);
    const double t0 = NowMs();
    at::parallel_for(0, n, n / at::get_num_threads(), [&](int64_t b, int64_t e) {
      partial[at::get_thread_num()] += Sum(p + b, e - b);
    });
    best = std::min(best, NowMs() - t0);
    for (float x : partial) sink = sink + x;
  }
  return static_cast<double>(n) * 4 / (best / 1e3) / 1e9;
}

int Main(int argc, char** argv) {
  std::string model_dir;
  int threads = 2, repeats = 5, warmup = 2;
  std::vector<std::string> dtypes = {"float32", "float16", "bfloat16"};
  std::vector<std::string> case_keys = {"ttft512", "ttft512-generic", "ttft2048", "tpot0", "tpot512"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--model") model_dir = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--repeats") repeats = std::atoi(next().c_str());
    else if (a == "--warmup") warmup = std::atoi(next().c_str());
    else if (a == "--dtypes") dtypes = absl::StrSplit(next(), ',');
    else if (a == "--cases") case_keys = absl::StrSplit(next(), ',');
    else {
      std::fprintf(stderr, "usage: engine_bench --model DIR [--threads N] [--repeats N] [--warmup N] "
                           "[--dtypes float32,float16,bfloat16] [--cases ttft512,ttft512-generic,ttft2048,tpot0,tpot512]\n");
      return 2;
    }
  }
  if (model_dir.empty()) { std::fprintf(stderr, "engine_bench: --model DIR is required\n"); return 2; }
  at::set_num_threads(threads);
  const double gbps = MeasureBandwidth();
  std::printf("engine_bench: %s, %d threads, LibTorch %s, repeats %d after %d warm-up\n",
              model_dir.c_str(), at::get_num_threads(), TORCH_VERSION, repeats, warmup);
  std::printf("memory read bandwidth: %.1f GB/s (best of 5, 512 MiB, %d threads)\n\n", gbps, threads);

  auto policy = ParsePolicySpec("full");
  std::printf("| weights | case | metric | median | spread | N | floor |\n");
  std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
  for (const std::string& dtype_string : dtypes) {
    const char* dtype_name = dtype_string.c_str();
    auto dtype = ParseDtype(dtype_string);
    if (!dtype.ok()) { std::fprintf(stderr, "engine_bench: %s\n", dtype.status().ToString().c_str()); return 2; }
    auto model = GptNeoxModel::Load(model_dir, *dtype, torch::Device(torch::kCPU));
    if (!model.ok()) { std::fprintf(stderr, "engine_bench: %s\n", model.status().ToString().c_str()); return 1; }
    const auto& c = (*model)->config();
    // Weights read per decoded token: every layer matrix and the LM head (the embedding table is
    // only indexed).
    const int64_t h = c.hidden_size;
    const int64_t per_token = (c.num_layers * (4 * h * h + 2 * h * c.intermediate_size) +
                               c.vocab_size * h) * torch::elementSize(*dtype);
    const double floor_ms = per_token / (gbps * 1e9) * 1e3;
    // LM-head matrix-vector product alone.
    {
      torch::Tensor w = torch::randn({c.vocab_size, h}).to(*dtype);
      torch::Tensor x = torch::randn({h});
      std::vector<double> ms;
      for (int r = 0; r < 20 + warmup; ++r) {
        const double t0 = NowMs();
        torch::Tensor y = CpuGemv(w, x, torch::Tensor());
        if (r >= warmup) ms.push_back(NowMs() - t0);
      }
      reports::Summary s = reports::Summarize(ms);
      const double bytes = static_cast<double>(w.numel()) * w.element_size();
      std::printf("| %s | LM head gemv %lldx%lld (%.0f MB; %.1f GB/s) | ms | %.3f | %.3f-%.3f | %lld | %.3f |\n",
                  dtype_name, static_cast<long long>(c.vocab_size), static_cast<long long>(h),
                  bytes / 1e6, bytes / (s.median / 1e3) / 1e9, s.median, s.SpreadLow(), s.SpreadHigh(), static_cast<long long>(s.n),
                  bytes / (gbps * 1e9) * 1e3);
    }
    // The weight GEMMs of a 512-token prefill alone (every layer's four linears through
    // torch::linear, float32): the floor under TTFT at 512, measured now, since this VM's
    // GEMM throughput drifts by up to 20% between minutes.
    double gemm_floor_ms = 0;
    if (*dtype == torch::kFloat32 &&
        std::find(case_keys.begin(), case_keys.end(), "ttft512") != case_keys.end()) {
      const int64_t inter = c.intermediate_size, rows = 512;
      const std::vector<std::pair<int64_t, int64_t>> shapes = {{3 * h, h}, {h, h}, {inter, h}, {h, inter}};
      std::vector<torch::Tensor> weights, inputs;
      for (const auto& [out, in] : shapes) {
        weights.push_back(torch::randn({out, in}));
        inputs.push_back(torch::randn({rows, in}));
      }
      std::vector<double> ms;
      for (int r = 0; r < repeats + warmup; ++r) {
        const double t0 = NowMs();
        for (int64_t l = 0; l < c.num_layers; ++l) {
          for (size_t i = 0; i < shapes.size(); ++i) torch::Tensor y = torch::linear(inputs[i], weights[i]);
        }
        if (r >= warmup) ms.push_back(NowMs() - t0);
      }
      reports::Summary s = reports::Summarize(ms);
      gemm_floor_ms = s.median;
      const double gflop = 2.0 * rows * c.num_layers * (4 * h * h + 2 * h * inter) / 1e9;
      std::printf("| %s | weight GEMMs of a 512-token prefill alone (%.1f GFLOP; %.0f GFLOP/s) | ms | %.2f | %.2f-%.2f | %lld |  |\n",
                  dtype_name, gflop, gflop / (s.median / 1e3), s.median, s.SpreadLow(), s.SpreadHigh(),
                  static_cast<long long>(s.n));
    }
    struct Case {
      const char* key;
      const char* name;
      int64_t prompt;
      int64_t new_tokens;
      const MetricDef* metric;
      bool generic_attention = false;
    };
    const MetricDef* kTtft = &metric::kTtftMs;
    const MetricDef* kTpot = &metric::kTpotMs;
    const Case cases[] = {{"ttft512", "TTFT, 512-token prompt", 512, 2, kTtft},
                          {"ttft512-generic", "TTFT, 512-token prompt, generic attention path", 512, 2, kTtft, true},
                          {"ttft2048", "TTFT, 2048-token prompt", 2048, 2, kTtft},
                          {"tpot0", "TPOT, 128 tokens from an empty cache", 1, 129, kTpot},
                          {"tpot512", "TPOT, 128 tokens after a 512-token prompt", 512, 128, kTpot}};
    for (const Case& cs : cases) {
      if (std::find(case_keys.begin(), case_keys.end(), cs.key) == case_keys.end()) continue;
      // The generic path only differs from the fused kernels in float32 compute.
      if (cs.generic_attention && *dtype != torch::kFloat32) continue;
      (*model)->set_fused_cpu_attention(!cs.generic_attention);
      std::vector<int64_t> prompt(cs.prompt);
      for (int64_t i = 0; i < cs.prompt; ++i) prompt[i] = (i * 7919 + 13) % 50000;
      GenerationTimingOptions o;
      o.new_tokens = cs.new_tokens;
      o.repeats = repeats;
      o.warmup = warmup;
      auto r = RunGenerationTiming(**model, prompt, *policy, o);
      if (!r.ok()) { std::fprintf(stderr, "engine_bench: %s\n", r.status().ToString().c_str()); return 1; }
      reports::Summary s = reports::Summarize(r->SamplesOf(*cs.metric));
      // Floor: weights / bandwidth under TPOT; the weight GEMMs alone under TTFT at 512.
      std::string floor_cell;
      if (cs.metric == kTpot) floor_cell = absl::StrFormat("%.2f", floor_ms);
      if (cs.prompt == 512 && cs.metric == kTtft && gemm_floor_ms > 0) {
        floor_cell = absl::StrFormat("%.2f (GEMMs)", gemm_floor_ms);
      }
      std::printf("| %s | %s | ms | %.2f | %.2f-%.2f | %lld | %s |\n", dtype_name, cs.name, s.median,
                  s.SpreadLow(), s.SpreadHigh(), static_cast<long long>(s.n), floor_cell.c_str());
    }
  }
  return 0;
}

}  // namespace
}  // namespace kvgrid

int main(int argc, char** argv) {
  kvgrid::EnsureBlasUsesCpuFeatures(argv);
  kvgrid::RetainFreedMemoryForReuse();
  return kvgrid::Main(argc, argv);
}
