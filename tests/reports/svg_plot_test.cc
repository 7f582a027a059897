#include "reports/svg_plot.h"

#include <gtest/gtest.h>

#include "tests/reports/svg_check.h"

namespace kvgrid::reports {
namespace {

using ::kvgrid::reports::testing::CheckSvg;

PlotSpec Example() {
  PlotSpec p;
  p.title = "Perplexity vs KV cache budget <streaming> & more";
  p.subtitle = "tiny model · cpu";
  p.x_label = "cache budget (tokens)";
  p.y_label = "perplexity";
  p.log_x = true;
  p.series.push_back({"streaming_llm (sink_tokens=4)", {256, 512, 1024}, {30.1, 28.0, 27.2}});
  p.series.push_back({"window \"0 sinks\"", {1024, 256, 512}, {900, 400, 60}});
  p.references.push_back({"full cache", 26.9});
  return p;
}

TEST(SvgPlotTest, WellFormedWithSeriesLegendAndLabels) {
  auto svg = RenderSvgPlot(Example());
  ASSERT_TRUE(svg.ok()) << svg.status();
  auto info = CheckSvg(*svg);
  ASSERT_TRUE(info.well_formed) << info.error << "\n" << *svg;
  EXPECT_EQ(info.root, "svg");
  EXPECT_EQ(info.series, (std::set<std::string>{"streaming_llm (sink_tokens=4)", "window \"0 sinks\""}));
  EXPECT_EQ(info.references, std::set<std::string>{"full cache"});
  EXPECT_EQ(info.polylines, 2);
  // Title, axis labels with units, legend entries and power-of-two ticks are drawn as text.
  for (const char* s : {"Perplexity vs KV cache budget <streaming> & more", "cache budget (tokens)",
                        "perplexity", "full cache", "streaming_llm (sink_tokens=4)", "256", "512",
                        "1024"}) {
    EXPECT_NE(info.text.find(s), std::string::npos) << s;
  }
  // Theme-neutral: transparent background, grey text, no black/white fills.
  EXPECT_EQ(svg->find("fill=\"#fff"), std::string::npos);
  EXPECT_EQ(svg->find("fill=\"#000"), std::string::npos);
  EXPECT_EQ(svg->find("fill=\"white\""), std::string::npos);
  EXPECT_EQ(svg->find("currentColor"), std::string::npos);
  EXPECT_NE(svg->find("#888888"), std::string::npos);
}

TEST(SvgPlotTest, LinearAxisAndSinglePointSeries) {
  PlotSpec p;
  p.title = "t";
  p.x_label = "x (tokens)";
  p.y_label = "y (ms)";
  p.series.push_back({"one", {5}, {1.5}});
  p.series.push_back({"two", {0, 10, 20}, {0.5, 0.7, 0.6}});
  auto svg = RenderSvgPlot(p);
  ASSERT_TRUE(svg.ok()) << svg.status();
  auto info = CheckSvg(*svg);
  ASSERT_TRUE(info.well_formed) << info.error;
  EXPECT_EQ(info.series.size(), 2u);
  EXPECT_EQ(info.polylines, 1);  // a single point is a marker only
  EXPECT_NE(info.text.find("0.6"), std::string::npos);  // y ticks every 0.2
  EXPECT_NE(info.text.find("y (ms)"), std::string::npos);
}

TEST(SvgPlotTest, ManyPointsDropMarkersAndManySeriesGrowTheCanvas) {
  PlotSpec p;
  p.title = "many";
  p.x_label = "position (tokens)";
  p.y_label = "NLL (nats)";
  for (int s = 0; s < 20; ++s) {
    PlotSeries ser;
    ser.name = "series " + std::to_string(s);
    for (int i = 0; i < 500; ++i) {
      ser.x.push_back(i);
      ser.y.push_back(s + i * 0.01);
    }
    p.series.push_back(ser);
  }
  auto svg = RenderSvgPlot(p);
  ASSERT_TRUE(svg.ok());
  auto info = CheckSvg(*svg);
  ASSERT_TRUE(info.well_formed) << info.error;
  EXPECT_EQ(info.series.size(), 20u);
  EXPECT_EQ(svg->find("<circle"), std::string::npos);  // > kMaxMarkers points: lines only
}

TEST(SvgPlotTest, Errors) {
  PlotSpec p = Example();
  p.series[0].x[0] = 0;
  auto bad_log = RenderSvgPlot(p);
  ASSERT_FALSE(bad_log.ok());
  EXPECT_NE(bad_log.status().message().find("streaming_llm (sink_tokens=4)"), absl::string_view::npos);

  PlotSpec empty;
  empty.title = "nothing";
  EXPECT_FALSE(RenderSvgPlot(empty).ok());

  PlotSpec mismatch;
  mismatch.series.push_back({"m", {1, 2}, {1}});
  EXPECT_FALSE(RenderSvgPlot(mismatch).ok());
}

TEST(SvgPlotTest, EscapesXml) {
  EXPECT_EQ(XmlEscape("a<b>&\"c'\x01"), "a&lt;b&gt;&amp;&quot;c&apos;");
}

}  // namespace
}  // namespace kvgrid::reports
