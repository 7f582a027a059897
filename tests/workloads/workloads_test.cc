// Workload tests: the three perplexity protocols (worker/workloads/perplexity) on the fixture
// models (float32, CPU, 2 threads). They pin what the protocols compute (Hugging Face's loss,
// protocol equivalences without eviction, policies that cannot evict are bit-for-bit the full
// cache), what eviction does to the metrics (kv_tokens_max, exact KV bytes), and the errors for
// bad input. Generation timing: generation_timing_test.cc; the kv_dtype axis:
// kv_dtype_workloads_test.cc.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/policy_spec.h"
#include "model/checkpoint/safetensors.h"
#include "model/engine/gpt_neox.h"
#include "tests/workloads/workload_test_util.h"
#include "worker/workloads/perplexity.h"

namespace kvgrid {
namespace {

using workload_test::ExpectInvalid;
using workload_test::HasSamples;
using workload_test::kFixtures;
using workload_test::kPythiaLike;
using workload_test::Metric;
using workload_test::Model;
using workload_test::Samples;
using workload_test::Spec;
using workload_test::TextIds;

// ---- fixtures -----------------------------------------------------------------------------

nlohmann::json Expected(const std::string& name) {
  std::ifstream in(kFixtures + "/models/" + name + "/expected.json");
  return nlohmann::json::parse(in);
}

std::vector<int64_t> FixtureIds(const std::string& name) {
  return Expected(name)["input_ids"].get<std::vector<int64_t>>();
}

// A float32 scalar of expected.safetensors ("loss", "ppl").
double ExpectedScalar(const std::string& name, const std::string& tensor) {
  auto file = SafetensorsFile::Open(kFixtures + "/models/" + name + "/expected.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  const StTensorInfo* info = (*file)->Find(tensor);
  EXPECT_NE(info, nullptr) << tensor;
  EXPECT_EQ(info->dtype, StDtype::kF32);
  return static_cast<double>(*static_cast<const float*>((*file)->DataOf(*info)));
}

// Bytes of one cached token over all layers (K and V, float32).
int64_t BytesPerSlot(const GptNeoxModel& m) {
  const auto& c = m.config();
  return c.num_layers * 2 * c.num_heads * c.head_dim() * static_cast<int64_t>(sizeof(float));
}

// ---- running the workloads ----------------------------------------------------------------


PerplexityOptions Sliding(int64_t max_length, int64_t stride) {
  PerplexityOptions o;
  o.protocol = "sliding";
  o.max_length = max_length;
  o.stride = stride;
  return o;
}

PerplexityOptions Streaming(PositionMode mode = PositionMode::kOriginal) {
  PerplexityOptions o;
  o.protocol = "streaming";
  o.position_mode = mode;
  return o;
}

PerplexityOptions Prefill(int64_t context, int64_t continuation,
                          PositionMode mode = PositionMode::kOriginal) {
  PerplexityOptions o;
  o.protocol = "prefill";
  o.context_tokens = context;
  o.continuation_tokens = continuation;
  o.position_mode = mode;
  return o;
}

RunResult Ppl(GptNeoxModel& model, const std::vector<int64_t>& ids, const std::string& policy,
              const PerplexityOptions& o) {
  auto r = RunPerplexity(model, ids, Spec(policy), o);
  EXPECT_TRUE(r.ok()) << o.protocol << " " << policy << ": " << r.status();
  return r.ok() ? *r : RunResult();
}




// Reference, computed with the engine directly: one forward over ids[begin, end) at positions
// 0.. with no cache history; entry j is the NLL (float64) of token begin+1+j.
std::vector<double> ForwardNll(GptNeoxModel& model, const std::vector<int64_t>& ids, int64_t begin,
                               int64_t end) {
  ForwardRequest req;
  req.ids = torch::tensor(std::vector<int64_t>(ids.begin() + begin, ids.begin() + end)).view({1, -1});
  req.positions = torch::arange(end - begin, torch::kInt64).view({1, -1});
  req.logits = LogitsRows::kAll;
  KvCache cache = model.NewCache(1, PositionMode::kOriginal);
  auto out = model.Forward(req, cache);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  auto logp = torch::log_softmax(out->logits[0].to(torch::kFloat64), -1);
  std::vector<double> nll;
  for (int64_t t = begin + 1; t < end; ++t) nll.push_back(-logp[t - begin - 1][ids[t]].item<double>());
  return nll;
}

// Hugging Face's strided sliding window written as the guide does (labels = input ids, the first
// len - trg_len labels masked with -100, the model shifts labels by one): exact token-level mean.
double HandSlidingNllMean(GptNeoxModel& model, const std::vector<int64_t>& ids, int64_t max_length,
                          int64_t stride, int64_t* scored) {
  const int64_t N = static_cast<int64_t>(ids.size());
  double sum = 0;
  *scored = 0;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < N; begin += stride) {
    const int64_t end = std::min(begin + max_length, N);
    const int64_t trg_len = end - prev_end;
    std::vector<double> nll = ForwardNll(model, ids, begin, end);
    for (int64_t label = begin; label < end; ++label) {
      const bool masked = label < end - trg_len;
      if (masked || label == begin) continue;  // label at the window's first token has no logits row
      sum += nll[label - begin - 1];
      ++*scored;
    }
    prev_end = end;
    if (end == N) break;
  }
  return sum / static_cast<double>(*scored);
}

std::string FixtureTestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

// ---- 1, 2: sliding and streaming on every fixture -----------------------------------------

class FixtureModels : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(AllFixtures, FixtureModels,
                         ::testing::Values("tiny-neox-pythia-like", "tiny-neox-sequential",
                                           "tiny-neox-fullrotary"),
                         FixtureTestName);

TEST_P(FixtureModels, SlidingWholeTextWindowEqualsHuggingFaceLoss) {
  const auto ids = FixtureIds(GetParam());
  const int64_t N = static_cast<int64_t>(ids.size());
  // The protocol's defaults (max_length 2048, stride 512) cover the whole fixture text.
  PerplexityOptions o;
  o.protocol = "sliding";
  RunResult r = Ppl(Model(GetParam()), ids, "full", o);
  const double loss = ExpectedScalar(GetParam(), "loss");
  const double ppl = ExpectedScalar(GetParam(), "ppl");
  EXPECT_EQ(Metric(r, "scored_tokens"), N - 1);
  EXPECT_NEAR(Metric(r, "nll_mean"), loss, 1e-4 * loss);
  EXPECT_NEAR(Metric(r, "ppl") / ppl, 1.0, 1e-4);
  EXPECT_NEAR(loss, Expected(GetParam())["loss"].get<double>(), 1e-6);  // json and tensor agree
  EXPECT_FALSE(HasSamples(r, "nll"));  // sliding keeps no per-token series
}

TEST_P(FixtureModels, SlidingSmallWindowScoresEveryTokenOnceWithLessContext) {
  GptNeoxModel& model = Model(GetParam());
  const auto ids = FixtureIds(GetParam());
  const int64_t N = static_cast<int64_t>(ids.size());
  const double whole = Metric(Ppl(model, ids, "full", Sliding(N, N)), "nll_mean");
  for (auto [max_length, stride] : {std::pair<int64_t, int64_t>{8, 4}, {8, 8}, {5, 3}, {8, 1}}) {
    SCOPED_TRACE(testing::Message() << "max_length " << max_length << " stride " << stride);
    RunResult r = Ppl(model, ids, "full", Sliding(max_length, stride));
    // stride < max_length: every token 1..N-1 once. stride == max_length (disjoint chunks, as
    // in HF's guide): each window's first token is only context, so one token per window is
    // never predicted.
    const int64_t windows = (N + stride - 1) / stride;
    const int64_t expected_scored = stride < max_length ? N - 1 : N - windows;
    EXPECT_EQ(Metric(r, "scored_tokens"), expected_scored);
    // Each token sees at most max_length - 1 tokens of context: a different number.
    EXPECT_GT(std::abs(Metric(r, "nll_mean") - whole), 1e-3);
    int64_t hand_scored = 0;
    const double hand = HandSlidingNllMean(model, ids, max_length, stride, &hand_scored);
    EXPECT_EQ(hand_scored, expected_scored);
    EXPECT_NEAR(Metric(r, "nll_mean"), hand, 1e-6);
    EXPECT_NEAR(Metric(r, "ppl"), std::exp(Metric(r, "nll_mean")), 1e-9 * Metric(r, "ppl"));
  }
}

TEST_P(FixtureModels, StreamingFullCacheEqualsSlidingWholeWindow) {
  GptNeoxModel& model = Model(GetParam());
  const auto ids = FixtureIds(GetParam());
  const int64_t N = static_cast<int64_t>(ids.size());
  RunResult sliding = Ppl(model, ids, "full", Sliding(N, N));
  RunResult streaming = Ppl(model, ids, "full", Streaming());
  EXPECT_EQ(Metric(streaming, "scored_tokens"), N - 1);
  EXPECT_NEAR(Metric(streaming, "nll_mean"), Metric(sliding, "nll_mean"), 1e-4);
  EXPECT_EQ(Metric(streaming, "kv_tokens_max"), N - 1);  // the last token is never fed
  // Token by token: the same tokens, each with its full history.
  const std::vector<double> per_token = Samples(streaming, "nll");
  const std::vector<double> reference = ForwardNll(model, ids, 0, N);
  ASSERT_EQ(per_token.size(), reference.size());
  for (size_t i = 0; i < per_token.size(); ++i) EXPECT_NEAR(per_token[i], reference[i], 1e-4) << i;
  EXPECT_GT(Metric(streaming, "ppl_stderr"), 0);
  // The worker's ppl_stderr is the report's ± (one formula, common/ppl_error.h): population
  // variance of the NLLs over n - 1.
  {
    const std::vector<double> nll = Samples(streaming, "nll");
    double mean = 0, var = 0;
    for (double x : nll) mean += x;
    mean /= nll.size();
    for (double x : nll) var += (x - mean) * (x - mean);
    var /= nll.size();
    EXPECT_NEAR(Metric(streaming, "ppl_stderr"),
                Metric(streaming, "ppl") * std::sqrt(var / (nll.size() - 1)), 1e-9);
  }
}

// ---- 3: StreamingLLM ----------------------------------------------------------------------

TEST(StreamingLlmPpl, SinksPlusWindowLongerThanTextEqualsFull) {
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(48);
  RunResult sl = Ppl(model, ids, "streaming_llm:sink_tokens=4,window=64", Streaming(PositionMode::kShifted));
  RunResult full_shifted = Ppl(model, ids, "full", Streaming(PositionMode::kShifted));
  RunResult full = Ppl(model, ids, "full", Streaming(PositionMode::kOriginal));
  EXPECT_EQ(Metric(sl, "nll_mean"), Metric(full_shifted, "nll_mean"));
  EXPECT_EQ(Samples(sl, "nll"), Samples(full_shifted, "nll"));
  EXPECT_NEAR(Metric(sl, "nll_mean"), Metric(full, "nll_mean"), 1e-6);
  EXPECT_EQ(Metric(sl, "kv_tokens_max"), 47);
  EXPECT_EQ(Metric(sl, "scored_tokens"), 47);
}

TEST(StreamingLlmPpl, SmallWindowEvictsAndKvBytesStayFlatAsTextGrows) {
  GptNeoxModel& model = Model(kPythiaLike);
  const int64_t sinks = 4, window = 8;
  const std::string policy = "streaming_llm:sink_tokens=4,window=8";
  std::map<int64_t, RunResult> sl, full;
  for (int64_t n : {64, 128, 256}) {
    sl[n] = Ppl(model, TextIds(n), policy, Streaming(PositionMode::kShifted));
    full[n] = Ppl(model, TextIds(n), "full", Streaming(PositionMode::kShifted));
    SCOPED_TRACE(testing::Message() << n << " tokens");
    EXPECT_EQ(Metric(sl[n], "scored_tokens"), n - 1);
    // kv-policies §2.7.2: the largest n a layer holds while attending = sinks + window + 1.
    EXPECT_EQ(Metric(sl[n], "kv_tokens_max"), sinks + window + 1);
    EXPECT_EQ(Metric(full[n], "kv_tokens_max"), n - 1);
    EXPECT_TRUE(std::isfinite(Metric(sl[n], "ppl")));
    EXPECT_GT(std::abs(Metric(sl[n], "nll_mean") - Metric(full[n], "nll_mean")), 1e-3);
    EXPECT_LE(Metric(sl[n], "kv_bytes_end"), Metric(sl[n], "kv_bytes_peak"));
    // The bounded cache never holds fewer than sinks + window + 1 slots of storage.
    EXPECT_GE(Metric(sl[n], "kv_bytes_peak"), (sinks + window + 1) * BytesPerSlot(model));
  }
  for (int64_t n : {128, 256}) {
    SCOPED_TRACE(testing::Message() << n << " vs 64 tokens");
    EXPECT_EQ(Metric(sl[n], "kv_bytes_peak"), Metric(sl[64], "kv_bytes_peak"));
    EXPECT_EQ(Metric(sl[n], "kv_bytes_end"), Metric(sl[64], "kv_bytes_end"));
  }
  EXPECT_GT(Metric(full[128], "kv_bytes_peak"), Metric(full[64], "kv_bytes_peak"));
  EXPECT_GT(Metric(full[256], "kv_bytes_peak"), Metric(full[128], "kv_bytes_peak"));
  EXPECT_GT(Metric(full[256], "kv_bytes_end"), Metric(full[64], "kv_bytes_end"));
  // The full cache holds (at least) every fed token.
  EXPECT_GE(Metric(full[256], "kv_bytes_peak"), 255 * BytesPerSlot(model));
  EXPECT_LT(Metric(sl[256], "kv_bytes_peak"), Metric(full[256], "kv_bytes_peak"));
}

// ---- 4: no eviction = full, bit for bit -----------------------------------------------------

// Every schema policy with a budget that cannot evict on the test texts (<= 96 tokens): absolute
// budgets of 4096, ratios of 1. `streaming_ok` = also valid in the streaming protocol (h2o's
// ratios are fractions of the prompt, which is 1 token when streaming, so they evict there).
struct NoEvictionCase {
  std::string spec;
  bool streaming_ok = true;
};

std::vector<NoEvictionCase> NoEvictionCases() {
  return {{"full"},
          {"window:window=4096"},
          {"streaming_llm:sink_tokens=4,window=4096"},
          {"h2o:heavy=2048,recent=2048"},
          {"h2o:heavy_ratio=1,recent_ratio=1", false},
          {"snapkv:budget=4096"},
          {"snapkv:ratio=1,window=4,kernel=3,pooling=avg"},
          {"pyramidkv:budget=4096"},
          {"pyramidkv:ratio=1"},
          {"knorm:keep_ratio=1"},
          {"knorm:budget=4096,skip_layers=[0]"},
          {"tova:cache_size=4096"},
          {"random:budget=4096"},
          {"random:ratio=1,seed=7"},
          {"observed_attention:budget=4096"},
          {"observed_attention:ratio=1"},
          {"keydiff:budget=4096"},
          {"keydiff:ratio=1"},
          {"expected_attention:budget=4096"},
          {"expected_attention:ratio=1,n_sink=0,use_covariance=false"},
          {"chunkkv:budget=4096,inner=keydiff"},
          {"chunkkv:ratio=1,chunk_length=5,inner=expected_attention"},
          {"adakv:budget=4096"},
          {"adakv:ratio=1,alpha=0,inner=expected_attention"}};
}

std::string Name(const std::string& spec) { return spec.substr(0, spec.find(':')); }

// The streaming form of a case: prefill-only scorers get their decoding variant, compressing
// (i.e. selecting) at every step; "" for a scorer without one (adakv).
std::string StreamingSpec(const std::string& spec) {
  if (!CompressesOnlyAtPrefill(Spec(spec))) return spec;
  const std::string streaming = spec + (spec.find(':') == std::string::npos ? ":" : ",") + "interval=1";
  return ParsePolicySpec(streaming).ok() ? streaming : "";
}

TEST(PolicyWithoutEviction, EverySchemaPolicyHasACase) {
  std::set<std::string> covered;
  for (const auto& c : NoEvictionCases()) covered.insert(Name(c.spec));
  for (const auto& s : AllPolicySchemas()) EXPECT_TRUE(covered.count(s.name)) << s.name;
}

// One test per protocol, looping over the cases (SCOPED_TRACE names the spec): a process per
// case under ctest would cost more than the runs themselves.
TEST(PolicyWithoutEviction, StreamingIsBitIdenticalToFull) {
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(40);
  std::map<PositionMode, RunResult> full;
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    full[mode] = Ppl(model, ids, "full", Streaming(mode));
  }
  for (const NoEvictionCase& c : NoEvictionCases()) {
    SCOPED_TRACE(c.spec);
    if (StreamingSpec(c.spec).empty()) {  // refused by the protocol, named in its message
      EXPECT_NE(WhyPolicyCannotRunProtocol(Spec(c.spec), "streaming"), "");
      EXPECT_FALSE(RunPerplexity(model, ids, Spec(c.spec), Streaming()).ok());
      continue;
    }
    if (!c.streaming_ok) {
      // h2o's ratios resolve against the first forward (1 token when streaming): int(1 * 1)
      // heavy + 1 recent, so it keeps 2 slots and attends to 3 — ratios are for prefill.
      EXPECT_EQ(Metric(Ppl(model, ids, c.spec, Streaming()), "kv_tokens_max"), 3);
      continue;
    }
    for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
      SCOPED_TRACE(PositionModeName(mode));
      RunResult r = Ppl(model, ids, StreamingSpec(c.spec), Streaming(mode));
      EXPECT_EQ(Metric(r, "nll_mean"), Metric(full[mode], "nll_mean"));
      EXPECT_EQ(Samples(r, "nll"), Samples(full[mode], "nll"));
      EXPECT_EQ(Metric(r, "scored_tokens"), 39);
      EXPECT_EQ(Metric(r, "kv_tokens_max"), 39);
    }
  }
}

