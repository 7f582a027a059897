// SHA-256 (OpenSSL EVP) for download verification and dataset cache checksums. No torch.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvgrid {

// Incremental hasher: Update() any number of times, then HexDigest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Lowercase hex of the 32-byte digest. The hasher must not be used afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// Lowercase hex SHA-256 of a file's bytes; the error names the file.
absl::StatusOr<std::string> Sha256File(const std::string& path);

// True when `s` is exactly 64 hex digits (any case).
bool IsSha256Hex(absl::string_view s);

}  // namespace kvgrid
