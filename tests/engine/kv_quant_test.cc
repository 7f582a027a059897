// KIVI quantisation: the quantiser against the worked examples of kv-policies-next.md §4 and a
// float64 reference, the packing layout, the residual/flush timeline, attention read from the
// packed codes, eviction from a quantised cache, and the engine end to end.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/engine/cpu_packed_attention.h"
#include "model/engine/gpt_neox.h"
#include "model/engine/kv_quant.h"
#include "model/engine/quantized_kv.h"

namespace kvgrid {
namespace {

std::vector<uint8_t> Quantize(const std::vector<float>& x, int bits, float* s, float* m) {
  std::vector<uint8_t> q(x.size());
  QuantizeGroup(x.data(), 1, static_cast<int64_t>(x.size()), bits, q.data(), 1, s, m);
  return q;
}

TEST(KiviQuantizer, KeyExampleRoundsHalfToEven) {
  float s, m;
  EXPECT_EQ(Quantize({0, 1, 2, 3}, 2, &s, &m), (std::vector<uint8_t>{0, 1, 2, 3}));
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(m, 0.0f);
  // (x - m) / s = [0, 0.5, 1.25, 3]: 0.5 rounds to 0 (half to even), x̂ = [-1, -1, 0, 2].
  auto q = Quantize({-1, -0.5f, 0.25f, 2}, 2, &s, &m);
  EXPECT_EQ(q, (std::vector<uint8_t>{0, 0, 1, 3}));
  EXPECT_EQ(m, -1.0f);
  EXPECT_EQ(q[1] * s + m, -1.0f);
  EXPECT_EQ(q[2] * s + m, 0.0f);
}

TEST(KiviQuantizer, ValueExampleAndItsPackedWord) {
  float s, m;
  auto q = Quantize({0.5f, 1, -0.25f, 1.25f}, 2, &s, &m);
  EXPECT_EQ(q, (std::vector<uint8_t>{2, 2, 0, 3}));  // normalised [1.5, 2.5, 0, 3]: 2.5 -> 2
  EXPECT_EQ(m, -0.25f);
  EXPECT_EQ(s, 0.5f);
  EXPECT_EQ(q[0] * s + m, 0.75f);
  q.resize(16, 0);  // the head of one 16-code word
  uint32_t word = 0;
  PackCodes(q.data(), 16, 2, &word);
  EXPECT_EQ(word, 0x000000CAu);
}

TEST(KiviQuantizer, PackingIsLittleEndFirst) {
  std::vector<uint8_t> two = {0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3};
  uint32_t word = 0;
  PackCodes(two.data(), 16, 2, &word);
  EXPECT_EQ(word, 0xC0001BE4u);
  EXPECT_EQ(static_cast<int32_t>(word), -1073734684);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(CodeAt(&word, i, 2), two[i]);
  std::vector<uint8_t> four = {15, 0, 1, 2, 3, 4, 5, 9};
  PackCodes(four.data(), 8, 4, &word);
  EXPECT_EQ(word, 0x9543210Fu);
  // The key example's channels as codes 0..3 of a word: 0xE4 and 0xD0.
  std::vector<uint8_t> c0 = {0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<uint8_t> c1 = {0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  PackCodes(c0.data(), 16, 2, &word);
  EXPECT_EQ(word, 0x000000E4u);
  PackCodes(c1.data(), 16, 2, &word);
  EXPECT_EQ(word, 0x000000D0u);
}

TEST(KiviQuantizer, ConstantGroupDequantisesExactly) {
  float s, m;
  auto q = Quantize({0.3f, 0.3f, 0.3f, 0.3f}, 4, &s, &m);
  EXPECT_EQ(q, (std::vector<uint8_t>{0, 0, 0, 0}));
  EXPECT_EQ(s, 0.0f);
  EXPECT_EQ(q[0] * s + m, 0.3f);
}

// Against float64: the codes agree except where float32 rounding flips a value that sits on a
// rounding boundary (then by one step), and |x - x̂| <= s/2 up to float32 rounding.
TEST(KiviQuantizer, MatchesAFloat64ReferenceWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int bits : {2, 4, 8}) {
    int64_t flipped = 0, total = 0;
    for (int group = 0; group < 200; ++group) {
      std::vector<float> x(32);
      for (float& v : x) v = normal(rng);
      if (group % 10 == 0) x[3] = 40.0f;  // an outlier channel value
      float s, m;
      auto q = Quantize(x, bits, &s, &m);
      double lo = x[0], hi = x[0];
      for (float v : x) lo = std::min<double>(lo, v), hi = std::max<double>(hi, v);
      const double levels = (1 << bits) - 1, ref_s = (hi - lo) / levels;
      EXPECT_NEAR(s, ref_s, 1e-6 * std::abs(ref_s));
      EXPECT_EQ(m, static_cast<float>(lo));
      for (size_t i = 0; i < x.size(); ++i) {
        const double ref_q = std::nearbyint(std::clamp((x[i] - lo) / ref_s, 0.0, levels));
        ++total;
        if (q[i] != ref_q) {
          ++flipped;
          EXPECT_NEAR(q[i], ref_q, 1.0);
        }
        const double err = std::abs(static_cast<double>(q[i]) * s + m - x[i]);
        EXPECT_LE(err, ref_s / 2 * (1 + 1e-5) + 1e-6) << "bits " << bits << " x " << x[i];
      }
    }
    EXPECT_LE(flipped, total / 1000) << "bits " << bits;
  }
}

// A layer filled with known entries: H heads, d channels, entry t of head h = f(h, t, c).
std::vector<float> Entries(int64_t n, int64_t H, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * H * d);
  for (float& v : x) v = normal(rng);
  return x;
}

void AppendEntries(QuantizedLayer& layer, int64_t first, int64_t n, int64_t H, int64_t d) {
  auto k = Entries(n, H, d, static_cast<uint32_t>(first + 1));
  auto v = Entries(n, H, d, static_cast<uint32_t>(first + 1000));
  std::vector<int64_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = first + t;
  layer.Append(k.data(), v.data(), n, H * d, d, pos.data());
}

// kv-policies-next.md's timeline (G = 32, R = 128, L = 300) at a quarter of the size.
TEST(QuantizedLayer, FollowsKivisResidualTimeline) {
  KvDtype kv = *ParseKvDtype("int2:group=8,residual=32");
  const int64_t H = 2, d = 16;
  QuantizedLayer layer(H, d, kv);
  AppendEntries(layer, 0, 75, H, d);
  EXPECT_EQ(layer.quantized_keys(0), 0);  // attention runs on the unquantised prefill first
  layer.Flush();
  EXPECT_EQ(layer.quantized_keys(0), 64);   // L - L mod R
  EXPECT_EQ(layer.quantized_values(0), 43);  // L - R
  for (int64_t t = 75; t < 96; ++t) {
    AppendEntries(layer, t, 1, H, d);
    layer.Flush();
    EXPECT_EQ(layer.quantized_keys(1), t + 1 < 96 ? 64 : 96) << t;  // flushed when R fill up
    EXPECT_EQ(layer.quantized_values(1), t + 1 - 32) << t;          // slides one per step
  }
  QuantizedLayer exact(H, d, kv);  // L == R: everything quantised, the key residual empty
  AppendEntries(exact, 0, 32, H, d);
  exact.Flush();
  EXPECT_EQ(exact.quantized_keys(0), 32);
  EXPECT_EQ(exact.quantized_values(0), 0);
  QuantizedLayer short_one(H, d, kv);  // L < R: nothing quantised
  AppendEntries(short_one, 0, 20, H, d);
  short_one.Flush();
  EXPECT_EQ(short_one.quantized_keys(0), 0);
  EXPECT_EQ(short_one.quantized_values(0), 0);
}

TEST(QuantizedLayer, StoresKeysPerChannelAndValuesPerEntryWithinTheMethodsBound) {
  KvDtype kv = *ParseKvDtype("int4:group=8,residual=8");
  const int64_t H = 2, d = 16, n = 40;
  QuantizedLayer layer(H, d, kv);
  auto k = Entries(n, H, d, 1);
  auto v = Entries(n, H, d, 2);
  std::vector<int64_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = t;
  layer.Append(k.data(), v.data(), n, H * d, d, pos.data());
  layer.Flush();
  ASSERT_EQ(layer.quantized_keys(0), 40);
  ASSERT_EQ(layer.quantized_values(0), 32);
  auto keys = layer.Keys(), values = layer.Values();
  int64_t inexact = 0, quantised = 0;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t c = 0; c < d; ++c) {
      for (int64_t g = 0; g < n / 8; ++g) {  // one key group: channel c of entries 8g..8g+7
        double lo = 1e9, hi = -1e9;
        for (int64_t t = 8 * g; t < 8 * g + 8; ++t) {
          lo = std::min<double>(lo, k[(t * H + h) * d + c]);
          hi = std::max<double>(hi, k[(t * H + h) * d + c]);
        }
        for (int64_t t = 8 * g; t < 8 * g + 8; ++t) {
          EXPECT_LE(std::abs(keys[0][h][t][c].item<float>() - k[(t * H + h) * d + c]),
                    (hi - lo) / 15 / 2 + 1e-6);
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t g = 0; g < d / 8; ++g) {  // one value group: channels 8g..8g+7 of entry t
        double lo = 1e9, hi = -1e9;
        for (int64_t c = 8 * g; c < 8 * g + 8; ++c) {
          lo = std::min<double>(lo, v[(t * H + h) * d + c]);
          hi = std::max<double>(hi, v[(t * H + h) * d + c]);
        }
        for (int64_t c = 8 * g; c < 8 * g + 8; ++c) {
          const float got = values[0][h][t][c].item<float>(), want = v[(t * H + h) * d + c];
          if (t >= 32) {
            EXPECT_EQ(got, want);  // the residual is exact
          } else {
            EXPECT_LE(std::abs(got - want), (hi - lo) / 15 / 2 + 1e-6);
            inexact += got != want;  // really quantised (only a group's min and max are levels)
            ++quantised;
          }
        }
      }
    }
  }
  EXPECT_GT(inexact, quantised * 2 / 3);
}

// The decode kernel reads the packed codes; it must equal softmax(q·K̂ᵀ/√d)·V̂ on the
// dequantised entries (computed here in float64).
// d = 16 takes the portable kernels everywhere; d = 64 (Pythia's heads) and 128 the AVX2 ones
// where the CPU has them (cpu_packed_attention.h), except int4/int2 with groups of 4.
TEST(QuantizedLayer, DecodeFromPackedCodesEqualsAttentionOnDequantisedEntries) {
  for (const auto& [text, d] : std::vector<std::pair<const char*, int64_t>>{
           {"int2:group=8,residual=16", 16}, {"int4:group=16,residual=16", 16}, {"int8:group=8,residual=8", 16},
           {"int2:group=8,residual=16", 64}, {"int4:group=32,residual=32", 64}, {"int8:group=8,residual=8", 64},
           {"int4:group=16,residual=16", 128}, {"int4:group=4,residual=16", 64}}) {
    SCOPED_TRACE(absl::StrCat(text, " d=", d));
    KvDtype kv = *ParseKvDtype(text);
    const int64_t H = 3;
    QuantizedLayer layer(H, d, kv);
    AppendEntries(layer, 0, 50, H, d);
    layer.Flush();
    AppendEntries(layer, 50, 1, H, d);
    const int64_t n = layer.length();
    auto q = Entries(1, H, d, 99);
    std::vector<float> out(H * d), probs(H * n);
    const float scale = 0.25f;
    layer.AttendOne(q.data(), scale, out.data(), probs.data());
    auto keys = layer.Keys().to(torch::kDouble), values = layer.Values().to(torch::kDouble);
    auto qt = torch::from_blob(q.data(), {1, H, 1, d}, torch::kFloat32).to(torch::kDouble);
    auto p = torch::softmax(torch::matmul(qt, keys.transpose(-1, -2)) * scale, -1);
    auto want = torch::matmul(p, values).view({H * d});
    auto got = torch::from_blob(out.data(), {H * d}, torch::kFloat32).to(torch::kDouble);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
    auto got_p = torch::from_blob(probs.data(), {H * n}, torch::kFloat32).to(torch::kDouble);
    EXPECT_LT((got_p - p.view({H * n})).abs().max().item<double>(), 1e-6);
  }
}

// The vector kernels compute what the portable ones do (same codes, another summation order),
// for every bit width, several head sizes and value groups, on random packed rows.
TEST(PackedAttention, VectorKernelsEqualThePortableOnes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> word;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int vectorised = 0;
  for (int bits : {2, 4, 8}) {
    for (int64_t d : {32, 64, 128, 256}) {
      for (int64_t group : {8, 16, 32}) {
        if (d % group != 0) continue;
        SCOPED_TRACE(absl::StrCat("int", bits, " d=", d, " group=", group));
        vectorised += PackedKernelIsVectorised(d, bits, group);
        const int64_t n = 37, W = d * bits / 32, groups = d / group;
        std::vector<uint32_t> rows(n * W);
        for (auto& w : rows) w = word(rng);
        std::vector<float> qs(d), p(n), scale(n * groups), zero(n * groups);
        for (auto* v : {&qs, &p, &scale, &zero}) {
          for (float& x : *v) x = normal(rng);
        }
        std::vector<float> best(n), portable(n);
        PackedKeyScores(rows.data(), n, d, bits, qs.data(), 0.5f, 0.125f, best.data());
        PackedKeyScores(rows.data(), n, d, bits, qs.data(), 0.5f, 0.125f, portable.data(),
                        PackedKernel::kPortable);
        for (int64_t e = 0; e < n; ++e) {
          // And both equal the codes read one by one (CodeAt, the packing's definition).
          double want = 0.5;
          for (int64_t c = 0; c < d; ++c) want += qs[c] * static_cast<double>(CodeAt(&rows[e * W], c, bits));
          EXPECT_NEAR(best[e], want * 0.125, 1e-3 * (1 + std::abs(want)));
          EXPECT_NEAR(best[e], portable[e], 1e-4 * (1 + std::abs(portable[e])));
        }
        std::vector<float> out_best(d, 1.0f), out_portable(d, 1.0f);  // both accumulate
        PackedValueSum(p.data(), rows.data(), n, d, bits, group, scale.data(), zero.data(), out_best.data());
        PackedValueSum(p.data(), rows.data(), n, d, bits, group, scale.data(), zero.data(),
                       out_portable.data(), PackedKernel::kPortable);
        for (int64_t c = 0; c < d; ++c) {
          double want = 1.0;
          for (int64_t t = 0; t < n; ++t) {
            const int64_t g = t * groups + c / group;
            want += p[t] * (CodeAt(&rows[t * W], c, bits) * static_cast<double>(scale[g]) + zero[g]);
          }
          EXPECT_NEAR(out_best[c], want, 1e-3 * (1 + std::abs(want)));
          EXPECT_NEAR(out_best[c], out_portable[c], 1e-4 * (1 + std::abs(out_portable[c])));
        }
      }
    }
  }
  // On an AVX2 machine (every CI and dev machine so far) the vector path really ran.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_GT(vectorised, 0);
  }
}

