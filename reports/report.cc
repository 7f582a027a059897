#include "reports/report.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/paired_delta.h"
#include "common/status_macros.h"
#include "core/metric_catalog.h"
#include "core/run_spec.h"
#include "reports/markdown_table.h"
#include "reports/report_model.h"
#include "reports/report_plots.h"
#include "reports/statistics.h"
#include "reports/svg_plot.h"

namespace kvgrid::reports {
namespace {

class ReportBuilder {
 public:
  ReportBuilder(const ExperimentView& exp, const std::vector<RunView>& views,
                const ReportOptions& opt)
      : exp_(exp), opt_(opt) {
    runs_.reserve(views.size());
    for (const auto& v : views) runs_.push_back(Parse(v));
  }

  RenderedReport Build() {
    Classify();
    RenderedReport out;
    std::string& md = out.markdown;
    const int h = opt_.heading_level;
    md += Heading(h, absl::StrCat("kvgrid results: ", exp_.name));
    md += SummaryText();
    md += RenderSummaryTable(h + 1);
    for (const auto& [key, group] : groups_) md += RenderGroup(group, h + 1);
    if (!opt_.plots_dir.empty()) {
      out.plots = BuildPlots();
      if (!out.plots.empty()) {
        md += Heading(h + 1, "Plots");
        std::string prefix = opt_.plots_link_prefix.empty() ? opt_.plots_dir : opt_.plots_link_prefix;
        while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
        for (const auto& p : out.plots) {
          md += absl::StrCat("![", p.title, "](", prefix.empty() ? "" : prefix + "/", p.filename,
                             ")\n\n");
        }
      }
    }
    md += FailedRuns(h + 1);
    md += Notes(h + 1);
    md += Setup(h + 1);
    return out;
  }

 private:
  Run Parse(const RunView& v) {
    Run r;
    r.view = &v;
    json j = json::parse(v.spec_json, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      r.spec_error = "spec_json is not valid JSON";
    } else {
      auto spec = RunSpec::FromJson(j);
      if (spec.ok()) {
        r.spec = *std::move(spec);
        r.spec_ok = true;
      } else {
        r.spec_error = std::string(spec.status().message());
      }
    }
    if (r.spec_ok) {
      r.policy = PolicyTextOf(r.spec.policy);
    } else {  // keep what the runs table says
      r.policy = ParsePolicyText(v.policy);
      r.spec.dataset.name = v.dataset;
      r.spec.workload = v.workload;
    }
    if (!v.environment_json.empty()) {
      json e = json::parse(v.environment_json, nullptr, false);
      if (e.is_object()) r.env = std::move(e);
    }
    return r;
  }

