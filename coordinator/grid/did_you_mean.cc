#include "coordinator/grid/did_you_mean.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvgrid {

int EditDistance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Suggest(const std::string& word, const std::vector<std::string>& choices) {
  std::string best;
  int best_d = 3;
  for (const auto& c : choices) {
    if (word.size() >= 3 && c.rfind(word, 0) == 0) return c;  // a prefix: "stream" -> "streaming"
  }
  for (const auto& c : choices) {
    int d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string KnownHint(const std::string& word, const std::vector<std::string>& choices) {
  std::string s = Suggest(word, choices);
  std::string known = absl::StrCat("known: ", absl::StrJoin(choices, ", "));
  return s.empty() ? known : absl::StrCat("did you mean '", s, "'? ", known);
}

}  // namespace kvgrid
