// Generation timing (worker/workloads/generation_timing) on the pythia-like fixture model: sample
// counts and exact KV bytes, the paired baseline (full timed beside the policy, Δ recomputed from
// the stored samples), the contention guard under a simulated busy machine, and KV bytes with
// eviction, bad options. No assertion is made on a time value other than "> 0".
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/paired_delta.h"
#include "tests/workloads/workload_test_util.h"
#include "worker/workloads/generation_timing.h"

namespace kvgrid {
namespace {

using workload_test::ExpectInvalid;
using workload_test::HasSamples;
using workload_test::kPythiaLike;
using workload_test::Metric;
using workload_test::Model;
using workload_test::Samples;
using workload_test::Spec;
using workload_test::TextIds;

// ---- options and one run ------------------------------------------------------------------

GenerationTimingOptions Timing(PositionMode mode = PositionMode::kOriginal) {
  GenerationTimingOptions o;
  o.new_tokens = 8;
  o.repeats = 2;
  o.warmup = 1;
  o.position_mode = mode;
  o.contention_wait_s = 0;  // tests run side by side; the guard's own tests turn it on
  return o;
}

RunResult Generation(const std::string& policy, const GenerationTimingOptions& o, int64_t prompt) {
  auto r = RunGenerationTiming(Model(kPythiaLike), TextIds(prompt), Spec(policy), o);
  EXPECT_TRUE(r.ok()) << policy << ": " << r.status();
  return r.ok() ? *r : RunResult();
}

TEST(GenerationTiming, SampleCountsAndExactKvBytesOfTheFullCache) {
  const int64_t P = 160, new_tokens = 8, repeats = 2;
  RunResult r = Generation("full", Timing(), P);
  EXPECT_EQ(Samples(r, "ttft_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(r, "tpot_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(r, "throughput_tok_s").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(r, "scoring_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(r, "decode_step_ms").size(), static_cast<size_t>(repeats * (new_tokens - 1)));
  for (const char* name : {"ttft_ms", "tpot_ms", "decode_step_ms", "throughput_tok_s"}) {
    for (double v : Samples(r, name)) EXPECT_GT(v, 0) << name;
  }
  for (const char* name : {"ttft_ms", "tpot_ms", "throughput_tok_s", "total_throughput_tok_s",
                           "prefill_tok_s", "peak_memory_bytes"}) {
    EXPECT_GT(Metric(r, name), 0) << name;
  }
  EXPECT_EQ(Metric(r, "repeats"), repeats);
  // The prompt plus every generated token but the last is fed to the model.
  EXPECT_EQ(Metric(r, "kv_tokens_max"), P + new_tokens - 1);
  // Generate reserves prompt + new_tokens slots per layer up front (KvCache::Reserve), and a
  // full cache never reallocates: exactly layers * 2 (K,V) * heads * head_dim * 4 bytes each.
  const auto& c = Model(kPythiaLike).config();
  const double expected = static_cast<double>(c.num_layers * 2 * c.num_heads * c.head_dim() * 4 *
                                              (P + new_tokens));
  EXPECT_EQ(Metric(r, "kv_bytes_peak"), expected);
  EXPECT_EQ(Metric(r, "kv_bytes_end"), expected);
  EXPECT_EQ(Metric(r, "scoring_ms"), 0);  // no policy, nothing scored
}

TEST(GenerationTiming, PairedBaselineTimesFullBesideThePolicy) {
  const int64_t P = 160, repeats = 2;
  GenerationTimingOptions o = Timing();
  o.paired_baseline = true;
  RunResult sl = Generation("streaming_llm:sink_tokens=4,window=8", o, P);
  EXPECT_EQ(Samples(sl, "ttft_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(sl, "baseline_ttft_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(sl, "baseline_tpot_ms").size(), static_cast<size_t>(repeats));
  EXPECT_EQ(Samples(sl, "baseline_throughput_tok_s").size(), static_cast<size_t>(repeats));
  for (const char* what : {"ttft", "tpot", "throughput"}) {
    const std::string name = absl::StrCat("delta_", what, "_pct");
    const double pct = Metric(sl, name);
    EXPECT_LE(Metric(sl, name + "_ci_low"), pct) << name;
    EXPECT_GE(Metric(sl, name + "_ci_high"), pct) << name;
  }
  // The Δ is the paired one, recomputed from the stored samples.
  const PairedDelta d = PairedRatioDelta(Samples(sl, "tpot_ms"), Samples(sl, "baseline_tpot_ms"));
  EXPECT_DOUBLE_EQ(Metric(sl, "delta_tpot_pct"), d.pct);
  EXPECT_GT(Metric(sl, "baseline_ttft_ms"), 0);
  EXPECT_GT(Metric(sl, "peak_memory_bytes"), 0);  // from its own generation after a heap release
  // The policy's own numbers are its own: the baseline's full cache is not in its KV bytes.
  const auto& c = Model(kPythiaLike).config();
  const double per_slot = static_cast<double>(c.num_layers * 2 * c.num_heads * c.head_dim() * 4);
  EXPECT_LT(Metric(sl, "kv_bytes_end"), per_slot * P);
  // `full` has no baseline of its own; an unpaired run stores none.
  RunResult full = Generation("full", o, P);
  EXPECT_FALSE(HasSamples(full, "baseline_ttft_ms"));
  EXPECT_EQ(full.FindMetric("delta_ttft_pct"), nullptr);
  o.paired_baseline = false;
  RunResult alone = Generation("streaming_llm:sink_tokens=4,window=8", o, P);
  EXPECT_EQ(alone.FindMetric("delta_ttft_pct"), nullptr);
}

// The contention guard, with a simulated busy machine: `busy(g)` says whether the g-th
// generation of the run (warm-ups, probes and both sides of a pair counted) had its threads
// waiting for a CPU; such a generation reports 10 s of run-queue delay.
std::function<double()> SimulatedRunQueue(std::function<bool(int)> busy, int* generations) {
  auto calls = std::make_shared<int>(0);
  auto total = std::make_shared<double>(0);
  return [=] {
    const int call = (*calls)++;
    if (call % 2 == 1 && busy(call / 2)) *total += 10000;  // the end of generation call / 2
    *generations = call / 2 + 1;
    return *total;
  };
}

TEST(GenerationTiming, ARepeatDisturbedByAnotherProgramIsTimedAgainOnceQuiet) {
  GenerationTimingOptions o = Timing();  // 1 warm-up, 2 repeats
  o.paired_baseline = true;
  o.contention_wait_s = 60;
  int generations = 0;
  // 0, 1: the warm-up pair; 2, 3: repeat 0, its policy side disturbed; 4: the probe after the
  // pause (quiet); 5, 6: repeat 0 again; 7, 8: repeat 1.
  o.run_queue_wait_ms = SimulatedRunQueue([](int g) { return g == 2; }, &generations);
  RunResult r = Generation("streaming_llm:sink_tokens=4,window=8", o, 64);
  EXPECT_EQ(generations, 9 + 1);  // + the policy's memory generation
  EXPECT_EQ(Metric(r, "retimed_repeats"), 1);
  EXPECT_EQ(Metric(r, "disturbed_repeats"), 0);
  EXPECT_EQ(Metric(r, "repeats"), 2);
  EXPECT_EQ(Samples(r, "ttft_ms").size(), 2u);
  EXPECT_EQ(Samples(r, "baseline_ttft_ms").size(), 2u);
  EXPECT_EQ(Samples(r, "cpu_wait_pct"), (std::vector<double>{0, 0}));
  EXPECT_NE(r.environment["contention_guard"].get<std::string>().find("up to 60 s"), std::string::npos);
}

TEST(GenerationTiming, TheGuardWaitsForTheMachineAndKeepsWhatItMeasuredWhenItsTimeRunsOut) {
  GenerationTimingOptions o = Timing();
  int generations = 0;
  // Unpaired: 0 warm-up; 1: repeat 0 disturbed; 2, 3: probes still busy; 4: quiet probe;
  // 5: repeat 0 again; 6: repeat 1.
  o.contention_wait_s = 60;
  o.run_queue_wait_ms = SimulatedRunQueue([](int g) { return g >= 1 && g <= 3; }, &generations);
  RunResult r = Generation("full", o, 64);
  EXPECT_EQ(generations, 7);
  EXPECT_EQ(Metric(r, "retimed_repeats"), 1);
  EXPECT_EQ(Metric(r, "disturbed_repeats"), 0);
  // Busy for good: after its time the guard keeps the repeats as measured and counts them.
  o.contention_wait_s = 0.3;
  o.run_queue_wait_ms = SimulatedRunQueue([](int) { return true; }, &generations);
  r = Generation("full", o, 64);
  EXPECT_EQ(Metric(r, "retimed_repeats"), 0);  // never quiet, so nothing was timed again
  EXPECT_EQ(Metric(r, "disturbed_repeats"), 2);
  EXPECT_EQ(Samples(r, "ttft_ms").size(), 2u);
  EXPECT_GT(Metric(r, "cpu_wait_pct"), 100);
  // Off: nothing is re-timed.
  o.contention_wait_s = 0;
  o.run_queue_wait_ms = SimulatedRunQueue([](int) { return true; }, &generations);
  r = Generation("full", o, 64);
  EXPECT_EQ(generations, 3);
  EXPECT_EQ(Metric(r, "retimed_repeats"), 0);
  EXPECT_EQ(Metric(r, "disturbed_repeats"), 2);
  EXPECT_NE(r.environment["contention_guard"].get<std::string>().find("off"), std::string::npos);
}

TEST(GenerationTiming, StreamingLlmEndsWithLessKvThanFull) {
  const int64_t P = 160;
  RunResult full = Generation("full", Timing(PositionMode::kShifted), P);
  RunResult sl = Generation("streaming_llm:sink_tokens=4,window=8", Timing(PositionMode::kShifted), P);
  EXPECT_LT(Metric(sl, "kv_bytes_end"), Metric(full, "kv_bytes_end"));
  // The prompt's forward attends to all P tokens before the policy prunes.
  EXPECT_EQ(Metric(sl, "kv_tokens_max"), P);
  EXPECT_EQ(Samples(sl, "decode_step_ms").size(), 2u * 7u);
}

TEST(GenerationTiming, KvBytesPeakCountsTheStorageHeldBeforeThePrefillCompresses) {
  // With a compressing policy Generate sizes the cache for the prompt only (the full cache
  // reserves prompt + new_tokens); the prompt's forward fills it before SnapKV compresses, and
  // that storage is the peak, not the end state.
  const int64_t P = 160;
  RunResult full = Generation("full", Timing(), P);
  RunResult snap = Generation("snapkv:budget=16,window=4", Timing(), P);
  const auto& c = Model(kPythiaLike).config();
  const double per_slot = static_cast<double>(c.num_layers * 2 * c.num_heads * c.head_dim() * 4);
  EXPECT_EQ(Metric(snap, "kv_bytes_peak"), per_slot * P);
  EXPECT_LT(Metric(snap, "kv_bytes_peak"), Metric(full, "kv_bytes_peak"));
  EXPECT_LT(Metric(snap, "kv_bytes_end"), Metric(snap, "kv_bytes_peak"));
  EXPECT_EQ(Metric(snap, "kv_tokens_max"), P);
}

TEST(GenerationTiming, BadOptionsAreNamed) {
  GenerationTimingOptions o = Timing();
  o.new_tokens = 0;
  ExpectInvalid(RunGenerationTiming(Model(kPythiaLike), TextIds(8), Spec("full"), o), {"new_tokens"});
  ExpectInvalid(RunGenerationTiming(Model(kPythiaLike), {}, Spec("full"), Timing()), {"empty prompt"});
}

}  // namespace
}  // namespace kvgrid