  void Classify() {
    std::map<std::string, int> dataset_rank;
    for (const Run& r : runs_) {
      const std::string& st = r.view->status;
      if (st == "failed" || st == "cancelled") {
        failed_.push_back(&r);
        continue;
      }
      if (st != "done") {
        unfinished_.push_back(&r);
        continue;
      }
      ++done_;
      if (r.spec.workload == "noop") {
        ++noop_;
        continue;
      }
      if (!r.spec_ok) {
        notes_.push_back(absl::StrCat("run `", r.view->run_key, "` is done but its spec could not be read (",
                                      r.spec_error, "); it is not tabulated"));
        continue;
      }
      if (r.view->metrics.empty()) {
        notes_.push_back(absl::StrCat("run `", r.view->run_key, "` (", r.policy.text, ", ",
                                      r.spec.workload, ") is done but has no stored metrics"));
        continue;
      }
      GroupKey g;
      g.workload = r.spec.workload;
      g.workload_rank = WorkloadRank(g.workload);
      auto [it, inserted] = dataset_rank.emplace(r.spec.dataset.name, static_cast<int>(dataset_rank.size()));
      g.dataset_rank = it->second;
      g.dataset = r.spec.dataset.name;
      g.split = r.spec.dataset.split;
      g.sample = r.spec.dataset.sample;
      g.path = r.spec.dataset.path;
      g.model = r.spec.model.id;
      g.revision = r.spec.model.revision;
      g.dtype = r.spec.model.dtype;
      g.device = r.spec.device;
      if (g.workload == "perplexity") {
        const auto& p = r.spec.perplexity;
        g.protocol = p.protocol;
        g.protocol_rank = ProtocolRank(p.protocol);
        if (p.protocol == "sliding") g.params = {p.max_length, p.stride, p.max_tokens};
        else if (p.protocol == "streaming") g.params = {p.max_tokens};
        else if (p.protocol == "prefill") g.params = {p.context_tokens, p.continuation_tokens};
        else g.params = {p.max_tokens, p.max_length, p.stride, p.context_tokens, p.continuation_tokens};
      } else if (g.workload == "generation") {
        const auto& gp = r.spec.generation;
        g.params = {gp.prompt_tokens, gp.new_tokens, gp.batch};
      }
      RowKey k;
      k.policy_name = r.policy.name;
      k.full_rank = r.policy.name == "full" ? 0 : 1;
      k.budget = Budget(r).value_or(0);
      k.policy = r.policy.text;
      k.kv_dtype = r.spec.kv_dtype.ToString();
      k.kv_rank = r.spec.kv_dtype.quantized() ? 16 - r.spec.kv_dtype.bits : 0;
      k.position_mode = r.spec.position_mode;
      k.position_rank = PositionRank(r.spec.position_mode);
      k.prefill_chunk = r.spec.prefill_chunk;
      Group& grp = groups_[g];
      grp.key = g;
      Row& row = grp.rows[k];
      row.key = k;
      row.runs.push_back(&r);
      tabulated_.push_back(&r);
    }
    // Which labels distinguish things in this experiment.
    std::set<std::string> models, devices, modes, kv_dtypes;
    std::map<std::string, std::map<std::string, std::set<std::string>>> values;
    for (const Run* r : tabulated_) {
      models.insert(absl::StrCat(r->spec.model.id, "@", r->spec.model.revision, " ", r->spec.model.dtype));
      devices.insert(r->spec.device);
      modes.insert(r->spec.position_mode);
      kv_dtypes.insert(r->spec.kv_dtype.ToString());
      chunked_ = chunked_ || r->spec.prefill_chunk > 0;
      for (const auto& [k, v] : r->policy.params) values[r->policy.name][k].insert(v);
    }
    multi_model_ = models.size() > 1;
    multi_device_ = devices.size() > 1;
    multi_mode_ = modes.size() > 1;
    multi_kv_ = kv_dtypes.size() > 1;
    for (const auto& [name, params] : values) {
      for (const auto& [k, vs] : params) {
        if (vs.size() > 1) varying_[name].insert(k);
      }
    }
  }

  std::string DatasetLabel(const GroupKey& g) const {
    std::string s = g.dataset;
    if (g.split != "test") absl::StrAppend(&s, " (", g.split, ")");
    if (g.sample != 0) absl::StrAppend(&s, " sample ", g.sample);
    if (!g.path.empty()) absl::StrAppend(&s, " from `", std::filesystem::path(g.path).filename().string(), "`");
    return s;
  }

  std::string GroupTitle(const Group& grp) const {
    const GroupKey& g = grp.key;
    const Run& any = *grp.rows.begin()->second.runs.front();
    std::string t = absl::StrCat(g.workload, " · ", DatasetLabel(g), " · ", ProtocolSettings(any.spec));
    if (multi_model_) absl::StrAppend(&t, " · ", g.model, "@", g.revision, " ", g.dtype);
    if (multi_device_) absl::StrAppend(&t, " · ", g.device);
    return t;
  }

  // Short legend label: the policy name plus the parameters that vary in this experiment.
  std::string Label(const Run& r, const std::set<std::string>& exclude = {}) const {
    std::vector<std::string> parts;
    auto it = varying_.find(r.policy.name);
    if (it != varying_.end()) {
      for (const auto& k : it->second) {
        if (exclude.count(k)) continue;
        auto p = r.policy.params.find(k);
        if (p != r.policy.params.end()) parts.push_back(absl::StrCat(k, "=", p->second));
      }
    }
    if (multi_mode_) parts.push_back(r.spec.position_mode);
    if (multi_kv_) parts.push_back(absl::StrCat("KV ", r.spec.kv_dtype.ToString()));
    if (chunked_) parts.push_back(ChunkLabel(r.spec.prefill_chunk));
    if (parts.empty()) return r.policy.name;
    return absl::StrCat(r.policy.name, " (", absl::StrJoin(parts, ", "), ")");
  }

