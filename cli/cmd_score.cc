// kvgrid score: one forward over a sequence, NLL/PPL of tokens 1..N-1 (engine check).
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "cli/command_registry.h"
#include "core/metric_catalog.h"
#include "model/engine/model_loader.h"

namespace kvgrid::cli {
namespace {

struct ScoreArgs {
  std::string model, revision = "main", ids_file, text_file, dtype = "float32", device = "cpu";
  int threads = 0;
  bool json = false;
};

int RunScore(const ScoreArgs& a) {
  ConfigureThreads(a.threads);
  auto lm = LoadModel(a.model, a.revision, a.dtype, a.device);
  if (!lm.ok()) return Fail("score", lm.status());
  std::vector<int64_t> ids;
  if (!a.ids_file.empty()) {
    auto r = ReadIdsFile(a.ids_file);
    if (!r.ok()) return Fail("score", r.status());
    ids = *r;
  } else {
    if (!lm->tokenizer) return Fail("score", absl::FailedPreconditionError(lm->dir + ": no tokenizer.json; pass --ids"));
    auto text = ReadFile(a.text_file);
    if (!text.ok()) return Fail("score", text.status());
    for (int32_t id : lm->tokenizer->Encode(*text)) ids.push_back(id);
  }
  if (ids.size() < 2) return Fail("score", absl::InvalidArgumentError("need at least 2 tokens to score"));
  auto& model = *lm->model;
  KvCache cache = model.NewCache(1, PositionMode::kOriginal);
  ForwardRequest req;
  req.ids = torch::tensor(ids, torch::kInt64).view({1, -1});
  req.positions = torch::arange(static_cast<int64_t>(ids.size()), torch::kInt64).view({1, -1});
  req.logits = LogitsRows::kAll;
  auto out = model.Forward(req, cache);
  if (!out.ok()) return Fail("score", out.status());
  const int64_t n = static_cast<int64_t>(ids.size());
  auto logp = torch::log_softmax(out->logits[0].narrow(0, 0, n - 1).to(torch::kFloat64), -1);
  auto nll = -logp.gather(1, req.ids[0].narrow(0, 1, n - 1).unsqueeze(1)).squeeze(1);
  double mean = nll.mean().item<double>();
  nlohmann::json j = {{"tokens", n}, {std::string(metric::kScoredTokens.name), n - 1}, {std::string(metric::kNllMean.name), mean}, {std::string(metric::kPpl.name), std::exp(mean)},
                      {"model", a.model}, {"dtype", a.dtype}, {"device", a.device}};
  if (a.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("tokens %lld, scored %lld, nll_mean %.6f, ppl %.4f\n", (long long)n, (long long)(n - 1), mean, std::exp(mean));
  }
  return 0;
}

std::function<int()> Setup(CLI::App& app) {
  auto args = std::make_shared<ScoreArgs>();
  auto* cmd = app.add_subcommand("score", "NLL/PPL of a token sequence in one forward pass");
  cmd->add_option("--model", args->model, "model id, local directory or random:pythia-70m")->required();
  cmd->add_option("--revision", args->revision, "Hub revision (main, step143000, ...)");
  auto* ids = cmd->add_option("--ids", args->ids_file, "file of whitespace-separated token ids");
  auto* text = cmd->add_option("--text", args->text_file, "text file (tokenized with the model's tokenizer.json)");
  ids->excludes(text);
  cmd->add_option("--dtype", args->dtype, "float32|float16|bfloat16");
  cmd->add_option("--device", args->device, "cpu|cuda|cuda:N");
  cmd->add_option("--threads", args->threads, "intra-op threads (default: all cores)");
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([cmd, ids, text]() {
    if (ids->count() + text->count() != 1) throw CLI::ValidationError("give exactly one of --ids or --text");
  });
  return [args]() { return RunScore(*args); };
}

KVGRID_REGISTER_COMMAND(score, "score", Setup);

}  // namespace
}  // namespace kvgrid::cli
