// kvgrid query: one read-only SQL statement against the results database (see storage/store.h
// for the tables and views), printed as a table, CSV or JSON.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command_registry.h"
#include "storage/store.h"

namespace kvgrid::cli {
namespace {

struct QueryFlags {
  std::string sql;
  std::string db;
  std::string format = "table";
  int64_t max_rows = -1;
};

std::string CsvField(const QueryCell& c) {
  if (c.kind == QueryCell::kNull) return "";
  const std::string& s = c.text;
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

void PrintCsv(const QueryTable& t) {
  for (size_t c = 0; c < t.columns.size(); ++c) {
    std::cout << (c ? "," : "") << CsvField({QueryCell::kText, t.columns[c]});
  }
  std::cout << "\n";
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < row.size(); ++c) std::cout << (c ? "," : "") << CsvField(row[c]);
    std::cout << "\n";
  }
}

void PrintJson(const QueryTable& t) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& row : t.rows) {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    for (size_t c = 0; c < row.size(); ++c) {
      const QueryCell& cell = row[c];
      nlohmann::ordered_json v;
      switch (cell.kind) {
        case QueryCell::kNull: v = nullptr; break;
        case QueryCell::kInteger: v = std::stoll(cell.text); break;
        case QueryCell::kReal: v = std::stod(cell.text); break;
        case QueryCell::kText: v = cell.text; break;
      }
      obj[t.columns[c]] = v;
    }
    out.push_back(obj);
  }
  std::cout << out.dump(2) << "\n";
}

void PrintTable(const QueryTable& t) {
  auto show = [](const QueryCell& c) { return c.kind == QueryCell::kNull ? std::string("NULL") : c.text; };
  std::vector<size_t> width(t.columns.size());
  for (size_t c = 0; c < t.columns.size(); ++c) width[c] = t.columns[c].size();
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], show(row[c]).size());
  }
  auto line = [&](const std::vector<std::string>& cells, const std::vector<bool>& right) {
    std::string s;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c) s += "  ";
      std::string pad(width[c] - std::min(width[c], cells[c].size()), ' ');
      s += right[c] ? pad + cells[c] : cells[c] + (c + 1 < cells.size() ? pad : "");
    }
    std::cout << s << "\n";
  };
  // Right-align columns whose values are all numbers.
  std::vector<bool> numeric(t.columns.size(), !t.rows.empty());
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (row[c].kind == QueryCell::kText) numeric[c] = false;
    }
  }
  line(t.columns, numeric);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  line(rule, std::vector<bool>(t.columns.size(), false));
  for (const auto& row : t.rows) {
    std::vector<std::string> cells;
    for (const auto& c : row) cells.push_back(show(c));
    line(cells, numeric);
  }
  std::cerr << "(" << t.rows.size() << (t.rows.size() == 1 ? " row)" : " rows)") << "\n";
}

std::function<int()> Setup(CLI::App& app) {
  auto f = std::make_shared<QueryFlags>();
  auto* cmd = app.add_subcommand(
      "query",
      "run one read-only SQL statement on the results database (tables: experiments, runs, "
      "results, samples, result_records, workers, leases; views: run_metrics, run_samples)");
  cmd->add_option("sql", f->sql, "the SQL statement, e.g. \"SELECT policy, metric, value FROM "
                                 "run_metrics WHERE experiment = 'quick'\"")
      ->required();
  cmd->add_option("--db", f->db, "database file (default: $KVGRID_DB, else ./kvgrid.db)");
  cmd->add_option("--format", f->format, "table | csv | json (default table)")
      ->check(CLI::IsMember({"table", "csv", "json"}));
  cmd->add_option("--max-rows", f->max_rows, "stop after this many rows (default: all)");
  return [f]() {
    const std::string path = f->db.empty() ? DefaultDbPath() : f->db;
    auto store = Store::Open(path, OpenMode::kReadOnly);
    if (!store.ok()) {
      std::fprintf(stderr, "kvgrid query: %s\n", std::string(store.status().message()).c_str());
      return 1;
    }
    auto table = (*store)->ExecuteReadOnlyQuery(f->sql, f->max_rows);
    if (!table.ok()) {
      std::fprintf(stderr, "kvgrid query: %s\n", std::string(table.status().message()).c_str());
      return 1;
    }
    if (f->format == "csv") {
      PrintCsv(*table);
    } else if (f->format == "json") {
      PrintJson(*table);
    } else {
      PrintTable(*table);
    }
    return 0;
  };
}

KVGRID_REGISTER_COMMAND(query, "query", Setup);

}  // namespace
}  // namespace kvgrid::cli