  std::string SummaryText() const {
    std::string s = absl::StrCat("Experiment `", exp_.name, "`");
    if (!exp_.status.empty()) absl::StrAppend(&s, " (", exp_.status, ")");
    absl::StrAppend(&s, ": ", runs_.size(), " runs, ", done_, " done");
    int failed = 0, cancelled = 0;
    for (const Run* r : failed_) (r->view->status == "failed" ? failed : cancelled)++;
    if (failed) absl::StrAppend(&s, ", ", failed, " failed");
    if (cancelled) absl::StrAppend(&s, ", ", cancelled, " cancelled");
    if (!unfinished_.empty()) absl::StrAppend(&s, ", ", unfinished_.size(), " not finished");
    absl::StrAppend(&s, ".");
    if (!failed_.empty() || !unfinished_.empty()) {
      absl::StrAppend(&s, " Runs without results are listed under \"Failed runs\" below.");
    }
    if (noop_) absl::StrAppend(&s, " ", noop_, " noop run(s) (scheduler tests) have no table.");
    std::set<std::string> random_models;
    for (const Run& r : runs_) {
      if (r.spec_ok && absl::StartsWith(r.spec.model.id, "random:")) random_models.insert(r.spec.model.id);
    }
    if (!random_models.empty()) {
      absl::StrAppend(&s, "\n\n**", absl::StrJoin(random_models, ", "),
                      " has random weights: its perplexities are meaningless (they only show that "
                      "the pipeline runs); its costs — time, memory, KV bytes — are real.**");
    }
    absl::StrAppend(&s,
                    "\n\nCells: median [p10–p90] when n ≥ ", kMinSamplesForPercentiles,
                    ", else [min–max]; n = timed repetitions (or runs). PPL ± is PPL × "
                    "sqrt(var(NLL)/(n−1)) over the scored tokens. Δ: change of the median vs the "
                    "`full` row of the same table. Throughput: decode tokens/s per repeat = new "
                    "tokens / (TTFT + (new tokens − 1) × TPOT). MiB = 2^20 bytes.\n\n");
    return s;
  }

