#include "reports/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvgrid::reports {
namespace {

constexpr const char* kFont =
    "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif";
constexpr double kCharWidth = 6.8;  // average glyph advance at 12px, for layout estimates

std::string Num(double v) { return absl::StrFormat("%.1f", v); }

struct Axis {
  double lo = 0, hi = 1;  // data domain (log10 of it when log)
  bool log = false;
  std::vector<double> ticks;  // in data units
  int decimals = 0;           // for linear tick labels
  double Map(double v, double pix_lo, double pix_hi) const {
    double t = log ? std::log10(v) : v;
    return pix_lo + (t - lo) / (hi - lo) * (pix_hi - pix_lo);
  }
};

double NiceStep(double range, int target) {
  double rough = range / target;
  double mag = std::pow(10.0, std::floor(std::log10(rough)));
  double norm = rough / mag;
  double nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return nice * mag;
}

Axis LinearAxis(double min, double max, int target) {
  if (min == max) {
    double pad = std::abs(min) > 0 ? std::abs(min) * 0.1 : 1.0;
    min -= pad;
    max += pad;
  }
  Axis a;
  double step = NiceStep(max - min, target);
  a.lo = std::floor(min / step) * step;
  a.hi = std::ceil(max / step) * step;
  // Leave a little air when the data sits exactly on the outer ticks.
  for (double t = a.lo; t <= a.hi + step * 1e-9; t += step) {
    a.ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  a.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return a;
}

Axis LogAxis(double min, double max) {
  Axis a;
  a.log = true;
  double ratio = max / min;
  if (ratio < 64) {
    // Powers of two read best for token budgets (256, 512, 1024...).
    double lo2 = std::floor(std::log2(min) + 1e-9), hi2 = std::ceil(std::log2(max) - 1e-9);
    if (lo2 == hi2) {
      lo2 -= 1;
      hi2 += 1;
    }
    for (double e = lo2; e <= hi2 + 1e-9; e += 1) a.ticks.push_back(std::pow(2.0, e));
    a.lo = lo2 * std::log10(2.0);
    a.hi = hi2 * std::log10(2.0);
  } else {
    double lo10 = std::floor(std::log10(min) + 1e-9), hi10 = std::ceil(std::log10(max) - 1e-9);
    bool minor = hi10 - lo10 <= 2;
    for (double e = lo10; e <= hi10 + 1e-9; e += 1) {
      double base = std::pow(10.0, e);
      a.ticks.push_back(base);
      if (minor && e < hi10) {
        a.ticks.push_back(2 * base);
        a.ticks.push_back(5 * base);
      }
    }
    std::sort(a.ticks.begin(), a.ticks.end());
    a.lo = lo10;
    a.hi = hi10;
  }
  return a;
}

std::string TickLabel(const Axis& a, double v) {
  if (a.log || std::abs(v) >= 1e5) {
    double av = std::abs(v);
    if (av >= 1e9) return absl::StrFormat("%gG", v / 1e9);
    if (av >= 1e6) return absl::StrFormat("%gM", v / 1e6);
    if (av >= 1e5) return absl::StrFormat("%gk", v / 1e3);
    return absl::StrFormat("%g", v);
  }
  return absl::StrFormat("%.*f", a.decimals, v);
}

std::string Marker(int shape, double x, double y, const std::string& color) {
  const double r = 3.5;
  switch (shape % 4) {
    case 0:
      return absl::StrCat("<circle cx=\"", Num(x), "\" cy=\"", Num(y), "\" r=\"", Num(r),
                          "\" fill=\"", color, "\"/>");
    case 1:
      return absl::StrCat("<rect x=\"", Num(x - r), "\" y=\"", Num(y - r), "\" width=\"",
                          Num(2 * r), "\" height=\"", Num(2 * r), "\" fill=\"", color, "\"/>");
    case 2:
      return absl::StrCat("<path d=\"M", Num(x), " ", Num(y - r - 0.8), " L", Num(x + r + 0.6), " ",
                          Num(y + r - 0.2), " L", Num(x - r - 0.6), " ", Num(y + r - 0.2),
                          " Z\" fill=\"", color, "\"/>");
    default:
      return absl::StrCat("<path d=\"M", Num(x), " ", Num(y - r - 0.6), " L", Num(x + r + 0.6), " ",
                          Num(y), " L", Num(x), " ", Num(y + r + 0.6), " L", Num(x - r - 0.6), " ",
                          Num(y), " Z\" fill=\"", color, "\"/>");
  }
}

constexpr size_t kMaxLegendChars = 48;

std::string LegendText(const std::string& name) {
  if (name.size() <= kMaxLegendChars) return name;
  size_t cut = kMaxLegendChars - 1;
  while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
  return name.substr(0, cut) + "\u2026";
}

}  // namespace

const std::vector<std::string>& PlotPalette() {
  // Mid lightness, moderate saturation: ≥ 3:1 contrast on both #ffffff and #0d1117.
  static const std::vector<std::string> kPalette = {
      "#4e8fd6",  // blue
      "#e07b39",  // orange
      "#2fa37b",  // green
      "#d1497b",  // magenta
      "#8e6fd1",  // violet
      "#b8963a",  // ochre
      "#3aa6b8",  // teal
      "#c9533f",  // brick
  };
  return kPalette;
}

std::string XmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0; drop them.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') break;
        out += c;
    }
  }
  return out;
}