// Eviction removes rows: the survivors dequantise exactly as before, whichever region they sit
// in, a key group emptied by eviction frees its scales, and no entry is re-quantised.
TEST(QuantizedLayer, KeepRemovesRowsWithoutRequantising) {
  KvDtype kv = *ParseKvDtype("int2:group=8,residual=16");
  const int64_t H = 2, d = 16;
  QuantizedLayer layer(H, d, kv);
  AppendEntries(layer, 0, 60, H, d);
  layer.Flush();  // keys: 48 quantised (6 groups) + 12 exact; values: 44 quantised + 16 exact
  auto keys = layer.Keys(), values = layer.Values(), pos = layer.Positions();
  // Head 0 drops entries 8..15 (a whole key group) and a few others; head 1 other ones.
  std::vector<int64_t> keep0, keep1;
  for (int64_t i = 0; i < 60; ++i) {
    if (!(i >= 8 && i < 16) && i != 30 && i != 47 && i != 50) keep0.push_back(i);
  }
  for (int64_t i = 0; i < 60 && keep1.size() < keep0.size(); ++i) {
    if (i != 2 && i != 45 && i != 46 && i != 58) keep1.push_back(i);
  }
  ASSERT_EQ(keep0.size(), keep1.size());
  std::vector<int64_t> rows = keep0;
  rows.insert(rows.end(), keep1.begin(), keep1.end());
  const int64_t k = static_cast<int64_t>(keep0.size());
  const int64_t bytes_before = layer.LiveBytes();
  layer.Keep(rows.data(), k, k);
  ASSERT_EQ(layer.length(), k);
  auto index = torch::tensor(rows, torch::kInt64).view({1, H, k});
  EXPECT_TRUE(torch::equal(layer.Keys(), keys.gather(2, index.unsqueeze(-1).expand({1, H, k, d}))));
  EXPECT_TRUE(torch::equal(layer.Values(), values.gather(2, index.unsqueeze(-1).expand({1, H, k, d}))));
  EXPECT_TRUE(torch::equal(layer.Positions(), pos.gather(2, index)));
  EXPECT_EQ(layer.quantized_keys(0), 48 - 8 - 2);  // 30 and 47 were quantised keys
  EXPECT_EQ(layer.quantized_values(0), 44 - 8 - 1);
  EXPECT_LT(layer.LiveBytes(), bytes_before);
  // Decoding and flushing go on from there.
  AppendEntries(layer, 60, 1, H, d);
  layer.Flush();
  EXPECT_EQ(layer.length(), k + 1);
}

