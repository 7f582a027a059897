#include "core/run_spec.h"

#include <openssl/sha.h>

#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

using nlohmann::json;

absl::Status CheckKeys(const json& j, const std::string& where, const std::set<std::string>& allowed) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object"));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!allowed.count(it.key())) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", it.key(),
                                                     "'; allowed: ", absl::StrJoin(allowed, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::Status Get(const json& j, const std::string& where, const char* key, std::string* out) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a string"));
  }
  *out = j[key].get<std::string>();
  return absl::OkStatus();
}

absl::Status Get(const json& j, const std::string& where, const char* key, int64_t* out) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected an integer"));
  }
  *out = j[key].get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

json RunSpec::ToJson() const {
  json j;
  j["model"] = {{"id", model.id}, {"revision", model.revision}, {"dtype", model.dtype}};
  j["device"] = device;
  j["workload"] = workload;
  j["dataset"] = {{"name", dataset.name}, {"split", dataset.split}, {"sample", dataset.sample},
                  {"path", dataset.path}};
  j["policy"] = policy.ToString();
  j["position_mode"] = position_mode;
  if (kv_dtype.quantized()) j["kv_dtype"] = kv_dtype.ToString();  // old run keys unchanged
  // Only when set, so that the keys of runs stored before the field existed do not change.
  if (prefill_chunk > 0) j["prefill_chunk"] = prefill_chunk;
  if (workload == "perplexity") {
    j["perplexity"] = {{"protocol", perplexity.protocol},
                       {"max_tokens", perplexity.max_tokens},
                       {"max_length", perplexity.max_length},
                       {"stride", perplexity.stride},
                       {"context_tokens", perplexity.context_tokens},
                       {"continuation_tokens", perplexity.continuation_tokens}};
  }
  if (workload == "generation") {
    j["generation"] = {{"prompt_tokens", generation.prompt_tokens},
                       {"new_tokens", generation.new_tokens},
                       {"batch", generation.batch}};
    // Part of the key: a paired run measures more than an unpaired one. `full` has no baseline.
    if (HasBaseline()) j["generation"]["paired_baseline"] = generation.paired_baseline;
  }
  j["repeats"] = repeats;
  j["warmup"] = warmup;
  j["threads"] = threads;
  j["seed"] = seed;
  if (workload == "noop") j["noop_ms"] = noop_ms;
  return j;
}

absl::StatusOr<RunSpec> RunSpec::FromJson(const json& j) {
  RunSpec s;
  RETURN_IF_ERROR(CheckKeys(j, "run spec",
                            {"model", "device", "workload", "dataset", "policy", "position_mode",
                             "perplexity", "generation", "repeats", "warmup", "threads", "seed",
                             "noop_ms", "prefill_chunk", "kv_dtype"}));
  if (j.contains("model")) {
    const json& m = j["model"];
    RETURN_IF_ERROR(CheckKeys(m, "model", {"id", "revision", "dtype"}));
    RETURN_IF_ERROR(Get(m, "model", "id", &s.model.id));
    RETURN_IF_ERROR(Get(m, "model", "revision", &s.model.revision));
    RETURN_IF_ERROR(Get(m, "model", "dtype", &s.model.dtype));
  }
  RETURN_IF_ERROR(Get(j, "run spec", "device", &s.device));
  RETURN_IF_ERROR(Get(j, "run spec", "workload", &s.workload));
  if (j.contains("dataset")) {
    const json& d = j["dataset"];
    RETURN_IF_ERROR(CheckKeys(d, "dataset", {"name", "split", "sample", "path"}));
    RETURN_IF_ERROR(Get(d, "dataset", "name", &s.dataset.name));
    RETURN_IF_ERROR(Get(d, "dataset", "split", &s.dataset.split));
    RETURN_IF_ERROR(Get(d, "dataset", "sample", &s.dataset.sample));
    RETURN_IF_ERROR(Get(d, "dataset", "path", &s.dataset.path));
  }
  if (j.contains("policy")) {
    std::string text;
    RETURN_IF_ERROR(Get(j, "run spec", "policy", &text));
    absl::StatusOr<PolicySpec> policy = ParsePolicySpec(text);
    if (!policy.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("run spec.policy: ", policy.status().message()));
    }
    s.policy = *std::move(policy);
  }
  RETURN_IF_ERROR(Get(j, "run spec", "position_mode", &s.position_mode));
  if (j.contains("kv_dtype")) {
    std::string text;
    RETURN_IF_ERROR(Get(j, "run spec", "kv_dtype", &text));
    absl::StatusOr<KvDtype> kv = ParseKvDtype(text);
    if (!kv.ok()) return absl::InvalidArgumentError(absl::StrCat("run spec.", kv.status().message()));
    s.kv_dtype = *kv;
  }
  RETURN_IF_ERROR(Get(j, "run spec", "prefill_chunk", &s.prefill_chunk));
  if (s.prefill_chunk < 0) {
    return absl::InvalidArgumentError("run spec.prefill_chunk: must be >= 0 (0 = whole prompt)");
  }
  if (j.contains("perplexity")) {
    const json& p = j["perplexity"];
    RETURN_IF_ERROR(CheckKeys(p, "perplexity", {"protocol", "max_tokens", "max_length", "stride",
                                                "context_tokens", "continuation_tokens"}));
    RETURN_IF_ERROR(Get(p, "perplexity", "protocol", &s.perplexity.protocol));
    RETURN_IF_ERROR(Get(p, "perplexity", "max_tokens", &s.perplexity.max_tokens));
    RETURN_IF_ERROR(Get(p, "perplexity", "max_length", &s.perplexity.max_length));
    RETURN_IF_ERROR(Get(p, "perplexity", "stride", &s.perplexity.stride));
    RETURN_IF_ERROR(Get(p, "perplexity", "context_tokens", &s.perplexity.context_tokens));
    RETURN_IF_ERROR(Get(p, "perplexity", "continuation_tokens", &s.perplexity.continuation_tokens));
  }
  if (j.contains("generation")) {
    const json& g = j["generation"];
    RETURN_IF_ERROR(CheckKeys(g, "generation", {"prompt_tokens", "new_tokens", "batch", "paired_baseline"}));
    RETURN_IF_ERROR(Get(g, "generation", "prompt_tokens", &s.generation.prompt_tokens));
    RETURN_IF_ERROR(Get(g, "generation", "new_tokens", &s.generation.new_tokens));
    RETURN_IF_ERROR(Get(g, "generation", "batch", &s.generation.batch));
    if (g.contains("paired_baseline")) {
      if (!g["paired_baseline"].is_boolean()) {
        return absl::InvalidArgumentError("generation.paired_baseline: expected true or false");
      }
      s.generation.paired_baseline = g["paired_baseline"].get<bool>();
    }
  }
  RETURN_IF_ERROR(Get(j, "run spec", "repeats", &s.repeats));
  RETURN_IF_ERROR(Get(j, "run spec", "warmup", &s.warmup));
  RETURN_IF_ERROR(Get(j, "run spec", "threads", &s.threads));
  RETURN_IF_ERROR(Get(j, "run spec", "seed", &s.seed));
  RETURN_IF_ERROR(Get(j, "run spec", "noop_ms", &s.noop_ms));
  return s;
}

std::string RunKey(const RunSpec& spec) {
  std::string canonical = spec.CanonicalJson();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(canonical.data()), canonical.size(), digest);
  std::string hex;
  char buf[3];
  for (int i = 0; i < 8; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

}  // namespace kvgrid
