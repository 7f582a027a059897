#include "proto/convert.h"

namespace kvgrid {

void ToProto(const RunResult& result, v1::ResultRecord* out) {
  out->Clear();
  for (const auto& m : result.metrics) {
    auto* pm = out->add_metrics();
    pm->set_name(m.name);
    pm->set_value(m.value);
    pm->set_unit(m.unit);
  }
  for (const auto& s : result.samples) {
    auto* ps = out->add_samples();
    ps->set_name(s.name);
    ps->set_unit(s.unit);
    ps->mutable_values()->Add(s.values.begin(), s.values.end());
  }
  out->set_environment_json(result.environment.dump());
}

RunResult FromProto(const v1::ResultRecord& record) {
  RunResult r;
  for (const auto& m : record.metrics()) r.AddMetric(m.name(), m.value(), m.unit());
  for (const auto& s : record.samples()) {
    SampleSeries series;
    series.name = s.name();
    series.unit = s.unit();
    series.values.assign(s.values().begin(), s.values().end());
    r.samples.push_back(std::move(series));
  }
  if (!record.environment_json().empty()) {
    auto env = nlohmann::json::parse(record.environment_json(), nullptr, /*allow_exceptions=*/false);
    if (env.is_discarded()) {
      r.environment = nlohmann::json{{"unparsed", record.environment_json()}};
    } else {
      r.environment = std::move(env);
    }
  }
  return r;
}

}  // namespace kvgrid