  // The assignment's before/after table, first in every report: a row per policy setting
  // (policy, positions, prefill chunk), `full` first; the PPL of each cache protocol that ran
  // (its first dataset) and the timing and memory of the longest generation prompt, each with its
  // Δ vs that table's `full` row. Medians only; the detailed tables below carry the spreads.
  std::string RenderSummaryTable(int level) const {
    std::map<std::string, const Group*> ppl;  // protocol -> its first group
    const Group* gen = nullptr;
    auto prompt = [](const Group& g) { return g.rows.begin()->second.runs.front()->spec.generation.prompt_tokens; };
    for (const auto& [k, g] : groups_) {
      if (g.rows.empty()) continue;
      if (k.workload == "perplexity" && k.protocol != "sliding" && !ppl.count(k.protocol)) ppl[k.protocol] = &g;
      if (k.workload == "generation" && (gen == nullptr || prompt(g) > prompt(*gen))) gen = &g;
    }
    if (ppl.empty() && gen == nullptr) return "";
    std::vector<const Group*> sources;
    for (const auto& [protocol, g] : ppl) sources.push_back(g);
    if (gen) sources.push_back(gen);
    std::map<RowKey, const Row*> keys;  // every setting, in the detailed tables' order
    for (const Group* g : sources) {
      for (const auto& [k, row] : g->rows) keys.emplace(k, &row);
    }
    auto find = [](const Group* g, const RowKey& k) -> const Row* {
      auto it = g->rows.find(k);
      return it == g->rows.end() ? nullptr : &it->second;
    };
    auto delta = [](std::optional<double> v, const Row* base, const std::function<std::optional<double>(const Row&)>& f) {
      return base ? FormatDelta(v, f(*base)) : std::string();
    };
    MarkdownTable t;
    t.headers = {"policy"};
    t.align = {Align::kLeft};
    if (multi_mode_) { t.headers.push_back("positions"); t.align.push_back(Align::kLeft); }
    if (multi_kv_) { t.headers.push_back("KV dtype"); t.align.push_back(Align::kLeft); }
    if (chunked_) { t.headers.push_back("prefill"); t.align.push_back(Align::kLeft); }
    std::vector<std::string> notes;
    auto ppl_value = [](const Row& r) { return PplOf(r).central; };
    for (const auto& [protocol, g] : ppl) {
      t.headers.push_back(absl::StrCat("PPL ", protocol));
      t.headers.push_back("Δ PPL");
      t.align.insert(t.align.end(), {Align::kRight, Align::kRight});
      notes.push_back(absl::StrCat("PPL ", protocol, ": ", DatasetLabel(g->key), ", ",
                                   ProtocolSettings(g->rows.begin()->second.runs.front()->spec)));
    }
    auto central_of = [](const MetricDef& m) {
      return [&m](const Row& r) { return Central(MetricSummary(r, m)); };
    };
    auto thr = [](const Row& r) { return Central(ThroughputSummary(r)); };
    if (gen) {
      for (const char* h : {"TTFT ms", "Δ TTFT", "TPOT ms", "Δ TPOT", "tok/s", "Δ tok/s",
                            "peak mem MiB", "Δ mem", "KV peak MiB", "Δ KV"}) {
        t.headers.push_back(h);
        t.align.push_back(Align::kRight);
      }
      notes.push_back(absl::StrCat("timing and memory: ", DatasetLabel(gen->key), ", ",
                                   ProtocolSettings(gen->rows.begin()->second.runs.front()->spec)));
    }
    bool unpaired = false, contention = false;
    for (const auto& [k, any] : keys) {
      std::vector<std::string> row = {PolicyCell(*any)};
      if (multi_mode_) row.push_back(k.position_mode);
      if (multi_kv_) row.push_back(k.kv_dtype);
      if (chunked_) row.push_back(ChunkLabel(k.prefill_chunk));
      for (const auto& [protocol, g] : ppl) {
        const Row* r = find(g, k);
        const std::optional<double> v = r ? ppl_value(*r) : std::nullopt;
        row.push_back(v ? Fmt(*v) : "");
        row.push_back(r ? delta(v, BaselineRow(*g), ppl_value) : "");
      }
      if (gen) {
        const Row* r = find(gen, k);
        const Row* base = BaselineRow(*gen);
        if (r && TimedUnderContention(*r)) {
          contention = true;
          if (!TimedUnderContention(*any)) row[0] = PolicyCell(*r);
        }
        bool paired = false;
        auto timing = [&](const MetricDef& delta, const std::function<std::optional<double>(const Row&)>& f) {
          const std::optional<double> v = r ? f(*r) : std::nullopt;
          row.push_back(v ? Fmt(*v) : "");
          row.push_back(r ? TimingDeltaCell(*r, delta, base, f, &paired, &unpaired) : "");
        };
        timing(metric::kDeltaTtftPct, central_of(metric::kTtftMs));
        timing(metric::kDeltaTpotPct, central_of(metric::kTpotMs));
        timing(metric::kDeltaThroughputPct, thr);
        for (const MetricDef* m : {&metric::kPeakMemoryBytes, &metric::kKvBytesPeak}) {
          const double scale = kMiB;
          auto f = [m](const Row& x) { return Central(MetricSummary(x, *m)); };
          const std::optional<double> v = r ? f(*r) : std::nullopt;
          row.push_back(v ? Fmt(*v / scale) : "");
          row.push_back(r ? delta(v, base, f) : "");
        }
      }
      t.rows.push_back(std::move(row));
    }
    std::string md = Heading(level, "Summary: every policy against the full cache");
    md += RenderMarkdownTable(t);
    md += "\n";
    absl::StrAppend(&md, "_", absl::StrJoin(notes, "; "), ". Medians; Δ vs `full` in the same column's "
                    "setting. Timing Δs with an interval are paired: the run timed the full cache "
                    "with the same settings (prefill chunk included) interleaved with the policy, "
                    "≈ = interval contains 0", unpaired ? "; ᵘ = unpaired (separate runs)" : "",
                    ". peak mem = process peak RSS on CPU, allocator peak on CUDA",
                    contention ? absl::StrCat("; ", kContentionNote) : "", "._\n\n");
    return md;
  }

