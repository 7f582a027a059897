// GPT-NeoX model configuration, read from a Hugging Face config.json (both the form Pythia ships,
// written by transformers 4.24, and the newer form with attention_bias, rope_scaling, rope_theta,
// partial_rotary_factor). No torch.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvgrid {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 2048;
  double rotary_pct = 0.25;
  double rotary_base = 10000;
  bool parallel_residual = true;
  bool attention_bias = true;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "gelu";  // "gelu" (erf) or "gelu_new"/"gelu_fast"/"gelu_pytorch_tanh"
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
  std::string torch_dtype = "float16";

  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t rotary_dims() const { return static_cast<int64_t>(head_dim() * rotary_pct); }

  // Pythia-70M's exact configuration (EleutherAI/pythia-70m-deduped).
  static ModelConfig Pythia70M();
  std::string ToJsonString() const;  // HF-style config.json text
};

// Parses config.json text; `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

}  // namespace kvgrid