// --- The engine with a quantised cache ------------------------------------------------------

const std::string kModel = std::string(KVGRID_FIXTURES_DIR) + "/models/tiny-neox-pythia-like";

std::unique_ptr<GptNeoxModel> Load() {
  auto m = GptNeoxModel::Load(kModel, torch::kFloat32, torch::kCPU);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

std::vector<int64_t> SomeIds(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 7919 + 13) % 50000);
  return ids;
}

// Logits of a 32-token prompt in one forward, then token-by-token decoding to `total`.
torch::Tensor RunLogits(GptNeoxModel& model, const KvDtype& kv, int64_t total, KvPolicy* policy,
                        int64_t* peak_bytes = nullptr) {
  auto ids = SomeIds(total);
  KvCache cache = model.NewCache(1, PositionMode::kOriginal, kv);
  std::vector<torch::Tensor> rows;
  const int64_t prompt = 32;
  ForwardRequest req;
  req.ids = torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + prompt)).view({1, prompt});
  req.positions = torch::arange(prompt).view({1, prompt});
  req.logits = LogitsRows::kAll;
  req.prompt_length = prompt;
  auto out = model.Forward(req, cache, policy);
  EXPECT_TRUE(out.ok()) << out.status();
  rows.push_back(out->logits);
  for (int64_t t = prompt; t < total; ++t) {
    ForwardRequest step;
    step.ids = torch::tensor({ids[t]}).view({1, 1});
    step.positions = torch::full({1, 1}, t, torch::kInt64);
    step.phase = ForwardPhase::kDecode;
    step.tokens_seen = t;
    step.prompt_length = prompt;
    auto o = model.Forward(step, cache, policy);
    EXPECT_TRUE(o.ok()) << o.status();
    rows.push_back(o->logits);
  }
  if (peak_bytes) *peak_bytes = cache.PeakAllocatedBytes();
  return torch::cat(rows, 1);
}