TEST(PolicyWithoutEviction, PrefillIsBitIdenticalToFull) {
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(80);  // 2 segments of 24 + 12, 8 tokens left over
  std::map<PositionMode, RunResult> full;
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    full[mode] = Ppl(model, ids, "full", Prefill(24, 12, mode));
  }
  for (const NoEvictionCase& c : NoEvictionCases()) {
    SCOPED_TRACE(c.spec);
    for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
      SCOPED_TRACE(PositionModeName(mode));
      RunResult r = Ppl(model, ids, c.spec, Prefill(24, 12, mode));
      EXPECT_EQ(Metric(r, "nll_mean"), Metric(full[mode], "nll_mean"));
      EXPECT_EQ(Samples(r, "nll"), Samples(full[mode], "nll"));
      EXPECT_EQ(Metric(r, "scored_tokens"), 24);
      EXPECT_EQ(Metric(r, "kv_tokens_max"), 24 + 12 - 1);
    }
  }
}

// ---- 5: prefill protocol -------------------------------------------------------------------

TEST(PrefillProtocol, CompressingPolicyScoresOnlyTheContinuation) {
  GptNeoxModel& model = Model(kPythiaLike);
  const int64_t C = 200, K = 16, budget = 8;
  const auto ids = TextIds(2 * (C + K) + 10);  // 2 segments, 10 tokens left over
  RunResult snap = Ppl(model, ids, "snapkv:budget=8,window=4", Prefill(C, K));
  RunResult full = Ppl(model, ids, "full", Prefill(C, K));
  EXPECT_EQ(Metric(snap, "scored_tokens"), 2 * K);
  EXPECT_EQ(Metric(full, "scored_tokens"), 2 * K);
  // The context is attended uncompressed; the continuation then sees budget + its own tokens.
  EXPECT_EQ(Metric(snap, "kv_tokens_max"), std::max(C, budget + K - 1));
  EXPECT_EQ(Metric(full, "kv_tokens_max"), C + K - 1);
  EXPECT_GT(std::abs(Metric(snap, "nll_mean") - Metric(full, "nll_mean")), 1e-3);
  // The first continuation token of each segment is predicted from the uncompressed context.
  const auto s = Samples(snap, "nll"), f = Samples(full, "nll");
  ASSERT_EQ(s.size(), static_cast<size_t>(2 * K));
  ASSERT_EQ(f.size(), static_cast<size_t>(2 * K));
  EXPECT_EQ(s[0], f[0]);
  EXPECT_EQ(s[K], f[K]);
  EXPECT_NE(s[1], f[1]);
  // Exact bytes: the compressed cache ends smaller; while the context was attended, the full
  // context's storage existed (at least C slots in one layer plus the other layers' storage).
  EXPECT_LT(Metric(snap, "kv_bytes_end"), Metric(full, "kv_bytes_end"));
  EXPECT_GE(Metric(full, "kv_bytes_peak"), (C + K - 1) * BytesPerSlot(model));
  const int64_t per_layer_slot = BytesPerSlot(model) / model.config().num_layers;
  EXPECT_GE(Metric(snap, "kv_bytes_peak"), C * per_layer_slot);
}

