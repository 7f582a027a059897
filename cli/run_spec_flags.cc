#include "cli/run_spec_flags.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/cli_util.h"
#include "core/policy_spec.h"
#include "worker/run_executor.h"

namespace kvgrid::cli {

void AddRunSpecFlags(CLI::App* cmd, RunSpecFlags* f) {
  cmd->add_option("--model", f->spec.model.id, "model id, local directory or random:pythia-70m")->required();
  cmd->add_option("--revision", f->spec.model.revision, "Hub revision (main, step143000, ...)");
  cmd->add_option("--ids", f->ids_file, "input: file of whitespace-separated token ids");
  cmd->add_option("--text", f->text_file, "input: text file");
  cmd->add_option("--dataset", f->dataset, "input: wikitext-2-raw-v1 | pg19");
  cmd->add_option("--sample", f->sample, "dataset sample (pg19 book id; default 10146)");
  cmd->add_option("--dataset-path", f->path, "read the dataset from this local file");
  cmd->add_option("--policy", f->policy, "KV policy spec: name[:key=value,...]");
  cmd->add_option("--position-mode", f->spec.position_mode, "original|shifted|rerotate")
      ->check(CLI::IsMember({"original", "shifted", "rerotate"}));
  cmd->add_option("--kv-dtype", f->kv_dtype,
                  "KV cache storage: model | int8 | int4 | int2[:group=32,residual=128] (KIVI)");
  cmd->add_option("--prefill-chunk", f->spec.prefill_chunk,
                  "prompt (bench) / prefill context (ppl) in chunks of N tokens, the policy "
                  "evicting after each; 0 = whole")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--dtype", f->spec.model.dtype, "float32|float16|bfloat16");
  cmd->add_option("--device", f->spec.device, "cpu|cuda|cuda:N");
  cmd->add_option("--threads", f->threads, "intra-op threads (default: all cores)");
  cmd->add_flag("--json", f->json, "print the result record as one JSON object");
}

std::string FinishRunSpec(RunSpecFlags* f) {
  int inputs = !f->ids_file.empty() + !f->text_file.empty() + !f->dataset.empty();
  if (inputs != 1) return "give exactly one of --ids, --text or --dataset";
  if (!f->ids_file.empty()) {
    f->spec.dataset = {"ids", "", 0, f->ids_file};
  } else if (!f->text_file.empty()) {
    f->spec.dataset = {"text", "", 0, f->text_file};
  } else {
    f->spec.dataset = {f->dataset, "test", f->sample, f->path};
  }
  auto policy = ParsePolicySpec(f->policy);
  if (!policy.ok()) return std::string(policy.status().message());
  f->spec.policy = *std::move(policy);
  auto kv = ParseKvDtype(f->kv_dtype);
  if (!kv.ok()) return std::string(kv.status().message());
  f->spec.kv_dtype = *kv;
  return "";
}

int ExecuteAndPrint(const std::string& command, RunSpecFlags& f) {
  std::string err = FinishRunSpec(&f);
  if (!err.empty()) {
    std::fprintf(stderr, "kvgrid %s: error: %s\n", command.c_str(), err.c_str());
    return 2;
  }
  f.spec.threads = ConfigureThreads(f.threads);
  auto executor = MakeEngineExecutor(f.spec.device);
  auto result = executor->Execute(f.spec, nullptr);
  if (!result.ok()) return Fail(command, result.status());
  if (f.json) {
    nlohmann::json j = result->ToJson();
    j["run_key"] = RunKey(f.spec);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%-28s %16s  %s\n", "metric", "value", "unit");
    for (const auto& m : result->metrics) {
      std::printf("%-28s %16.6g  %s\n", m.name.c_str(), m.value, m.unit.c_str());
    }
    // Where it ran: the numbers above mean little without the machine behind them.
    std::printf("\n");
    for (const char* key : {"device_name", "threads", "blas", "blas_core", "blas_core_corrected_from",
                            "kvgrid_commit", "paired_baseline"}) {
      auto it = result->environment.find(key);
      if (it == result->environment.end()) continue;
      std::string v = it->is_string() ? it->get<std::string>() : it->dump();
      std::printf("%-28s %s\n", key, v.c_str());
    }
  }
  return 0;
}

}  // namespace kvgrid::cli
