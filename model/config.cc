#include "model/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

using nlohmann::json;

absl::Status Missing(const std::string& source, const char* key) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": missing required field '", key, "'"));
}

template <typename T>
absl::Status ReadNumber(const json& j, const std::string& source, const char* key, bool required,
                        T* out) {
  if (!j.contains(key) || j[key].is_null()) return required ? Missing(source, key) : absl::OkStatus();
  if (!j[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "' must be a number"));
  }
  *out = j[key].get<T>();
  return absl::OkStatus();
}

}  // namespace

ModelConfig ModelConfig::Pythia70M() {
  ModelConfig c;
  c.vocab_size = 50304;
  c.hidden_size = 512;
  c.num_layers = 6;
  c.num_heads = 8;
  c.intermediate_size = 2048;
  c.max_position_embeddings = 2048;
  c.rotary_pct = 0.25;
  c.rotary_base = 10000;
  c.parallel_residual = true;
  c.layer_norm_eps = 1e-5;
  c.hidden_act = "gelu";
  c.tie_word_embeddings = false;
  c.bos_token_id = 0;
  c.eos_token_id = 0;
  c.torch_dtype = "float16";
  return c;
}

std::string ModelConfig::ToJsonString() const {
  json j;
  j["architectures"] = {"GPTNeoXForCausalLM"};
  j["model_type"] = "gpt_neox";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rotary_pct"] = rotary_pct;
  j["rotary_emb_base"] = static_cast<int64_t>(rotary_base);
  j["use_parallel_residual"] = parallel_residual;
  j["layer_norm_eps"] = layer_norm_eps;
  j["hidden_act"] = hidden_act;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = torch_dtype;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["transformers_version"] = "4.24.0";
  return j.dump(2) + "\n";
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid JSON object"));
  }
  std::string model_type = j.value("model_type", std::string());
  if (model_type != "gpt_neox") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": unsupported architecture: model_type '", model_type,
        "' (kvgrid runs GPT-NeoX / Pythia models, model_type 'gpt_neox')"));
  }
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"]) {
      if (a.is_string() && a.get<std::string>() != "GPTNeoXForCausalLM") {
        return absl::InvalidArgumentError(absl::StrCat(source, ": unsupported architecture '",
                                                       a.get<std::string>(),
                                                       "' (expected GPTNeoXForCausalLM)"));
      }
    }
  }
  ModelConfig c;
  RETURN_IF_ERROR(ReadNumber(j, source, "vocab_size", true, &c.vocab_size));
  RETURN_IF_ERROR(ReadNumber(j, source, "hidden_size", true, &c.hidden_size));
  RETURN_IF_ERROR(ReadNumber(j, source, "num_hidden_layers", true, &c.num_layers));
  RETURN_IF_ERROR(ReadNumber(j, source, "num_attention_heads", true, &c.num_heads));
  RETURN_IF_ERROR(ReadNumber(j, source, "intermediate_size", true, &c.intermediate_size));
  RETURN_IF_ERROR(ReadNumber(j, source, "max_position_embeddings", false, &c.max_position_embeddings));
  // Rotary: old form rotary_pct/rotary_emb_base; newer transformers also write
  // partial_rotary_factor/rope_theta.
  RETURN_IF_ERROR(ReadNumber(j, source, "rotary_pct", false, &c.rotary_pct));
  RETURN_IF_ERROR(ReadNumber(j, source, "partial_rotary_factor", false, &c.rotary_pct));
  RETURN_IF_ERROR(ReadNumber(j, source, "rotary_emb_base", false, &c.rotary_base));
  RETURN_IF_ERROR(ReadNumber(j, source, "rope_theta", false, &c.rotary_base));
  RETURN_IF_ERROR(ReadNumber(j, source, "layer_norm_eps", false, &c.layer_norm_eps));
  RETURN_IF_ERROR(ReadNumber(j, source, "bos_token_id", false, &c.bos_token_id));
  RETURN_IF_ERROR(ReadNumber(j, source, "eos_token_id", false, &c.eos_token_id));
  c.parallel_residual = j.value("use_parallel_residual", true);
  c.attention_bias = j.value("attention_bias", true);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  c.hidden_act = j.value("hidden_act", std::string("gelu"));
  c.torch_dtype = j.value("torch_dtype", std::string("float16"));
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field 'rope_scaling' = ", j["rope_scaling"].dump(),
        " is not supported (kvgrid implements unscaled rotary embeddings, as Pythia uses)"));
  }
  if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "gelu_fast" &&
      c.hidden_act != "gelu_pytorch_tanh") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'hidden_act' = '", c.hidden_act, "' is not supported"));
  }
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 ||
      c.intermediate_size <= 0 || c.hidden_size % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": inconsistent sizes (hidden_size must be a positive multiple of "
                "num_attention_heads; all sizes positive)"));
  }
  if (c.rotary_pct < 0 || c.rotary_pct > 1 || c.rotary_dims() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'rotary_pct' must be in [0,1] and give an even number of rotary dims"));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

}  // namespace kvgrid
