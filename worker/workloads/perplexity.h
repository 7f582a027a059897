// Perplexity protocols (metrics.md, kv-policies.md §5, §2.7):
//   sliding   — Hugging Face's strided window (max_length, stride); with stride < max_length every
//               token 1..N-1 is scored once (with stride == max_length, disjoint chunks as in HF,
//               each window's first token is context only and is not scored); no cache is kept
//               across windows, so no policy applies (full-cache reference).
//   streaming — StreamingLLM: one token per forward, score the next token, the policy updates the
//               cache after every step; token 0 is never scored; up to max_tokens tokens.
//   prefill   — kvpress style: segments of context_tokens + continuation_tokens; the policy
//               compresses the context once at the end of its forward; the continuation is
//               teacher-forced with no further eviction; only the continuation is scored (its
//               first token is predicted from the uncompressed context, identically for every
//               policy). With prefill_chunk > 0 the context runs in chunks of that many
//               tokens and the policy evicts after each (its budget + one chunk at most).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/engine/gpt_neox.h"
#include "core/policy_spec.h"
#include "core/run_result.h"

namespace kvgrid {

struct PerplexityOptions {
  std::string protocol = "sliding";
  int64_t max_tokens = 0;        // 0 = all tokens (sliding, prefill) / 4096 (streaming)
  int64_t max_length = 2048;
  int64_t stride = 512;
  int64_t context_tokens = 1024;
  int64_t continuation_tokens = 256;
  PositionMode position_mode = PositionMode::kOriginal;
  KvDtype kv_dtype;  // the cache's storage type in every protocol (core/kv_dtype.h)
  int64_t prefill_chunk = 0;     // prefill protocol: the context in chunks, evicting after each
  bool keep_nll_samples = true;  // per-token NLL as the nll sample series
};

// Runs the protocol on `ids` with `policy` (a PolicySpec; "full" = no eviction) and returns the
// metrics: ppl, nll_mean, ppl_stderr, scored_tokens, kv_tokens_max, kv_bytes_peak, kv_bytes_end,
// scoring_ms, wall_ms; sample series nll (streaming/prefill); names in core/metric_catalog.h.
absl::StatusOr<RunResult> RunPerplexity(GptNeoxModel& model, const std::vector<int64_t>& ids,
                                        const PolicySpec& policy, const PerplexityOptions& options);

}  // namespace kvgrid
