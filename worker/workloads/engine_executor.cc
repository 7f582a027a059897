// The engine-backed RunExecutor: loads (and keeps) the model, gets the dataset's tokens, runs the
// workload, and describes where it ran. Every failure becomes a Status; nothing throws out.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/blas_check.h"
#include "common/build_info.h"
#include "common/status_macros.h"
#include "model/engine/model_loader.h"
#include "worker/datasets/dataset_loader.h"
#include "worker/run_executor.h"
#include "worker/workloads/generation_timing.h"
#include "worker/workloads/memory_probe.h"
#include "worker/workloads/perplexity.h"
#include "common/host_name.h"

namespace kvgrid {
namespace {

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "cpu";
}

int64_t MemTotalBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  while (in >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024;
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class EngineExecutor : public RunExecutor {
 public:
  EngineExecutor(std::string device, int threads) : device_(std::move(device)), threads_(threads) {}

  nlohmann::json Capabilities() const override {
    nlohmann::json j;
    bool cuda = torch::cuda::is_available();
    j["device"] = cuda && device_ != "cpu" ? "cuda" : "cpu";
    j["device_name"] = CpuName();
    j["memory_bytes"] = MemTotalBytes();
    j["cuda_available"] = cuda;
    j["cuda_devices"] = cuda ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    j["libtorch_version"] = TORCH_VERSION;
    j["kvgrid_commit"] = KvgridCommit();
    j["threads"] = at::get_num_threads();
    j.update(BlasEnvironment());
    j["host"] = HostName();
    return j;
  }

  absl::StatusOr<RunResult> Execute(const RunSpec& spec, const ProgressFn& progress) override {
    try {
      return ExecuteImpl(spec, progress);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("libtorch error: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("error: ", e.what()));
    }
  }

 private:
  absl::StatusOr<RunResult> ExecuteImpl(const RunSpec& spec, const ProgressFn& progress) {
    auto report = [&](double f, const std::string& phase) { if (progress) progress(f, phase); };
    const PolicySpec& policy = spec.policy;
    PositionMode mode;
    if (!ParsePositionMode(spec.position_mode, &mode)) {
      return absl::InvalidArgumentError(absl::StrCat("position_mode '", spec.position_mode,
                                                     "' is not original, shifted or rerotate"));
    }
    // Every run sets its thread count (LibTorch's default here is 1, not the machine's cores).
    at::set_num_threads(spec.threads > 0 ? static_cast<int>(spec.threads) : threads_);
    if (spec.workload == "noop") {
      std::this_thread::sleep_for(std::chrono::milliseconds(spec.noop_ms));
      RunResult r;
      r.Add(metric::kNoopMs, static_cast<double>(spec.noop_ms));
      r.environment = Capabilities();
      return r;
    }
    std::string device = spec.device == "auto" ? device_ : spec.device;
    report(0.0, "loading model");
    ASSIGN_OR_RETURN(LoadedModel* lm, GetModel(spec.model, device));
    report(0.1, "loading dataset");
    double tokenize_ms = 0;
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, GetTokens(spec.dataset, *lm, &tokenize_ms));
    report(0.2, spec.workload);
    RunResult result;
    if (spec.workload == "perplexity") {
      PerplexityOptions o;
      o.protocol = spec.perplexity.protocol;
      o.max_tokens = spec.perplexity.max_tokens;
      o.max_length = spec.perplexity.max_length;
      o.stride = spec.perplexity.stride;
      o.context_tokens = spec.perplexity.context_tokens;
      o.continuation_tokens = spec.perplexity.continuation_tokens;
      o.position_mode = mode;
      o.kv_dtype = spec.kv_dtype;
      o.prefill_chunk = spec.prefill_chunk;
      ASSIGN_OR_RETURN(result, RunPerplexity(*lm->model, ids, policy, o));
      result.Add(metric::kDatasetTokens, static_cast<double>(ids.size()));
    } else if (spec.workload == "generation") {
      const int64_t P = spec.generation.prompt_tokens;
      if (P < 1 || static_cast<int64_t>(ids.size()) < P) {
        return absl::InvalidArgumentError(absl::StrCat("generation: prompt_tokens ", P, " but the dataset has ",
                                                       ids.size(), " tokens"));
      }
      std::vector<int64_t> prompt(ids.begin(), ids.begin() + P);
      GenerationTimingOptions o;
      o.new_tokens = spec.generation.new_tokens;
      o.batch = spec.generation.batch;
      o.repeats = spec.repeats;
      o.warmup = spec.warmup;
      o.position_mode = mode;
      o.kv_dtype = spec.kv_dtype;
      o.prefill_chunk = spec.prefill_chunk;
      o.paired_baseline = spec.generation.paired_baseline;
      ASSIGN_OR_RETURN(result, RunGenerationTiming(*lm->model, prompt, policy, o));
      result.Add(metric::kTokenizeMs, tokenize_ms);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown workload '", spec.workload,
                                                     "'; expected perplexity, generation or noop"));
    }
    nlohmann::json env = Capabilities();
    env["device"] = lm->model->device().str();
    if (lm->model->device().is_cpu()) env["device_name"] = CpuName();
    env["dtype"] = DtypeName(lm->model->dtype());
    env["compute"] = lm->model->device().is_cpu() && lm->model->dtype() == torch::kFloat16
                         ? "float16 weights, float32 compute (CPU LibTorch has no float16 GEMM)"
                         : DtypeName(lm->model->dtype());
    env["threads"] = at::get_num_threads();
    env.update(BlasEnvironment());
#ifdef NDEBUG
    env["build_type"] = "Release";
#else
    env["build_type"] = "Debug";
#endif
    env["model_dir"] = lm->dir;
    env["policy"] = policy.ToString();
    env["position_mode"] = spec.position_mode;
    env["kv_dtype"] = spec.kv_dtype.ToString();
    env["config"] = spec.ToJson();
    for (auto it = result.environment.begin(); it != result.environment.end(); ++it) env[it.key()] = it.value();
    result.environment = env;
    report(1.0, "done");
    return result;
  }

