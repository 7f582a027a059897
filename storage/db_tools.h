// Maintenance of a kvgrid database file, for `kvgrid db check|backup|recover`. No torch, no gRPC.
//   check    PRAGMA integrity_check on a read-only connection (the file is not changed)
//   backup   SQLite's online backup API into a new file: safe while a coordinator writes
//   recover  what is readable of a damaged file into a new one: SQLite's own `.dump` (the sqlite3
//            command-line shell, Debian's sqlite3 package) of a private copy, which skips
//            unreadable pages and goes on; its rows go into a new file with kvgrid's schema, each
//            on its own (a row that no longer fits is skipped). The damaged file is never
//            modified. (Debian 12's shell has `.recover`, but it fails there with "SQL logic
//            error".) Runs whose rows were lost are simply run again by the next `kvgrid run`.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvgrid {

// OK, or DataLoss naming `path` and the first problems SQLite found.
absl::Status CheckDatabase(const std::string& path);

// Copies `path` into `out` (which must not exist) page by page with sqlite3_backup_*.
absl::Status BackupDatabase(const std::string& path, const std::string& out);

struct RecoverReport {
  int64_t experiments = 0, runs = 0, runs_done = 0, result_rows = 0;
  std::string dump_errors;  // what the dump could not read ("" when nothing was lost)
};

// Writes what is readable of `path` into `out` (which must not exist) and checks the new file
// opens as a kvgrid database.
absl::StatusOr<RecoverReport> RecoverDatabase(const std::string& path, const std::string& out);

}  // namespace kvgrid
