#include "model/engine/model_loader.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/cache_dir.h"
#include "common/status_macros.h"
#include "model/hub/hf_hub.h"
#include "model/pythia_presets.h"

namespace kvgrid {
namespace fs = std::filesystem;

std::string BundledTokenizerPath() {
  if (const char* env = std::getenv("KVGRID_TOKENIZER")) return env;
#ifdef KVGRID_SOURCE_DIR
  std::string p = std::string(KVGRID_SOURCE_DIR) + "/tests/fixtures/tokenizer/gpt-neox-20b-tokenizer.json";
  if (fs::exists(p)) return p;
#endif
  return "";
}

absl::Status WriteRandomModel(const ModelConfig& config, const std::string& out_dir,
                              const std::string& dtype, uint64_t seed,
                              const std::string& tokenizer_json) {
  ASSIGN_OR_RETURN(torch::ScalarType st, ParseDtype(dtype));
  StDtype file_dtype = st == torch::kFloat32 ? StDtype::kF32 : st == torch::kFloat16 ? StDtype::kF16 : StDtype::kBF16;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": cannot create directory: ", ec.message()));
  torch::manual_seed(seed);
  const int64_t h = config.hidden_size, V = config.vocab_size, I = config.intermediate_size;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  auto normal = [&](std::vector<int64_t> shape) { return torch::randn(shape) * 0.02; };
  tensors.emplace_back("gpt_neox.embed_in.weight", normal({V, h}));
  for (int64_t l = 0; l < config.num_layers; ++l) {
    std::string p = absl::StrCat("gpt_neox.layers.", l, ".");
    tensors.emplace_back(p + "input_layernorm.weight", torch::ones({h}));
    tensors.emplace_back(p + "input_layernorm.bias", torch::zeros({h}));
    tensors.emplace_back(p + "post_attention_layernorm.weight", torch::ones({h}));
    tensors.emplace_back(p + "post_attention_layernorm.bias", torch::zeros({h}));
    tensors.emplace_back(p + "attention.query_key_value.weight", normal({3 * h, h}));
    tensors.emplace_back(p + "attention.query_key_value.bias", torch::zeros({3 * h}));
    tensors.emplace_back(p + "attention.dense.weight", normal({h, h}));
    tensors.emplace_back(p + "attention.dense.bias", torch::zeros({h}));
    tensors.emplace_back(p + "mlp.dense_h_to_4h.weight", normal({I, h}));
    tensors.emplace_back(p + "mlp.dense_h_to_4h.bias", torch::zeros({I}));
    tensors.emplace_back(p + "mlp.dense_4h_to_h.weight", normal({h, I}));
    tensors.emplace_back(p + "mlp.dense_4h_to_h.bias", torch::zeros({h}));
  }
  tensors.emplace_back("gpt_neox.final_layer_norm.weight", torch::ones({h}));
  tensors.emplace_back("gpt_neox.final_layer_norm.bias", torch::zeros({h}));
  tensors.emplace_back("embed_out.weight", normal({V, h}));
  std::vector<StWriteTensor> out;
  for (auto& [name, t] : tensors) {
    t = t.to(st).contiguous();
    out.push_back({name, file_dtype, t.sizes().vec(), t.data_ptr()});
  }
  ModelConfig c = config;
  c.torch_dtype = DtypeName(st);
  {
    std::string tmp = out_dir + "/config.json.tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) return absl::InternalError(absl::StrCat(tmp, ": cannot write"));
    std::string text = c.ToJsonString();
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    fs::rename(tmp, out_dir + "/config.json");
  }
  RETURN_IF_ERROR(WriteSafetensors(out_dir + "/model.safetensors", out,
                                   {{"format", "pt"}, {"kvgrid", absl::StrCat("random seed ", seed)}}));
  if (!tokenizer_json.empty()) {
    fs::copy_file(tokenizer_json, out_dir + "/tokenizer.json", fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat(tokenizer_json, ": cannot copy tokenizer: ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveModelPath(const std::string& id_or_dir, const std::string& revision) {
  if (absl::StartsWith(id_or_dir, "random:")) {
    const std::string preset = id_or_dir.substr(7);
    absl::StatusOr<ModelConfig> config = PythiaPresetConfig(preset);
    if (!config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", id_or_dir, "': ", config.status().message()));
    }
    std::string dir = absl::StrCat(KvgridCacheDir(), "/models/random-", preset, "-seed0");
    if (!fs::exists(dir + "/model.safetensors")) {
      std::string tmp = dir + ".tmp" + std::to_string(::getpid());
      RETURN_IF_ERROR(WriteRandomModel(*config, tmp, "float16", 0, BundledTokenizerPath()));
      std::error_code ec;
      fs::create_directories(fs::path(dir).parent_path(), ec);
      fs::rename(tmp, dir, ec);
      if (ec && !fs::exists(dir + "/model.safetensors")) {
        return absl::InternalError(absl::StrCat(dir, ": cannot create random model: ", ec.message()));
      }
      fs::remove_all(tmp, ec);
    }
    return dir;
  }
  return ResolveModelDir(id_or_dir, revision.empty() ? "main" : revision, HubOptions::FromEnv());
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& id_or_dir, const std::string& revision,
                                      const std::string& dtype, const std::string& device) {
  LoadedModel lm;
  lm.id = id_or_dir;
  lm.revision = revision;
  ASSIGN_OR_RETURN(lm.dir, ResolveModelPath(id_or_dir, revision));
  ASSIGN_OR_RETURN(torch::ScalarType st, ParseDtype(dtype));
  ASSIGN_OR_RETURN(torch::Device dev, ParseDevice(device));
  ASSIGN_OR_RETURN(lm.model, GptNeoxModel::Load(lm.dir, st, dev));
  std::string tok = lm.dir + "/tokenizer.json";
  if (fs::exists(tok)) {
    ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::FromFile(tok));
    lm.tokenizer.emplace(std::move(t));
  }
  return lm;
}

}  // namespace kvgrid
