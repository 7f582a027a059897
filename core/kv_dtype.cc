#include "core/kv_dtype.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kvgrid {

std::string KvDtype::ToString() const {
  if (bits == 0) return "model";
  std::string text = absl::StrCat("int", bits);
  std::vector<std::string> params;
  if (group != KvDtype{}.group) params.push_back(absl::StrCat("group=", group));
  if (residual != KvDtype{}.residual) params.push_back(absl::StrCat("residual=", residual));
  if (!params.empty()) absl::StrAppend(&text, ":", absl::StrJoin(params, ","));
  return text;
}

absl::StatusOr<KvDtype> ParseKvDtype(const std::string& text) {
  const std::string where = absl::StrCat("kv_dtype '", text, "'");
  std::vector<std::string> head = absl::StrSplit(text, absl::MaxSplits(':', 1));
  KvDtype kv;
  if (head[0] == "model") {
    if (head.size() > 1) return absl::InvalidArgumentError(where + ": `model` takes no parameters");
    return kv;
  }
  if (head[0] == "int8") {
    kv.bits = 8;
  } else if (head[0] == "int4") {
    kv.bits = 4;
  } else if (head[0] == "int2") {
    kv.bits = 2;
  } else {
    return absl::InvalidArgumentError(where + ": expected model, int8, int4 or int2");
  }
  if (head.size() > 1) {
    for (absl::string_view item : absl::StrSplit(head[1], ',')) {
      std::vector<std::string> kvp = absl::StrSplit(item, absl::MaxSplits('=', 1));
      int64_t value = 0;
      if (kvp.size() != 2 || !absl::SimpleAtoi(kvp[1], &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected key=integer, got '", item, "'"));
      }
      if (kvp[0] == "group") {
        kv.group = value;
      } else if (kvp[0] == "residual") {
        kv.residual = value;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown parameter '", kvp[0], "' (group, residual)"));
      }
    }
  }
  if (kv.group < 1) return absl::InvalidArgumentError(where + ": group must be >= 1");
  if (kv.residual < 0 || kv.residual % kv.group != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": residual must be a non-negative multiple of group (", kv.group,
                     "): keys are quantised in whole groups when the residual fills"));
  }
  if (kv.residual == 0) {
    return absl::InvalidArgumentError(
        where + ": residual must be >= group (KIVI flushes the key residual when it holds "
                "`residual` tokens)");
  }
  return kv;
}

absl::Status CheckKvDtypeFitsHead(const KvDtype& kv, int64_t head_dim) {
  if (!kv.quantized()) return absl::OkStatus();
  const int64_t codes_per_word = 32 / kv.bits;
  if (head_dim % kv.group != 0 || head_dim % codes_per_word != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_dtype ", kv.ToString(), ": group ", kv.group, " must divide the head dimension ",
        head_dim, " (values are quantised in groups of channels)"));
  }
  return absl::OkStatus();
}

}  // namespace kvgrid