  std::string RenderGroup(const Group& grp, int level) {
    struct Column {
      std::string header;
      Align align;
      std::function<std::string(const Row&)> cell;
      bool always = false;
    };
    const Row* base = BaselineRow(grp);
    auto base_of = [&](std::function<std::optional<double>(const Row&)> f) -> std::optional<double> {
      return base ? f(*base) : std::nullopt;
    };
    auto ppl = [](const Row& r) { return PplOf(r).central; };
    auto ttft = [](const Row& r) { return Central(MetricSummary(r, metric::kTtftMs)); };
    auto tpot = [](const Row& r) { return Central(MetricSummary(r, metric::kTpotMs)); };
    auto kv = [](const Row& r) { return Central(MetricSummary(r, metric::kKvBytesPeak)); };
    bool paired_shown = false, unpaired_shown = false;
    auto DeltaCell = [&](const Row& r, const MetricDef& delta,
                         const std::function<std::optional<double>(const Row&)>& central) {
      return TimingDeltaCell(r, delta, base, central, &paired_shown, &unpaired_shown);
    };
    std::vector<Column> cols = {
        {"policy", Align::kLeft, PolicyCell, true},
        {"positions", Align::kLeft, [](const Row& r) { return r.key.position_mode; }, true},
        {"KV dtype", Align::kLeft, [&](const Row& r) { return multi_kv_ ? r.key.kv_dtype : std::string(); }},
        {"prefill", Align::kLeft,
         [&](const Row& r) { return chunked_ ? ChunkLabel(r.key.prefill_chunk) : std::string(); }},
        {"PPL", Align::kRight, [](const Row& r) { return PplOf(r).text; }},
        {"Δ PPL", Align::kRight, [&](const Row& r) { return FormatDelta(ppl(r), base_of(ppl)); }},
        {"scored tokens", Align::kRight,
         [](const Row& r) {
           Summary s = MetricSummary(r, metric::kScoredTokens);
           return s.empty() ? std::string() : s.n == 1 ? FmtInt(s.median) : FormatSummary(s);
         }},
        {std::string(metric::kKvTokensMax.name), Align::kRight,
         [](const Row& r) {
           Summary s = MetricSummary(r, metric::kKvTokensMax);
           return s.empty() ? std::string() : s.n == 1 ? FmtInt(s.median) : FormatSummary(s);
         }},
        {"TTFT ms", Align::kRight, [](const Row& r) { return FormatSummary(MetricSummary(r, metric::kTtftMs)); }},
        {"Δ TTFT", Align::kRight, [&](const Row& r) { return DeltaCell(r, metric::kDeltaTtftPct, ttft); }},
        {"TPOT ms", Align::kRight, [](const Row& r) { return FormatSummary(MetricSummary(r, metric::kTpotMs)); }},
        {"Δ TPOT", Align::kRight, [&](const Row& r) { return DeltaCell(r, metric::kDeltaTpotPct, tpot); }},
        {"decode tok/s", Align::kRight, [](const Row& r) { return FormatSummary(ThroughputSummary(r)); }},
        {"Δ tok/s", Align::kRight,
         [&](const Row& r) {
           auto d = PairedOf(r.runs, metric::kDeltaThroughputPct);
           if (d) paired_shown = true;
           return d ? FormatPairedDelta(*d) : std::string();
         }},
        {"scoring ms", Align::kRight,
         [](const Row& r) {
           // Policy scoring + eviction time inside the run (already inside TTFT/TPOT), so a TPOT
           // change can be read against the work that explains it. Empty for `full`.
           if (r.key.policy_name == "full") return std::string();
           return FormatSummary(MetricSummary(r, metric::kScoringMs));
         }},
        // peak_memory_bytes is the CUDA allocator's peak on GPU runs (they also carry
        // peak_reserved_bytes) and the process peak RSS on CPU runs (metrics.md).
        {"peak alloc MiB", Align::kRight,
         [](const Row& r) {
           if (MetricSummary(r, metric::kPeakReservedBytes).empty()) return std::string();
           return FormatSummary(MetricSummary(r, metric::kPeakMemoryBytes), kMiB);
         }},
        {"peak RSS MiB", Align::kRight,
         [](const Row& r) {
           if (!MetricSummary(r, metric::kPeakReservedBytes).empty()) return std::string();
           return FormatSummary(MetricSummary(r, metric::kPeakMemoryBytes), kMiB);
         }},
        {"KV peak MiB", Align::kRight,
         [](const Row& r) { return FormatSummary(MetricSummary(r, metric::kKvBytesPeak), kMiB); }},
        {"Δ KV", Align::kRight, [&](const Row& r) { return FormatDelta(kv(r), base_of(kv)); }},
    };
    std::vector<std::vector<std::string>> cells(cols.size());
    for (size_t c = 0; c < cols.size(); ++c) {
      for (const auto& [k, row] : grp.rows) cells[c].push_back(cols[c].cell(row));
    }
    MarkdownTable t;
    std::vector<size_t> keep;
    for (size_t c = 0; c < cols.size(); ++c) {
      bool any = cols[c].always;
      for (const auto& s : cells[c]) any = any || !s.empty();
      if (!any) continue;
      keep.push_back(c);
      t.headers.push_back(cols[c].header);
      t.align.push_back(cols[c].align);
    }
    for (size_t r = 0; r < grp.rows.size(); ++r) {
      std::vector<std::string> row;
      for (size_t c : keep) row.push_back(cells[c][r]);
      t.rows.push_back(std::move(row));
    }
    std::string md = Heading(level, GroupTitle(grp));
    md += RenderMarkdownTable(t);
    md += "\n";
    std::vector<std::string> notes;
    if (base == nullptr) notes.push_back("no `full` baseline in this table, so no Δ column");
    if (paired_shown) {
      notes.push_back("Δ TTFT / Δ TPOT / Δ tok/s with an interval are paired: the run timed the "
                      "full cache with the same settings (prefill chunk included) on the same "
                      "prompt in the same process, interleaved repeat by repeat; geometric mean "
                      "of the ratios with its 95 % t interval; ≈ marks an interval that contains "
                      "0 (no significant difference)");
    }
    if (std::any_of(grp.rows.begin(), grp.rows.end(),
                    [](const auto& kv) { return TimedUnderContention(kv.second); })) {
      notes.push_back(kContentionNote);
    }
    if (unpaired_shown) {
      notes.push_back("ᵘ unpaired: this Δ compares separately timed runs, so whatever the machine "
                      "did between them is in it (set `paired_baseline: true`, the default)");
    }
    const GroupKey& g = grp.key;
    if (g.workload == "perplexity" && g.protocol == "sliding" && grp.rows.size() > 1) {
      notes.push_back("the sliding protocol runs without a KV cache policy (it validates the "
                      "forward pass); all rows should agree");
    }
    if (g.workload == "perplexity" && g.protocol != "sliding") {
      bool long_stream = false;
      for (const auto& [k, row] : grp.rows) {
        for (const Run* r : row.runs) {
          auto st = r->Metric(metric::kScoredTokens);
          if ((st && *st > 2048) || r->spec.perplexity.max_tokens > 2048) long_stream = true;
        }
      }
      if (long_stream) {
        notes.push_back("Pythia was trained on 2048 positions: beyond them a full cache with "
                        "original positions extrapolates, so it is not a no-loss baseline there; "
                        "the sliding-window protocol's PPL is the reference");
      }
    }
    for (const auto& n : notes) md += absl::StrCat("_Note: ", n, "._\n\n");
    return md;
  }

