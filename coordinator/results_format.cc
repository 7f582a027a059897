#include "coordinator/results_format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "proto/rpc_common.h"
#include "reports/markdown_table.h"

namespace kvgrid {

v1::ResultsResponse ResultsFromStore(const ExperimentView& experiment,
                                     const std::vector<RunView>& runs, bool include_samples) {
  v1::ResultsResponse resp;
  resp.set_experiment(experiment.name);
  resp.set_status(experiment.status);
  for (const auto& r : runs) {
    auto* out = resp.add_runs();
    out->set_run_key(r.run_key);
    out->set_status(r.status);
    out->set_attempts(r.attempts);
    out->set_policy(r.policy);
    out->set_dataset(r.dataset);
    out->set_workload(r.workload);
    out->set_device(r.device);
    out->set_worker_id(r.worker_id);
    out->set_error(r.error);
    out->mutable_spec()->set_canonical_json(r.spec_json);
    out->mutable_spec()->set_run_key(r.run_key);
    out->set_result_attempt(r.result_attempt.value_or(0));
    out->set_started_at_ms(r.started_at);
    out->set_finished_at_ms(r.finished_at);
    out->set_progress(r.progress);
    out->set_phase(r.phase);
    auto* result = out->mutable_result();
    for (const auto& [name, vu] : r.metrics) {
      auto* m = result->add_metrics();
      m->set_name(name);
      m->set_value(vu.first);
      m->set_unit(vu.second);
    }
    if (include_samples) {
      for (const auto& [name, values] : r.samples) {
        auto* s = result->add_samples();
        s->set_name(name);
        auto unit = r.sample_units.find(name);
        if (unit != r.sample_units.end()) s->set_unit(unit->second);
        s->mutable_values()->Add(values.begin(), values.end());
      }
    }
    result->set_environment_json(r.environment_json);
  }
  return resp;
}
namespace {

using nlohmann::json;

json ParseOr(const std::string& text, json fallback) {
  if (text.empty()) return fallback;
  auto j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json(text) : j;
}

// Spec fields that tell runs of one policy apart.
struct SpecColumns {
  std::string sample, protocol, prompt_tokens, new_tokens, position_mode, kv_dtype = "model";
};

SpecColumns Columns(const v1::RunRecord& r) {
  SpecColumns c;
  json spec = ParseOr(r.spec().canonical_json(), json::object());
  if (!spec.is_object()) return c;
  if (spec.contains("dataset") && spec["dataset"].is_object() &&
      spec["dataset"].contains("sample")) {
    c.sample = spec["dataset"]["sample"].dump();
  }
  if (spec.contains("perplexity") && spec["perplexity"].is_object() &&
      spec["perplexity"].contains("protocol")) {
    c.protocol = spec["perplexity"]["protocol"].get<std::string>();
  }
  if (spec.contains("generation") && spec["generation"].is_object()) {
    if (spec["generation"].contains("prompt_tokens")) {
      c.prompt_tokens = spec["generation"]["prompt_tokens"].dump();
    }
    if (spec["generation"].contains("new_tokens")) {
      c.new_tokens = spec["generation"]["new_tokens"].dump();
    }
  }
  if (spec.contains("position_mode") && spec["position_mode"].is_string()) {
    c.position_mode = spec["position_mode"].get<std::string>();
  }
  if (spec.contains("kv_dtype") && spec["kv_dtype"].is_string()) {
    c.kv_dtype = spec["kv_dtype"].get<std::string>();
  }
  return c;
}

std::vector<std::string> MetricNames(const v1::ResultsResponse& results) {
  std::set<std::string> names;
  for (const auto& r : results.runs()) {
    for (const auto& m : r.result().metrics()) names.insert(m.name());
  }
  return {names.begin(), names.end()};
}

const v1::Metric* FindMetric(const v1::RunRecord& r, const std::string& name) {
  for (const auto& m : r.result().metrics()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

std::string Number(double v, int digits) { return absl::StrFormat("%.*g", digits, v); }

}  // namespace

json ResultsToJson(const v1::ResultsResponse& results) {
  json out = json::array();
  for (const auto& r : results.runs()) {
    json o;
    o["run_key"] = r.run_key();
    o["status"] = r.status();
    o["attempts"] = r.attempts();
    o["policy"] = r.policy();
    o["dataset"] = r.dataset();
    o["workload"] = r.workload();
    o["device"] = r.device();
    o["worker"] = r.worker_id();
    o["error"] = r.error();
    json metrics = json::object();
    json units = json::object();
    for (const auto& m : r.result().metrics()) {
      metrics[m.name()] = m.value();
      units[m.name()] = m.unit();
    }
    o["metrics"] = metrics;
    o["units"] = units;
    o["spec"] = ParseOr(r.spec().canonical_json(), json::object());
    o["result_attempt"] = r.result_attempt();
    if (!r.result().environment_json().empty()) {
      o["environment"] = ParseOr(r.result().environment_json(), json::object());
    }
    if (r.result().samples_size() > 0) {
      json samples = json::object();
      for (const auto& s : r.result().samples()) {
        samples[s.name()] = std::vector<double>(s.values().begin(), s.values().end());
      }
      o["samples"] = samples;
    }
    out.push_back(std::move(o));
  }
  return out;
}

std::string ResultsToCsv(const v1::ResultsResponse& results) {
  const std::vector<std::string> metrics = MetricNames(results);
  std::vector<std::string> header = {"run_key", "status", "attempts", "policy", "dataset",
                                     "sample", "workload", "protocol", "prompt_tokens",
                                     "new_tokens", "position_mode", "kv_dtype", "worker"};
  header.insert(header.end(), metrics.begin(), metrics.end());
  header.push_back("error");
  std::string out;
  std::vector<std::string> cells;
  for (const auto& h : header) cells.push_back(CsvField(h));
  absl::StrAppend(&out, absl::StrJoin(cells, ","), "\n");
  for (const auto& r : results.runs()) {
    SpecColumns c = Columns(r);
    cells = {r.run_key(), r.status(), absl::StrCat(r.attempts()), r.policy(), r.dataset(),
             c.sample, r.workload(), c.protocol, c.prompt_tokens, c.new_tokens, c.position_mode,
             c.kv_dtype, r.worker_id()};
    for (const auto& name : metrics) {
      const v1::Metric* m = FindMetric(r, name);
      cells.push_back(m == nullptr ? "" : Number(m->value(), 10));
    }
    cells.push_back(r.error());
    for (auto& cell : cells) cell = CsvField(cell);
    absl::StrAppend(&out, absl::StrJoin(cells, ","), "\n");
  }
  return out;
}

std::string ResultsToMarkdown(const v1::ResultsResponse& results) {
  const std::vector<std::string> metrics = MetricNames(results);
  reports::MarkdownTable t;
  t.headers = {"run_key", "status", "attempts", "policy", "dataset", "workload", "setting", "worker"};
  t.align.assign(t.headers.size(), reports::Align::kLeft);
  // Units for the header, from the first run that has the metric.
  for (const auto& name : metrics) {
    std::string unit;
    for (const auto& r : results.runs()) {
      if (const v1::Metric* m = FindMetric(r, name)) {
        unit = m->unit();
        break;
      }
    }
    t.headers.push_back(unit.empty() ? name : absl::StrCat(name, " (", unit, ")"));
    t.align.push_back(reports::Align::kRight);
  }
  for (const auto& r : results.runs()) {
    SpecColumns c = Columns(r);
    std::vector<std::string> setting;
    if (!c.protocol.empty()) setting.push_back(c.protocol);
    if (!c.prompt_tokens.empty()) setting.push_back(absl::StrCat("prompt ", c.prompt_tokens));
    if (!c.new_tokens.empty()) setting.push_back(absl::StrCat("new ", c.new_tokens));
    if (!c.position_mode.empty() && c.position_mode != "original") {
      setting.push_back(c.position_mode);
    }
    if (c.kv_dtype != "model") setting.push_back(absl::StrCat("KV ", c.kv_dtype));
    if (!c.sample.empty() && c.sample != "0") setting.push_back(absl::StrCat("sample ", c.sample));
    std::string status = r.status();
    if (!r.error().empty() && r.status() != "done") {
      status = absl::StrCat(status, ": ", r.error().substr(0, 80));
    }
    std::vector<std::string> cells = {r.run_key(), status, absl::StrCat(r.attempts()),
                                      absl::StrCat("`", r.policy(), "`"), r.dataset(),
                                      r.workload(), absl::StrJoin(setting, ", "), r.worker_id()};
    for (const auto& name : metrics) {
      const v1::Metric* m = FindMetric(r, name);
      cells.push_back(m == nullptr ? "" : Number(m->value(), 4));
    }
    t.rows.push_back(std::move(cells));
  }
  return absl::StrCat("### ", results.experiment(), " (", results.status(), ", ", results.runs_size(),
                      " runs)\n\n", reports::RenderMarkdownTable(t));
}

absl::StatusOr<std::string> FormatResults(const v1::ResultsResponse& results,
                                          const std::string& format) {
  if (format == "json") return ResultsToJson(results).dump(2) + "\n";
  if (format == "csv") return ResultsToCsv(results);
  if (format == "md" || format == "markdown") return ResultsToMarkdown(results);
  return absl::InvalidArgumentError(
      absl::StrCat("--format: unknown format '", format, "' (expected csv, json or md)"));
}

bool IsFinished(const v1::ExperimentStatus& e) {
  return e.planned() == 0 && e.running() == 0 && e.status() != "active";
}

std::string ProgressLine(const v1::ExperimentStatus& e, int width) {
  const int total = std::max(1, e.total());
  const int finished = e.done() + e.failed() + e.cancelled();
  const int filled = static_cast<int>(static_cast<int64_t>(width) * finished / total);
  std::string bar(filled, '#');
  bar.append(width - filled, '.');
  std::string line = absl::StrFormat("[%s] %d/%d done", bar, e.done(), e.total());
  if (e.running() > 0) absl::StrAppend(&line, ", ", e.running(), " running");
  if (e.failed() > 0) absl::StrAppend(&line, ", ", e.failed(), " failed");
  if (e.cancelled() > 0) absl::StrAppend(&line, ", ", e.cancelled(), " cancelled");
  return line;
}

std::string StoreProblemLine(const std::string& problem, int64_t since_ms, int64_t now_ms) {
  if (problem.empty()) return "";
  return absl::StrFormat("store NOT accepting writes for %.0f s (leasing paused, finished results "
                         "held by their workers): %s",
                         static_cast<double>(std::max<int64_t>(0, now_ms - since_ms)) / 1000.0, problem);
}

std::string FormatStatus(const v1::StatusResponse& status) {
  std::string out;
  if (!status.store_problem().empty()) {
    absl::StrAppend(&out, "WARNING: ", StoreProblemLine(status.store_problem(), status.store_problem_since_ms(),
                                                        status.now_ms()), "\n\n");
  }
  if (status.experiments_size() == 0) {
    out = "no experiments (submit one with `kvgrid submit GRID.yaml`)\n";
  } else {
    size_t name_w = 10;
    for (const auto& e : status.experiments()) name_w = std::max(name_w, e.name().size());
    absl::StrAppend(&out, absl::StrFormat("%-*s  %-9s  %5s  %7s  %7s  %5s  %6s  %9s\n",
                                          static_cast<int>(name_w), "EXPERIMENT", "STATUS",
                                          "TOTAL", "PLANNED", "RUNNING", "DONE", "FAILED",
                                          "CANCELLED"));
    for (const auto& e : status.experiments()) {
      absl::StrAppend(&out, absl::StrFormat("%-*s  %-9s  %5d  %7d  %7d  %5d  %6d  %9d\n",
                                            static_cast<int>(name_w), e.name(), e.status(),
                                            e.total(), e.planned(), e.running(), e.done(),
                                            e.failed(), e.cancelled()));
      for (const auto& w : e.workers()) {
        absl::StrAppend(&out, absl::StrFormat("    worker %s (%s%s): %s%s, %d done here\n",
                                              w.worker_id(), w.device(),
                                              w.device_name().empty()
                                                  ? ""
                                                  : absl::StrCat(", ", w.device_name()),
                                              w.status(),
                                              w.current_run_key().empty()
                                                  ? ""
                                                  : absl::StrCat(" on run ", w.current_run_key()),
                                              w.runs_done()));
      }
    }
  }
  if (status.workers_size() > 0) {
    absl::StrAppend(&out, "\nWORKERS\n");
    for (const auto& w : status.workers()) {
      const double ago_s =
          static_cast<double>(status.now_ms() - w.last_heartbeat_ms()) / 1000.0;
      absl::StrAppend(
          &out, absl::StrFormat("  %-40s %-7s %-8s %-28s last seen %.1f s ago, %d runs done%s\n",
                                w.worker_id(), w.device(), w.status(),
                                w.device_name().substr(0, 28), ago_s, w.runs_done(),
                                w.current_run_key().empty()
                                    ? ""
                                    : absl::StrCat(", running ", w.current_run_key())));
    }
  }
  return out;
}

}  // namespace kvgrid