TEST(QuantizedEngine, ResidualCoveringTheTextIsTheFloatCache) {
  auto model = Load();
  auto fp = RunLogits(*model, KvDtype{}, 60, nullptr);
  auto q = RunLogits(*model, *ParseKvDtype("int2:group=8,residual=64"), 60, nullptr);
  EXPECT_LT((fp - q).abs().max().item<float>(), 1e-4);  // nothing quantised yet
}

TEST(QuantizedEngine, ErrorGrowsAsBitsFallAndBytesFallWithThem) {
  auto model = Load();
  int64_t fp_bytes = 0;
  auto fp = RunLogits(*model, KvDtype{}, 200, nullptr, &fp_bytes);
  double last_err = 0;
  int64_t last_bytes = fp_bytes;
  for (const char* text : {"int8:group=8,residual=16", "int4:group=8,residual=16", "int2:group=8,residual=16"}) {
    int64_t bytes = 0;
    auto q = RunLogits(*model, *ParseKvDtype(text), 200, nullptr, &bytes);
    const double err = (fp - q).abs().max().item<double>();
    EXPECT_GT(err, last_err) << text;  // really quantised, more so with fewer bits
    EXPECT_LT(bytes, last_bytes) << text;
    last_err = err;
    last_bytes = bytes;
  }
  EXPECT_LT(last_err, 5.0);  // still the same model (logits of order 10)
}