  std::string FailedRuns(int level) const {
    if (failed_.empty() && unfinished_.empty()) return "";
    std::string md = Heading(level, "Failed runs");
    MarkdownTable t;
    t.headers = {"run", "status", "policy", "workload", "dataset", "settings", "attempts", "worker", "error"};
    t.align = {Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft,
               Align::kRight, Align::kLeft, Align::kLeft};
    auto add = [&](const Run* r) {
      std::string err = r->view->error;
      if (err.size() > kMaxErrorChars) err = err.substr(0, kMaxErrorChars) + "…";
      if (err.empty() && r->view->status != "failed") err = r->view->status == "cancelled" ? "(cancelled)" : "(no result yet)";
      t.rows.push_back({absl::StrCat("`", r->view->run_key, "`"), r->view->status,
                        absl::StrCat("`", r->policy.text, "`"), r->spec.workload, r->spec.dataset.name,
                        r->spec_ok ? ProtocolSettings(r->spec) : r->spec_error,
                        absl::StrCat(r->view->attempts), r->view->worker_id, err});
    };
    for (const Run* r : failed_) add(r);
    for (const Run* r : unfinished_) add(r);
    md += RenderMarkdownTable(t);
    md += "\n";
    return md;
  }

  std::string Notes(int level) const {
    if (notes_.empty()) return "";
    std::string md = Heading(level, "Notes");
    for (const auto& n : notes_) md += absl::StrCat("- ", n, "\n");
    return md + "\n";
  }

