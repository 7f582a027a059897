#include "model/engine/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

// Picks the next token per row from logits [B, V] (float32).
torch::Tensor PickNext(const torch::Tensor& logits, const SamplingParams& p, torch::Generator& gen) {
  if (p.greedy) return logits.argmax(-1);
  auto scores = logits / std::max(p.temperature, 1e-6);
  if (p.top_k > 0 && p.top_k < scores.size(-1)) {
    auto kth = std::get<0>(scores.topk(p.top_k, -1)).narrow(-1, p.top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, -std::numeric_limits<float>::infinity());
  }
  if (p.top_p < 1.0) {
    auto [sorted, idx] = scores.sort(-1, /*descending=*/true);
    auto cum = torch::softmax(sorted, -1).cumsum(-1);
    // Remove tokens once the cumulative probability before them exceeds top_p (keep >= 1).
    auto remove = (cum - torch::softmax(sorted, -1)) > p.top_p;
    sorted = sorted.masked_fill(remove, -std::numeric_limits<float>::infinity());
    scores = torch::full_like(scores, -std::numeric_limits<float>::infinity()).scatter(-1, idx, sorted);
  }
  auto probs = torch::softmax(scores, -1);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(-1);
}

}  // namespace

absl::StatusOr<ForwardRequest> RunLeadingPrefillChunks(GptNeoxModel& model, const ForwardRequest& prompt,
                                                       int64_t chunk, bool compresses, KvCache& cache,
                                                       KvPolicy* policy, ForwardStats* stats,
                                                       int64_t* kv_peak) {
  const int64_t T = prompt.ids.size(1);
  if (chunk <= 0 || chunk >= T) return prompt;
  auto part_of = [&](int64_t first, int64_t length) {
    ForwardRequest part = prompt;
    part.ids = prompt.ids.narrow(1, first, length);
    part.positions = prompt.positions.narrow(1, first, length);
    if (prompt.valid.defined()) part.valid = prompt.valid.narrow(1, first, length);
    part.tokens_seen = prompt.tokens_seen + first;
    if (part.logits == LogitsRows::kAll) {
      part.logits_start = std::max<int64_t>(0, prompt.logits_start - first);
    }
    return part;
  };
  int64_t first = 0;
  for (; T - first > chunk; first += chunk) {
    if (compresses) cache.ReserveForAppend(chunk);  // exactly the entries kept + this chunk
    ForwardRequest part = part_of(first, chunk);
    part.logits = LogitsRows::kNone;
    ASSIGN_OR_RETURN(ForwardOutput unused, model.Forward(part, cache, policy, stats));
    (void)unused;
    *kv_peak = std::max(*kv_peak, cache.PeakAllocatedBytes());
  }
  if (compresses) cache.ReserveForAppend(T - first);
  return part_of(first, T - first);
}

absl::StatusOr<GenerationOutput> Generate(GptNeoxModel& model,
                                          const std::vector<std::vector<int64_t>>& prompts,
                                          const SamplingParams& params, KvPolicy* policy,
                                          PositionMode mode, const StepCallback& on_step) {
  if (prompts.empty()) return absl::InvalidArgumentError("generate: no prompt");
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t T = 0;
  for (const auto& p : prompts) {
    if (p.empty()) return absl::InvalidArgumentError("generate: empty prompt");
    T = std::max<int64_t>(T, static_cast<int64_t>(p.size()));
  }
  if (policy != nullptr && B > 1) {
    return absl::UnimplementedError("KV policies other than 'full' run at batch 1 only");
  }
  torch::NoGradGuard no_grad;
  auto ids = torch::full({B, T}, params.pad_id, torch::kInt64);
  auto valid = torch::zeros({B, T}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    int64_t len = static_cast<int64_t>(prompts[b].size());
    auto row = torch::tensor(prompts[b], torch::kInt64);
    ids[b].narrow(0, T - len, len).copy_(row);
    valid[b].narrow(0, T - len, len).fill_(true);
  }
  // HF generate: position_ids = cumsum(mask) - 1, with padding positions set to 1.
  auto positions = valid.to(torch::kInt64).cumsum(1) - 1;
  positions = positions.masked_fill(valid.logical_not(), 1);
  auto next_pos = positions.select(1, T - 1) + 1;  // [B]

  GenerationOutput out;
  out.new_ids.assign(B, {});
  KvCache cache = model.NewCache(B, mode, params.kv_dtype);
  // The full cache knows its final length: allocate it once. A compressing policy's cache is
  // sized for one prefill forward and grows as it must (KvCache::Keep frees what eviction
  // empties), so its KV bytes show the policy's real memory, not a full-length reservation.
  const bool compresses = policy != nullptr && policy->name() != "full";
  const int64_t chunk = params.prefill_chunk > 0 ? std::min(params.prefill_chunk, T) : T;
  if (params.prefill_chunk < 0) return absl::InvalidArgumentError("generate: prefill_chunk < 0");
  if (!compresses) {
    cache.Reserve(T + params.max_new_tokens);
  } else if (chunk < T) {
    cache.ReserveForAppend(chunk);  // exactly one chunk; RunLeadingPrefillChunks grows it exactly
  } else {
    cache.Reserve(T);
  }
  torch::Generator gen = at::detail::createCPUGenerator(params.seed);
  std::vector<bool> done(B, false);
  const torch::Device device = model.device();

  ForwardRequest prompt;
  prompt.ids = ids.to(device);
  prompt.positions = positions.to(device);
  prompt.valid = valid.to(device);
  prompt.logits = LogitsRows::kLast;
  prompt.phase = ForwardPhase::kPrefill;
  prompt.tokens_seen = 0;
  prompt.prompt_length = T;
  ASSIGN_OR_RETURN(ForwardRequest req, RunLeadingPrefillChunks(model, prompt, chunk, compresses, cache,
                                                               policy, &out.stats, &out.kv_bytes_peak));
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    ASSIGN_OR_RETURN(ForwardOutput fo, model.Forward(req, cache, policy, &out.stats));
    if (step == 0) out.prefill_policy_ms = out.stats.policy_ms;
    out.kv_bytes_peak = std::max(out.kv_bytes_peak, cache.PeakAllocatedBytes());
    auto next = PickNext(fo.logits.select(1, 0), params, gen).to(torch::kCPU);  // host sync
    auto next_acc = next.accessor<int64_t, 1>();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) {
        next_acc[b] = params.pad_id;
      } else {
        out.new_ids[b].push_back(next_acc[b]);
        if (!params.ignore_eos && next_acc[b] == model.config().eos_token_id) done[b] = true;
      }
      all_done = all_done && done[b];
    }
    if (on_step) on_step(step);
    if (all_done) break;
    req.tokens_seen += req.ids.size(1);
    req.ids = next.view({B, 1}).to(device);
    req.positions = next_pos.view({B, 1}).to(device);
    req.valid = torch::ones({B, 1}, torch::kBool).to(device);
    req.phase = ForwardPhase::kDecode;
    next_pos = next_pos + 1;
  }
  out.kv_bytes_end = cache.AllocatedBytes();
  out.kv_bytes_live_end = cache.LiveBytes();
  return out;
}

}  // namespace kvgrid
