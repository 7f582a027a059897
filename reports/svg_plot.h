// A small SVG line-plot writer for reports (no plotting library in Debian fits a C++ CLI).
// Axes with ticks and unit labels, a legend, one polyline with markers per series, optional log
// scales, dashed horizontal reference lines. Readable in GitHub's light and dark themes: transparent
// background, neutral grey (#888) for axes and text (currentColor does not work in <img>), and a
// mid-saturation palette with distinct marker shapes so series also differ without colour.
// Each series is a <g class="series" data-series="NAME"> so tools and tests can find it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvgrid::reports {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // same length; points are drawn in ascending x
  bool markers = true;       // markers are dropped automatically above kMaxMarkers points
  bool dashed = false;
};

struct ReferenceLine {  // a horizontal line across the plot, e.g. the full-cache baseline
  std::string name;
  double y = 0;
};

struct PlotSpec {
  std::string title;
  std::string subtitle;  // optional second line (protocol, model)
  std::string x_label;   // with the unit, e.g. "cache budget (tokens)"
  std::string y_label;   // with the unit, e.g. "TPOT (ms)"
  bool log_x = false;
  bool log_y = false;
  bool y_from_zero = false;  // linear y axis starts at 0 (quantities like bytes and times)
  int width = 720;   // drawing area incl. axes; the legend widens the image
  int height = 420;
  std::vector<PlotSeries> series;
  std::vector<ReferenceLine> references;
};

inline constexpr size_t kMaxMarkers = 60;

// Colours used for series, in order (mid saturation: readable on white and on #0d1117).
const std::vector<std::string>& PlotPalette();
inline constexpr const char* kPlotTextColor = "#888888";

std::string XmlEscape(absl::string_view text);

// Errors: no drawable point in any series, mismatched x/y lengths, non-positive values on a log
// axis (the message names the series and the value).
absl::StatusOr<std::string> RenderSvgPlot(const PlotSpec& spec);

}  // namespace kvgrid::reports
