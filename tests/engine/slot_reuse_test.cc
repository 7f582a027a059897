// In-place eviction (slot reuse, the sinks + window ring), chunked prefill and the attention
// statistics the fused prefill kernel computes for policies, each against the behaviour it
// replaces: compaction, the one-token streaming loop, and full [H, m, n] probabilities.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/engine/generate.h"
#include "model/engine/gpt_neox.h"
#include "model/engine/kv_policy.h"
#include "core/policy_spec.h"

namespace kvgrid {
namespace {

const std::string kModels = std::string(KVGRID_FIXTURES_DIR) + "/models/";

std::unique_ptr<GptNeoxModel> Load(const std::string& name) {
  auto m = GptNeoxModel::Load(kModels + name, torch::kFloat32, torch::kCPU);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

std::vector<int64_t> SomeIds(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 7919 + 13) % 250);  // inside every fixture's vocabulary
  return ids;
}

std::unique_ptr<KvPolicy> Policy(const std::string& text, int64_t layers) {
  auto spec = ParsePolicySpec(text);
  EXPECT_TRUE(spec.ok()) << text << ": " << spec.status();
  auto policy = MakePolicy(*spec);
  EXPECT_TRUE(policy.ok()) << text << ": " << policy.status();
  (*policy)->Reset(layers);
  return std::move(*policy);
}

ForwardRequest Request(const std::vector<int64_t>& ids, int64_t begin, int64_t end,
                       int64_t prompt_length) {
  ForwardRequest req;
  req.ids = torch::tensor(std::vector<int64_t>(ids.begin() + begin, ids.begin() + end)).view({1, -1});
  req.positions = torch::arange(begin, end).view({1, -1});
  req.logits = LogitsRows::kAll;
  req.phase = begin == 0 ? ForwardPhase::kPrefill : ForwardPhase::kDecode;
  req.tokens_seen = begin;
  req.prompt_length = prompt_length;
  return req;
}

struct Trace {
  std::vector<torch::Tensor> logits;                  // per forward
  std::vector<std::vector<torch::Tensor>> positions;  // per forward, per layer: logical order
  bool reordered = false;                             // some layer's slots left logical order
};

// A 40-token prefill then 30 one-token steps under `policy`, recording each forward's logits and
// every layer's kept positions (oldest first).
Trace RunPolicy(GptNeoxModel& model, PositionMode mode, const std::string& policy, bool slot_reuse) {
  const auto ids = SomeIds(70);
  auto p = Policy(policy, model.config().num_layers);
  KvCache cache = model.NewCache(1, mode);
  if (!slot_reuse) cache.set_slot_reuse(false);
  Trace t;
  int64_t begin = 0;
  for (int64_t len : std::vector<int64_t>(31, 1)) {
    const int64_t end = begin == 0 ? 40 : begin + len;
    auto out = model.Forward(Request(ids, begin, end, 40), cache, p.get());
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return t;
    t.logits.push_back(out->logits);
    std::vector<torch::Tensor> layers;
    for (int64_t l = 0; l < cache.num_layers(); ++l) {
      layers.push_back(cache.LogicalPositions(l).clone());
      t.reordered = t.reordered || cache.LogicalOrder(l).defined();
    }
    t.positions.push_back(layers);
    begin = end;
  }
  return t;
}

// Every evicting policy, with budgets small enough to evict at the prefill and at decode steps
// (prefill-only scorers get their decoding variant).
std::vector<std::string> EvictingPolicies() {
  return {"window:window=16",
          "streaming_llm:sink_tokens=2,window=14",
          "h2o:heavy=8,recent=8",
          "tova:cache_size=16",
          "knorm:budget=16",
          "snapkv:budget=16,window=4,interval=3",
          "pyramidkv:budget=16,window=4,interval=3",
          "observed_attention:budget=16,interval=2",
          "keydiff:budget=16,interval=2",
          "random:budget=16,interval=2,seed=3",
          "expected_attention:budget=16,interval=3,n_future_positions=8",
          "chunkkv:budget=16,chunk_length=4,inner=keydiff,interval=3"};
}

class EveryFixture : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, EveryFixture,
                         ::testing::Values("tiny-neox-pythia-like", "tiny-neox-sequential",
                                           "tiny-neox-fullrotary"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

// Reusing evicted slots changes only where entries live: the logits (up to float summation order
// in the softmax) and the kept positions are those of compacting the cache.
TEST_P(EveryFixture, SlotReuseEqualsCompaction) {
  auto model = Load(GetParam());
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    bool any_reordered = false;
    for (const std::string& policy : EvictingPolicies()) {
      SCOPED_TRACE(std::string(PositionModeName(mode)) + " " + policy);
      Trace reuse = RunPolicy(*model, mode, policy, true);
      Trace compact = RunPolicy(*model, mode, policy, false);
      ASSERT_EQ(reuse.logits.size(), compact.logits.size());
      EXPECT_FALSE(compact.reordered);
      any_reordered = any_reordered || reuse.reordered;
      for (size_t i = 0; i < reuse.logits.size(); ++i) {
        EXPECT_LT((reuse.logits[i] - compact.logits[i]).abs().max().item<double>(), 2e-5)
            << "forward " << i;
        for (size_t l = 0; l < reuse.positions[i].size(); ++l) {
          ASSERT_TRUE(torch::equal(reuse.positions[i][l], compact.positions[i][l]))
              << "forward " << i << " layer " << l;
        }
      }
    }
    // Original and shifted caches reuse slots; rerotate compacts (its eviction re-rotates every
    // kept key anyway).
    EXPECT_EQ(any_reordered, mode != PositionMode::kRerotate);
  }
}

// The sinks + window rule is a ring after the sinks: one slot is reused per token and the entries
// never move, so the window's slots cycle through [sinks, sinks + window].
TEST(SlotReuse, StreamingWindowIsARingBuffer) {
  auto model = Load("tiny-neox-pythia-like");
  const auto ids = SomeIds(60);
  auto policy = Policy("streaming_llm:sink_tokens=2,window=6", model->config().num_layers);
  KvCache cache = model->NewCache(1, PositionMode::kOriginal);
  for (int64_t t = 0; t < 60; ++t) {
    ASSERT_TRUE(model->Forward(Request(ids, t, t + 1, 1), cache, policy.get()).ok());
    const LayerCache& lc = cache.layer(0);
    ASSERT_EQ(lc.length, std::min<int64_t>(t + 1, 8));
    // Logical order: sinks 0, 1, then the last six positions.
    auto logical = cache.LogicalPositions(0)[0][0];
    EXPECT_EQ(logical[0].item<int64_t>(), 0);
    EXPECT_EQ(logical[lc.length - 1].item<int64_t>(), t);
    if (t >= 8) {
      // The newest token sits in the slot the oldest window entry had: slot 2 + (t - 8) % 6 + ...
      // i.e. the slot of position t is the one position t - 6 had.
      auto slots = lc.Positions()[0][0];
      int64_t slot_of_t = -1;
      for (int64_t s = 0; s < lc.length; ++s) {
        if (slots[s].item<int64_t>() == t) slot_of_t = s;
      }
      EXPECT_EQ(slot_of_t, 2 + (t - 2) % 6) << "t=" << t;
    }
  }
}

// Chunked prefill with one-token chunks runs exactly the streaming protocol's forwards.
TEST(ChunkedPrefill, OneTokenChunksEqualTheStreamingLoop) {
  auto model = Load("tiny-neox-pythia-like");
  const auto ids = SomeIds(48);
  for (const std::string policy : {"streaming_llm:sink_tokens=2,window=10", "h2o:heavy=6,recent=6",
                                   "tova:cache_size=12", "window:window=12", "knorm:budget=12"}) {
    SCOPED_TRACE(policy);
    auto chunked_policy = Policy(policy, model->config().num_layers);
    KvCache chunked = model->NewCache(1, PositionMode::kOriginal);
    ForwardRequest prompt = Request(ids, 0, 48, 48);
    prompt.logits = LogitsRows::kLast;
    ForwardStats stats;
    int64_t peak = 0;
    auto last = RunLeadingPrefillChunks(*model, prompt, 1, true, chunked, chunked_policy.get(),
                                        &stats, &peak);
    ASSERT_TRUE(last.ok()) << last.status();
    EXPECT_EQ(last->ids.size(1), 1);
    EXPECT_EQ(last->tokens_seen, 47);
    auto chunked_out = model->Forward(*last, chunked, chunked_policy.get());
    ASSERT_TRUE(chunked_out.ok());

    auto stream_policy = Policy(policy, model->config().num_layers);
    KvCache streamed = model->NewCache(1, PositionMode::kOriginal);
    torch::Tensor stream_logits;
    for (int64_t t = 0; t < 48; ++t) {
      ForwardRequest step = Request(ids, t, t + 1, 48);
      step.logits = LogitsRows::kLast;
      auto out = model->Forward(step, streamed, stream_policy.get());
      ASSERT_TRUE(out.ok());
      stream_logits = out->logits;
    }
    EXPECT_TRUE(torch::equal(chunked_out->logits, stream_logits));
    for (int64_t l = 0; l < chunked.num_layers(); ++l) {
      EXPECT_TRUE(torch::equal(chunked.LogicalPositions(l), streamed.LogicalPositions(l))) << l;
    }
  }
}

int64_t BytesPerSlot(const GptNeoxModel& m) {
  const auto& c = m.config();
  return c.num_layers * 2 * c.num_heads * c.head_dim() * static_cast<int64_t>(sizeof(float));
}

// The cache of a compressing policy never holds more than its budget + one chunk.
TEST(ChunkedPrefill, KvPeakIsExactlyBudgetPlusChunk) {
  auto model = Load("tiny-neox-pythia-like");
  const std::vector<std::vector<int64_t>> prompt = {SomeIds(200)};
  for (const auto& [policy, budget] : std::vector<std::pair<std::string, int64_t>>{
           {"streaming_llm:sink_tokens=4,window=28", 32},
           {"h2o:heavy=16,recent=16", 32},
           {"tova:cache_size=32", 32},
           {"snapkv:budget=32,window=4", 32}}) {
    for (int64_t chunk : {40, 64}) {
      SCOPED_TRACE(policy + " chunk " + std::to_string(chunk));
      auto p = Policy(policy, model->config().num_layers);
      SamplingParams sp;
      sp.ignore_eos = true;
      sp.max_new_tokens = 4;
      sp.prefill_chunk = chunk;
      auto out = Generate(*model, prompt, sp, p.get(), PositionMode::kOriginal);
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(out->kv_bytes_peak, (budget + chunk) * BytesPerSlot(*model));
      EXPECT_EQ(out->stats.kv_tokens_max, budget + chunk);
    }
  }
}

// Chunking the prompt of a full cache changes only how attention is blocked: same tokens.
TEST(ChunkedPrefill, FullCacheGeneratesTheSameTokens) {
  auto model = Load("tiny-neox-pythia-like");
  const std::vector<std::vector<int64_t>> prompt = {SomeIds(150)};
  SamplingParams sp;
  sp.ignore_eos = true;
  sp.max_new_tokens = 12;
  auto whole = Generate(*model, prompt, sp, nullptr, PositionMode::kOriginal);
  sp.prefill_chunk = 37;
  auto chunked = Generate(*model, prompt, sp, nullptr, PositionMode::kOriginal);
  ASSERT_TRUE(whole.ok() && chunked.ok());
  EXPECT_EQ(whole->new_ids, chunked->new_ids);
  EXPECT_EQ(whole->kv_bytes_peak, chunked->kv_bytes_peak);
}

// Records what the engine showed it, asking for given statistics; evicts nothing.
class StatsRecorder : public KvPolicy {
 public:
  explicit StatsRecorder(AttentionNeeds needs) : needs_(needs) {}
  std::string name() const override { return "test_stats"; }
  AttentionNeeds attention_needs() const override { return needs_; }
  torch::Tensor SelectKeep(const LayerView& v) override {
    probs.push_back(v.probs.defined() ? v.probs.clone() : torch::Tensor());
    received.push_back(v.received.defined() ? v.received.clone() : torch::Tensor());
    return {};
  }
  std::vector<torch::Tensor> probs, received;

