#include "reports/report_plots.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/metric_catalog.h"
#include "core/run_spec.h"
#include "reports/statistics.h"
#include "reports/svg_plot.h"

namespace kvgrid::reports {

ReportPlots BuildReportPlots(const std::map<GroupKey, Group>& groups, const PlotLabels& labels) {
  ReportPlots out;
  std::set<std::string> used_names;
  auto add = [&](std::string base, const PlotSpec& spec) {
    auto svg = RenderSvgPlot(spec);
    if (!svg.ok()) {
      out.notes.push_back(absl::StrCat("plot '", spec.title, "' not drawn: ", svg.status().message()));
      return;
    }
    base = SanitizeFileName(base);
    std::string name = base + ".svg";
    for (int i = 2; used_names.count(name); ++i) name = absl::StrCat(base, "-", i, ".svg");
    used_names.insert(name);
    out.files.push_back({name, spec.title, *std::move(svg)});
  };

  // PPL vs cache budget, and the running NLL over positions, per perplexity table.
  for (const auto& [key, grp] : groups) {
    if (key.workload != "perplexity" || key.protocol == "sliding") continue;
    const RunSpec& spec0 = grp.rows.begin()->second.runs.front()->spec;
    PlotSpec p;
    p.title = absl::StrCat("Perplexity vs KV cache budget (", key.protocol, ")");
    p.subtitle = labels.subtitle(key, spec0, true);
    p.x_label = "cache budget (tokens)";
    p.y_label = "perplexity (lower is better)";
    std::map<std::string, PlotSeries> series;
    double xmin = 1e300, xmax = 0, ymin = 1e300, ymax = 0;
    for (const auto& [rk, row] : grp.rows) {
      std::optional<double> ppl = PplOf(row).central;
      if (!ppl) continue;
      const Run& r = *row.runs.front();
      if (rk.policy_name == "full") {
        std::vector<std::string> how;
        if (labels.multi_mode) how.push_back(rk.position_mode);
        if (rk.kv_dtype != "model") how.push_back(absl::StrCat("KV ", rk.kv_dtype));
        p.references.push_back({how.empty() ? std::string("full cache")
                                            : absl::StrCat("full cache (", absl::StrJoin(how, ", "), ")"),
                                *ppl});
        continue;
      }
      std::optional<double> b = Budget(r);
      if (!b || *b <= 0) continue;
      std::string label = labels.label(r, BudgetKeys(r.policy.name));
      PlotSeries& s = series[label];
      s.name = label;
      s.x.push_back(*b);
      s.y.push_back(*ppl);
      xmin = std::min(xmin, *b);
      xmax = std::max(xmax, *b);
      ymin = std::min(ymin, *ppl);
      ymax = std::max(ymax, *ppl);
    }
    for (const auto& ref : p.references) {
      ymin = std::min(ymin, ref.y);
      ymax = std::max(ymax, ref.y);
    }
    if (!series.empty()) {
      for (auto& [n, s] : series) p.series.push_back(std::move(s));
      p.log_x = xmax / xmin >= 8;
      p.log_y = ymin > 0 && ymax / ymin >= 5;  // a collapsing policy would flatten the rest
      add(absl::StrCat("ppl_vs_budget-", key.dataset, "-", key.protocol), p);
    }
    if (key.protocol != "streaming") continue;
    PlotSpec n;
    n.title = "Streaming perplexity: running mean NLL over the stream";
    n.subtitle = labels.subtitle(key, spec0, true);
    n.x_label = "token position (tokens)";
    n.y_label = "mean NLL so far (nats)";
    for (const auto& [rk, row] : grp.rows) {
      const Run& r = *row.runs.front();
      const auto* nll = r.Samples(metric::kNll);
      if (nll == nullptr) continue;
      std::vector<double> mean = RunningMean(*nll);
      PlotSeries s;
      s.name = labels.label(r, {});
      size_t step = std::max<size_t>(1, (mean.size() + kMaxCurvePoints - 1) / kMaxCurvePoints);
      for (size_t i = 0; i < mean.size(); i += step) {
        s.x.push_back(static_cast<double>(i + 1));  // token 0 is never scored
        s.y.push_back(mean[i]);
      }
      if ((mean.size() - 1) % step != 0) {
        s.x.push_back(static_cast<double>(mean.size()));
        s.y.push_back(mean.back());
      }
      s.markers = false;
      n.series.push_back(std::move(s));
    }
    if (!n.series.empty()) add(absl::StrCat("nll_over_position-", key.dataset), n);
  }
  // Generation: KV bytes, peak memory and TPOT vs context length (prompt tokens).
  struct GenKey {
    GroupKey g;  // with the prompt length removed
    bool operator<(const GenKey& o) const { return g < o.g; }
  };
  std::map<GenKey, std::vector<const Group*>> gen;
  for (const auto& [key, grp] : groups) {
    if (key.workload != "generation") continue;
    GenKey k{key};
    k.g.params = {key.params.size() > 1 ? key.params[1] : 0, key.params.size() > 2 ? key.params[2] : 0};
    gen[k].push_back(&grp);
  }
  for (const auto& [k, grps] : gen) {
    std::set<double> xs;
    bool any_alloc = false;
    for (const Group* g : grps) {
      for (const auto& [rk, row] : g->rows) {
        for (const Run* r : row.runs) {
          xs.insert(static_cast<double>(r->spec.generation.prompt_tokens));
          if (r->Metric(metric::kPeakReservedBytes)) any_alloc = true;  // a CUDA run
        }
      }
    }
    if (xs.size() < 2) continue;  // one context length: the table says it all
    const RunSpec& s0 = grps.front()->rows.begin()->second.runs.front()->spec;
    std::string sub = absl::StrCat(labels.subtitle(k.g, s0, false), " · ", s0.generation.new_tokens,
                                   " new tokens, batch ", s0.generation.batch);
    auto make = [&](const std::string& title, const std::string& ylabel,
                    std::function<std::optional<double>(const Row&)> value) {
      PlotSpec p;
      p.title = title;
      p.subtitle = sub;
      p.x_label = "context length (prompt tokens)";
      p.y_label = ylabel;
      std::map<std::string, PlotSeries> series;
      std::vector<std::string> order;
      for (const Group* g : grps) {
        for (const auto& [rk, row] : g->rows) {
          std::optional<double> y = value(row);
          if (!y) continue;
          const Run& r = *row.runs.front();
          std::string label = labels.label(r, {});
          if (!series.count(label)) order.push_back(label);
          PlotSeries& s = series[label];
          s.name = label;
          s.x.push_back(static_cast<double>(r.spec.generation.prompt_tokens));
          s.y.push_back(*y);
        }
      }
      // `full` first so it keeps the first colour everywhere.
      std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
        return absl::StartsWith(a, "full") && !absl::StartsWith(b, "full");
      });
      for (const auto& l : order) p.series.push_back(series[l]);
      p.log_x = *xs.rbegin() / *xs.begin() >= 8;
      p.y_from_zero = true;
      return p;
    };
    std::string ds = k.g.dataset;
    PlotSpec kv = make("KV cache bytes (peak) vs context length", "KV cache, peak (MiB)",
                       [](const Row& r) { auto c = Central(MetricSummary(r, metric::kKvBytesPeak)); return c ? std::optional<double>(*c / kMiB) : std::nullopt; });
    if (!kv.series.empty()) add("kv_bytes_vs_context-" + ds, kv);
    const MetricDef& mem_metric = metric::kPeakMemoryBytes;  // allocator peak on CUDA, RSS on CPU
    PlotSpec mem = make(any_alloc ? "Peak allocated memory vs context length"
                                  : "Peak process RSS vs context length",
                        any_alloc ? "peak allocated (MiB)" : "peak RSS (MiB)",
                        [&](const Row& r) { auto c = Central(MetricSummary(r, mem_metric)); return c ? std::optional<double>(*c / kMiB) : std::nullopt; });
    if (!mem.series.empty()) add("peak_memory_vs_context-" + ds, mem);
    PlotSpec tpot = make("Time per output token vs context length", "TPOT, median (ms)",
                         [](const Row& r) { return Central(MetricSummary(r, metric::kTpotMs)); });
    if (!tpot.series.empty()) add("tpot_vs_context-" + ds, tpot);
  }
  return out;
}

}  // namespace kvgrid::reports
