// Realistic fake results for report tests: a small grid (streaming and sliding perplexity,
// generation at two prompt lengths) with per-token NLLs, per-repeat timings, memory, and one
// failed run. Deterministic. The real grid-on-fixture-model test needs the engine (lead's).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <stdexcept>

#include "core/policy_spec.h"
#include "core/run_result.h"
#include "core/run_spec.h"

namespace kvgrid::reports::testing {

// A fake run's policy from its text (the fakes name only valid policies).
inline PolicySpec PolicyOf(const std::string& text) {
  absl::StatusOr<PolicySpec> spec = ParsePolicySpec(text);
  if (!spec.ok()) throw std::invalid_argument(std::string(spec.status().message()));
  return *spec;
}

struct FakeRun {
  RunSpec spec;
  bool fails = false;
  std::string error;  // when fails
  RunResult result;   // when !fails
};

inline constexpr const char* kFakeExperiment = "fake-grid";
inline constexpr const char* kFakeGridYaml =
    "name: fake-grid\n"
    "model: {id: tests/fixtures/models/tiny-neox-pythia-like, revision: main, dtype: float32}\n"
    "device: cpu\n";

inline nlohmann::json FakeEnvironment() {
  return {{"device", "cpu"},        {"device_name", "Fake CPU @ 2.0GHz"},
          {"libtorch_version", "1.13.0"}, {"dtype", "float32"},
          {"threads", 2},           {"build_type", "Release"},
          {"git_commit", "abcdef123456"}, {"host", "testhost"}};
}

// A tiny deterministic pseudo-random sequence in [0, 1).
inline double Noise(uint64_t i, uint64_t salt) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (salt * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<double>(x % 100000) / 100000.0;
}

inline RunSpec BaseSpec() {
  RunSpec s;
  s.model.id = "tests/fixtures/models/tiny-neox-pythia-like";
  s.model.revision = "main";
  s.model.dtype = "float32";
  s.device = "cpu";
  s.repeats = 5;
  s.warmup = 2;
  s.threads = 2;
  return s;
}

// Streaming PPL with `capacity` cache slots (0 = full) and `sinks` sink tokens: window-only
// collapses once the stream is longer than the window; sinks hold.
inline FakeRun StreamingRun(const std::string& policy, int64_t capacity, int64_t sinks,
                            uint64_t salt) {
  FakeRun r;
  r.spec = BaseSpec();
  r.spec.workload = "perplexity";
  r.spec.policy = PolicyOf(policy);
  r.spec.perplexity.protocol = "streaming";
  r.spec.perplexity.max_tokens = 512;
  const int n = 511;  // token 0 is never scored
  std::vector<double> nll;
  for (int i = 0; i < n; ++i) {
    double v = 3.4 + 1.2 * Noise(i, salt);
    if (capacity > 0 && i + 1 > capacity) v += sinks > 0 ? 0.15 : 2.5;
    nll.push_back(v);
  }
  double mean = 0;
  for (double v : nll) mean += v;
  mean /= n;
  int64_t kv_tokens = capacity > 0 ? capacity + 1 : 512;
  r.result.AddMetric("ppl", std::exp(mean), "");
  r.result.AddMetric("nll_mean", mean, "");
  r.result.AddMetric("scored_tokens", n, "tokens");
  r.result.AddMetric("kv_tokens_max", static_cast<double>(kv_tokens), "tokens");
  r.result.AddMetric("kv_bytes_peak", kv_tokens * 2.0 * 2 * 4 * 16 * 4, "bytes");
  r.result.AddMetric("kv_bytes_end", (kv_tokens - 1) * 2.0 * 2 * 4 * 16 * 4, "bytes");
  r.result.AddMetric("scoring_ms", 0.0, "ms");
  r.result.AddMetric("wall_ms", 1234.5 + salt, "ms");
  r.result.samples.push_back({"nll", "nats", nll});
  r.result.environment = FakeEnvironment();
  return r;
}

inline FakeRun SlidingRun() {
  FakeRun r;
  r.spec = BaseSpec();
  r.spec.workload = "perplexity";
  r.spec.policy = PolicyOf("full");
  r.spec.perplexity.protocol = "sliding";
  r.spec.perplexity.max_length = 128;
  r.spec.perplexity.stride = 64;
  r.spec.perplexity.max_tokens = 1024;
  r.result.AddMetric("ppl", 41.237, "");
  r.result.AddMetric("nll_mean", std::log(41.237), "");
  r.result.AddMetric("ppl_stderr", 0.875, "");
  r.result.AddMetric("scored_tokens", 1023, "tokens");
  r.result.AddMetric("wall_ms", 812.0, "ms");
  r.result.environment = FakeEnvironment();
  return r;
}

// Generation timing with `kv_tokens` cache slots at the end of prefill.
inline FakeRun GenerationRun(const std::string& policy, int64_t prompt, int64_t kv_tokens,
                             double ttft_base, double tpot_base, uint64_t salt) {
  FakeRun r;
  r.spec = BaseSpec();
  r.spec.workload = "generation";
  r.spec.policy = PolicyOf(policy);
  r.spec.generation.prompt_tokens = prompt;
  r.spec.generation.new_tokens = 16;
  std::vector<double> ttft, tpot, steps;
  for (int i = 0; i < 5; ++i) {
    ttft.push_back(ttft_base * (1 + 0.1 * Noise(i, salt)));
    tpot.push_back(tpot_base * (1 + 0.1 * Noise(i, salt + 7)));
    for (int k = 0; k < 15; ++k) steps.push_back(tpot.back() * (0.95 + 0.1 * Noise(k, salt + i)));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double t = median(ttft), p = median(tpot);
  r.result.AddMetric("ttft_ms", t, "ms");
  r.result.AddMetric("tpot_ms", p, "ms");
  r.result.AddMetric("throughput_tok_s", 16 / ((t + 15 * p) / 1000), "tok/s");
  r.result.AddMetric("total_throughput_tok_s", (prompt + 16) / ((t + 15 * p) / 1000), "tok/s");
  r.result.AddMetric("prefill_tok_s", prompt / (t / 1000), "tok/s");
  r.result.Add(metric::kPeakMemoryBytes, 300.0 * 1048576 + prompt * 4096.0 + salt);  // CPU: the process RSS
  r.result.AddMetric("kv_bytes_peak", (kv_tokens + 16) * 2.0 * 2 * 4 * 16 * 4, "bytes");
  r.result.AddMetric("kv_bytes_end", (kv_tokens + 16) * 2.0 * 2 * 4 * 16 * 4, "bytes");
  r.result.AddMetric("scoring_ms", policy == "full" ? 0.0 : 0.5, "ms");
  r.result.AddMetric("tokenize_ms", 0.3, "ms");
  r.result.samples.push_back({"ttft_ms", "ms", ttft});
  r.result.samples.push_back({"tpot_ms", "ms", tpot});
  r.result.samples.push_back({"decode_step_ms", "ms", steps});
  r.result.environment = FakeEnvironment();
  return r;
}

inline const char* kStreamingSinks60 = "streaming_llm:sink_tokens=4,window=60";
inline const char* kStreamingSinks124 = "streaming_llm:sink_tokens=4,window=124";
inline const char* kWindow64 = "window:window=64";
inline const char* kWindow128 = "window:window=128";
inline const char* kSnapkv32 = "snapkv:budget=32,interval=0,kernel=7,pooling=max,window=8";
inline const char* kTova32 = "tova:cache_size=32";
inline const char* kFailError = "worker testhost:1:cpu: engine error: out of memory allocating 64 MiB";

inline std::vector<FakeRun> FakeGrid() {
  std::vector<FakeRun> runs;
  // Deliberately not in report order: the report sorts rows (full first).
  runs.push_back(StreamingRun(kStreamingSinks60, 64, 4, 1));
  runs.push_back(StreamingRun("full", 0, 0, 2));
  runs.push_back(StreamingRun(kWindow64, 64, 0, 3));
  runs.push_back(StreamingRun(kStreamingSinks124, 128, 4, 4));
  runs.push_back(StreamingRun(kWindow128, 128, 0, 5));
  runs.push_back(SlidingRun());
  for (int64_t prompt : {64, 128}) {
    runs.push_back(GenerationRun(kSnapkv32, prompt, 32, 2.0 + prompt / 64.0, 1.1, 10 + prompt));
    runs.push_back(GenerationRun("full", prompt, prompt, 2.0 + prompt / 64.0, 1.0, 20 + prompt));
    runs.push_back(GenerationRun(kStreamingSinks60, prompt, 64, 2.0 + prompt / 64.0, 0.9,
                                 30 + prompt));
  }
  FakeRun failed;
  failed.spec = BaseSpec();
  failed.spec.workload = "generation";
  failed.spec.policy = PolicyOf(kTova32);
  failed.spec.generation.prompt_tokens = 128;
  failed.spec.generation.new_tokens = 16;
  failed.fails = true;
  failed.error = kFailError;
  runs.push_back(failed);
  return runs;
}

}  // namespace kvgrid::reports::testing