 private:
  AttentionNeeds needs_;
};

// The fused prefill kernel's block-by-block statistics are the full probabilities' column sums
// and last rows, at 300 tokens (three query blocks) and for a chunk on top of a cache.
TEST(AttentionStats, KernelStatisticsMatchFullProbabilities) {
  auto model = Load("tiny-neox-pythia-like");
  const auto ids = SomeIds(400);
  StatsRecorder all({.received = false, .last_rows = AttentionNeeds::kAllRows});
  StatsRecorder stats({.received = true, .last_rows = 5});
  for (StatsRecorder* p : {&all, &stats}) {
    KvCache cache = model->NewCache(1, PositionMode::kOriginal);
    ASSERT_TRUE(model->Forward(Request(ids, 0, 300, 300), cache, p).ok());
    ASSERT_TRUE(model->Forward(Request(ids, 300, 400, 300), cache, p).ok());
  }
  ASSERT_EQ(all.probs.size(), stats.probs.size());
  for (size_t i = 0; i < all.probs.size(); ++i) {
    const torch::Tensor& full = all.probs[i];  // [1,H,m,n]
    const int64_t m = full.size(2);
    EXPECT_FALSE(all.received[i].defined());
    EXPECT_EQ(stats.probs[i].size(2), 5);
    EXPECT_TRUE(torch::equal(stats.probs[i], full.narrow(2, m - 5, 5))) << i;
    auto want = full.to(torch::kDouble).sum(2);
    EXPECT_LT((stats.received[i] - want).abs().max().item<double>(), 1e-12) << i;
  }
}

}  // namespace
}  // namespace kvgrid
