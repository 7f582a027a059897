// Resolves "a model" the way every command and the worker accept it: a local Hugging Face model
// directory, a Hub id (downloaded into the standard HF cache, see model/hub/hf_hub.h), or
// "random:PRESET" (a random checkpoint with the exact shape of a Pythia size, model/pythia_presets.h,
// generated once into KvgridCacheDir()/models (common/cache_dir.h), for offline speed work; its PPL is meaningless).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/engine/gpt_neox.h"
#include "model/tokenizer/tokenizer.h"

namespace kvgrid {

struct LoadedModel {
  std::string id;        // as requested
  std::string revision;
  std::string dir;       // resolved local directory
  std::unique_ptr<GptNeoxModel> model;
  std::optional<Tokenizer> tokenizer;  // when the directory has tokenizer.json
};

absl::StatusOr<std::string> ResolveModelPath(const std::string& id_or_dir, const std::string& revision);

absl::StatusOr<LoadedModel> LoadModel(const std::string& id_or_dir, const std::string& revision,
                                      const std::string& dtype, const std::string& device);

// Writes a checkpoint with `config` and random weights (N(0, 0.02), LayerNorm 1/0) in the Hub
// layout: config.json, model.safetensors (`dtype` F32/F16/BF16), and tokenizer.json copied from
// `tokenizer_json` when given.
absl::Status WriteRandomModel(const ModelConfig& config, const std::string& out_dir,
                              const std::string& dtype, uint64_t seed,
                              const std::string& tokenizer_json);

// The tokenizer shipped with kvgrid's test fixtures (Pythia's GPT-NeoX-20B tokenizer.json), if the
// source tree is present; empty otherwise.
std::string BundledTokenizerPath();

}  // namespace kvgrid
