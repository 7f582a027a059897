// Internal to storage/: the schema's migrations (store.h documents the schema itself).
#pragma once

#include <sqlite3.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvgrid::sql {

// The schema version a database is at (0: no schema_version table).
absl::StatusOr<int> ReadSchemaVersion(sqlite3* db);

// Applies every migration above `version`, each in its own write transaction (re-checked under
// the lock: another process may have migrated meanwhile).
absl::Status MigrateForward(sqlite3* db, int version);

}  // namespace kvgrid::sql
