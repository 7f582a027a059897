// The report from in-memory store views (RunView) of a realistic fake grid. The same checks run
// against a real SQLite store in report_store_test.cc.
#include "reports/report.h"

#include <gtest/gtest.h>

#include <set>

#include "common/paired_delta.h"
#include "reports/readme_section.h"
#include "tests/reports/report_checks.h"

namespace kvgrid::reports {
namespace {

using namespace ::kvgrid::reports::testing;  // NOLINT

std::vector<RunView> Views(const std::vector<FakeRun>& runs) {
  std::vector<RunView> out;
  int64_t id = 0;
  for (const auto& r : runs) {
    RunView v;
    v.run_id = ++id;
    v.experiment = kFakeExperiment;
    v.run_key = RunKey(r.spec);
    v.spec_json = r.spec.CanonicalJson();
    v.policy = r.spec.policy.ToString();
    v.dataset = r.spec.dataset.name;
    v.workload = r.spec.workload;
    v.device = r.spec.device;
    v.attempts = 1;
    v.attempt = 1;
    v.worker_id = "testhost:1:cpu";
    v.created_at = 1700000000000;
    v.finished_at = 1700000000000 + id * 1000;
    if (r.fails) {
      v.status = "failed";
      v.error = r.error;
    } else {
      v.status = "done";
      v.result_attempt = 1;
      for (const auto& m : r.result.metrics) v.metrics[m.name] = {m.value, m.unit};
      for (const auto& s : r.result.samples) {
        v.samples[s.name] = s.values;
        v.sample_units[s.name] = s.unit;
      }
      v.environment_json = r.result.environment.dump();
    }
    out.push_back(std::move(v));
  }
  return out;
}

ExperimentView Experiment() {
  ExperimentView e;
  e.name = kFakeExperiment;
  e.grid_yaml = kFakeGridYaml;
  e.status = "failed";
  return e;
}

TEST(ReportTest, TablesRowsNumbersFailedRunsAndFooter) {
  auto runs = FakeGrid();
  ReportOptions opt;
  RenderedReport r = BuildReport(Experiment(), Views(runs), opt);
  CheckFakeGridReport(r.markdown, runs);
  EXPECT_TRUE(r.plots.empty());
  EXPECT_NE(r.markdown.find("```yaml\nname: fake-grid"), std::string::npos);
}

TEST(ReportTest, RandomWeightModelsAreFlaggedAsMeaninglessPpl) {
  auto runs = FakeGrid();
  ReportOptions opt;
  std::string plain = BuildReport(Experiment(), Views(runs), opt).markdown;
  EXPECT_EQ(plain.find("random weights"), std::string::npos);
  for (auto& r : runs) r.spec.model.id = "random:pythia-70m";
  std::string md = BuildReport(Experiment(), Views(runs), opt).markdown;
  EXPECT_NE(md.find("**random:pythia-70m has random weights: its perplexities are meaningless"),
            std::string::npos)
      << md.substr(0, 2000);
}

TEST(ReportTest, PlotsAreWellFormedWithExpectedSeriesAndLinked) {
  auto runs = FakeGrid();
  ReportOptions opt;
  opt.plots_dir = "/tmp/some/where/plots";
  opt.plots_link_prefix = "plots/";
  RenderedReport r = BuildReport(Experiment(), Views(runs), opt);
  CheckFakeGridPlots(r.plots);
  EXPECT_NE(r.markdown.find("](plots/ppl_vs_budget-wikitext-2-raw-v1-streaming.svg)"),
            std::string::npos)
      << r.markdown;
  EXPECT_NE(r.markdown.find("](plots/nll_over_position-wikitext-2-raw-v1.svg)"), std::string::npos);
}

TEST(ReportTest, DeterministicAndReadmeRewriteIdempotent) {
  auto runs = FakeGrid();
  ReportOptions opt;
  std::string a = BuildReport(Experiment(), Views(runs), opt).markdown;
  std::string b = BuildReport(Experiment(), Views(runs), opt).markdown;
  EXPECT_EQ(a, b);
  std::string readme = "# kvgrid\n\ntext\n<!-- kvgrid:results -->\n<!-- /kvgrid:results -->\ntail\n";
  auto once = ReplaceMarkedSection(readme, "results", a);
  ASSERT_TRUE(once.ok());
  auto twice = ReplaceMarkedSection(*once, "results", b);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*once, *twice);
  const size_t head = readme.find("-->") + 3, tail = readme.size() - readme.find("<!-- /kvgrid");
  EXPECT_EQ(once->substr(0, head), readme.substr(0, head));
  EXPECT_EQ(once->substr(once->size() - tail), readme.substr(readme.size() - tail));
  // The section parses back to the same tables.
  EXPECT_EQ(ParseMarkdownTables(*once).size(), ParseMarkdownTables(a).size());
}

TEST(ReportTest, NoBaselineAndUnreadableAndUnfinishedRunsAreReported) {
  std::vector<FakeRun> runs = {StreamingRun(kWindow64, 64, 0, 3)};
  auto views = Views(runs);
  RunView broken = views[0];
  broken.run_key = "badbadbadbadbad0";
  broken.spec_json = "{not json";
  views.push_back(broken);
  RunView planned = views[0];
  planned.run_key = "0123456789abcdef";
  planned.status = "planned";
  planned.metrics.clear();
  planned.samples.clear();
  views.push_back(planned);
  RunView cancelled = planned;
  cancelled.run_key = "fedcba9876543210";
  cancelled.status = "cancelled";
  views.push_back(cancelled);
  std::string md = BuildReport(Experiment(), views, ReportOptions{}).markdown;
  EXPECT_NE(md.find("no `full` baseline"), std::string::npos) << md;
  EXPECT_NE(md.find("badbadbadbadbad0"), std::string::npos);
  EXPECT_NE(md.find("not valid JSON"), std::string::npos);
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 3u);                // summary, streaming, failed
  EXPECT_EQ(tables[1].Column("Δ PPL"), -1);  // empty Δ column omitted
  ASSERT_EQ(tables[2].rows.size(), 2u);        // cancelled and planned
  EXPECT_NE(md.find("1 cancelled"), std::string::npos);
  EXPECT_NE(md.find("1 not finished"), std::string::npos);
}

