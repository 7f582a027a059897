// Assertions on the report of FakeGrid(), shared by the in-memory and the SQLite-backed tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "reports/markdown_table.h"
#include "reports/report.h"
#include "reports/statistics.h"
#include "tests/reports/fake_results.h"
#include "tests/reports/svg_check.h"

namespace kvgrid::reports::testing {

// Numbers in a cell, in order ("12.3 [11.0–13.5] n=5" → 12.3, 11.0, 13.5, 5).
inline std::vector<double> Numbers(const std::string& cell) {
  std::vector<double> out;
  const char* p = cell.c_str();
  while (*p) {
    if ((*p >= '0' && *p <= '9') || ((*p == '-' || *p == '+') && p[1] >= '0' && p[1] <= '9')) {
      char* end = nullptr;
      out.push_back(std::strtod(p, &end));
      p = end;
    } else {
      ++p;
    }
  }
  return out;
}

inline void ExpectNear(double actual, double expected, double rel, const std::string& what) {
  EXPECT_NEAR(actual, expected, std::abs(expected) * rel + 1e-9) << what;
}

inline const FakeRun& Find(const std::vector<FakeRun>& runs, const std::string& workload,
                           const std::string& policy, int64_t prompt = 0,
                           const std::string& protocol = "") {
  for (const auto& r : runs) {
    if (r.spec.workload != workload || r.spec.policy.ToString() != PolicyOf(policy).ToString()) continue;
    if (prompt && r.spec.generation.prompt_tokens != prompt) continue;
    if (!protocol.empty() && r.spec.perplexity.protocol != protocol) continue;
    return r;
  }
  ADD_FAILURE() << "no fake run " << workload << " " << policy;
  static FakeRun none;
  return none;
}

inline std::vector<double> Series(const FakeRun& r, const std::string& name) {
  for (const auto& s : r.result.samples) {
    if (s.name == name) return s.values;
  }
  return {};
}

inline double MetricValue(const FakeRun& r, const std::string& name) {
  const Metric* m = r.result.FindMetric(name);
  EXPECT_NE(m, nullptr) << name;
  return m ? m->value : 0;
}

inline std::vector<std::string> ColumnValues(const ParsedTable& t, const std::string& header) {
  std::vector<std::string> out;
  int c = t.Column(header);
  EXPECT_GE(c, 0) << "missing column " << header;
  if (c < 0) return out;
  for (const auto& row : t.rows) out.push_back(row.size() > static_cast<size_t>(c) ? row[c] : "");
  return out;
}

inline void CheckFakeGridReport(const std::string& md, const std::vector<FakeRun>& runs) {
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 6u) << md;
  const ParsedTable& summary = tables[0];
  const ParsedTable& sliding = tables[1];
  const ParsedTable& streaming = tables[2];
  const ParsedTable& gen64 = tables[3];
  const ParsedTable& gen128 = tables[4];
  const ParsedTable& failed = tables[5];

  // --- the summary on top: a row per setting, full first; cache protocols' PPL (sliding has no
  // policy) and the longest prompt's timing and memory, medians with Δ vs full ---
  EXPECT_EQ(summary.headers,
            (std::vector<std::string>{"policy", "PPL streaming", "Δ PPL", "TTFT ms", "Δ TTFT",
                                      "TPOT ms", "Δ TPOT", "tok/s", "Δ tok/s", "peak mem MiB",
                                      "Δ mem", "KV peak MiB", "Δ KV"}))
      << md;
  ASSERT_GE(summary.rows.size(), 2u);
  EXPECT_EQ(summary.rows[0][0], "`full`");
  EXPECT_EQ(summary.rows[0][2], "+0.0%");
  for (const auto& row : summary.rows) {
    // Each PPL is the streaming table's; each TTFT the prompt-128 table's median.
    for (const auto& srow : streaming.rows) {
      if (srow[0] == row[0]) EXPECT_NEAR(Numbers(row[1]).at(0), Numbers(srow[2]).at(0), 1e-3) << row[0];
    }
    for (const auto& grow : gen128.rows) {
      if (grow[0] == row[0]) EXPECT_NEAR(Numbers(row[3]).at(0), Numbers(grow[2]).at(0), 1e-3) << row[0];
    }
  }
  EXPECT_NE(md.find("timing and memory: "), std::string::npos);
  EXPECT_NE(md.find("prompt 128 tokens"), std::string::npos);

