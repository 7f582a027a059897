// Engine behaviour beyond the golden numbers: positional modes, eviction mechanics, bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "model/engine/generate.h"
#include "model/engine/gpt_neox.h"

namespace kvgrid {
namespace {

const std::string kModel = std::string(KVGRID_FIXTURES_DIR) + "/models/tiny-neox-pythia-like";

std::unique_ptr<GptNeoxModel> Load() {
  auto m = GptNeoxModel::Load(kModel, torch::kFloat32, torch::kCPU);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

// Keeps the first `sinks` and the last `recent` slots (a minimal StreamingLLM for engine tests).
class SinkWindow : public KvPolicy {
 public:
  SinkWindow(int64_t sinks, int64_t recent) : sinks_(sinks), recent_(recent) {}
  std::string name() const override { return "test_sink_window"; }
  torch::Tensor SelectKeep(const LayerView& v) override {
    if (v.n <= sinks_ + recent_) return {};
    auto idx = torch::cat({torch::arange(sinks_), torch::arange(v.n - recent_, v.n)});
    return idx.view({1, 1, -1}).expand({1, v.keys.size(1), idx.size(0)}).contiguous();
  }
 private:
  int64_t sinks_, recent_;
};

torch::Tensor StreamLogits(GptNeoxModel& model, const std::vector<int64_t>& ids, PositionMode mode,
                           KvPolicy* policy, int64_t* max_kv_bytes = nullptr) {
  KvCache cache = model.NewCache(1, mode);
  std::vector<torch::Tensor> rows;
  for (size_t t = 0; t < ids.size(); ++t) {
    ForwardRequest req;
    req.ids = torch::tensor({ids[t]}, torch::kInt64).view({1, 1});
    req.positions = torch::full({1, 1}, static_cast<int64_t>(t), torch::kInt64);
    req.phase = t == 0 ? ForwardPhase::kPrefill : ForwardPhase::kDecode;
    req.tokens_seen = static_cast<int64_t>(t);
    auto out = model.Forward(req, cache, policy);
    EXPECT_TRUE(out.ok());
    rows.push_back(out->logits);
    if (max_kv_bytes) *max_kv_bytes = std::max(*max_kv_bytes, cache.AllocatedBytes());
  }
  return torch::cat(rows, 1);
}

std::vector<int64_t> SomeIds(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 7919 + 13) % 50000);
  return ids;
}

TEST(PositionModes, AllModesAgreeWithoutEviction) {
  auto model = Load();
  auto ids = SomeIds(20);
  auto ref = StreamLogits(*model, ids, PositionMode::kOriginal, nullptr);
  EXPECT_LT((StreamLogits(*model, ids, PositionMode::kShifted, nullptr) - ref).abs().max().item<double>(), 1e-4);
  EXPECT_LT((StreamLogits(*model, ids, PositionMode::kRerotate, nullptr) - ref).abs().max().item<double>(), 1e-4);
}

TEST(PositionModes, ShiftedAndRerotateAgreeAfterEviction) {
  // Both put kept keys at slots 0..n-1 and the query at slot n; they differ only in when the
  // rotation happens, so after evictions they must give the same logits.
  auto model = Load();
  auto ids = SomeIds(30);
  SinkWindow a(2, 5), b(2, 5), c(2, 5);
  auto shifted = StreamLogits(*model, ids, PositionMode::kShifted, &a);
  auto rerotate = StreamLogits(*model, ids, PositionMode::kRerotate, &b);
  auto original = StreamLogits(*model, ids, PositionMode::kOriginal, &c);
  EXPECT_LT((shifted - rerotate).abs().max().item<double>(), 1e-3);
  // Original positions keep true positions: different numbers once tokens were evicted.
  EXPECT_GT((shifted - original).abs().max().item<double>(), 1e-3);
}

TEST(KvCacheMemory, BoundedPolicyKeepsAllocatedBytesFlat) {
  auto model = Load();
  SinkWindow p(2, 6);
  int64_t bytes_short = 0, bytes_long = 0;
  StreamLogits(*model, SomeIds(40), PositionMode::kShifted, &p, &bytes_short);
  StreamLogits(*model, SomeIds(160), PositionMode::kShifted, &p, &bytes_long);
  EXPECT_EQ(bytes_short, bytes_long);
  int64_t full_short = 0, full_long = 0;
  StreamLogits(*model, SomeIds(40), PositionMode::kOriginal, nullptr, &full_short);
  StreamLogits(*model, SomeIds(160), PositionMode::kOriginal, nullptr, &full_long);
  EXPECT_GT(full_long, full_short);
}

// SinkWindow that also records what each layer's view showed it (queries, keys, probabilities).
class RecordingSinkWindow : public SinkWindow {
 public:
  using SinkWindow::SinkWindow;
  AttentionNeeds attention_needs() const override { return {.last_rows = AttentionNeeds::kAllRows}; }
  torch::Tensor SelectKeep(const LayerView& v) override {
    seen.push_back({v.queries.clone(), v.keys.clone(), v.probs.clone()});
    return SinkWindow::SelectKeep(v);
  }
  std::vector<std::vector<torch::Tensor>> seen;
};

struct ChunkedRun {
  std::vector<torch::Tensor> logits;  // per forward, every row
  std::vector<torch::Tensor> cache;   // per layer: keys, values, positions
};

// A 170-token prefill (more than one 128-query block), a 130-token chunk on top of it, then ten
// one-token steps, with every row's logits.
ChunkedRun RunChunked(GptNeoxModel& model, PositionMode mode, KvPolicy* policy) {
  auto ids = SomeIds(310);
  KvCache cache = model.NewCache(1, mode);
  ChunkedRun run;
  int64_t start = 0;
  for (int64_t len : {170, 130, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
    ForwardRequest req;
    req.ids = torch::tensor(std::vector<int64_t>(ids.begin() + start, ids.begin() + start + len)).view({1, len});
    req.positions = torch::arange(start, start + len).view({1, len});
    req.logits = LogitsRows::kAll;
    req.phase = start == 0 ? ForwardPhase::kPrefill : ForwardPhase::kDecode;
    req.tokens_seen = start;
    req.prompt_length = 170;
    auto out = model.Forward(req, cache, policy);
    EXPECT_TRUE(out.ok()) << out.status();
    run.logits.push_back(out->logits);
    start += len;
  }
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    // In logical order: the fused path's cache reuses evicted slots, the generic one compacts.
    run.cache.push_back(cache.LogicalKeys(l).clone());
    run.cache.push_back(cache.LogicalValues(l).clone());
    run.cache.push_back(cache.LogicalPositions(l).to(torch::kFloat32));
  }
  return run;
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// The batch-1 float32 CPU kernels (PrefillAttentionCpu, DecodeAttentionCpu) against the generic
// tensor-op path, in every positional mode, with and without a policy that evicts and reads the
// queries, keys and attention probabilities it is shown.
TEST(FusedCpuAttention, MatchesGenericPathInEveryModeWithChunksAndEviction) {
  auto model = Load();
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    for (bool evict : {false, true}) {
      SCOPED_TRACE(std::string(PositionModeName(mode)) + (evict ? " with eviction" : ""));
      RecordingSinkWindow fused_policy(4, 100), generic_policy(4, 100);
      model->set_fused_cpu_attention(true);
      ChunkedRun fused = RunChunked(*model, mode, evict ? &fused_policy : nullptr);
      model->set_fused_cpu_attention(false);
      ChunkedRun generic = RunChunked(*model, mode, evict ? &generic_policy : nullptr);
      model->set_fused_cpu_attention(true);
      ASSERT_EQ(fused.logits.size(), generic.logits.size());
      for (size_t i = 0; i < fused.logits.size(); ++i) EXPECT_LT(MaxDiff(fused.logits[i], generic.logits[i]), 1e-4) << "forward " << i;
      ASSERT_EQ(fused.cache.size(), generic.cache.size());
      for (size_t i = 0; i < fused.cache.size(); ++i) EXPECT_LT(MaxDiff(fused.cache[i], generic.cache[i]), 1e-5) << "cache tensor " << i;
      ASSERT_EQ(fused_policy.seen.size(), generic_policy.seen.size());
      for (size_t i = 0; i < fused_policy.seen.size(); ++i) {
        for (size_t j = 0; j < 3; ++j) EXPECT_LT(MaxDiff(fused_policy.seen[i][j], generic_policy.seen[i][j]), 1e-5) << "view " << i << " part " << j;
      }
      if (evict) {
        EXPECT_EQ(fused_policy.seen.size(), 12u * model->config().num_layers);
        EXPECT_EQ(fused.cache[0].size(2), 104);  // 4 sinks + 100 recent kept
      }
    }
  }
}

// Keeps, at the prefill, slots {t < n : t % (h + 2) == 0} in head h (uneven counts, rows padded
// with -1), or with `even` every even slot in every head, as an uneven keep padded with one -1
// column (a hole at the same slot of every head) or as a plain keep.
class EveryKth : public KvPolicy {
 public:
  enum class Shape { kUneven, kEvenWithHoleColumn, kEven };
  explicit EveryKth(Shape shape) : shape_(shape) {}
  std::string name() const override { return "test_every_kth"; }
  bool KeepsUnevenHeads() const override { return shape_ != Shape::kEven; }
  torch::Tensor SelectKeep(const LayerView& v) override {
    if (v.phase != ForwardPhase::kPrefill) return {};
    const int64_t H = v.keys.size(1);
    std::vector<std::vector<int64_t>> rows(H);
    size_t widest = 0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t step = shape_ == Shape::kUneven ? h + 2 : 2;
      for (int64_t t = 0; t < v.n; t += step) rows[h].push_back(t);
      if (shape_ == Shape::kEvenWithHoleColumn) rows[h].push_back(-1);
      widest = std::max(widest, rows[h].size());
    }
    auto keep = torch::full({1, H, static_cast<int64_t>(widest)}, -1, torch::kInt64);
    for (int64_t h = 0; h < H; ++h) {
      std::copy(rows[h].begin(), rows[h].end(), keep.data_ptr<int64_t>() + h * widest);
    }
    return keep;
  }
 private:
  Shape shape_;
};

