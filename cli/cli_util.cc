#include "cli/cli_util.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <ATen/Parallel.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvgrid::cli {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::vector<int64_t>> ReadIdsFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::vector<int64_t> ids;
  for (absl::string_view tok : absl::StrSplit(*text, absl::ByAnyChar(" \t\r\n,"), absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(tok, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a token id: '", tok, "'"));
    }
    ids.push_back(v);
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids"));
  return ids;
}

int Fail(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "kvgrid %s: error: %s\n", command.c_str(), std::string(status.message()).c_str());
  return 1;
}

int ConfigureThreads(int requested) {
  int n = requested;
  if (n <= 0) {
    if (const char* env = std::getenv("KVGRID_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  return n;
}

}  // namespace kvgrid::cli