  // --- streaming perplexity: columns, row order (full first), stored numbers ---
  EXPECT_EQ(streaming.headers,
            (std::vector<std::string>{"policy", "positions", "PPL", "Δ PPL", "scored tokens",
                                      "kv_tokens_max", "scoring ms", "KV peak MiB", "Δ KV"}))
      << md;
  // Baseline first, then by policy name and, within a policy, by budget (64 before 128).
  std::vector<std::string> policies = {"full", kStreamingSinks60, kStreamingSinks124, kWindow64,
                                       kWindow128};
  ASSERT_EQ(streaming.rows.size(), policies.size());
  for (size_t i = 0; i < policies.size(); ++i) {
    const auto& row = streaming.rows[i];
    EXPECT_EQ(row[0], "`" + policies[i] + "`");
    EXPECT_EQ(row[1], "original");
    const FakeRun& r = Find(runs, "perplexity", policies[i], 0, "streaming");
    double ppl = MetricValue(r, "ppl");
    std::vector<double> ppl_cell = Numbers(row[2]);
    ASSERT_EQ(ppl_cell.size(), 2u) << row[2];
    ExpectNear(ppl_cell[0], ppl, 2e-3, "PPL " + policies[i]);
    ExpectNear(ppl_cell[1], PplUncertainty(ppl, Series(r, "nll")), 2e-2, "PPL ± " + policies[i]);
    double full_ppl = MetricValue(Find(runs, "perplexity", "full", 0, "streaming"), "ppl");
    ExpectNear(Numbers(row[3]).at(0), (ppl / full_ppl - 1) * 100, 1e-2, "Δ PPL");
    EXPECT_EQ(row[4], "511");
    EXPECT_EQ(row[5], absl::StrCat(MetricValue(r, "kv_tokens_max")));
    // scoring ms: empty for the baseline, the stored policy time otherwise.
    if (policies[i] == "full") {
      EXPECT_EQ(row[6], "");
    } else {
      ExpectNear(Numbers(row[6]).at(0), MetricValue(r, "scoring_ms"), 1e-3, "scoring ms");
    }
    ExpectNear(Numbers(row[7]).at(0), MetricValue(r, "kv_bytes_peak") / 1048576.0, 5e-3, "KV MiB");
  }
  EXPECT_EQ(streaming.rows[0][3], "+0.0%");
  // Window-only collapses, sinks hold.
  EXPECT_GT(Numbers(streaming.rows[3][3]).at(0), 50);
  EXPECT_LT(Numbers(streaming.rows[1][3]).at(0), 20);

  // --- sliding: PPL ± from the stored ppl_stderr (no NLL samples) ---
  EXPECT_EQ(sliding.headers, (std::vector<std::string>{"policy", "positions", "PPL", "Δ PPL",
                                                       "scored tokens"}));
  ASSERT_EQ(sliding.rows.size(), 1u);
  EXPECT_EQ(sliding.rows[0][2], "41.24 ± 0.875");
  EXPECT_EQ(sliding.rows[0][4], "1023");

