#include "reports/readme_section.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace kvgrid::reports {

std::string SectionBeginMarker(absl::string_view name) {
  return absl::StrCat("<!-- kvgrid:", name, " -->");
}
std::string SectionEndMarker(absl::string_view name) {
  return absl::StrCat("<!-- /kvgrid:", name, " -->");
}

namespace {
size_t CountOccurrences(absl::string_view haystack, absl::string_view needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != absl::string_view::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}
}  // namespace

absl::StatusOr<std::string> ReplaceMarkedSection(absl::string_view document,
                                                 absl::string_view name, absl::string_view content,
                                                 absl::string_view source) {
  if (name.empty() || name.find_first_of(" \t\n>") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("section name '", name, "' must be non-empty without spaces or '>'"));
  }
  const std::string begin = SectionBeginMarker(name), end = SectionEndMarker(name);
  const std::string hint = absl::StrCat("; put a line '", begin, "' and a line '", end,
                                        "' where the generated section should go");
  size_t nb = CountOccurrences(document, begin), ne = CountOccurrences(document, end);
  if (nb == 0) return absl::NotFoundError(absl::StrCat(source, ": marker '", begin, "' not found", hint));
  if (ne == 0) return absl::NotFoundError(absl::StrCat(source, ": marker '", end, "' not found", hint));
  if (nb > 1 || ne > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": section '", name, "' is marked more than once (", nb, " × '", begin, "', ", ne,
        " × '", end, "'); keep exactly one pair"));
  }
  size_t b = document.find(begin), e = document.find(end);
  if (e < b + begin.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": marker '", end, "' comes before '", begin, "'"));
  }
  std::string out;
  out.reserve(document.size() + content.size());
  out.append(document.data(), b + begin.size());
  out += "\n";
  out.append(content.data(), content.size());
  if (!content.empty() && content.back() != '\n') out += "\n";
  out.append(document.data() + e, document.size() - e);
  return out;
}

absl::Status RewriteReadmeSection(const std::string& path, const std::string& name,
                                  const std::string& content, bool* changed) {
  if (changed != nullptr) *changed = false;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open for reading: ", std::strerror(errno)));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  in.close();
  const std::string old = buf.str();
  auto updated = ReplaceMarkedSection(old, name, content, path);
  if (!updated.ok()) return updated.status();
  if (*updated == old) return absl::OkStatus();
  const std::string tmp = absl::StrCat(path, ".kvgrid-tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat(tmp, ": cannot open for writing: ", std::strerror(errno)));
    }
    out << *updated;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::InternalError(absl::StrCat(tmp, ": write failed"));
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) ::chmod(tmp.c_str(), st.st_mode & 07777);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat(path, ": cannot replace with ", tmp, ": ", std::strerror(errno)));
  }
  if (changed != nullptr) *changed = true;
  return absl::OkStatus();
}

}  // namespace kvgrid::reports
