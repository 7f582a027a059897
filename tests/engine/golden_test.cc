// Golden tests: every fixture model against the outputs Hugging Face transformers'
// GPTNeoXForCausalLM produced (tests/fixtures/models/*/expected.safetensors, float32).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "model/engine/generate.h"
#include "model/engine/gpt_neox.h"

namespace kvgrid {
namespace {

const std::string kFixtures = KVGRID_FIXTURES_DIR;

struct Fixture {
  std::string dir;
  nlohmann::json expected;
  std::shared_ptr<SafetensorsFile> tensors;
  torch::Tensor Get(const std::string& name) const {
    const StTensorInfo* info = tensors->Find(name);
    EXPECT_NE(info, nullptr) << name;
    torch::ScalarType t = info->dtype == StDtype::kI64 ? torch::kInt64 : torch::kFloat32;
    return torch::from_blob(const_cast<void*>(tensors->DataOf(*info)), info->shape, t).clone();
  }
  bool Has(const std::string& name) const { return tensors->Find(name) != nullptr; }
};

// "<name>-bin" is <name>'s checkpoint as pytorch_model.bin only: <name>'s expected outputs apply.
Fixture LoadFixture(const std::string& name) {
  Fixture f;
  f.dir = kFixtures + "/models/" + name;
  std::string expected_dir = f.dir;
  if (name.size() > 4 && name.compare(name.size() - 4, 4, "-bin") == 0) {
    expected_dir = kFixtures + "/models/" + name.substr(0, name.size() - 4);
  }
  std::ifstream in(expected_dir + "/expected.json");
  f.expected = nlohmann::json::parse(in);
  auto file = SafetensorsFile::Open(expected_dir + "/expected.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  f.tensors = *file;
  return f;
}

std::unique_ptr<GptNeoxModel> LoadModel(const Fixture& f, torch::ScalarType dtype = torch::kFloat32) {
  auto model = GptNeoxModel::Load(f.dir, dtype, torch::kCPU);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat32) - b.to(torch::kFloat32)).abs().max().item<double>();
}

ForwardRequest FullRequest(const torch::Tensor& ids, LogitsRows rows = LogitsRows::kAll) {
  ForwardRequest req;
  req.ids = ids;
  req.positions = torch::arange(ids.size(1), torch::kInt64).unsqueeze(0).expand_as(ids).contiguous();
  req.logits = rows;
  return req;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    fx_ = LoadFixture(GetParam());
    model_ = LoadModel(fx_);
    atol_ = fx_.expected["suggested_tolerance"].value("logits_atol", 1e-4);
  }
  Fixture fx_;
  std::unique_ptr<GptNeoxModel> model_;
  double atol_ = 1e-4;
};

TEST_P(GoldenTest, FullSequenceLogitsLossAndHiddenStates) {
  auto ids = fx_.Get("input_ids");
  KvCache cache = model_->NewCache(1, PositionMode::kOriginal);
  auto out = model_->Forward(FullRequest(ids), cache, nullptr, nullptr, /*capture_hidden=*/true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LT(MaxAbs(out->logits, fx_.Get("logits")), atol_);
  const int64_t L = model_->config().num_layers;
  ASSERT_EQ(static_cast<int64_t>(out->hidden.size()), L + 1);
  for (int64_t i = 0; i <= L; ++i) {
    EXPECT_LT(MaxAbs(out->hidden[i], fx_.Get("hidden_states." + std::to_string(i))), 1e-4) << "layer " << i;
  }
  // Loss = mean cross-entropy of logits[:-1] against ids[1:].
  auto logp = torch::log_softmax(out->logits[0].to(torch::kFloat64), -1);
  auto T = ids.size(1);
  auto targets = ids[0].narrow(0, 1, T - 1);
  auto nll = -logp.narrow(0, 0, T - 1).gather(1, targets.unsqueeze(1)).mean().item<double>();
  EXPECT_NEAR(nll, fx_.Get("loss").item<double>(), 1e-4);
  EXPECT_NEAR(std::exp(nll) / fx_.Get("ppl").item<double>(), 1.0, 1e-4);
}

TEST_P(GoldenTest, PrefillKvCacheAndIncrementalDecoding) {
  auto ids = fx_.Get("input_ids");
  const int64_t T = ids.size(1), P = 16;
  KvCache cache = model_->NewCache(1, PositionMode::kOriginal);
  auto pre = FullRequest(ids.narrow(1, 0, P), LogitsRows::kLast);
  ASSERT_TRUE(model_->Forward(pre, cache).ok());
  for (int64_t l = 0; l < model_->config().num_layers; ++l) {
    EXPECT_LT(MaxAbs(cache.layer(l).K(), fx_.Get("past_key." + std::to_string(l))), 1e-5) << l;
    EXPECT_LT(MaxAbs(cache.layer(l).V(), fx_.Get("past_value." + std::to_string(l))), 1e-5) << l;
  }
  auto expected = fx_.Get("incremental_logits");
  for (int64_t t = P; t < T; ++t) {
    ForwardRequest step;
    step.ids = ids.narrow(1, t, 1);
    step.positions = torch::full({1, 1}, t, torch::kInt64);
    step.phase = ForwardPhase::kDecode;
    auto out = model_->Forward(step, cache);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_LT(MaxAbs(out->logits[0][0], expected[0][t - P]), atol_) << "step " << t;
  }
}

TEST_P(GoldenTest, GreedyGenerationMatchesHuggingFace) {
  auto prompt_t = fx_.Get("generate_input_ids")[0];
  std::vector<int64_t> prompt(prompt_t.data_ptr<int64_t>(), prompt_t.data_ptr<int64_t>() + prompt_t.numel());
  auto expected_t = fx_.Get("generate_output_ids")[0];
  std::vector<int64_t> expected(expected_t.data_ptr<int64_t>() + prompt.size(),
                                expected_t.data_ptr<int64_t>() + expected_t.numel());
  SamplingParams p;
  p.max_new_tokens = 24;
  auto out = Generate(*model_, {prompt}, p, nullptr, PositionMode::kOriginal);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->new_ids[0], expected);
}