// A policy composes with the quantised cache: StreamingLLM's sinks + window keeps the same
// number of entries, and the cache holds them packed.
TEST(QuantizedEngine, ComposesWithAnEvictionPolicy) {
  auto model = Load();
  auto spec = ParsePolicySpec("streaming_llm:sink_tokens=4,window=60");
  ASSERT_TRUE(spec.ok());
  auto policy = MakePolicy(*spec);
  ASSERT_TRUE(policy.ok());
  int64_t fp_bytes = 0, q8_bytes = 0, q2_bytes = 0;
  auto fp = RunLogits(*model, KvDtype{}, 160, policy->get(), &fp_bytes);
  (*policy)->Reset(2);
  auto q8 = RunLogits(*model, *ParseKvDtype("int8:group=8,residual=16"), 160, policy->get(), &q8_bytes);
  (*policy)->Reset(2);
  RunLogits(*model, *ParseKvDtype("int2:group=8,residual=16"), 160, policy->get(), &q2_bytes);
  EXPECT_LT((fp - q8).abs().max().item<float>(), 0.5);  // int8: close to the float cache
  // d = 16, G = 8: int8 with float32 scale + zero is 16 bits a number, int2 10 (+ residuals).
  EXPECT_LT(q8_bytes, fp_bytes);
  EXPECT_LT(q2_bytes, q8_bytes);
  // And a scorer that evicts at every step from the quantised region (h2o reads attention).
  auto h2o = MakePolicy(*ParsePolicySpec("h2o:heavy=16,recent=16"));
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  auto q2 = RunLogits(*model, *ParseKvDtype("int2:group=8,residual=16"), 120, h2o->get());
  EXPECT_TRUE(torch::isfinite(q2).all().item<bool>());
}

