// `kvgrid db check|backup|recover`: look after a results database (storage/db_tools.h).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/command_registry.h"
#include "storage/db_tools.h"

namespace kvgrid::cli {
namespace {

struct DbArgs {
  std::string path, out;
};

int Fail(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "kvgrid db %s: error: %s\n", what, std::string(st.message()).c_str());
  return 1;
}

std::function<int()> Setup(CLI::App& app) {
  auto* db = app.add_subcommand("db", "check, back up or recover a results database");
  db->require_subcommand(1);
  auto a = std::make_shared<DbArgs>();
  auto* check = db->add_subcommand("check", "full integrity check (read-only); exit 1 when damaged");
  check->add_option("db", a->path, "database file")->required();
  auto* backup = db->add_subcommand("backup", "consistent copy with SQLite's online backup (safe while a coordinator writes)");
  backup->add_option("db", a->path, "database file")->required();
  backup->add_option("--out", a->out, "new file to write")->required();
  auto* recover = db->add_subcommand("recover", "what is readable of a damaged database, into a new file (the old one is not modified)");
  recover->add_option("db", a->path, "damaged database file")->required();
  recover->add_option("--out", a->out, "new file to write")->required();
  return [a, check, backup, recover]() {
    if (check->parsed()) {
      absl::Status st = CheckDatabase(a->path);
      if (!st.ok()) return Fail("check", st);
      std::printf("%s: ok\n", a->path.c_str());
      return 0;
    }
    if (backup->parsed()) {
      absl::Status st = BackupDatabase(a->path, a->out);
      if (!st.ok()) return Fail("backup", st);
      std::printf("%s: backed up to %s\n", a->path.c_str(), a->out.c_str());
      return 0;
    }
    if (recover->parsed()) {
      auto r = RecoverDatabase(a->path, a->out);
      if (!r.ok()) return Fail("recover", r.status());
      std::printf("%s: recovered into %s: %lld experiment(s), %lld run(s) (%lld done), %lld result row(s)\n",
                  a->path.c_str(), a->out.c_str(), static_cast<long long>(r->experiments),
                  static_cast<long long>(r->runs), static_cast<long long>(r->runs_done),
                  static_cast<long long>(r->result_rows));
      if (!r->dump_errors.empty()) {
        std::printf("unreadable parts were skipped (runs whose rows were lost run again on the next `kvgrid run`): %s\n",
                    r->dump_errors.c_str());
      }
      return 0;
    }
    return 2;
  };
}

KVGRID_REGISTER_COMMAND(db, "db", Setup);

}  // namespace
}  // namespace kvgrid::cli
