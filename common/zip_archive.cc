#include "common/zip_archive.h"

#include <zip.h>

#include "absl/strings/str_cat.h"

namespace kvgrid {

absl::StatusOr<std::unique_ptr<ZipArchive>> ZipArchive::Open(const std::string& path) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (za == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = absl::StrCat("cannot open zip archive ", path, ": ", zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return absl::DataLossError(msg);
  }
  std::unique_ptr<ZipArchive> a(new ZipArchive());
  a->path_ = path;
  a->za_ = za;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, static_cast<zip_uint64_t>(i), 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
        !(st.valid & ZIP_STAT_SIZE)) {
      return absl::DataLossError(absl::StrCat("cannot read entry ", i, " of zip archive ", path, ": ",
                                              zip_strerror(za)));
    }
    Member m;
    m.name = st.name;
    m.size = st.size;
    m.stored = (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == ZIP_CM_STORE;
    a->members_.push_back(std::move(m));
  }
  return a;
}

ZipArchive::~ZipArchive() {
  if (za_ != nullptr) zip_discard(za_);
}

const ZipArchive::Member* ZipArchive::Find(const std::string& name) const {
  for (const Member& m : members_) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

absl::Status ZipArchive::ReadInto(const std::string& name, void* dst, uint64_t size) const {
  std::lock_guard<std::mutex> lock(mu_);
  const zip_int64_t index = zip_name_locate(za_, name.c_str(), 0);
  if (index < 0) {
    return absl::NotFoundError(absl::StrCat("zip archive ", path_, " has no member ", name));
  }
  const Member& m = members_[static_cast<size_t>(index)];
  if (m.size != size) {
    return absl::DataLossError(absl::StrCat(name, " in ", path_, " holds ", m.size,
                                            " bytes; expected ", size));
  }
  zip_file_t* zf = zip_fopen_index(za_, static_cast<zip_uint64_t>(index), 0);
  if (zf == nullptr) {
    return absl::DataLossError(absl::StrCat("cannot open ", name, " in ", path_, ": ", zip_strerror(za_)));
  }
  uint64_t got = 0;
  char* out = static_cast<char*>(dst);
  while (got < size) {
    zip_int64_t r = zip_fread(zf, out + got, size - got);
    if (r <= 0) break;
    got += static_cast<uint64_t>(r);
  }
  absl::Status status;
  if (got != size) {
    status = absl::DataLossError(absl::StrCat("cannot read ", name, " in ", path_, ": ",
                                              zip_file_strerror(zf)));
  } else {
    // A read to the end checks the CRC; one more read reports a mismatch.
    char probe;
    if (zip_fread(zf, &probe, 1) < 0) {
      status = absl::DataLossError(absl::StrCat(name, " in ", path_, " is damaged: ",
                                                zip_file_strerror(zf)));
    }
  }
  if (zip_fclose(zf) != 0 && status.ok()) {
    status = absl::DataLossError(absl::StrCat(name, " in ", path_, " is damaged (CRC mismatch)"));
  }
  return status;
}

absl::StatusOr<std::string> ZipArchive::Read(const std::string& name, uint64_t max_bytes) const {
  const Member* m = Find(name);
  if (m == nullptr) {
    return absl::NotFoundError(absl::StrCat("zip archive ", path_, " has no member ", name));
  }
  if (m->size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name, " in ", path_, " is too large (", m->size, " bytes; at most ", max_bytes, ")"));
  }
  std::string out(m->size, '\0');
  auto status = ReadInto(name, out.data(), m->size);
  if (!status.ok()) return status;
  return out;
}

}  // namespace kvgrid