// adakv: with alpha = 1 every head keeps its own best `budget` entries, which is the inner
// scorer's per-head top-k (same NLL, same cache); with a small alpha heads keep uneven counts
// (the same number in all), so the NLL differs and the padded storage is never smaller.
TEST(PrefillProtocol, AdaKvIsItsInnerScorerAtAlphaOneAndUnevenBelow) {
  GptNeoxModel& model = Model(kPythiaLike);
  const int64_t C = 120, K = 16;
  const auto ids = TextIds(2 * (C + K) + 4);
  for (const std::string inner : {"keydiff", "observed_attention"}) {
    SCOPED_TRACE(inner);
    RunResult plain = Ppl(model, ids, inner + ":budget=24", Prefill(C, K));
    RunResult same = Ppl(model, ids, "adakv:budget=24,alpha=1,inner=" + inner, Prefill(C, K));
    // (Equal up to float summation order: the plain cache reuses slots, adakv's keeps them in
    // position order.)
    const auto a = Samples(same, "nll"), b = Samples(plain, "nll");
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << "token " << i;
    EXPECT_EQ(Metric(same, "kv_bytes_end"), Metric(plain, "kv_bytes_end"));
    RunResult uneven = Ppl(model, ids, "adakv:budget=24,alpha=0.2,inner=" + inner, Prefill(C, K));
    EXPECT_GT(std::abs(Metric(uneven, "nll_mean") - Metric(plain, "nll_mean")), 1e-4);
    EXPECT_GT(Metric(uneven, "kv_tokens_max"), 24 + K - 1);  // the widest head keeps more
    EXPECT_GE(Metric(uneven, "kv_bytes_end"), Metric(plain, "kv_bytes_end"));
    // The entries held are as many (24 per head on average + the continuation); the storage
    // padded to the widest head holds more.
    EXPECT_EQ(Metric(uneven, "kv_bytes_live_end"), Metric(plain, "kv_bytes_live_end"));
    EXPECT_EQ(Metric(plain, "kv_bytes_live_end"), (24 + K - 1) * BytesPerSlot(model));
    EXPECT_LT(Metric(uneven, "kv_bytes_live_end"), Metric(uneven, "kv_bytes_end"));
    EXPECT_TRUE(std::isfinite(Metric(uneven, "nll_mean")));
  }
}

