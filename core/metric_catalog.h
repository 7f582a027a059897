// Every metric and sample series a run reports, in one place: its name (as stored in SQLite and
// printed), unit, which way is better, and what it means. The workloads record through these
// definitions (RunResult::Add), the report and the benches read through them, and
// docs/metrics.md's table is this catalog (a test compares them). No torch, no gRPC.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvgrid {

enum class Better { kLower, kHigher, kNeither };

struct MetricDef {
  std::string_view name;
  std::string_view unit;     // "ms", "tok/s", "bytes", "tokens", "nats", "%", "" (dimensionless)
  Better better;
  std::string_view workload;  // perplexity | generation | any | noop
  std::string_view meaning;
};

namespace metric {

// perplexity
inline constexpr MetricDef kPpl{"ppl", "", Better::kLower, "perplexity", "exp(mean NLL) over the scored tokens"};
inline constexpr MetricDef kPplStderr{"ppl_stderr", "", Better::kNeither, "perplexity", "standard error of ppl (delta method over the per-token NLLs)"};
inline constexpr MetricDef kNllMean{"nll_mean", "nats", Better::kLower, "perplexity", "mean negative log-likelihood per scored token"};
inline constexpr MetricDef kScoredTokens{"scored_tokens", "tokens", Better::kNeither, "perplexity", "tokens whose NLL counts"};
inline constexpr MetricDef kWallMs{"wall_ms", "ms", Better::kLower, "perplexity", "wall time of the whole protocol"};
inline constexpr MetricDef kNll{"nll", "nats", Better::kLower, "perplexity", "sample series: each scored token's NLL, in order"};
// generation
inline constexpr MetricDef kTtftMs{"ttft_ms", "ms", Better::kLower, "generation", "time to first token (median of the repeats; sample series: each repeat)"};
inline constexpr MetricDef kTpotMs{"tpot_ms", "ms", Better::kLower, "generation", "time per output token after the first (median; series: each repeat)"};
inline constexpr MetricDef kThroughputTokS{"throughput_tok_s", "tok/s", Better::kHigher, "generation", "new tokens / (TTFT + decode time) (median; series: each repeat)"};
inline constexpr MetricDef kTotalThroughputTokS{"total_throughput_tok_s", "tok/s", Better::kHigher, "generation", "(prompt + new tokens) / end-to-end time"};
inline constexpr MetricDef kPrefillTokS{"prefill_tok_s", "tok/s", Better::kHigher, "generation", "prompt tokens / TTFT"};
inline constexpr MetricDef kDecodeStepMs{"decode_step_ms", "ms", Better::kLower, "generation", "sample series: every decode step of every repeat"};
inline constexpr MetricDef kPeakMemoryBytes{"peak_memory_bytes", "bytes", Better::kLower, "generation", "process peak RSS on CPU, allocator peak on CUDA, from a run after the heap is released"};
inline constexpr MetricDef kPrefillPeakRssBytes{"prefill_peak_rss_bytes", "bytes", Better::kLower, "generation", "peak RSS during the prefill (CPU)"};
inline constexpr MetricDef kDecodePeakRssBytes{"decode_peak_rss_bytes", "bytes", Better::kLower, "generation", "peak RSS during decoding (CPU)"};
inline constexpr MetricDef kPrefillPeakAllocatedBytes{"prefill_peak_allocated_bytes", "bytes", Better::kLower, "generation", "allocator peak during the prefill (CUDA)"};
inline constexpr MetricDef kDecodePeakAllocatedBytes{"decode_peak_allocated_bytes", "bytes", Better::kLower, "generation", "allocator peak during decoding (CUDA)"};
inline constexpr MetricDef kPeakReservedBytes{"peak_reserved_bytes", "bytes", Better::kLower, "generation", "allocator's peak reserved memory (CUDA)"};
inline constexpr MetricDef kDecodeScoringMs{"decode_scoring_ms", "ms", Better::kLower, "generation", "policy scoring and eviction time during decoding (median of repeats)"};
inline constexpr MetricDef kCpuWaitPct{"cpu_wait_pct", "%", Better::kLower, "generation", "time the process's threads waited for a CPU (run-queue delay) / wall time, per kept repeat (largest side of a pair); median; series: each repeat"};
inline constexpr MetricDef kRetimedRepeats{"retimed_repeats", "", Better::kLower, "generation", "repeats discarded because another program kept the threads waiting for a CPU, and timed again"};
inline constexpr MetricDef kDisturbedRepeats{"disturbed_repeats", "", Better::kLower, "generation", "kept repeats still over the CPU-wait limit when the contention guard's time ran out"};
inline constexpr MetricDef kRepeats{"repeats", "", Better::kNeither, "any", "timed repeats behind the medians"};
inline constexpr MetricDef kBaselineTtftMs{"baseline_ttft_ms", "ms", Better::kLower, "generation", "TTFT of the paired full-cache baseline, interleaved in the same run"};
inline constexpr MetricDef kBaselineTpotMs{"baseline_tpot_ms", "ms", Better::kLower, "generation", "TPOT of the paired baseline"};
inline constexpr MetricDef kBaselineThroughputTokS{"baseline_throughput_tok_s", "tok/s", Better::kHigher, "generation", "throughput of the paired baseline"};
inline constexpr MetricDef kDeltaTtftPct{"delta_ttft_pct", "%", Better::kLower, "generation", "paired Δ TTFT vs the baseline (median of per-pair ratios); _ci_low/_ci_high: its interval"};
inline constexpr MetricDef kDeltaTpotPct{"delta_tpot_pct", "%", Better::kLower, "generation", "paired Δ TPOT vs the baseline; _ci_low/_ci_high: its interval"};
inline constexpr MetricDef kDeltaThroughputPct{"delta_throughput_pct", "%", Better::kHigher, "generation", "paired Δ throughput vs the baseline; _ci_low/_ci_high: its interval"};
// both cache workloads
inline constexpr MetricDef kKvBytesPeak{"kv_bytes_peak", "bytes", Better::kLower, "perplexity, generation", "largest KV cache held (keys + values, all layers)"};
inline constexpr MetricDef kKvBytesEnd{"kv_bytes_end", "bytes", Better::kLower, "perplexity, generation", "KV cache held at the end"};
inline constexpr MetricDef kKvBytesLiveEnd{"kv_bytes_live_end", "bytes", Better::kLower, "perplexity, generation", "keys + values of the entries held at the end, without growth room or holes (adakv's heads keep uneven counts in storage padded to the widest head; this is what storing each head's entries alone would take)"};
inline constexpr MetricDef kKvTokensMax{"kv_tokens_max", "tokens", Better::kLower, "perplexity, generation", "most cache slots held by any layer and head"};
inline constexpr MetricDef kScoringMs{"scoring_ms", "ms", Better::kLower, "perplexity, generation", "time spent in the policy (scoring, selecting, evicting)"};
inline constexpr MetricDef kDatasetTokens{"dataset_tokens", "tokens", Better::kNeither, "perplexity, generation", "tokens of the dataset text"};
inline constexpr MetricDef kTokenizeMs{"tokenize_ms", "ms", Better::kLower, "perplexity, generation", "time to tokenize the dataset text"};
// noop (scheduler tests)
inline constexpr MetricDef kNoopMs{"noop_ms", "ms", Better::kNeither, "noop", "the requested sleep"};
inline constexpr MetricDef kElapsedMs{"elapsed_ms", "ms", Better::kLower, "noop", "the measured sleep (also a sample series)"};

}  // namespace metric

// Every definition above, in this order.
const std::vector<MetricDef>& MetricCatalog();
const MetricDef* FindMetricDef(std::string_view name);

// The paired Δ of a generation timing (kDeltaTtftPct, ...) with its interval's bounds.
std::string CiLowName(const MetricDef& delta);   // "<name>_ci_low"
std::string CiHighName(const MetricDef& delta);  // "<name>_ci_high"

// docs/metrics.md's table: | metric | unit | better | workload | meaning |.
std::string MetricCatalogMarkdown();

}  // namespace kvgrid