TEST_P(GoldenTest, LeftPaddedBatchLogitsAndGreedyIds) {
  if (!fx_.Has("batch_input_ids")) GTEST_SKIP() << "fixture has no batch outputs";
  auto ids = fx_.Get("batch_input_ids");
  auto mask = fx_.Get("batch_attention_mask");
  KvCache cache = model_->NewCache(2, PositionMode::kOriginal);
  ForwardRequest req;
  req.ids = ids;
  req.positions = fx_.Get("batch_position_ids");
  req.valid = mask.to(torch::kBool);
  req.logits = LogitsRows::kAll;
  auto out = model_->Forward(req, cache);
  ASSERT_TRUE(out.ok()) << out.status();
  auto expected = fx_.Get("batch_logits");
  auto sel = req.valid.unsqueeze(-1).expand_as(expected);
  EXPECT_LT(MaxAbs(out->logits.masked_select(sel), expected.masked_select(sel)), atol_);

  // Batched greedy generation from the left-padded rows.
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<int64_t> row;
    for (int64_t t = 0; t < ids.size(1); ++t) {
      if (mask[b][t].item<int64_t>() == 1) row.push_back(ids[b][t].item<int64_t>());
    }
    prompts.push_back(row);
  }
  SamplingParams p;
  p.max_new_tokens = fx_.expected["batch"]["new_tokens"].get<int64_t>();
  auto gen = Generate(*model_, prompts, p, nullptr, PositionMode::kOriginal);
  ASSERT_TRUE(gen.ok()) << gen.status();
  auto full = fx_.Get("batch_generate_output_ids");
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<int64_t> expected_new;
    for (int64_t t = ids.size(1); t < full.size(1); ++t) expected_new.push_back(full[b][t].item<int64_t>());
    EXPECT_EQ(gen->new_ids[b], expected_new) << "row " << b;
  }
}

TEST_P(GoldenTest, ChunkedPrefillEqualsOneForward) {
  // Feeding the sequence in chunks through the cache gives the same logits as one forward.
  auto ids = fx_.Get("input_ids");
  const int64_t T = ids.size(1);
  KvCache cache = model_->NewCache(1, PositionMode::kOriginal);
  std::vector<torch::Tensor> rows;
  for (int64_t start = 0; start < T; start += 7) {
    int64_t len = std::min<int64_t>(7, T - start);
    ForwardRequest req;
    req.ids = ids.narrow(1, start, len);
    req.positions = torch::arange(start, start + len, torch::kInt64).unsqueeze(0);
    req.logits = LogitsRows::kAll;
    auto out = model_->Forward(req, cache);
    ASSERT_TRUE(out.ok());
    rows.push_back(out->logits);
  }
  EXPECT_LT(MaxAbs(torch::cat(rows, 1), fx_.Get("logits")), atol_);
}

TEST_P(GoldenTest, Bfloat16AndFloat16StayClose) {
  // 16-bit runs are not bit-exact; they must stay close to the float32 reference (stated bound).
  auto ids = fx_.Get("input_ids");
  for (auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    auto model = LoadModel(fx_, dtype);
    KvCache cache = model->NewCache(1, PositionMode::kOriginal);
    auto out = model->Forward(FullRequest(ids), cache);
    ASSERT_TRUE(out.ok()) << out.status();
    double tol = dtype == torch::kFloat16 ? 2e-2 : 0.25;
    EXPECT_LT(MaxAbs(out->logits, fx_.Get("logits")), tol) << DtypeName(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest,
                         ::testing::Values("tiny-neox-pythia-like", "tiny-neox-sequential",
                                           "tiny-neox-fullrotary", "tiny-neox-sequential-bin"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace kvgrid
