#include "model/policies/head_adaptive_selection.h"

#include <algorithm>

namespace kvgrid {
namespace policies {

int64_t SafeguardCount(int64_t per_head, double alpha) {
  int64_t safe = static_cast<int64_t>(static_cast<double>(per_head) * alpha);
  if (alpha > 0 && per_head > 0) safe = std::max<int64_t>(1, safe);
  return safe;
}

std::vector<std::vector<int64_t>> SelectHeadAdaptive(const double* scores, const bool* holes,
                                                     int64_t heads, int64_t n, int64_t per_head,
                                                     double alpha) {
  struct Entry {
    bool safe;
    double score;
    int64_t slot, head;
  };
  // Kept first: safeguarded, higher score, lower slot, lower head.
  auto before = [](const Entry& a, const Entry& b) {
    if (a.safe != b.safe) return a.safe;
    if (a.score != b.score) return a.score > b.score;
    if (a.slot != b.slot) return a.slot < b.slot;
    return a.head < b.head;
  };
  const int64_t safe_per_head = SafeguardCount(per_head, alpha);
  std::vector<Entry> entries;
  entries.reserve(static_cast<size_t>(heads * n));
  std::vector<Entry> head_entries;
  for (int64_t h = 0; h < heads; ++h) {
    head_entries.clear();
    for (int64_t t = 0; t < n; ++t) {
      if (holes != nullptr && holes[h * n + t]) continue;
      head_entries.push_back({false, scores[h * n + t], t, h});
    }
    const int64_t safe = std::min<int64_t>(safe_per_head, static_cast<int64_t>(head_entries.size()));
    if (safe > 0) {
      std::partial_sort(head_entries.begin(), head_entries.begin() + safe, head_entries.end(), before);
      for (int64_t i = 0; i < safe; ++i) head_entries[i].safe = true;
    }
    entries.insert(entries.end(), head_entries.begin(), head_entries.end());
  }
  const int64_t live = static_cast<int64_t>(entries.size());
  const int64_t keep = std::min(live, heads * per_head);
  if (keep < live) {
    std::nth_element(entries.begin(), entries.begin() + keep, entries.end(), before);
  }
  std::vector<std::vector<int64_t>> kept(static_cast<size_t>(heads));
  for (int64_t i = 0; i < keep; ++i) kept[entries[i].head].push_back(entries[i].slot);
  for (auto& row : kept) std::sort(row.begin(), row.end());
  return kept;
}

}  // namespace policies
}  // namespace kvgrid
