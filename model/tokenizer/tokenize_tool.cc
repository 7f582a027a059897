#include "model/tokenizer/tokenize_tool.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvgrid {
namespace {

absl::StatusOr<std::string> ReadInput(const std::string& path, const char* what) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", what, " file '", path, "': ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", what, " file '", path, "'"));
  return ss.str();
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ParseIdList(std::string_view text, const std::string& source) {
  std::string cleaned(text);
  // Accept `[1, 2]` and `{"ids":[1,2],"count":2}` as well as plain whitespace-separated ids.
  const size_t lb = cleaned.find('[');
  if (cleaned.find('{') != std::string::npos && lb != std::string::npos) {
    const size_t rb = cleaned.find(']', lb);
    if (rb == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("ids file '", source, "': unclosed '['"));
    }
    cleaned = cleaned.substr(lb + 1, rb - lb - 1);
  }
  for (char& c : cleaned) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  std::vector<int32_t> ids;
  for (absl::string_view word :
       absl::StrSplit(cleaned, absl::ByAnyChar(" \t\r\n\v\f"), absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(word, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("ids file '", source, "': \"", word,
                                                     "\" (id #", ids.size() + 1,
                                                     ") is not an integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string FormatIdList(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, " "); }

std::string FormatIdsJson(const std::vector<int32_t>& ids) {
  return absl::StrCat("{\"ids\":[", absl::StrJoin(ids, ","), "],\"count\":", ids.size(), "}");
}

int RunTokenize(const TokenizeOptions& options, std::ostream& out, std::ostream& err) {
  const bool decode = options.decode || !options.ids_path.empty();
  const std::string input_path = !options.ids_path.empty() ? options.ids_path : options.text_path;
  if (options.tokenizer_path.empty()) {
    err << "kvgrid tokenize: --tokenizer FILE is required\n";
    return 2;
  }
  if (input_path.empty()) {
    err << "kvgrid tokenize: give --text FILE" << (decode ? " or --ids FILE" : "") << "\n";
    return 2;
  }
  if (!options.ids_path.empty() && !options.text_path.empty()) {
    err << "kvgrid tokenize: give only one of --text and --ids\n";
    return 2;
  }
  auto tokenizer = Tokenizer::FromFile(options.tokenizer_path);
  if (!tokenizer.ok()) {
    err << "kvgrid tokenize: " << tokenizer.status().message() << "\n";
    return 1;
  }
  auto input = ReadInput(input_path, decode ? "ids" : "text");
  if (!input.ok()) {
    err << "kvgrid tokenize: " << input.status().message() << "\n";
    return 1;
  }
  if (!decode) {
    const std::vector<int32_t> ids = tokenizer->Encode(*input);
    out << (options.json ? FormatIdsJson(ids) : FormatIdList(ids)) << "\n";
    return out.good() ? 0 : 1;
  }
  auto ids = ParseIdList(*input, input_path);
  if (!ids.ok()) {
    err << "kvgrid tokenize: " << ids.status().message() << "\n";
    return 1;
  }
  auto text = tokenizer->Decode(*ids);
  if (!text.ok()) {
    err << "kvgrid tokenize: " << text.status().message() << "\n";
    return 1;
  }
  if (options.json) {
    nlohmann::json j;
    j["text"] = *text;  // valid UTF-8: Decode repairs invalid sequences
    j["count"] = ids->size();
    out << j.dump() << "\n";
  } else {
    out << *text;
  }
  return out.good() ? 0 : 1;
}

}  // namespace kvgrid