// Hands everything to `inner` but NeedsKeyValuesNow: the default, dequantised keys at every step.
class KeysEveryStep : public KvPolicy {
 public:
  explicit KeysEveryStep(std::unique_ptr<KvPolicy> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  void Reset(int64_t layers) override { inner_->Reset(layers); }
  torch::Tensor SelectKeep(const LayerView& v) override { return inner_->SelectKeep(v); }
  bool ActsAfter(ForwardPhase p) const override { return inner_->ActsAfter(p); }
  AttentionNeeds attention_needs() const override { return inner_->attention_needs(); }
  bool NeedsKeyValues() const override { return inner_->NeedsKeyValues(); }
  bool NeedsValues() const override { return inner_->NeedsValues(); }
 private:
  std::unique_ptr<KvPolicy> inner_;
};

// A decoding variant reads keys only at its compression steps, so a quantised cache dequantises
// them only then; the selections (and so the logits) are those of dequantising at every step.
TEST(QuantizedEngine, DecodingVariantGetsRealKeysWhenItCompresses) {
  auto model = Load();
  const KvDtype kv = *ParseKvDtype("int2:group=8,residual=16");
  for (const char* text : {"snapkv:budget=40,window=8,interval=4", "keydiff:budget=40,interval=4"}) {
    auto lazy = MakePolicy(*ParsePolicySpec(text));
    ASSERT_TRUE(lazy.ok()) << lazy.status();
    (*lazy)->Reset(2);
    auto a = RunLogits(*model, kv, 120, lazy->get());
    KeysEveryStep every(*MakePolicy(*ParsePolicySpec(text)));
    every.Reset(2);
    auto b = RunLogits(*model, kv, 120, &every);
    EXPECT_TRUE(torch::equal(a, b)) << text;
  }
}

TEST(QuantizedEngine, RefusesWhatItCannotRunNamingKvDtype) {
  auto model = Load();
  const KvDtype kv = *ParseKvDtype("int4:group=8,residual=16");
  ForwardRequest req;
  req.ids = torch::tensor({1, 2, 3, 4}).view({2, 2});
  req.positions = torch::tensor({0, 1, 0, 1}).view({2, 2});
  KvCache batch2 = model->NewCache(2, PositionMode::kOriginal, kv);
  auto a = model->Forward(req, batch2);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("kv_dtype int4:group=8,residual=16"), std::string::npos) << a.status();
  req.ids = torch::tensor({1, 2}).view({1, 2});
  req.positions = torch::tensor({0, 1}).view({1, 2});
  KvCache shifted = model->NewCache(1, PositionMode::kShifted, kv);
  auto b = model->Forward(req, shifted);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("position_mode original"), std::string::npos) << b.status();
  KvCache wide = model->NewCache(1, PositionMode::kOriginal, *ParseKvDtype("int4"));  // G=32 > d=16
  auto c = model->Forward(req, wide);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("must divide the head dimension 16"), std::string::npos);
  auto adakv = MakePolicy(*ParsePolicySpec("adakv:inner=keydiff,budget=8"));
  ASSERT_TRUE(adakv.ok()) << adakv.status();
  KvCache plain = model->NewCache(1, PositionMode::kOriginal, kv);
  auto d = model->Forward(req, plain, adakv->get());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("uneven heads"), std::string::npos) << d.status();
}

}  // namespace
}  // namespace kvgrid