absl::StatusOr<std::string> RenderSvgPlot(const PlotSpec& spec) {
  // Collect the drawable points of every series, sorted by x.
  struct Prepared {
    const PlotSeries* s;
    std::vector<std::pair<double, double>> pts;
  };
  std::vector<Prepared> prepared;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  double ymin = xmin, ymax = -xmin;
  for (const auto& s : spec.series) {
    if (s.x.size() != s.y.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plot '%s': series '%s' has %d x values and %d y values", spec.title, s.name,
          s.x.size(), s.y.size()));
    }
    Prepared p{&s, {}};
    for (size_t i = 0; i < s.x.size(); ++i) {
      double x = s.x[i], y = s.y[i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      if (spec.log_x && x <= 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "plot '%s': series '%s' has x = %g, which a log x axis cannot show", spec.title,
            s.name, x));
      }
      if (spec.log_y && y <= 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "plot '%s': series '%s' has y = %g, which a log y axis cannot show", spec.title,
            s.name, y));
      }
      p.pts.emplace_back(x, y);
      xmin = std::min(xmin, x);
      xmax = std::max(xmax, x);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
    std::stable_sort(p.pts.begin(), p.pts.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    prepared.push_back(std::move(p));
  }
  if (!std::isfinite(xmin)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("plot '%s': no series has a drawable point", spec.title));
  }
  for (const auto& r : spec.references) {
    if (!std::isfinite(r.y) || (spec.log_y && r.y <= 0)) continue;
    ymin = std::min(ymin, r.y);
    ymax = std::max(ymax, r.y);
  }

  if (spec.y_from_zero && !spec.log_y && ymin > 0) ymin = 0;
  Axis ax = spec.log_x ? LogAxis(xmin, xmax) : LinearAxis(xmin, xmax, 6);
  Axis ay = spec.log_y ? LogAxis(ymin, ymax) : LinearAxis(ymin, ymax, 5);

  // Layout.
  size_t longest_y_tick = 0;
  for (double t : ay.ticks) longest_y_tick = std::max(longest_y_tick, TickLabel(ay, t).size());
  const double left = 34 + longest_y_tick * kCharWidth;
  const double top = spec.subtitle.empty() ? 40 : 56;
  const double bottom = 52;
  const double right_gap = 16;
  size_t longest_name = 0;
  for (const auto& s : spec.series) longest_name = std::max(longest_name, s.name.size());
  for (const auto& r : spec.references) longest_name = std::max(longest_name, r.name.size());
  const double legend_w = 44 + std::min<size_t>(longest_name, kMaxLegendChars) * kCharWidth;
  const double px0 = left, px1 = spec.width - right_gap;
  const size_t entries = spec.series.size() + spec.references.size();
  const double height = std::max<double>(spec.height, top + 16 + 20.0 * entries);
  const double py0 = height - bottom, py1 = top;  // y grows downwards
  // Wide enough for the title and subtitle (rough glyph widths) as well as plot + legend.
  const double title_w = px0 + std::max(spec.title.size() * 8.6, spec.subtitle.size() * 6.2) + 8;
  const double total_w = std::max(spec.width + legend_w, title_w);
  const std::string grey = kPlotTextColor;

  std::string o;
  absl::StrAppend(&o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(total_w),
                  "\" height=\"", Num(height), "\" viewBox=\"0 0 ", Num(total_w), " ",
                  Num(height), "\" role=\"img\" font-family=\"", kFont,
                  "\" font-size=\"12\">\n");
  absl::StrAppend(&o, "<title>", XmlEscape(spec.title), "</title>\n");
  // Title and subtitle.
  absl::StrAppend(&o, "<text x=\"", Num(px0), "\" y=\"22\" fill=\"", grey,
                  "\" font-size=\"15\" font-weight=\"600\">", XmlEscape(spec.title), "</text>\n");
  if (!spec.subtitle.empty()) {
    absl::StrAppend(&o, "<text x=\"", Num(px0), "\" y=\"40\" fill=\"", grey, "\">",
                    XmlEscape(spec.subtitle), "</text>\n");
  }
  // Grid, ticks and tick labels.
  absl::StrAppend(&o, "<g class=\"axes\" stroke=\"", grey, "\">\n");
  for (double t : ax.ticks) {
    double x = ax.Map(t, px0, px1);
    absl::StrAppend(&o, "<line x1=\"", Num(x), "\" y1=\"", Num(py0), "\" x2=\"", Num(x),
                    "\" y2=\"", Num(py1), "\" stroke-opacity=\"0.25\"/>\n");
    absl::StrAppend(&o, "<line x1=\"", Num(x), "\" y1=\"", Num(py0), "\" x2=\"", Num(x),
                    "\" y2=\"", Num(py0 + 5), "\"/>\n");
  }
  for (double t : ay.ticks) {
    double y = ay.Map(t, py0, py1);
    absl::StrAppend(&o, "<line x1=\"", Num(px0), "\" y1=\"", Num(y), "\" x2=\"", Num(px1),
                    "\" y2=\"", Num(y), "\" stroke-opacity=\"0.25\"/>\n");
    absl::StrAppend(&o, "<line x1=\"", Num(px0 - 5), "\" y1=\"", Num(y), "\" x2=\"", Num(px0),
                    "\" y2=\"", Num(y), "\"/>\n");
  }
  absl::StrAppend(&o, "<line x1=\"", Num(px0), "\" y1=\"", Num(py0), "\" x2=\"", Num(px1),
                  "\" y2=\"", Num(py0), "\"/>\n");
  absl::StrAppend(&o, "<line x1=\"", Num(px0), "\" y1=\"", Num(py0), "\" x2=\"", Num(px0),
                  "\" y2=\"", Num(py1), "\"/>\n");
  absl::StrAppend(&o, "</g>\n<g class=\"tick-labels\" fill=\"", grey, "\" stroke=\"none\">\n");
  for (double t : ax.ticks) {
    absl::StrAppend(&o, "<text x=\"", Num(ax.Map(t, px0, px1)), "\" y=\"", Num(py0 + 19),
                    "\" text-anchor=\"middle\">", XmlEscape(TickLabel(ax, t)), "</text>\n");
  }
  for (double t : ay.ticks) {
    absl::StrAppend(&o, "<text x=\"", Num(px0 - 8), "\" y=\"", Num(ay.Map(t, py0, py1) + 4),
                    "\" text-anchor=\"end\">", XmlEscape(TickLabel(ay, t)), "</text>\n");
  }
  absl::StrAppend(&o, "</g>\n");
  // Axis labels.
  absl::StrAppend(&o, "<text class=\"x-label\" x=\"", Num((px0 + px1) / 2), "\" y=\"",
                  Num(height - 10), "\" text-anchor=\"middle\" fill=\"", grey, "\">",
                  XmlEscape(spec.x_label), spec.log_x ? " — log scale" : "", "</text>\n");
  double ymid = (py0 + py1) / 2;
  absl::StrAppend(&o, "<text class=\"y-label\" x=\"14\" y=\"", Num(ymid),
                  "\" text-anchor=\"middle\" fill=\"", grey, "\" transform=\"rotate(-90 14 ",
                  Num(ymid), ")\">", XmlEscape(spec.y_label), spec.log_y ? " — log scale" : "",
                  "</text>\n");

  // Reference lines, then series (so data sits on top).
  const auto& palette = PlotPalette();
  double legend_y = top + 6;
  const double legend_x = spec.width + 4;
  std::string legend;
  auto legend_entry = [&](const std::string& name, const std::string& color, bool dashed,
                          int shape, bool marker) {
    double y = legend_y;
    absl::StrAppend(&legend, "<line x1=\"", Num(legend_x), "\" y1=\"", Num(y), "\" x2=\"",
                    Num(legend_x + 26), "\" y2=\"", Num(y), "\" stroke=\"", color,
                    "\" stroke-width=\"2\"", dashed ? " stroke-dasharray=\"6 4\"" : "", "/>");
    if (marker) absl::StrAppend(&legend, Marker(shape, legend_x + 13, y, color));
    absl::StrAppend(&legend, "<text x=\"", Num(legend_x + 32), "\" y=\"", Num(y + 4),
                    "\" fill=\"", grey, "\">", XmlEscape(LegendText(name)), "</text>\n");
    legend_y += 20;
  };
  absl::StrAppend(&o, "<g class=\"plot-area\">\n");
  for (size_t i = 0; i < spec.references.size(); ++i) {
    const auto& r = spec.references[i];
    if (!std::isfinite(r.y) || (spec.log_y && r.y <= 0)) continue;
    double y = ay.Map(r.y, py0, py1);
    absl::StrAppend(&o, "<g class=\"reference\" data-series=\"", XmlEscape(r.name), "\">",
                    "<title>", XmlEscape(r.name), " = ", absl::StrFormat("%g", r.y), "</title>",
                    "<line x1=\"", Num(px0), "\" y1=\"", Num(y), "\" x2=\"", Num(px1), "\" y2=\"",
                    Num(y), "\" stroke=\"", grey, "\" stroke-width=\"1.5\" ",
                    "stroke-dasharray=\"6 4\"/></g>\n");
    legend_entry(r.name, grey, true, 0, false);
  }
  for (size_t i = 0; i < prepared.size(); ++i) {
    const auto& p = prepared[i];
    const std::string& color = palette[i % palette.size()];
    const int shape = static_cast<int>(i % 4);
    // Past the palette, alternate dashes so a colour never means two things.
    bool dashed = p.s->dashed || (i / palette.size()) % 2 == 1;
    bool markers = p.s->markers && p.pts.size() <= kMaxMarkers;
    absl::StrAppend(&o, "<g class=\"series\" data-series=\"", XmlEscape(p.s->name), "\">",
                    "<title>", XmlEscape(p.s->name), "</title>\n");
    if (p.pts.size() >= 2) {
      absl::StrAppend(&o, "<polyline fill=\"none\" stroke=\"", color,
                      "\" stroke-width=\"2\" stroke-linejoin=\"round\"",
                      dashed ? " stroke-dasharray=\"6 4\"" : "", " points=\"");
      for (size_t k = 0; k < p.pts.size(); ++k) {
        absl::StrAppend(&o, k ? " " : "", Num(ax.Map(p.pts[k].first, px0, px1)), ",",
                        Num(ay.Map(p.pts[k].second, py0, py1)));
      }
      absl::StrAppend(&o, "\"/>\n");
    }
    if (markers || p.pts.size() == 1) {
      for (const auto& pt : p.pts) {
        absl::StrAppend(&o, Marker(shape, ax.Map(pt.first, px0, px1),
                                   ay.Map(pt.second, py0, py1), color));
      }
      absl::StrAppend(&o, "\n");
    }
    absl::StrAppend(&o, "</g>\n");
    legend_entry(p.s->name, color, dashed, shape, markers || p.pts.size() == 1);
  }
  absl::StrAppend(&o, "</g>\n<g class=\"legend\">\n", legend, "</g>\n</svg>\n");
  return o;
}

}  // namespace kvgrid::reports
