// Small filesystem helpers for caches: whole-file reads, atomic writes (temp + fsync + rename,
// so readers never see a half-written file) and an advisory cross-process lock. No torch.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvgrid {

// Reads a whole file; the error names the file.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// True when `path` exists and (following symlinks) is a regular file.
bool IsRegularFile(const std::string& path);

// Writes `contents` to `path` atomically: a unique temp file in the same directory, fsync, then
// rename over `path`. Creates the parent directory. On failure nothing is left at `path` that was
// not there before, and the temp file is removed.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// mkdir -p; the error names the directory.
absl::Status CreateDirectories(const std::string& dir);

// Exclusive flock(2) on `lock_path` (created if missing), released on destruction. Waits at most
// `timeout_s` seconds for another holder (another process downloading the same file).
class ScopedFileLock {
 public:
  static absl::StatusOr<std::unique_ptr<ScopedFileLock>> Acquire(const std::string& lock_path,
                                                                 double timeout_s);
  ~ScopedFileLock();
  ScopedFileLock(const ScopedFileLock&) = delete;
  ScopedFileLock& operator=(const ScopedFileLock&) = delete;

 private:
  explicit ScopedFileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace kvgrid