// A generation run that timed `full` beside itself (generation_timing.h): the Δ cells are its
// paired values with their interval; a row without them keeps the unpaired Δ, marked.
void AddPaired(FakeRun& r, const std::vector<double>& base_ttft, const std::vector<double>& base_tpot) {
  auto series = [&](const std::string& name) {
    for (const auto& s : r.result.samples) if (s.name == name) return s.values;
    return std::vector<double>();
  };
  auto add = [&](const std::string& what, const PairedDelta& d) {
    r.result.AddMetric("delta_" + what + "_pct", d.pct, "%");
    r.result.AddMetric("delta_" + what + "_pct_ci_low", d.ci_low, "%");
    r.result.AddMetric("delta_" + what + "_pct_ci_high", d.ci_high, "%");
  };
  add("ttft", PairedRatioDelta(series("ttft_ms"), base_ttft));
  add("tpot", PairedRatioDelta(series("tpot_ms"), base_tpot));
  add("throughput", PairedRatioDelta({100, 100, 100, 100, 100}, {80, 81, 79, 80, 80}));
  r.result.AddMetric("repeats", 5, "");
}

TEST(ReportTest, PairedDeltasWithIntervalsAndUnpairedOnesMarked) {
  std::vector<FakeRun> runs;
  runs.push_back(GenerationRun("full", 64, 64, 3.0, 1.0, 20));
  runs.push_back(GenerationRun(kStreamingSinks60, 64, 64, 3.0, 0.9, 21));
  runs.push_back(GenerationRun(kWindow64, 64, 64, 3.0, 0.9, 22));
  // Streaming: TTFT equal to its baseline within noise (not significant), TPOT 25 % faster in
  // every pair.
  std::vector<double> ttft, tpot;
  for (const auto& s : runs[1].result.samples) {
    if (s.name == "ttft_ms") ttft = s.values;
    if (s.name == "tpot_ms") tpot = s.values;
  }
  std::vector<double> base_ttft = ttft, base_tpot;
  base_ttft[0] *= 1.02;
  base_ttft[1] *= 0.98;
  for (double v : tpot) base_tpot.push_back(v / 0.75);
  AddPaired(runs[1], base_ttft, base_tpot);
  std::string md = BuildReport(Experiment(), Views(runs), ReportOptions{}).markdown;
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 2u) << md;  // summary + the generation table
  // The summary carries the same paired Δs; the unpaired row's throughput Δ is marked.
  const ParsedTable& summary = tables[0];
  ASSERT_EQ(summary.rows.size(), 3u);
  for (const auto& row : summary.rows) {
    if (row[0] == "`" + std::string(kStreamingSinks60) + "`") {
      EXPECT_EQ(row[summary.Column("Δ TPOT")], "-25.0 % [-25.0, -25.0]");
    }
    if (row[0] == "`" + std::string(kWindow64) + "`") {
      EXPECT_NE(row[summary.Column("Δ tok/s")].find("ᵘ"), std::string::npos);
    }
  }
  const ParsedTable& t = tables[1];
  const int dttft = t.Column("Δ TTFT"), dtpot = t.Column("Δ TPOT"), dthr = t.Column("Δ tok/s");
  ASSERT_GE(dttft, 0);
  ASSERT_GE(dtpot, 0);
  ASSERT_GE(dthr, 0);
  ASSERT_EQ(t.rows.size(), 3u);
  const auto& sl = t.rows[2][0] == "`" + std::string(kStreamingSinks60) + "`" ? t.rows[2] : t.rows[1];
  const auto& win = &sl == &t.rows[2] ? t.rows[1] : t.rows[2];
  EXPECT_EQ(sl[dttft].rfind("≈ ", 0), 0u) << sl[dttft];
  EXPECT_EQ(sl[dtpot], "-25.0 % [-25.0, -25.0]");
  EXPECT_EQ(sl[dthr].rfind("+25.0 % [", 0), 0u) << sl[dthr];
  EXPECT_NE(win[dttft].find("ᵘ"), std::string::npos) << win[dttft];
  EXPECT_EQ(win[dthr], "");
  EXPECT_NE(md.find("are paired"), std::string::npos);
  EXPECT_NE(md.find("ᵘ unpaired"), std::string::npos);
}

