// Text generation on the engine: greedy or sampling (temperature, top-k, top-p, seed), batch with
// left padding (HF generate's positions: cumsum(mask) - 1), stop at EOS or ignore it.
// Timing hooks report the host-visible moments metrics.md needs (first token, each step).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/engine/gpt_neox.h"

namespace kvgrid {

struct SamplingParams {
  bool greedy = true;
  double temperature = 1.0;
  int64_t top_k = 0;     // 0 = off
  double top_p = 1.0;    // 1 = off
  uint64_t seed = 0;
  bool ignore_eos = false;
  int64_t max_new_tokens = 32;
  int64_t pad_id = 0;
  // > 0: the prompt runs in forwards of at most this many tokens and the policy evicts after
  // each, so a compressing policy's cache never holds more than its budget + prefill_chunk
  // entries (kv-policies.md §2.8). 0: the whole prompt in one forward.
  int64_t prefill_chunk = 0;
  KvDtype kv_dtype;  // the cache's storage type (core/kv_dtype.h); quantised: batch 1 only
};

struct GenerationOutput {
  std::vector<std::vector<int64_t>> new_ids;  // per row, generated ids only (EOS included if hit)
  ForwardStats stats;                          // summed over the prefill and every decode step
  double prefill_policy_ms = 0;                // the part of stats.policy_ms spent in the prefill
  int64_t kv_bytes_peak = 0;                   // KvCache::PeakAllocatedBytes(): inside forwards too
  int64_t kv_bytes_end = 0;
  int64_t kv_bytes_live_end = 0;               // KvCache::LiveBytes() at the end
};

// Called after the prefill's first token is on the host (step 0) and after each decode step.
using StepCallback = std::function<void(int64_t step)>;

// Chunked prefill (SamplingParams::prefill_chunk, PerplexityOptions::prefill_chunk): runs every
// chunk of `prompt` (ids [B,T]) but the last through Forward with `policy` evicting after each,
// and returns the request for the last chunk (`prompt`'s logits rows, tokens_seen advanced).
// chunk <= 0 or >= T: nothing runs and `prompt` comes back. When `compresses`, the cache is
// grown before each chunk to exactly its kept entries + the chunk. *kv_peak is raised to the
// cache's peak after each forward.
absl::StatusOr<ForwardRequest> RunLeadingPrefillChunks(GptNeoxModel& model, const ForwardRequest& prompt,
                                                       int64_t chunk, bool compresses, KvCache& cache,
                                                       KvPolicy* policy, ForwardStats* stats,
                                                       int64_t* kv_peak);

// `prompts` may differ in length: they are left-padded with `pad_id` and masked.
absl::StatusOr<GenerationOutput> Generate(GptNeoxModel& model,
                                          const std::vector<std::vector<int64_t>>& prompts,
                                          const SamplingParams& params, KvPolicy* policy,
                                          PositionMode mode, const StepCallback& on_step = nullptr);

}  // namespace kvgrid