// Heads that keep different numbers of entries (adakv) leave holes in the cache: attention gives
// them zero weight on the fused CPU kernels and the generic path alike, in every positional mode,
// through a second prefill chunk and decode steps; a hole is the same as the entry not being
// there (original positions, where slots carry no position).
TEST(UnevenHeads, HolesAreMaskedOnEveryAttentionPath) {
  auto model = Load();
  for (PositionMode mode : {PositionMode::kOriginal, PositionMode::kShifted, PositionMode::kRerotate}) {
    SCOPED_TRACE(PositionModeName(mode));
    EveryKth fused_policy(EveryKth::Shape::kUneven), generic_policy(EveryKth::Shape::kUneven);
    model->set_fused_cpu_attention(true);
    ChunkedRun fused = RunChunked(*model, mode, &fused_policy);
    model->set_fused_cpu_attention(false);
    ChunkedRun generic = RunChunked(*model, mode, &generic_policy);
    model->set_fused_cpu_attention(true);
    ASSERT_EQ(fused.logits.size(), generic.logits.size());
    for (size_t i = 0; i < fused.logits.size(); ++i) {
      EXPECT_LT(MaxDiff(fused.logits[i], generic.logits[i]), 1e-4) << "forward " << i;
    }
    // Head 0 keeps 85 of 170 prefill slots, the widest; then 130 + 10 tokens are appended.
    EXPECT_EQ(fused.cache[0].size(2), 85 + 140);
  }
  for (bool fused_path : {true, false}) {
    SCOPED_TRACE(fused_path ? "fused" : "generic");
    model->set_fused_cpu_attention(fused_path);
    EveryKth holed(EveryKth::Shape::kEvenWithHoleColumn), plain(EveryKth::Shape::kEven);
    ChunkedRun with_hole = RunChunked(*model, PositionMode::kOriginal, &holed);
    ChunkedRun without = RunChunked(*model, PositionMode::kOriginal, &plain);
    for (size_t i = 0; i < with_hole.logits.size(); ++i) {
      EXPECT_LT(MaxDiff(with_hole.logits[i], without.logits[i]), 1e-5) << "forward " << i;
    }
  }
  model->set_fused_cpu_attention(true);
}

