// "Did you mean" hints for misspelt grid keys and values: the closest known word by edit
// distance (or the one a word is a prefix of), and the list of known words.
#pragma once

#include <string>
#include <vector>

namespace kvgrid {

// Levenshtein distance.
int EditDistance(const std::string& a, const std::string& b);
// The choice `word` is a prefix of (3+ characters), else the nearest within edit distance 2,
// else "".
std::string Suggest(const std::string& word, const std::vector<std::string>& choices);
// "did you mean 'X'? known: a, b, c" (or just "known: ...").
std::string KnownHint(const std::string& word, const std::vector<std::string>& choices);

}  // namespace kvgrid
