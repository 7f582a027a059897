// The shapes of EleutherAI's Pythia suite (each size's config.json on the Hub; deduped and
// non-deduped share them), for random checkpoints at those shapes: `kvgrid init-random-model
// --preset NAME` and the model id `random:NAME`. No torch.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace kvgrid {

// pythia-70m, pythia-160m, pythia-410m, pythia-1b, pythia-1.4b, pythia-2.8b, pythia-6.9b, pythia-12b.
const std::vector<std::string>& PythiaPresetNames();

// The config of a preset; an unknown name is InvalidArgument listing the known ones.
absl::StatusOr<ModelConfig> PythiaPresetConfig(const std::string& name);

}  // namespace kvgrid
