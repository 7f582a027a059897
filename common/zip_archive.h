// A read-only zip archive through libzip (Debian's libzip-dev): members located by name and read
// whole or straight into a caller's buffer, the CRC checked at the end of every read. Used for the
// wikitext download and for torch.save checkpoints (pytorch_model.bin). Errors name the archive and
// the member. Thread-safe (reads are serialised: libzip handles are not).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

struct zip;  // libzip's zip_t

namespace kvgrid {

class ZipArchive {
 public:
  struct Member {
    std::string name;
    uint64_t size = 0;    // uncompressed bytes
    bool stored = false;  // not compressed (torch.save stores every member)
  };

  // Opens and checks the archive's central directory. Not a zip, truncated or inconsistent: a
  // DataLoss error naming `path`.
  static absl::StatusOr<std::unique_ptr<ZipArchive>> Open(const std::string& path);
  ~ZipArchive();
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Member>& members() const { return members_; }
  const Member* Find(const std::string& name) const;

  // Reads the whole member (at most `max_bytes`).
  absl::StatusOr<std::string> Read(const std::string& name, uint64_t max_bytes) const;
  // Reads the whole member into `dst`, which holds exactly `size` bytes (the member's size).
  absl::Status ReadInto(const std::string& name, void* dst, uint64_t size) const;

 private:
  ZipArchive() = default;
  std::string path_;
  ::zip* za_ = nullptr;
  std::vector<Member> members_;
  mutable std::mutex mu_;
};

}  // namespace kvgrid
