// kvgrid generate: greedy or sampled continuation of a prompt, optionally under a KV policy.
#include <CLI/CLI.hpp>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "cli/command_registry.h"
#include "model/engine/generate.h"
#include "model/engine/model_loader.h"
#include "core/kv_dtype.h"
#include "core/metric_catalog.h"

namespace kvgrid::cli {
namespace {

struct GenerateArgs {
  std::string model, revision = "main", ids_file, prompt, dtype = "float32", device = "cpu";
  std::string policy = "full", position_mode = "original", kv_dtype = "model";
  int64_t max_new_tokens = 32, top_k = 0;
  double temperature = 1.0, top_p = 1.0;
  uint64_t seed = 0;
  bool greedy = false, ignore_eos = false, json = false;
  int threads = 0;
};

int RunGenerate(const GenerateArgs& a) {
  ConfigureThreads(a.threads);
  auto spec = ParsePolicySpec(a.policy);
  if (!spec.ok()) return Fail("generate", spec.status());
  PositionMode mode;
  if (!ParsePositionMode(a.position_mode, &mode)) {
    return Fail("generate", absl::InvalidArgumentError("--position-mode must be original, shifted or rerotate"));
  }
  auto kv = ParseKvDtype(a.kv_dtype);
  if (!kv.ok()) return Fail("generate", kv.status());
  auto lm = LoadModel(a.model, a.revision, a.dtype, a.device);
  if (!lm.ok()) return Fail("generate", lm.status());
  std::vector<int64_t> ids;
  if (!a.ids_file.empty()) {
    auto r = ReadIdsFile(a.ids_file);
    if (!r.ok()) return Fail("generate", r.status());
    ids = *r;
  } else {
    if (!lm->tokenizer) return Fail("generate", absl::FailedPreconditionError(lm->dir + ": no tokenizer.json; pass --ids"));
    for (int32_t id : lm->tokenizer->Encode(a.prompt)) ids.push_back(id);
  }
  std::unique_ptr<KvPolicy> policy;
  if (spec->name != "full") {
    auto p = MakePolicy(*spec);
    if (!p.ok()) return Fail("generate", p.status());
    policy = std::move(*p);
    policy->Reset(lm->model->config().num_layers);
  }
  SamplingParams sp;
  sp.greedy = a.greedy;
  sp.temperature = a.temperature;
  sp.top_k = a.top_k;
  sp.top_p = a.top_p;
  sp.seed = a.seed;
  sp.ignore_eos = a.ignore_eos;
  sp.max_new_tokens = a.max_new_tokens;
  sp.kv_dtype = *kv;
  auto out = Generate(*lm->model, {ids}, sp, policy.get(), mode);
  if (!out.ok()) return Fail("generate", out.status());
  std::string text;
  if (lm->tokenizer) {
    std::vector<int32_t> gen(out->new_ids[0].begin(), out->new_ids[0].end());
    auto t = lm->tokenizer->Decode(gen);
    if (!t.ok()) return Fail("generate", t.status());
    text = *t;
  }
  if (a.json) {
    nlohmann::json j = {{"ids", out->new_ids[0]}, {"text", text}, {"prompt_tokens", ids.size()},
                        {"policy", spec->ToString()}, {std::string(metric::kKvBytesPeak.name), out->kv_bytes_peak},
                        {std::string(metric::kKvTokensMax.name), out->stats.kv_tokens_max}};
    std::printf("%s\n", j.dump().c_str());
  } else if (lm->tokenizer) {
    std::printf("%s\n", text.c_str());
  } else {
    for (int64_t id : out->new_ids[0]) std::printf("%lld ", static_cast<long long>(id));
    std::printf("\n");
  }
  return 0;
}

std::function<int()> Setup(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "generate a continuation (greedy or sampled)");
  cmd->add_option("--model", a->model, "model id, local directory or random:pythia-70m")->required();
  cmd->add_option("--revision", a->revision, "Hub revision");
  auto* ids = cmd->add_option("--ids", a->ids_file, "prompt as a file of token ids");
  auto* prompt = cmd->add_option("--prompt", a->prompt, "prompt text");
  ids->excludes(prompt);
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "tokens to generate")->check(CLI::PositiveNumber);
  cmd->add_flag("--greedy", a->greedy, "greedy decoding (default: sampling)");
  cmd->add_option("--temperature", a->temperature, "sampling temperature")->check(CLI::PositiveNumber);
  cmd->add_option("--top-k", a->top_k, "top-k sampling (0 = off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "nucleus sampling (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->seed, "sampling seed");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "always generate --max-new-tokens tokens");
  cmd->add_option("--policy", a->policy, "KV policy spec, e.g. streaming_llm:sink_tokens=4,window=60");
  cmd->add_option("--position-mode", a->position_mode, "original|shifted|rerotate");
  cmd->add_option("--kv-dtype", a->kv_dtype, "KV cache storage: model | int8 | int4 | int2[:group=G,residual=R]");
  cmd->add_option("--dtype", a->dtype, "float32|float16|bfloat16");
  cmd->add_option("--device", a->device, "cpu|cuda|cuda:N");
  cmd->add_option("--threads", a->threads, "intra-op threads");
  cmd->add_flag("--json", a->json, "print {\"ids\": [...], \"text\": ...}");
  cmd->callback([ids, prompt]() {
    if (ids->count() + prompt->count() != 1) throw CLI::ValidationError("give exactly one of --ids or --prompt");
  });
  return [a]() { return RunGenerate(*a); };
}

KVGRID_REGISTER_COMMAND(generate, "generate", Setup);

}  // namespace
}  // namespace kvgrid::cli