  std::string Setup(int level) const {
    std::map<std::string, std::set<std::string>> v;
    auto add = [&](const std::string& k, const std::string& val) {
      if (!val.empty()) v[k].insert(val);
    };
    auto env = [&](const Run* r, std::initializer_list<const char*> keys) -> std::string {
      for (const char* k : keys) {
        if (r->env.contains(k)) return JsonScalar(r->env[k]);
      }
      return "";
    };
    int64_t first = 0, last = 0;
    std::set<std::string> protocols;
    std::set<std::string> repeats;
    for (const Run* r : tabulated_) {
      add("model", absl::StrCat("`", r->spec.model.id, "` @ `", r->spec.model.revision, "`"));
      add("dtype", r->spec.model.dtype);
      std::string dev = env(r, {"device"});
      add("device", dev.empty() ? r->spec.device : dev);
      add("device name", env(r, {"device_name"}));
      add("LibTorch", env(r, {"libtorch_version", "torch_version"}));
      add("CUDA", env(r, {"cuda_version", "cuda_runtime_version"}));
      add("driver", env(r, {"driver_version", "cuda_driver_version"}));
      add("kvgrid commit", env(r, {"git_commit", "kvgrid_commit"}));
      add("build", env(r, {"build_type"}));
      std::string blas = env(r, {"blas"});
      if (!blas.empty()) {
        std::string core = env(r, {"blas_core"}), from = env(r, {"blas_core_corrected_from"});
        if (!core.empty()) absl::StrAppend(&blas, "; core ", core);
        if (!from.empty()) absl::StrAppend(&blas, " (kvgrid corrected OpenBLAS's choice of ", from, ")");
        add("BLAS", blas);
      }
      std::string threads = env(r, {"threads", "num_threads"});
      add("threads", threads.empty() ? (r->spec.threads ? absl::StrCat(r->spec.threads) : "all cores") : threads);
      std::string host = env(r, {"host", "hostname"});
      add("host", host.empty() ? r->view->worker_id : host);
      protocols.insert(absl::StrCat(r->spec.workload, ": ", ProtocolSettings(r->spec)));
      if (r->spec.workload == "generation") {
        repeats.insert(absl::StrCat(r->spec.repeats, " timed repeats after ", r->spec.warmup, " warm-up"));
      }
      int64_t f = r->view->finished_at;
      if (f > 0) {
        first = first == 0 ? f : std::min(first, f);
        last = std::max(last, f);
      }
    }
    std::string md = Heading(level, "Setup");
    const char* order[] = {"model", "dtype", "device", "device name", "LibTorch", "CUDA", "driver",
                           "kvgrid commit", "build", "BLAS", "threads", "host"};
    for (const char* k : order) {
      auto it = v.find(k);
      if (it == v.end()) continue;
      md += absl::StrCat("- ", k, ": ", absl::StrJoin(it->second, ", "), "\n");
    }
    if (!protocols.empty()) {
      md += "- protocols:\n";
      for (const auto& p : protocols) md += absl::StrCat("  - ", p, "\n");
    }
    if (!repeats.empty()) md += absl::StrCat("- timing: ", absl::StrJoin(repeats, "; "), "\n");
    if (first > 0) {
      std::string a = UtcDate(first), b = UtcDate(last);
      md += absl::StrCat("- measured: ", a == b ? a : absl::StrCat(a, " to ", b), " (UTC)\n");
    }
    md += absl::StrCat("- reproduce: `kvgrid report ", exp_.name,
                       opt_.db_path.empty() ? "" : absl::StrCat(" --db ", opt_.db_path), "`\n");
    md += "\n";
    if (opt_.include_grid_yaml && !exp_.grid_yaml.empty()) {
      std::string yaml = exp_.grid_yaml;
      if (yaml.back() != '\n') yaml += '\n';
      md += absl::StrCat("<details><summary>Grid <code>", exp_.name,
                         "</code> as submitted</summary>\n\n```yaml\n", yaml, "```\n\n</details>\n\n");
    }
    return md;
  }

