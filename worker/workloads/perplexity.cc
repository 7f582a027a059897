#include "worker/workloads/perplexity.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/ppl_error.h"
#include "common/status_macros.h"
#include "model/engine/generate.h"
#include "model/engine/kv_policy.h"

namespace kvgrid {
namespace {

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// NLL (float64) of targets given logits rows [rows, V].
torch::Tensor Nll(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto logp = torch::log_softmax(logits.to(torch::kFloat64), -1);
  return -logp.gather(1, targets.view({-1, 1})).view({-1});
}

struct Accumulator {
  std::vector<double> nll;
  double sum = 0;
  int64_t count = 0;
  bool keep;
  void Add(const torch::Tensor& values) {
    auto v = values.to(torch::kCPU).contiguous();
    const double* p = v.data_ptr<double>();
    for (int64_t i = 0; i < v.numel(); ++i) {
      sum += p[i];
      if (keep) nll.push_back(p[i]);
    }
    count += v.numel();
  }
};

struct PolicyHolder {
  std::unique_ptr<KvPolicy> policy;
  KvPolicy* get() { return policy.get(); }
};

absl::StatusOr<PolicyHolder> NewPolicy(const PolicySpec& spec, int64_t layers) {
  PolicyHolder h;
  if (spec.name == "full") return h;
  ASSIGN_OR_RETURN(h.policy, MakePolicy(spec));
  h.policy->Reset(layers);
  return h;
}

torch::Tensor Slice(const std::vector<int64_t>& ids, int64_t begin, int64_t end) {
  return torch::tensor(std::vector<int64_t>(ids.begin() + begin, ids.begin() + end), torch::kInt64).view({1, -1});
}

}  // namespace

absl::StatusOr<RunResult> RunPerplexity(GptNeoxModel& model, const std::vector<int64_t>& all_ids,
                                        const PolicySpec& spec, const PerplexityOptions& o) {
  const int64_t layers = model.config().num_layers;
  const torch::Device dev = model.device();
  Accumulator acc;
  acc.keep = o.keep_nll_samples;
  ForwardStats stats;
  int64_t kv_peak = 0, kv_end = 0, kv_live_end = 0;
  const double t0 = NowMs();
  std::vector<int64_t> ids = all_ids;

  if (std::string why = WhyPolicyCannotRunProtocol(spec, o.protocol); !why.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy '", spec.name, "' in protocol '", o.protocol, "': ", why));
  }
  if (o.protocol == "sliding") {
    if (o.max_length < 2 || o.stride < 1 || o.stride > o.max_length) {
      return absl::InvalidArgumentError("sliding: need max_length >= 2 and 1 <= stride <= max_length");
    }
    if (o.max_tokens > 0 && static_cast<int64_t>(ids.size()) > o.max_tokens) ids.resize(o.max_tokens);
    const int64_t N = static_cast<int64_t>(ids.size());
    if (N < 2) return absl::InvalidArgumentError("sliding: need at least 2 tokens");
    int64_t prev_end = 0;
    for (int64_t begin = 0; begin < N; begin += o.stride) {
      const int64_t end = std::min(begin + o.max_length, N);
      const int64_t trg_len = end - prev_end;
      // Targets: tokens t in [end - trg_len, end) with t >= begin + 1 (the first is context).
      const int64_t first_target = std::max(end - trg_len, begin + 1);
      KvCache cache = model.NewCache(1, PositionMode::kOriginal, o.kv_dtype);
      ForwardRequest req;
      req.ids = Slice(ids, begin, end).to(dev);
      req.positions = torch::arange(end - begin, torch::kInt64).view({1, -1}).to(dev);
      req.logits = LogitsRows::kAll;
      req.logits_start = first_target - 1 - begin;
      ASSIGN_OR_RETURN(ForwardOutput out, model.Forward(req, cache, nullptr, &stats));
      kv_peak = std::max(kv_peak, cache.PeakAllocatedBytes());
      auto logits = out.logits[0].narrow(0, 0, end - first_target);
      acc.Add(Nll(logits, Slice(ids, first_target, end).view({-1}).to(logits.device())));
      prev_end = end;
      if (end == N) break;
    }
    acc.nll.clear();  // per-token samples are only kept for the cache-based protocols
  } else if (o.protocol == "streaming") {
    const int64_t limit = o.max_tokens > 0 ? o.max_tokens : 4096;
    if (static_cast<int64_t>(ids.size()) > limit) ids.resize(limit);
    const int64_t N = static_cast<int64_t>(ids.size());
    if (N < 2) return absl::InvalidArgumentError("streaming: need at least 2 tokens");
    ASSIGN_OR_RETURN(PolicyHolder policy, NewPolicy(spec, layers));
    KvCache cache = model.NewCache(1, o.position_mode, o.kv_dtype);
    if (!policy.get()) cache.Reserve(N);
    std::vector<torch::Tensor> nll_steps;
    nll_steps.reserve(N);
    for (int64_t t = 0; t + 1 < N; ++t) {
      ForwardRequest req;
      req.ids = torch::full({1, 1}, ids[t], torch::kInt64).to(dev);
      req.positions = torch::full({1, 1}, t, torch::kInt64).to(dev);
      req.phase = t == 0 ? ForwardPhase::kPrefill : ForwardPhase::kDecode;
      req.tokens_seen = t;
      req.prompt_length = 1;
      ASSIGN_OR_RETURN(ForwardOutput out, model.Forward(req, cache, policy.get(), &stats));
      kv_peak = std::max(kv_peak, cache.PeakAllocatedBytes());
      nll_steps.push_back(Nll(out.logits[0], torch::full({1}, ids[t + 1], torch::kInt64).to(dev)));
    }
    acc.Add(torch::cat(nll_steps));
    kv_end = cache.AllocatedBytes();
    kv_live_end = cache.LiveBytes();
  } else if (o.protocol == "prefill") {
    const int64_t C = o.context_tokens, K = o.continuation_tokens;
    if (C < 1 || K < 1) return absl::InvalidArgumentError("prefill: context_tokens and continuation_tokens must be >= 1");
    int64_t N = static_cast<int64_t>(ids.size());
    if (o.max_tokens > 0) N = std::min(N, o.max_tokens);
    const int64_t segments = N / (C + K);
    if (segments < 1) {
      return absl::InvalidArgumentError(absl::StrCat("prefill: the text has ", N, " tokens, fewer than context_tokens + continuation_tokens = ", C + K));
    }
    for (int64_t s = 0; s < segments; ++s) {
      const int64_t base = s * (C + K);
      ASSIGN_OR_RETURN(PolicyHolder policy, NewPolicy(spec, layers));
      KvCache cache = model.NewCache(1, o.position_mode, o.kv_dtype);
      ForwardRequest ctx;
      ctx.ids = Slice(ids, base, base + C).to(dev);
      ctx.positions = torch::arange(C, torch::kInt64).view({1, -1}).to(dev);
      ctx.logits = LogitsRows::kLast;
      ctx.phase = ForwardPhase::kPrefill;
      ctx.prompt_length = C;
      // With prefill_chunk the context runs in chunks, the policy evicting after each.
      ASSIGN_OR_RETURN(ctx, RunLeadingPrefillChunks(model, ctx, o.prefill_chunk, policy.get() != nullptr,
                                                    cache, policy.get(), &stats, &kv_peak));
      ASSIGN_OR_RETURN(ForwardOutput first, model.Forward(ctx, cache, policy.get(), &stats));
      kv_peak = std::max(kv_peak, cache.PeakAllocatedBytes());
      acc.Add(Nll(first.logits[0], torch::full({1}, ids[base + C], torch::kInt64).to(dev)));
      if (K > 1) {
        ForwardRequest cont;
        cont.ids = Slice(ids, base + C, base + C + K - 1).to(dev);
        cont.positions = torch::arange(C, C + K - 1, torch::kInt64).view({1, -1}).to(dev);
        cont.logits = LogitsRows::kAll;
        cont.phase = ForwardPhase::kDecode;
        cont.evict = false;  // compress once, at the end of the context
        cont.tokens_seen = C;
        cont.prompt_length = C;
        ASSIGN_OR_RETURN(ForwardOutput out, model.Forward(cont, cache, policy.get(), &stats));
        kv_peak = std::max(kv_peak, cache.PeakAllocatedBytes());
        acc.Add(Nll(out.logits[0], Slice(ids, base + C + 1, base + C + K).view({-1}).to(dev)));
      }
      kv_end = cache.AllocatedBytes();
      kv_live_end = cache.LiveBytes();
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown perplexity protocol '", o.protocol,
                                                   "'; expected sliding, streaming or prefill"));
  }

  RunResult r;
  const double mean = acc.sum / std::max<int64_t>(acc.count, 1);
  const double ppl = std::exp(mean);
  r.Add(metric::kPpl, ppl);
  r.Add(metric::kNllMean, mean);
  if (!acc.nll.empty()) r.Add(metric::kPplStderr, PplStandardError(ppl, NllMomentsOf(acc.nll)));
  r.Add(metric::kScoredTokens, static_cast<double>(acc.count));
  r.Add(metric::kKvTokensMax, static_cast<double>(stats.kv_tokens_max));
  r.Add(metric::kKvBytesPeak, static_cast<double>(kv_peak));
  if (o.protocol != "sliding") {
    r.Add(metric::kKvBytesEnd, static_cast<double>(kv_end));
    r.Add(metric::kKvBytesLiveEnd, static_cast<double>(kv_live_end));
  }
  r.Add(metric::kScoringMs, stats.policy_ms);
  r.Add(metric::kWallMs, NowMs() - t0);
  if (!acc.nll.empty()) r.AddSamples(metric::kNll, std::move(acc.nll));
  return r;
}

}  // namespace kvgrid
