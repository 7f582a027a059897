#include "reports/markdown_table.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvgrid::reports {

std::string EscapeMarkdownCell(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '|') {
      if (i > 0 && text[i - 1] == '\\') {
        out += c;  // already escaped
      } else {
        out += "\\|";
      }
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

size_t DisplayWidth(absl::string_view utf8) {
  size_t n = 0;
  for (unsigned char c : utf8) {
    if ((c & 0xC0) != 0x80) ++n;  // count lead bytes only
  }
  return n;
}

namespace {

std::string Pad(const std::string& s, size_t width, Align align) {
  size_t w = DisplayWidth(s);
  if (w >= width) return s;
  size_t fill = width - w;
  switch (align) {
    case Align::kRight:
      return std::string(fill, ' ') + s;
    case Align::kCenter:
      return std::string(fill / 2, ' ') + s + std::string(fill - fill / 2, ' ');
    case Align::kLeft:
    default:
      return s + std::string(fill, ' ');
  }
}

std::string Delimiter(size_t width, Align align) {
  width = std::max<size_t>(width, 3);
  switch (align) {
    case Align::kRight:
      return std::string(width - 1, '-') + ":";
    case Align::kCenter:
      return ":" + std::string(width - 2, '-') + ":";
    case Align::kLeft:
    default:
      return std::string(width, '-');
  }
}

}  // namespace

std::string RenderMarkdownTable(const MarkdownTable& table) {
  size_t cols = table.headers.size();
  for (const auto& r : table.rows) cols = std::max(cols, r.size());
  if (cols == 0) return "";
  auto cell = [](const std::vector<std::string>& row, size_t i) {
    return i < row.size() ? EscapeMarkdownCell(row[i]) : std::string();
  };
  auto align = [&](size_t i) { return i < table.align.size() ? table.align[i] : Align::kLeft; };
  std::vector<size_t> width(cols, 3);
  for (size_t i = 0; i < cols; ++i) {
    width[i] = std::max(width[i], DisplayWidth(cell(table.headers, i)));
    for (const auto& r : table.rows) width[i] = std::max(width[i], DisplayWidth(cell(r, i)));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& row) {
    out += "|";
    for (size_t i = 0; i < cols; ++i) {
      out += " ";
      // Header cells follow the column's alignment too, as llama-bench does.
      out += Pad(cell(row, i), width[i], align(i));
      out += " |";
    }
    out += "\n";
  };
  line(table.headers);
  out += "|";
  for (size_t i = 0; i < cols; ++i) out += " " + Delimiter(width[i], align(i)) + " |";
  out += "\n";
  for (const auto& r : table.rows) line(r);
  return out;
}

namespace {

// Splits a "| a | b |" row into cells, honouring backslash-escaped pipes; trims each cell.
std::vector<std::string> SplitRow(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  absl::ConsumePrefix(&line, "|");
  if (!line.empty() && line.back() == '|' && (line.size() < 2 || line[line.size() - 2] != '\\')) {
    line.remove_suffix(1);
  }
  std::vector<std::string> cells;
  std::string current;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
      current += '|';
      ++i;
    } else if (c == '|') {
      cells.push_back(std::string(absl::StripAsciiWhitespace(current)));
      current.clear();
    } else {
      current += c;
    }
  }
  cells.push_back(std::string(absl::StripAsciiWhitespace(current)));
  return cells;
}

bool IsDelimiterRow(const std::vector<std::string>& cells, std::vector<Align>* align) {
  if (cells.empty()) return false;
  align->clear();
  for (const auto& c : cells) {
    if (c.empty()) return false;
    bool left = c.front() == ':';
    bool right = c.back() == ':';
    absl::string_view dashes(c);
    if (left) dashes.remove_prefix(1);
    if (right && !dashes.empty()) dashes.remove_suffix(1);
    if (dashes.empty()) return false;
    for (char d : dashes) {
      if (d != '-') return false;
    }
    align->push_back(left && right ? Align::kCenter : right ? Align::kRight : Align::kLeft);
  }
  return true;
}

}  // namespace

int ParsedTable::Column(absl::string_view name) const {
  for (size_t i = 0; i < headers.size(); ++i) {
    if (headers[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<ParsedTable> ParseMarkdownTables(absl::string_view markdown) {
  std::vector<absl::string_view> lines = absl::StrSplit(markdown, '\n');
  std::vector<ParsedTable> tables;
  auto is_row = [](absl::string_view l) {
    l = absl::StripAsciiWhitespace(l);
    return !l.empty() && l.front() == '|';
  };
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    if (!is_row(lines[i]) || !is_row(lines[i + 1])) continue;
    std::vector<Align> align;
    std::vector<std::string> delim = SplitRow(lines[i + 1]);
    if (!IsDelimiterRow(delim, &align)) continue;
    ParsedTable t;
    t.headers = SplitRow(lines[i]);
    if (t.headers.size() != delim.size()) continue;
    t.align = align;
    t.line = i + 1;
    size_t j = i + 2;
    for (; j < lines.size() && is_row(lines[j]); ++j) t.rows.push_back(SplitRow(lines[j]));
    tables.push_back(std::move(t));
    i = j - 1;
  }
  return tables;
}

}  // namespace kvgrid::reports