  std::string Subtitle(const GroupKey& g, const RunSpec& s, bool with_protocol) const {
    std::string t = absl::StrCat(s.model.id, " ", s.model.dtype, " · ", s.device, " · ", DatasetLabel(g));
    if (with_protocol) absl::StrAppend(&t, " · ", ProtocolSettings(s));
    return t;
  }

  std::vector<PlotFile> BuildPlots() {
    PlotLabels labels;
    labels.label = [this](const Run& r, const std::set<std::string>& exclude) { return Label(r, exclude); };
    labels.subtitle = [this](const GroupKey& g, const RunSpec& s, bool with_protocol) {
      return Subtitle(g, s, with_protocol);
    };
    labels.multi_mode = multi_mode_;
    ReportPlots plots = BuildReportPlots(groups_, labels);
    notes_.insert(notes_.end(), plots.notes.begin(), plots.notes.end());
    return std::move(plots.files);
  }

  const ExperimentView& exp_;
  const ReportOptions& opt_;
  std::vector<Run> runs_;
  std::map<GroupKey, Group> groups_;
  std::vector<const Run*> failed_, unfinished_, tabulated_;
  std::vector<std::string> notes_;
  std::map<std::string, std::set<std::string>> varying_;
  int done_ = 0, noop_ = 0;
  bool multi_model_ = false, multi_device_ = false, multi_mode_ = false, multi_kv_ = false;
  bool chunked_ = false;  // some run prefilled in chunks: say which did
  static std::string ChunkLabel(int64_t chunk) {
    return chunk > 0 ? absl::StrCat("chunk ", chunk) : "whole prompt";
  }
};

}  // namespace

RenderedReport BuildReport(const ExperimentView& experiment, const std::vector<RunView>& runs,
                           const ReportOptions& options) {
  return ReportBuilder(experiment, runs, options).Build();
}

absl::Status WritePlots(const std::vector<PlotFile>& plots, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));
  for (const auto& p : plots) {
    std::string path = (std::filesystem::path(dir) / p.filename).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << p.svg;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RenderExperimentReport(Store& store, const std::string& experiment,
                                                   const ReportOptions& options) {
  ASSIGN_OR_RETURN(ExperimentView exp, store.GetExperiment(experiment));
  ASSIGN_OR_RETURN(std::vector<RunView> runs, store.ListRuns(experiment));
  ReportOptions opt = options;
  if (opt.db_path.empty()) opt.db_path = store.path();
  RenderedReport r = BuildReport(exp, runs, opt);
  if (!opt.plots_dir.empty()) RETURN_IF_ERROR(WritePlots(r.plots, opt.plots_dir));
  return r.markdown;
}

}  // namespace kvgrid::reports
