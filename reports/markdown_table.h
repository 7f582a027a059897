// GitHub-flavoured markdown pipe tables in llama-bench's style: a header row, an alignment row
// (`---:` for numbers), every column padded to its widest cell so the source reads as a table too.
// Also a small parser of such tables, used by tests and by tools that read reports back.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvgrid::reports {

enum class Align { kLeft, kRight, kCenter };

struct MarkdownTable {
  std::vector<std::string> headers;
  std::vector<Align> align;                  // per column; missing entries are kLeft
  std::vector<std::vector<std::string>> rows;  // short rows are padded with empty cells
};

// Escapes what would break a cell: '|' → '\|', newlines → spaces.
std::string EscapeMarkdownCell(absl::string_view text);

// Number of displayed characters of UTF-8 text (code points; enough for the symbols we print).
size_t DisplayWidth(absl::string_view utf8);

// Renders the table, one line per row, each ending with '\n'. Cells are escaped here.
std::string RenderMarkdownTable(const MarkdownTable& table);

// A table read back from markdown: header cells, alignment, and body rows (cells unescaped, trimmed).
struct ParsedTable {
  std::vector<std::string> headers;
  std::vector<Align> align;
  std::vector<std::vector<std::string>> rows;
  size_t line = 0;  // 1-based line of the header row in the input
  // Index of the header named `name`, or -1.
  int Column(absl::string_view name) const;
};

// Finds every pipe table (header line, delimiter line, body lines starting with '|').
std::vector<ParsedTable> ParseMarkdownTables(absl::string_view markdown);

}  // namespace kvgrid::reports
