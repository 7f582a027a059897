#include "model/pythia_presets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvgrid {
namespace {

struct Shape {
  const char* name;
  int64_t hidden, layers, heads, vocab;
};

// hidden_size, num_hidden_layers, num_attention_heads, vocab_size of each size's config.json;
// every size has intermediate_size = 4 * hidden, rotary_pct 0.25, rotary_emb_base 10000,
// parallel residual, untied embeddings, 2048 positions.
constexpr Shape kShapes[] = {
    {"pythia-70m", 512, 6, 8, 50304},     {"pythia-160m", 768, 12, 12, 50304},
    {"pythia-410m", 1024, 24, 16, 50304}, {"pythia-1b", 2048, 16, 8, 50304},
    {"pythia-1.4b", 2048, 24, 16, 50304}, {"pythia-2.8b", 2560, 32, 32, 50304},
    {"pythia-6.9b", 4096, 32, 32, 50432}, {"pythia-12b", 5120, 36, 40, 50688},
};

}  // namespace

const std::vector<std::string>& PythiaPresetNames() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> v;
    for (const Shape& s : kShapes) v.push_back(s.name);
    return v;
  }();
  return kNames;
}

absl::StatusOr<ModelConfig> PythiaPresetConfig(const std::string& name) {
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    ModelConfig c = ModelConfig::Pythia70M();  // the settings every size shares
    c.hidden_size = s.hidden;
    c.num_layers = s.layers;
    c.num_heads = s.heads;
    c.intermediate_size = 4 * s.hidden;
    c.vocab_size = s.vocab;
    return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown Pythia preset '", name, "' (known: ",
                                                 absl::StrJoin(PythiaPresetNames(), ", "), ")"));
}

}  // namespace kvgrid
