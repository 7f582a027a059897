// The logic of `kvgrid tokenize` (cli/cmd_tokenize.cc is only the CLI11 glue), kept in the
// torch-free library so tests can drive it without the binary.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvgrid {

struct TokenizeOptions {
  std::string tokenizer_path;  // tokenizer.json
  std::string text_path;       // text to encode, or ids to decode with `decode`; "-" = stdin
  std::string ids_path;        // ids to decode (implies decode); "-" = stdin
  bool decode = false;
  bool json = false;
};

// Parses whitespace-separated token ids (decimal, optionally in a JSON-like "[1, 2]" list or
// a {"ids":[...]} object); the error names `source` and the offending word.
absl::StatusOr<std::vector<int32_t>> ParseIdList(std::string_view text, const std::string& source);
// "1 2 3"
std::string FormatIdList(const std::vector<int32_t>& ids);
// {"ids":[1,2,3],"count":3}
std::string FormatIdsJson(const std::vector<int32_t>& ids);

// Runs the command: writes the result (one line) to `out`, errors to `err`. Returns the exit
// code: 0 ok, 1 failure, 2 usage error.
int RunTokenize(const TokenizeOptions& options, std::ostream& out, std::ostream& err);

}  // namespace kvgrid
