// Well-formedness check of SVG output with expat (a real XML parser), collecting the series names
// (<g class="series|reference" data-series="NAME">) and every text node.
#pragma once

#include <expat.h>

#include <cstring>
#include <set>
#include <string>

namespace kvgrid::reports::testing {

struct SvgInfo {
  bool well_formed = false;
  std::string error;            // expat's message with line/column when not well formed
  std::string root;             // name of the root element
  std::set<std::string> series;      // class="series"
  std::set<std::string> references;  // class="reference"
  std::string text;             // all character data, concatenated
  int polylines = 0;
};

inline SvgInfo CheckSvg(const std::string& svg) {
  SvgInfo info;
  XML_Parser p = XML_ParserCreate("UTF-8");
  XML_SetUserData(p, &info);
  XML_SetElementHandler(
      p,
      [](void* data, const XML_Char* name, const XML_Char** atts) {
        auto* info = static_cast<SvgInfo*>(data);
        if (info->root.empty()) info->root = name;
        if (std::strcmp(name, "polyline") == 0) ++info->polylines;
        std::string cls, series;
        for (int i = 0; atts[i] != nullptr; i += 2) {
          if (std::strcmp(atts[i], "class") == 0) cls = atts[i + 1];
          if (std::strcmp(atts[i], "data-series") == 0) series = atts[i + 1];
        }
        if (cls == "series") info->series.insert(series);
        if (cls == "reference") info->references.insert(series);
      },
      [](void*, const XML_Char*) {});
  XML_SetCharacterDataHandler(p, [](void* data, const XML_Char* s, int len) {
    static_cast<SvgInfo*>(data)->text.append(s, len);
  });
  if (XML_Parse(p, svg.data(), static_cast<int>(svg.size()), /*isFinal=*/1) == XML_STATUS_ERROR) {
    info.error = std::string(XML_ErrorString(XML_GetErrorCode(p))) + " at line " +
                 std::to_string(XML_GetCurrentLineNumber(p)) + ", column " +
                 std::to_string(XML_GetCurrentColumnNumber(p));
  } else {
    info.well_formed = true;
  }
  XML_ParserFree(p);
  return info;
}

}  // namespace kvgrid::reports::testing