TEST(ReportTest, RunsTimedUnderContentionAreMarked) {
  std::vector<FakeRun> runs;
  runs.push_back(GenerationRun("full", 64, 64, 3.0, 1.0, 20));
  runs.push_back(GenerationRun(kWindow64, 64, 64, 3.0, 0.9, 22));
  runs.push_back(GenerationRun(kStreamingSinks60, 64, 64, 3.0, 0.9, 21));
  runs[1].result.Add(metric::kDisturbedRepeats, 2);  // the guard's time ran out
  runs[2].result.Add(metric::kDisturbedRepeats, 0);  // re-timed quietly, or never disturbed
  std::string md = BuildReport(Experiment(), Views(runs), ReportOptions{}).markdown;
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 2u) << md;
  for (const ParsedTable& t : tables) {  // the summary and the generation table
    std::set<std::string> policies;
    for (const auto& row : t.rows) policies.insert(row[0]);
    EXPECT_TRUE(policies.count("`" + std::string(kWindow64) + "` †")) << md;
    EXPECT_TRUE(policies.count("`" + std::string(kStreamingSinks60) + "`")) << md;
    EXPECT_TRUE(policies.count("`full`")) << md;
  }
  EXPECT_NE(md.find("† some repeats were timed while another program"), std::string::npos) << md;
  runs[1].result = GenerationRun(kWindow64, 64, 64, 3.0, 0.9, 22).result;
  md = BuildReport(Experiment(), Views(runs), ReportOptions{}).markdown;
  EXPECT_EQ(md.find("†"), std::string::npos) << md;
}

TEST(ReportTest, EmptyExperiment) {
  std::string md = BuildReport(Experiment(), {}, ReportOptions{}).markdown;
  EXPECT_NE(md.find("0 runs"), std::string::npos);
  EXPECT_TRUE(ParseMarkdownTables(md).empty());
}

TEST(ReportTest, LongStreamsCarryTheExtrapolationNote) {
  FakeRun r = StreamingRun("full", 0, 0, 1);
  r.spec.perplexity.max_tokens = 8192;
  std::string md = BuildReport(Experiment(), Views({r}), ReportOptions{}).markdown;
  EXPECT_NE(md.find("trained on 2048 positions"), std::string::npos);
}

}  // namespace
}  // namespace kvgrid::reports
