// `kvgrid report EXPERIMENT`: README-ready markdown (tables, failed runs, setup footer) and
// optional SVG plots from the SQLite results; can rewrite a marked README section in place.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/command_registry.h"
#include "reports/readme_section.h"
#include "reports/report.h"
#include "storage/store.h"

namespace kvgrid::cli {
namespace {

struct ReportArgs {
  std::string experiment;
  std::string db;
  std::string out = "-";
  std::string plots;
  std::string readme;
  std::string section;
  int heading_level = 2;
  bool no_grid = false;
};

int Error(const std::string& message, int code = 1) {
  std::fprintf(stderr, "kvgrid report: error: %s\n", message.c_str());
  return code;
}

// How a markdown file in `doc_dir` refers to `plots_dir`.
std::string LinkPrefix(const std::string& plots_dir, const std::filesystem::path& doc_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path plots = fs::weakly_canonical(fs::absolute(plots_dir), ec);
  fs::path base = fs::weakly_canonical(fs::absolute(doc_dir.empty() ? "." : doc_dir), ec);
  fs::path rel = plots.lexically_relative(base);
  if (ec || rel.empty()) return plots_dir;
  return rel.generic_string();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

int RunReport(const ReportArgs& a) {
  if (a.readme.empty() != a.section.empty()) {
    return Error("--readme and --section go together (the section between "
                 "<!-- kvgrid:NAME --> and <!-- /kvgrid:NAME --> is rewritten)",
                 2);
  }
  const std::string db = a.db.empty() ? DefaultDbPath() : a.db;
  auto store = Store::Open(db, OpenMode::kReadOnly);
  if (!store.ok()) return Error(std::string(store.status().message()));
  auto exp = (*store)->GetExperiment(a.experiment);
  if (!exp.ok()) return Error(std::string(exp.status().message()));
  auto runs = (*store)->ListRuns(a.experiment);
  if (!runs.ok()) return Error(std::string(runs.status().message()));

  reports::ReportOptions opt;
  opt.plots_dir = a.plots;
  opt.heading_level = a.heading_level;
  opt.include_grid_yaml = !a.no_grid;
  opt.db_path = db;
  const bool to_stdout = a.out == "-" && a.readme.empty();
  const bool to_file = a.out != "-";

  if (to_stdout || to_file) {
    if (!a.plots.empty()) {
      opt.plots_link_prefix =
          to_file ? LinkPrefix(a.plots, std::filesystem::path(a.out).parent_path()) : a.plots;
    }
    reports::RenderedReport r = reports::BuildReport(*exp, *runs, opt);
    if (!a.plots.empty()) {
      absl::Status st = reports::WritePlots(r.plots, a.plots);
      if (!st.ok()) return Error(std::string(st.message()));
      std::fprintf(stderr, "kvgrid report: wrote %zu plot(s) to %s\n", r.plots.size(),
                   a.plots.c_str());
    }
    if (to_file) {
      absl::Status st = WriteText(a.out, r.markdown);
      if (!st.ok()) return Error(std::string(st.message()));
      std::fprintf(stderr, "kvgrid report: wrote %s\n", a.out.c_str());
    } else {
      std::cout << r.markdown << std::flush;
    }
  }
  if (!a.readme.empty()) {
    if (!a.plots.empty()) {
      opt.plots_link_prefix = LinkPrefix(a.plots, std::filesystem::path(a.readme).parent_path());
    }
    reports::RenderedReport r = reports::BuildReport(*exp, *runs, opt);
    if (!a.plots.empty() && !to_stdout && !to_file) {
      absl::Status st = reports::WritePlots(r.plots, a.plots);
      if (!st.ok()) return Error(std::string(st.message()));
      std::fprintf(stderr, "kvgrid report: wrote %zu plot(s) to %s\n", r.plots.size(),
                   a.plots.c_str());
    }
    bool changed = false;
    absl::Status st = reports::RewriteReadmeSection(a.readme, a.section, r.markdown, &changed);
    if (!st.ok()) return Error(std::string(st.message()));
    std::fprintf(stderr, "kvgrid report: %s section '%s' of %s\n",
                 changed ? "rewrote" : "unchanged", a.section.c_str(), a.readme.c_str());
  }
  return 0;
}

std::function<int()> SetupReport(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  CLI::App* sub = app.add_subcommand(
      "report",
      "Markdown tables (median [spread] n, Δ vs full), failed runs, setup footer and SVG plots "
      "for an experiment; opens the database read-only");
  sub->add_option("experiment", a->experiment, "experiment name (the grid's `name:`)")->required();
  sub->add_option("--db", a->db, "SQLite database (default: $KVGRID_DB, else ./kvgrid.db)");
  sub->add_option("--out,-o", a->out, "write the markdown here ('-' = stdout, the default)");
  sub->add_option("--plots", a->plots, "write SVG plots into this directory and link them");
  sub->add_option("--readme", a->readme,
                  "rewrite the marked section of this markdown file in place (needs --section)");
  sub->add_option("--section", a->section,
                  "section NAME: the text between <!-- kvgrid:NAME --> and <!-- /kvgrid:NAME -->");
  sub->add_option("--heading-level", a->heading_level, "markdown level of the report title (1-5)")
      ->check(CLI::Range(1, 5));
  sub->add_flag("--no-grid", a->no_grid, "leave out the submitted grid YAML");
  return [a]() { return RunReport(*a); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(report, "report", SetupReport);

}  // namespace kvgrid::cli
