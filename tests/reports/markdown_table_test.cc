#include "reports/markdown_table.h"

#include <gtest/gtest.h>

namespace kvgrid::reports {
namespace {

TEST(MarkdownTableTest, RendersPaddedPipeTableWithAlignment) {
  MarkdownTable t;
  t.headers = {"policy", "TTFT ms"};
  t.align = {Align::kLeft, Align::kRight};
  t.rows = {{"full", "12.5"}, {"streaming_llm", "9"}};
  EXPECT_EQ(RenderMarkdownTable(t),
            "| policy        | TTFT ms |\n"
            "| ------------- | ------: |\n"
            "| full          |    12.5 |\n"
            "| streaming_llm |       9 |\n");
}

TEST(MarkdownTableTest, PadsByDisplayWidthForUtf8) {
  MarkdownTable t;
  t.headers = {"Δ", "x"};
  t.rows = {{"±1", "–"}};
  std::string md = RenderMarkdownTable(t);
  EXPECT_EQ(md, "| Δ   | x   |\n| --- | --- |\n| ±1  | –   |\n");
  EXPECT_EQ(DisplayWidth("Δ±–"), 3u);
}

TEST(MarkdownTableTest, EscapesPipesAndNewlinesAndParsesBack) {
  MarkdownTable t;
  t.headers = {"a", "b"};
  t.align = {Align::kCenter, Align::kRight};
  t.rows = {{"x|y", "multi\nline"}, {"", "3"}};
  std::string md = "intro\n\n" + RenderMarkdownTable(t) + "\ntext after\n";
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 1u);
  const auto& p = tables[0];
  EXPECT_EQ(p.headers, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.align, (std::vector<Align>{Align::kCenter, Align::kRight}));
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_EQ(p.rows[0], (std::vector<std::string>{"x|y", "multi line"}));
  EXPECT_EQ(p.rows[1], (std::vector<std::string>{"", "3"}));
  EXPECT_EQ(p.line, 3u);
  EXPECT_EQ(p.Column("b"), 1);
  EXPECT_EQ(p.Column("zzz"), -1);
}

TEST(MarkdownTableTest, ParsesSeveralTablesAndIgnoresNonTables) {
  std::string md =
      "| not | a table |\nplain\n\n"
      "| h1 | h2 |\n|---|:--|\n| 1 | 2 |\n\n"
      "| k |\n| ---: |\n| v |\n| w |\n";
  auto tables = ParseMarkdownTables(md);
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0].rows.size(), 1u);
  EXPECT_EQ(tables[1].headers, std::vector<std::string>{"k"});
  EXPECT_EQ(tables[1].rows.size(), 2u);
}

}  // namespace
}  // namespace kvgrid::reports