TEST(PrefillProtocol, FullCacheEqualsOneForwardOverEachSegment) {
  GptNeoxModel& model = Model(kPythiaLike);
  const int64_t C = 24, K = 12;
  const auto ids = TextIds(2 * (C + K) + 5);
  RunResult r = Ppl(model, ids, "full", Prefill(C, K));
  const auto nll = Samples(r, "nll");
  ASSERT_EQ(nll.size(), static_cast<size_t>(2 * K));
  double sum = 0;
  for (int64_t s = 0; s < 2; ++s) {
    const int64_t base = s * (C + K);
    const std::vector<double> ref = ForwardNll(model, ids, base, base + C + K);
    for (int64_t j = 0; j < K; ++j) {
      // ref[i] is the NLL of token base+1+i; the continuation is tokens base+C .. base+C+K-1.
      EXPECT_NEAR(nll[s * K + j], ref[C - 1 + j], 1e-5) << "segment " << s << " token " << j;
      sum += ref[C - 1 + j];
    }
  }
  EXPECT_NEAR(Metric(r, "nll_mean"), sum / (2 * K), 1e-6);
  // The reference forward is the sliding protocol's: one window over the first segment scores
  // the mean of exactly these per-token NLLs (tokens 1..C+K-1).
  std::vector<int64_t> seg(ids.begin(), ids.begin() + C + K);
  RunResult sliding = Ppl(model, seg, "full", Sliding(C + K, C + K));
  const std::vector<double> ref0 = ForwardNll(model, ids, 0, C + K);
  double mean0 = 0;
  for (double x : ref0) mean0 += x;
  EXPECT_NEAR(Metric(sliding, "nll_mean"), mean0 / ref0.size(), 1e-6);
}

