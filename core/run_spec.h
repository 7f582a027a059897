// The specification of one run: the unit the coordinator stores, dispatches and a worker executes.
// Its canonical JSON (ToJson(), keys sorted by nlohmann::json) is what the run key hashes, what
// the proto carries (RunSpec.canonical_json) and what SQLite stores (runs.spec_json). No torch.
// FromJson validates the policy against its schema (core/policy_spec.h): a RunSpec in memory
// always holds a policy kvgrid can build.
//
// {
//   "model":   {"id": "EleutherAI/pythia-70m-deduped" | "/local/dir", "revision": "main",
//               "dtype": "float32" | "float16" | "bfloat16"},
//   "device":  "cpu" | "cuda" | "cuda:N" | "auto",
//   "workload": "perplexity" | "generation" | "noop",   // noop: load tests of the scheduler
//   "dataset": {"name": "wikitext-2-raw-v1" | "pg19" | "ids" | "text", "split": "test",
//               "sample": 0, "path": ""},              // path: a local file instead of a download
//   "policy":  "streaming_llm:sink_tokens=4,window=508", // canonical PolicySpec::ToString()
//   "position_mode": "original" | "shifted" | "rerotate",
//   "kv_dtype": "int4",     // only when quantised: KvDtype::ToString() (core/kv_dtype.h)
//   "prefill_chunk": 512,   // only when > 0: prompt / prefill context in chunks, evicting after each
//   "perplexity": {"protocol": "sliding" | "streaming" | "prefill", "max_tokens": 0,
//                  "max_length": 2048, "stride": 512, "context_tokens": 1024,
//                  "continuation_tokens": 256},        // present when workload == perplexity
//   "generation": {"prompt_tokens": 512, "new_tokens": 128, "batch": 1,   // when generation
//                  "paired_baseline": true},  // when HasBaseline(): time the full float cache
//                                             // beside it, interleaved
//   "repeats": 5, "warmup": 2, "threads": 0, "seed": 0, "noop_ms": 0
// }
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/kv_dtype.h"
#include "core/policy_spec.h"

namespace kvgrid {

struct ModelRef {
  std::string id = "EleutherAI/pythia-70m-deduped";
  std::string revision = "main";
  std::string dtype = "float32";
};

struct DatasetRef {
  std::string name = "wikitext-2-raw-v1";
  std::string split = "test";
  int64_t sample = 0;
  std::string path;  // local file overrides the download
};

struct PerplexityParams {
  std::string protocol = "sliding";
  int64_t max_tokens = 0;  // 0 = whole text (sliding) / 4096 (streaming)
  int64_t max_length = 2048;
  int64_t stride = 512;
  int64_t context_tokens = 1024;
  int64_t continuation_tokens = 256;
};

struct GenerationParams {
  int64_t prompt_tokens = 512;
  int64_t new_tokens = 128;
  int64_t batch = 1;
  // A policy other than `full` is timed against the full cache in the same run, interleaved
  // repeat by repeat (worker/workloads/generation_timing.h).
  bool paired_baseline = true;
};

struct RunSpec {
  ModelRef model;
  std::string device = "cpu";
  std::string workload = "generation";
  DatasetRef dataset;
  PolicySpec policy{"full", {}};  // validated against its schema; JSON: its canonical text
  std::string position_mode = "original";
  KvDtype kv_dtype;  // the cache's storage type (default: the model's dtype); JSON: its text
  int64_t prefill_chunk = 0;  // 0 = the whole prompt in one forward
  PerplexityParams perplexity;
  GenerationParams generation;
  int64_t repeats = 5;
  int64_t warmup = 2;
  int64_t threads = 0;  // 0 = all cores
  int64_t seed = 0;
  int64_t noop_ms = 0;

  // A generation run with something to compare against the full float cache (a policy other
  // than `full`, or a quantised cache) times that baseline beside it when paired_baseline.
  bool HasBaseline() const { return policy.name != "full" || kv_dtype.quantized(); }
  nlohmann::json ToJson() const;
  std::string CanonicalJson() const { return ToJson().dump(); }
  // Strict: unknown keys and wrong types are errors naming the key.
  static absl::StatusOr<RunSpec> FromJson(const nlohmann::json& j);
};

// Stable run key: first 16 hex digits of SHA-256 of CanonicalJson().
std::string RunKey(const RunSpec& spec);

}  // namespace kvgrid
