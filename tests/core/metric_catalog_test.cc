// The metric catalog is the one place metric names live: docs/metrics.md's table is generated
// from it, and no producer or reader of metrics spells a name itself.
#include "core/metric_catalog.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(MetricCatalog, NamesAreUniqueAndFound) {
  std::set<std::string_view> seen;
  for (const MetricDef& m : MetricCatalog()) {
    EXPECT_TRUE(seen.insert(m.name).second) << m.name << " twice";
    ASSERT_EQ(FindMetricDef(m.name), &m);
    EXPECT_FALSE(m.meaning.empty()) << m.name;
  }
  EXPECT_EQ(FindMetricDef("no_such_metric"), nullptr);
  EXPECT_EQ(CiLowName(metric::kDeltaTtftPct), "delta_ttft_pct_ci_low");
}

TEST(MetricCatalog, DocsTableIsTheCatalog) {
  const std::string doc = ReadFile(fs::path(KVGRID_SOURCE_DIR) / "docs" / "metrics.md");
  const std::string begin = "<!-- kvgrid:metric-catalog -->\n", end = "<!-- /kvgrid:metric-catalog -->";
  const size_t b = doc.find(begin), e = doc.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  EXPECT_EQ(doc.substr(b + begin.size(), e - b - begin.size()), MetricCatalogMarkdown())
      << "docs/metrics.md's catalog table is out of date; put this between the markers:\n"
      << MetricCatalogMarkdown();
}

// Where metrics are produced and read, names come from the catalog, never a string literal.
TEST(MetricCatalog, NoOtherSourceSpellsAMetricName) {
  std::set<std::string> names;
  for (const MetricDef& m : MetricCatalog()) names.insert(std::string(m.name));
  const std::regex literal("\"([a-z_]+)\"");
  std::vector<std::string> offenders;
  for (const char* dir : {"worker/workloads", "worker/daemon", "reports", "bench", "cli"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(KVGRID_SOURCE_DIR) / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cc" && ext != ".h") continue;
      const std::string text = ReadFile(e.path());
      for (std::sregex_iterator it(text.begin(), text.end(), literal), stop; it != stop; ++it) {
        const std::string name = (*it)[1];
        // `kvgrid ppl` is a command's name, not the metric.
        if (name == "ppl" && e.path().filename() == "cmd_ppl.cc") continue;
        if (names.count(name)) offenders.push_back(e.path().string() + ": \"" + name + "\"");
      }
    }
  }
  EXPECT_TRUE(offenders.empty()) << "metric names spelled outside core/metric_catalog.h:\n"
                                 << [&] { std::string s; for (auto& o : offenders) s += o + "\n"; return s; }();
}

}  // namespace
}  // namespace kvgrid