// ---- 6: positional modes at the PPL level -------------------------------------------------

TEST(PositionModesPpl, AllModesAgreeWithTheFullCache) {
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(64);
  std::map<PositionMode, double> streaming, prefill;
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    streaming[mode] = Metric(Ppl(model, ids, "full", Streaming(mode)), "nll_mean");
    prefill[mode] = Metric(Ppl(model, ids, "full", Prefill(40, 20, mode)), "nll_mean");
  }
  for (PositionMode mode : {PositionMode::kShifted, PositionMode::kRerotate}) {
    SCOPED_TRACE(PositionModeName(mode));
    EXPECT_NEAR(streaming[mode], streaming[PositionMode::kOriginal], 1e-6);
    EXPECT_NEAR(prefill[mode], prefill[PositionMode::kOriginal], 1e-6);
  }
}

TEST(PositionModesPpl, AfterEvictionShiftedEqualsRerotateAndOriginalDiffers) {
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(96);
  struct Case { std::string policy; PerplexityOptions (*options)(PositionMode); };
  const Case cases[] = {
      {"streaming_llm:sink_tokens=4,window=8", [](PositionMode m) { return Streaming(m); }},
      {"h2o:heavy=4,recent=4", [](PositionMode m) { return Streaming(m); }},
      {"snapkv:budget=8,window=4", [](PositionMode m) { return Prefill(48, 16, m); }},
      {"pyramidkv:budget=12,window=4", [](PositionMode m) { return Prefill(48, 16, m); }}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.policy);
    std::map<PositionMode, RunResult> r;
    for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
      r[mode] = Ppl(model, ids, c.policy, c.options(mode));
      EXPECT_TRUE(std::isfinite(Metric(r[mode], "ppl"))) << PositionModeName(mode);
    }
    const double shifted = Metric(r[PositionMode::kShifted], "nll_mean");
    const double rerotate = Metric(r[PositionMode::kRerotate], "nll_mean");
    const double original = Metric(r[PositionMode::kOriginal], "nll_mean");
    // Both put the kept keys at slots 0..k-1 and the query after them (kv-policies §2.6, §2.7.5).
    EXPECT_NEAR(shifted, rerotate, 1e-4);
    const auto a = Samples(r[PositionMode::kShifted], "nll");
    const auto b = Samples(r[PositionMode::kRerotate], "nll");
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-3) << i;
    // Original keeps true positions: a different computation once tokens were evicted.
    EXPECT_GT(std::abs(shifted - original), 1e-4);
  }
}

