// Generation timing (metrics.md): TTFT, TPOT, decode/total/prefill throughput, per-token
// latencies, peak memory per phase, exact KV bytes — fixed lengths (EOS ignored), greedy,
// warm-up runs discarded, then `repeats` timed runs; medians plus every raw sample.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/engine/gpt_neox.h"
#include "core/policy_spec.h"
#include "core/run_result.h"

namespace kvgrid {

struct GenerationTimingOptions {
  int64_t new_tokens = 128;
  int64_t batch = 1;
  int64_t repeats = 5;
  int64_t warmup = 2;
  PositionMode position_mode = PositionMode::kOriginal;
  KvDtype kv_dtype;           // the policy side's cache storage (SamplingParams::kv_dtype)
  int64_t prefill_chunk = 0;  // SamplingParams::prefill_chunk
  // For a policy other than `full` or a quantised kv_dtype: also time the full float cache on the
  // same prompt, interleaved repeat by repeat (the two alternate which goes first), and report
  // the paired Δs.
  bool paired_baseline = false;
  // The contention guard (docs/metrics.md, "Another program on the cores"): a timed repeat — a
  // pair when paired — during which this process's threads waited for a CPU longer than
  // `max_cpu_wait_share` of its wall time is discarded; after a pause and one untimed generation
  // that shows the machine quiet again, it is timed again. At most `contention_wait_s` seconds per
  // run go to pausing and re-timing; after that the remaining repeats are kept as measured and
  // counted in disturbed_repeats. < 0: $KVGRID_CONTENTION_WAIT_S, else 120; 0 turns it off.
  double contention_wait_s = -1;
  double max_cpu_wait_share = 0.05;
  // The process's run-queue delay in ms (common/cpu_wait.h) — empty: ProcessRunQueueWaitMs. A
  // seam for tests, which simulate a busy machine through it.
  std::function<double()> run_queue_wait_ms;
};

// `prompt` is already cut to the prompt length. Metrics: ttft_ms, tpot_ms, throughput_tok_s,
// total_throughput_tok_s, prefill_tok_s, peak_memory_bytes (CUDA peak allocated; CPU peak RSS),
// peak_reserved_bytes (CUDA), prefill/decode peaks, kv_bytes_peak, kv_bytes_end, kv_tokens_max,
// scoring_ms (policy time in the whole run), decode_scoring_ms (its decode steps only); samples
// ttft_ms, tpot_ms, decode_step_ms. With paired_baseline: baseline_ttft_ms, baseline_tpot_ms,
// baseline_throughput_tok_s (medians and samples) and delta_{ttft,tpot,throughput}_pct with
// _ci_low/_ci_high (common/paired_delta.h). Always: cpu_wait_pct (median and series),
// retimed_repeats, disturbed_repeats (the contention guard).
absl::StatusOr<RunResult> RunGenerationTiming(GptNeoxModel& model, const std::vector<int64_t>& prompt,
                                              const PolicySpec& policy,
                                              const GenerationTimingOptions& options);

double Median(std::vector<double> v);

}  // namespace kvgrid