  absl::StatusOr<LoadedModel*> GetModel(const ModelRef& ref, const std::string& device) {
    std::string key = absl::StrCat(ref.id, "@", ref.revision, "/", ref.dtype, "/", device);
    if (key != model_key_ || !model_) {
      model_.reset();  // free the previous model before loading another
      ASSIGN_OR_RETURN(LoadedModel lm, LoadModel(ref.id, ref.revision, ref.dtype, device));
      model_ = std::make_unique<LoadedModel>(std::move(lm));
      model_key_ = key;
      token_cache_.clear();
    }
    return model_.get();
  }

  absl::StatusOr<std::vector<int64_t>> GetTokens(const DatasetRef& d, LoadedModel& lm, double* tokenize_ms) {
    std::string key = absl::StrCat(d.name, "/", d.split, "/", d.sample, "/", d.path);
    auto it = token_cache_.find(key);
    if (it != token_cache_.end()) {
      *tokenize_ms = it->second.first;
      return it->second.second;
    }
    std::vector<int64_t> ids;
    if (d.name == "ids") {
      ASSIGN_OR_RETURN(std::string text, ReadText(d.path));
      for (absl::string_view tok : absl::StrSplit(text, absl::ByAnyChar(" \t\r\n,"), absl::SkipEmpty())) {
        int64_t v;
        if (!absl::SimpleAtoi(tok, &v)) return absl::InvalidArgumentError(absl::StrCat(d.path, ": not a token id: '", tok, "'"));
        ids.push_back(v);
      }
    } else {
      std::string text;
      if (d.name == "text") {
        ASSIGN_OR_RETURN(text, ReadText(d.path));
      } else {
        DatasetRequest req;
        req.name = d.name;
        req.split = d.split;
        req.sample = d.sample;
        req.path = d.path;
        ASSIGN_OR_RETURN(text, LoadDatasetText(req));
      }
      if (!lm.tokenizer) {
        std::string bundled = BundledTokenizerPath();
        if (bundled.empty()) {
          return absl::FailedPreconditionError(absl::StrCat(lm.dir, ": model has no tokenizer.json"));
        }
        ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::FromFile(bundled));
        lm.tokenizer.emplace(std::move(t));
      }
      auto t0 = std::chrono::steady_clock::now();
      for (int32_t id : lm.tokenizer->Encode(text)) ids.push_back(id);
      *tokenize_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("dataset '", d.name, "' gave no tokens"));
    token_cache_[key] = {*tokenize_ms, ids};
    return ids;
  }

  std::string device_;
  int threads_;  // for specs with threads: 0
  std::string model_key_;
  std::unique_ptr<LoadedModel> model_;
  std::map<std::string, std::pair<double, std::vector<int64_t>>> token_cache_;
};

}  // namespace

std::unique_ptr<RunExecutor> MakeEngineExecutor(const std::string& device, int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<EngineExecutor>(device, threads);
}

}  // namespace kvgrid