TEST(PositionModesPpl, RecentWindowOnlyIsTheSameInEveryMode) {
  // A contiguous recent window has no gaps: rotary depends only on the query-key offset, so true
  // positions and slot positions give the same attention (up to rounding).
  GptNeoxModel& model = Model(kPythiaLike);
  const auto ids = TextIds(96);
  std::map<PositionMode, double> nll;
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    RunResult r = Ppl(model, ids, "window:window=8", Streaming(mode));
    EXPECT_EQ(Metric(r, "kv_tokens_max"), 9);
    nll[mode] = Metric(r, "nll_mean");
  }
  EXPECT_NEAR(nll[PositionMode::kShifted], nll[PositionMode::kOriginal], 1e-5);
  EXPECT_NEAR(nll[PositionMode::kRerotate], nll[PositionMode::kOriginal], 1e-5);
  const double full = Metric(Ppl(model, ids, "full", Streaming()), "nll_mean");
  EXPECT_GT(std::abs(nll[PositionMode::kOriginal] - full), 1e-3);
}

// ---- 7: bad input --------------------------------------------------------------------------

TEST(WorkloadBadInput, UnknownProtocolIsNamed) {
  PerplexityOptions o;
  o.protocol = "rolling";
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(16), Spec("full"), o),
                {"unknown perplexity protocol 'rolling'", "sliding, streaming or prefill"});
}

