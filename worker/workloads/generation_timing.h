// Generation timing (metrics.md): TTFT, TPOT, decode/total/prefill throughput, per-token
// latencies, peak memory per phase, exact KV bytes — fixed lengths (EOS ignored), greedy,
// warm-up runs discarded, then `repeats` timed runs; medians plus every raw sample.
#pragma once

#include <cstdint>
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
  int64_t prefill_chunk = 0;  // SamplingParams::prefill_chunk
  // For a policy other than `full`: also time the full cache on the same prompt, interleaved
  // repeat by repeat (the two alternate which goes first), and report the paired Δs.
  bool paired_baseline = false;
};

// `prompt` is already cut to the prompt length. Metrics: ttft_ms, tpot_ms, throughput_tok_s,
// total_throughput_tok_s, prefill_tok_s, peak_memory_bytes (CUDA peak allocated; CPU peak RSS),
// peak_reserved_bytes (CUDA), prefill/decode peaks, kv_bytes_peak, kv_bytes_end, kv_tokens_max,
// scoring_ms (policy time in the whole run), decode_scoring_ms (its decode steps only); samples
// ttft_ms, tpot_ms, decode_step_ms. With paired_baseline: baseline_ttft_ms, baseline_tpot_ms,
// baseline_throughput_tok_s (medians and samples) and delta_{ttft,tpot,throughput}_pct with
// _ci_low/_ci_high (common/paired_delta.h).
absl::StatusOr<RunResult> RunGenerationTiming(GptNeoxModel& model, const std::vector<int64_t>& prompt,
                                              const PolicySpec& policy,
                                              const GenerationTimingOptions& options);

double Median(std::vector<double> v);

}  // namespace kvgrid
