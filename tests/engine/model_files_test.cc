// Torch-free readers: config.json forms and errors, safetensors header validation.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/config.h"
#include "model/pythia_presets.h"
#include "model/checkpoint/safetensors.h"

namespace kvgrid {
namespace {

const std::string kFixtures = KVGRID_FIXTURES_DIR;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST(Config, ReadsNewFormFixture) {
  auto c = LoadModelConfig(kFixtures + "/models/tiny-neox-pythia-like/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->rotary_dims(), 4);
  EXPECT_TRUE(c->parallel_residual);
}

TEST(Config, ReadsOldPythiaForm) {
  // The form EleutherAI/pythia-70m-deduped ships (transformers 4.24: no attention_bias etc.).
  const char* text = R"({"architectures":["GPTNeoXForCausalLM"],"bos_token_id":0,"eos_token_id":0,
    "hidden_act":"gelu","hidden_size":512,"initializer_range":0.02,"intermediate_size":2048,
    "layer_norm_eps":1e-05,"max_position_embeddings":2048,"model_type":"gpt_neox",
    "num_attention_heads":8,"num_hidden_layers":6,"rotary_emb_base":10000,"rotary_pct":0.25,
    "tie_word_embeddings":false,"torch_dtype":"float16","transformers_version":"4.24.0",
    "use_cache":true,"use_parallel_residual":true,"vocab_size":50304})";
  auto c = ParseModelConfig(text, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rotary_dims(), 16);
  EXPECT_TRUE(c->attention_bias);
  auto p = ModelConfig::Pythia70M();
  EXPECT_EQ(p.ToJsonString(), ParseModelConfig(p.ToJsonString(), "x")->ToJsonString());
}

TEST(Config, ErrorsNameTheFileAndField) {
  auto bad_arch = ParseModelConfig(R"({"model_type":"llama"})", "/m/config.json");
  ASSERT_FALSE(bad_arch.ok());
  EXPECT_NE(std::string(bad_arch.status().message()).find("/m/config.json"), std::string::npos);
  EXPECT_NE(std::string(bad_arch.status().message()).find("llama"), std::string::npos);
  auto missing = ParseModelConfig(R"({"model_type":"gpt_neox","vocab_size":10})", "c.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("hidden_size"), std::string::npos);
  EXPECT_FALSE(ParseModelConfig("{not json", "c.json").ok());
  EXPECT_FALSE(LoadModelConfig("/nonexistent/config.json").ok());
}

std::string Image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

absl::Status ParseImage(const std::string& img) {
  uint64_t off = 0;
  return ParseSafetensorsBuffer(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "t.safetensors", &off).status();
}

// Parameter counts of the presets equal those of the real checkpoints (Hugging Face's
// num_parameters() of EleutherAI/pythia-70m, -160m, -410m, -1b): the shapes are right.
TEST(PythiaPresets, ShapesGiveTheRealParameterCounts) {
  auto params = [](const ModelConfig& c) {
    const int64_t h = c.hidden_size;
    return 2 * c.vocab_size * h + c.num_layers * (12 * h * h + 13 * h) + 2 * h;
  };
  const std::pair<const char*, int64_t> kCounts[] = {
      {"pythia-70m", 70426624}, {"pythia-160m", 162322944}, {"pythia-410m", 405334016}, {"pythia-1b", 1011781632}};
  for (const auto& [name, count] : kCounts) {
    auto c = PythiaPresetConfig(name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(params(*c), count) << name;
    EXPECT_EQ(c->rotary_dims(), c->head_dim() / 4) << name;
  }
  EXPECT_EQ(PythiaPresetConfig("pythia-1b")->head_dim(), 256);
  EXPECT_EQ(PythiaPresetConfig("pythia-2.8b")->head_dim(), 80);
  EXPECT_EQ(PythiaPresetNames().size(), 8u);
  auto bad = PythiaPresetConfig("pythia-7b");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("pythia-6.9b"), std::string::npos);
}

TEST(Safetensors, ValidHeaderParses) {
  EXPECT_TRUE(ParseImage(Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, 'x'))).ok());
}

TEST(Safetensors, CorruptHeadersAreClearErrors) {
  struct Case { std::string img; std::string needle; } cases[] = {
      {std::string(4, '\0'), "truncated"},
      {Image("", "").replace(0, 8, std::string("\xff\xff\x00\x00\x00\x00\x00\x00", 8)), "past the end"},
      {Image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, 'x')), "out of range"},
      {Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, 'x')), "overlap"},
      {Image(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, 'x')), "unknown dtype"},
      {Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')), "mismatch"},
      {Image("not json", ""), "not a JSON"},
  };
  for (const auto& c : cases) {
    absl::Status s = ParseImage(c.img);
    ASSERT_FALSE(s.ok()) << c.needle;
    EXPECT_NE(std::string(s.message()).find(c.needle), std::string::npos) << s;
    EXPECT_NE(std::string(s.message()).find("t.safetensors"), std::string::npos) << s;
  }
}

TEST(Safetensors, TruncatedFileOnDiskIsAnError) {
  std::string src = kFixtures + "/models/tiny-neox-sequential/model.safetensors";
  std::string bytes = ReadBytes(src);
  std::string path = ::testing::TempDir() + "/truncated.safetensors";
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(std::string(f.status().message()).find("truncated.safetensors"), std::string::npos);
  EXPECT_FALSE(SafetensorsFile::Open("/nonexistent.safetensors").ok());
}

TEST(Safetensors, FixtureOpensAndCarriesPythiaBuffers) {
  auto f = SafetensorsFile::Open(kFixtures + "/models/tiny-neox-pythia-like/model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_NE((*f)->Find("gpt_neox.layers.0.attention.masked_bias"), nullptr);
  EXPECT_EQ((*f)->Find("embed_out.weight")->dtype, StDtype::kF16);
}

}  // namespace
}  // namespace kvgrid

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// The safetensors fuzz target's corpus replays in every build (no libFuzzer needed): every file
// gives tensors inside the data section or an error, never a crash.
TEST(SafetensorsFuzzCorpus, ReplaysWithoutCrashing) {
  namespace fs = std::filesystem;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(KVGRID_SOURCE_DIR) / "tests" / "engine" /
                                                  "safetensors-corpus")) {
    std::string data = kvgrid::ReadBytes(entry.path());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++files;
  }
  EXPECT_GE(files, 5);
  uint64_t off = 0;
  const std::string huge =
      kvgrid::ReadBytes(std::string(KVGRID_SOURCE_DIR) + "/tests/engine/safetensors-corpus/huge-shape.bin");
  EXPECT_FALSE(kvgrid::ParseSafetensorsBuffer(reinterpret_cast<const uint8_t*>(huge.data()), huge.size(),
                                      "huge.safetensors", &off).ok());
}