TEST(WorkloadBadInput, SlidingRefusesAPolicy) {
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(16),
                              Spec("streaming_llm:sink_tokens=4,window=8"), Sliding(8, 4)),
                {"sliding", "streaming_llm", "'streaming' or 'prefill'"});
}

TEST(WorkloadBadInput, SlidingStrideLongerThanWindow) {
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(16), Spec("full"), Sliding(4, 8)),
                {"stride <= max_length"});
}

TEST(WorkloadBadInput, StreamingPrefillOnlyScorerNeedsInterval) {
  for (const std::string spec : {"snapkv:budget=8,window=4", "pyramidkv:budget=8,window=4",
                                 "random:ratio=0.5", "observed_attention:budget=8",
                                 "keydiff:budget=8"}) {
    SCOPED_TRACE(spec);
    ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(16), Spec(spec), Streaming()),
                  {Name(spec), "interval", "prefill"});
  }
  // With the decoding variant it runs.
  EXPECT_TRUE(RunPerplexity(Model(kPythiaLike), TextIds(16), Spec("snapkv:budget=8,window=4,interval=4"),
                            Streaming())
                  .ok());
}

TEST(WorkloadBadInput, PrefillTextShorterThanContextPlusContinuation) {
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(30), Spec("full"), Prefill(24, 12)),
                {"30 tokens", "context_tokens + continuation_tokens = 36"});
}

TEST(WorkloadBadInput, TooFewTokens) {
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(1), Spec("full"), Streaming()),
                {"at least 2 tokens"});
  ExpectInvalid(RunPerplexity(Model(kPythiaLike), TextIds(1), Spec("full"), Sliding(8, 4)),
                {"at least 2 tokens"});
}

}  // namespace
}  // namespace kvgrid
