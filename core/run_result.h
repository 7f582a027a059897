// The result record of one run: every metric, the raw samples, and where/how it was measured.
// Produced by the workloads (worker/workloads), sent to the coordinator (proto ResultRecord),
// stored in SQLite (storage/), printed by `kvgrid bench|ppl --json`. No torch here.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/metric_catalog.h"

namespace kvgrid {

struct Metric {
  std::string name;   // a MetricDef's name (core/metric_catalog.h, docs/metrics.md)
  double value = 0;
  std::string unit;   // "ms", "tok/s", "bytes", "tokens", "" (dimensionless)
};

struct SampleSeries {
  std::string name;   // a MetricDef's name, e.g. ttft_ms (one value per timed repeat), decode_step_ms, nll
  std::string unit;
  std::vector<double> values;
};

struct RunResult {
  std::vector<Metric> metrics;
  std::vector<SampleSeries> samples;
  // Measurement environment: device, device_name, libtorch_version, dtype, threads, build_type,
  // git_commit, host, plus the run's resolved configuration under "config".
  nlohmann::json environment = nlohmann::json::object();

  void AddMetric(std::string name, double value, std::string unit) {
    metrics.push_back({std::move(name), value, std::move(unit)});
  }
  void Add(const MetricDef& m, double value) { AddMetric(std::string(m.name), value, std::string(m.unit)); }
  void AddSamples(const MetricDef& m, std::vector<double> values) {
    samples.push_back({std::string(m.name), std::string(m.unit), std::move(values)});
  }
  const Metric* FindMetric(const std::string& name) const {
    for (const auto& m : metrics) if (m.name == name) return &m;
    return nullptr;
  }
  const Metric* Find(const MetricDef& m) const { return FindMetric(std::string(m.name)); }
  // The metric's value, NaN when the run did not report it.
  double Value(const MetricDef& m) const {
    const Metric* found = Find(m);
    return found ? found->value : std::numeric_limits<double>::quiet_NaN();
  }
  // The sample series of that name, empty when absent.
  std::vector<double> SamplesOf(const MetricDef& m) const {
    for (const auto& s : samples) if (s.name == m.name) return s.values;
    return {};
  }

  // {"<metric>": value, ..., "units": {...}, "samples": {"<name>": [...]}, "environment": {...}}
  nlohmann::json ToJson() const {
    nlohmann::json j = nlohmann::json::object();
    nlohmann::json units = nlohmann::json::object();
    for (const auto& m : metrics) { j[m.name] = m.value; units[m.name] = m.unit; }
    j["units"] = units;
    nlohmann::json samples_json = nlohmann::json::object();
    for (const auto& s : samples) samples_json[s.name] = s.values;
    j["samples"] = samples_json;
    j["environment"] = environment;
    return j;
  }
};

}  // namespace kvgrid
