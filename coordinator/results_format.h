// Text renderings of the coordinator's answers for the CLI: `kvgrid results` (csv, json, md),
// `kvgrid status` (a table) and the progress bar of `submit --wait` / `run`.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "proto/kvgrid.pb.h"
#include "storage/store.h"

namespace kvgrid {

// The Results answer from stored runs: what the coordinator sends, and what `kvgrid results --db`
// reads straight from a database without one.
v1::ResultsResponse ResultsFromStore(const ExperimentView& experiment,
                                     const std::vector<RunView>& runs, bool include_samples);

// One object per run: run_key, status, attempts, policy (spec string), dataset, workload, device,
// worker, error, metrics {name: value}, units {name: unit}, spec (the canonical run spec object),
// result_attempt, environment (object, when done), samples {series: [...]} (when requested).
nlohmann::json ResultsToJson(const v1::ResultsResponse& results);

// Columns: run_key,status,attempts,policy,dataset,sample,workload,protocol,prompt_tokens,
// new_tokens,position_mode,kv_dtype,worker,<every metric, sorted>,error. RFC 4180 quoting.
std::string ResultsToCsv(const v1::ResultsResponse& results);

// A markdown table with the same content (metrics with 4 significant digits).
std::string ResultsToMarkdown(const v1::ResultsResponse& results);

// "csv" | "json" | "md"; InvalidArgument naming the format otherwise.
absl::StatusOr<std::string> FormatResults(const v1::ResultsResponse& results,
                                          const std::string& format);

// The `kvgrid status` table: one line per experiment (planned/running/done/failed/cancelled)
// and its workers.
std::string FormatStatus(const v1::StatusResponse& status);

// "[#########.........]  12/40 done, 2 running, 1 failed" (width = bar characters).
// "store NOT accepting writes for N s (...): PROBLEM", or "" when `problem` is empty.
std::string StoreProblemLine(const std::string& problem, int64_t since_ms, int64_t now_ms);

std::string ProgressLine(const v1::ExperimentStatus& e, int width = 30);

// True once the experiment has no planned or running run left.
bool IsFinished(const v1::ExperimentStatus& e);

}  // namespace kvgrid