  // --- generation: timing columns with median [min–max] n=5, no PPL columns ---
  for (const ParsedTable* t : {&gen64, &gen128}) {
    int64_t prompt = t == &gen64 ? 64 : 128;
    EXPECT_EQ(t->headers, (std::vector<std::string>{"policy", "positions", "TTFT ms", "Δ TTFT",
                                                    "TPOT ms", "Δ TPOT", "decode tok/s",
                                                    "scoring ms", "peak RSS MiB", "KV peak MiB",
                                                    "Δ KV"}))
        << md;
    std::vector<std::string> gp = {"full", kSnapkv32, kStreamingSinks60};
    ASSERT_EQ(t->rows.size(), gp.size());
    for (size_t i = 0; i < gp.size(); ++i) {
      const auto& row = t->rows[i];
      EXPECT_EQ(row[0], "`" + gp[i] + "`");
      const FakeRun& r = Find(runs, "generation", gp[i], prompt);
      for (auto [col, series] : std::vector<std::pair<int, std::string>>{{2, "ttft_ms"}, {4, "tpot_ms"}}) {
        Summary s = Summarize(Series(r, series));
        std::vector<double> n = Numbers(row[col]);
        ASSERT_EQ(n.size(), 4u) << row[col];
        ExpectNear(n[0], s.median, 2e-3, series + " median");
        ExpectNear(n[1], s.min, 2e-3, series + " min");
        ExpectNear(n[2], s.max, 2e-3, series + " max");
        EXPECT_EQ(n[3], 5);
        // The stored metric is the median of the same samples.
        ExpectNear(n[0], MetricValue(r, series), 2e-3, series + " stored");
      }
      // Throughput per repeat from TTFT and TPOT, median.
      std::vector<double> ttft = Series(r, "ttft_ms"), tpot = Series(r, "tpot_ms"), thr;
      for (size_t k = 0; k < ttft.size(); ++k) thr.push_back(16 / ((ttft[k] + 15 * tpot[k]) / 1000));
      ExpectNear(Numbers(row[6]).at(0), Summarize(thr).median, 2e-3, "throughput");
      ExpectNear(Numbers(row[6]).at(0), MetricValue(r, "throughput_tok_s"), 0.05, "throughput stored");
      ExpectNear(Numbers(row[8]).at(0), MetricValue(r, "peak_memory_bytes") / 1048576.0, 2e-3, "RSS");
      ExpectNear(Numbers(row[9]).at(0), MetricValue(r, "kv_bytes_peak") / 1048576.0, 5e-3, "KV");
    }
    EXPECT_EQ(t->rows[0][3], "+0.0%");
    EXPECT_LT(Numbers(t->rows[2][5]).at(0), 0);  // streaming_llm's TPOT base is 0.9 × full's
  }
  EXPECT_NE(md.find("prompt 64 tokens, 16 new tokens"), std::string::npos);
  EXPECT_NE(md.find("prompt 128 tokens, 16 new tokens"), std::string::npos);

  // --- failed runs are listed with their error ---
  EXPECT_NE(md.find("Failed runs"), std::string::npos);
  ASSERT_EQ(failed.rows.size(), 1u);
  const FakeRun& f = Find(runs, "generation", kTova32, 128);
  EXPECT_EQ(failed.rows[0][failed.Column("run")], "`" + RunKey(f.spec) + "`");
  EXPECT_EQ(failed.rows[0][failed.Column("status")], "failed");
  EXPECT_EQ(failed.rows[0][failed.Column("policy")], std::string("`") + kTova32 + "`");
  EXPECT_NE(failed.rows[0][failed.Column("error")].find(kFailError), std::string::npos);
  EXPECT_NE(md.find("1 failed"), std::string::npos);

  // --- footer ---
  for (const char* s : {"tests/fixtures/models/tiny-neox-pythia-like", "float32", "Fake CPU @ 2.0GHz",
                        "1.13.0", "abcdef123456", "Release", "threads: 2",
                        "streaming, 512 tokens", "sliding window 128, stride 64",
                        "5 timed repeats after 2 warm-up", "measured:", "kvgrid report fake-grid"}) {
    EXPECT_NE(md.find(s), std::string::npos) << s << "\n" << md;
  }
}

inline void CheckFakeGridPlots(const std::vector<PlotFile>& plots) {
  std::map<std::string, const PlotFile*> by_name;
  for (const auto& p : plots) by_name[p.filename] = &p;
  const std::map<std::string, std::set<std::string>> expected = {
      {"ppl_vs_budget-wikitext-2-raw-v1-streaming.svg", {"streaming_llm", "window"}},
      {"nll_over_position-wikitext-2-raw-v1.svg",
       {"full", "streaming_llm (window=60)", "streaming_llm (window=124)", "window (window=64)",
        "window (window=128)"}},
      {"kv_bytes_vs_context-wikitext-2-raw-v1.svg", {"full", "snapkv", "streaming_llm (window=60)"}},
      {"peak_memory_vs_context-wikitext-2-raw-v1.svg", {"full", "snapkv", "streaming_llm (window=60)"}},
      {"tpot_vs_context-wikitext-2-raw-v1.svg", {"full", "snapkv", "streaming_llm (window=60)"}},
  };
  EXPECT_EQ(by_name.size(), expected.size());
  for (const auto& [name, series] : expected) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      ADD_FAILURE() << "missing plot " << name;
      continue;
    }
    SvgInfo info = CheckSvg(it->second->svg);
    ASSERT_TRUE(info.well_formed) << name << ": " << info.error;
    EXPECT_EQ(info.series, series) << name;
    if (name.rfind("ppl_vs_budget", 0) == 0) {
      EXPECT_EQ(info.references, std::set<std::string>{"full cache"});
    }
  }
}

}  // namespace kvgrid::reports::testing