TEST(UnevenHeads, LiveBytesLeaveHolesOutAndAllocatedBytesCountThem) {
  auto model = Load();
  EveryKth policy(EveryKth::Shape::kUneven);
  KvCache cache = model->NewCache(1, PositionMode::kOriginal);
  ForwardRequest req;
  req.ids = torch::tensor(SomeIds(170)).view({1, 170});
  req.positions = torch::arange(170).view({1, 170});
  ASSERT_TRUE(model->Forward(req, cache, &policy).ok());
  const auto& c = model->config();
  int64_t entries = 0;  // per layer: sum over heads of ceil(170 / (h + 2))
  for (int64_t h = 0; h < c.num_heads; ++h) entries += (170 + h + 1) / (h + 2);
  const int64_t row = c.head_dim() * 4 * 2;  // float32 keys + values
  EXPECT_EQ(cache.LiveBytes(), c.num_layers * entries * row);
  EXPECT_EQ(cache.MaxLength(), 85);
  EXPECT_GE(cache.AllocatedBytes(), c.num_layers * c.num_heads * 85 * row);
  EXPECT_TRUE(cache.layer(0).holes.defined());
}

TEST(BadInput, IdsOutOfVocabularyAreAnError) {
  auto model = Load();
  KvCache cache = model->NewCache(1, PositionMode::kOriginal);
  ForwardRequest req;
  req.ids = torch::tensor({1, 50304}, torch::kInt64).view({1, 2});
  req.positions = torch::arange(2).view({1, 2});
  auto out = model->Forward(req, cache);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(std::string(out.status().message()).find("50304"), std::string::npos);
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("kvgrid_engine_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }
 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

TEST(BadInput, MissingTensorNamesTheTensorAndFile) {
  TempDir dir;
  std::filesystem::copy_file(kModel + "/config.json", dir.str() + "/config.json");
  auto src = SafetensorsFile::Open(kModel + "/model.safetensors");
  ASSERT_TRUE(src.ok());
  std::vector<StWriteTensor> keep;
  for (const auto& [name, info] : (*src)->tensors()) {
    if (name == "gpt_neox.final_layer_norm.bias") continue;
    keep.push_back({name, info.dtype, info.shape, (*src)->DataOf(info)});
  }
  ASSERT_TRUE(WriteSafetensors(dir.str() + "/model.safetensors", keep, {}).ok());
  auto m = GptNeoxModel::Load(dir.str(), torch::kFloat32, torch::kCPU);
  ASSERT_FALSE(m.ok());
  std::string msg(m.status().message());
  EXPECT_NE(msg.find("gpt_neox.final_layer_norm.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
}

TEST(BadInput, ShapeMismatchWithConfigIsAnError) {
  TempDir dir;
  std::ifstream in(kModel + "/config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  auto pos = cfg.find("\"intermediate_size\": 256");
  ASSERT_NE(pos, std::string::npos);
  cfg.replace(pos, 24, "\"intermediate_size\": 128");
  std::ofstream(dir.str() + "/config.json") << cfg;
  std::filesystem::create_symlink(kModel + "/model.safetensors", dir.str() + "/model.safetensors");
  auto m = GptNeoxModel::Load(dir.str(), torch::kFloat32, torch::kCPU);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(std::string(m.status().message()).find("dense_h_to_4h"), std::string::npos) << m.status();
}

// tie_word_embeddings: a checkpoint without embed_out.weight uses embed_in as the LM head; it
// computes exactly what an untied checkpoint whose embed_out is a copy of embed_in computes.
TEST(Config, TiedEmbeddingsUseTheInputEmbeddingAsLmHead) {
  TempDir tied, untied;
  std::ifstream in(kModel + "/config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  const std::string untied_key = "\"tie_word_embeddings\": false";
  auto pos = cfg.find(untied_key);
  ASSERT_NE(pos, std::string::npos);
  std::ofstream(untied.str() + "/config.json") << cfg;
  std::ofstream(tied.str() + "/config.json") << cfg.replace(pos, untied_key.size(), "\"tie_word_embeddings\": true");
  auto src = SafetensorsFile::Open(kModel + "/model.safetensors");
  ASSERT_TRUE(src.ok());
  std::vector<StWriteTensor> with_copy, without;
  const StTensorInfo* embed = (*src)->Find("gpt_neox.embed_in.weight");
  ASSERT_NE(embed, nullptr);
  for (const auto& [name, info] : (*src)->tensors()) {
    const void* data = name == "embed_out.weight" ? (*src)->DataOf(*embed) : (*src)->DataOf(info);
    with_copy.push_back({name, info.dtype, info.shape, data});
    if (name != "embed_out.weight") without.push_back({name, info.dtype, info.shape, data});
  }
  ASSERT_TRUE(WriteSafetensors(untied.str() + "/model.safetensors", with_copy, {}).ok());
  ASSERT_TRUE(WriteSafetensors(tied.str() + "/model.safetensors", without, {}).ok());
  auto a = GptNeoxModel::Load(tied.str(), torch::kFloat32, torch::kCPU);
  auto b = GptNeoxModel::Load(untied.str(), torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<int64_t> ids = SomeIds(12);
  torch::Tensor la = StreamLogits(**a, ids, PositionMode::kOriginal, nullptr);
  torch::Tensor lb = StreamLogits(**b, ids, PositionMode::kOriginal, nullptr);
  EXPECT_TRUE(torch::equal(la, lb));
  // And the untied original differs (the test would pass vacuously otherwise).
  torch::Tensor orig = StreamLogits(*Load(), ids, PositionMode::kOriginal, nullptr);
  EXPECT_FALSE(torch::allclose(la, orig));
}

TEST(BadInput, CudaRequestOnCpuBuildIsAClearError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "CUDA present";
  auto d = ParseDevice("cuda");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(std::string(d.status().message()).find("CUDA"), std::string::npos);
  EXPECT_FALSE(ParseDevice("tpu").ok());
  EXPECT_FALSE(ParseDtype("float8").ok());
}

TEST(Sampling, SeededSamplingIsReproducibleAndGreedyIgnoresSeed) {
  auto model = Load();
  SamplingParams p;
  p.greedy = false;
  p.temperature = 0.8;
  p.top_k = 50;
  p.top_p = 0.9;
  p.seed = 7;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  auto a = Generate(*model, {SomeIds(5)}, p, nullptr, PositionMode::kOriginal);
  auto b = Generate(*model, {SomeIds(5)}, p, nullptr, PositionMode::kOriginal);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->new_ids, b->new_ids);
  EXPECT_EQ(a->new_ids[0].size(), 12u);
  p.seed = 8;
  auto c = Generate(*model, {SomeIds(5)}, p, nullptr, PositionMode::kOriginal);
  EXPECT_NE(a->new_ids, c->new_ids);
}

}  // namespace
}  // namespace kvgrid
