#include "model/tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace kvgrid {
using namespace utf8;  // NOLINT: the tokenizer's own UTF-8 helpers (utf8.h)
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// GPT-2 byte <-> unicode mapping.

std::vector<int32_t> BytesToUnicode() {
  std::vector<int32_t> table(256, -1);
  int32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? b : next++;
  }
  return table;
}

// ---------------------------------------------------------------------------------------------
// Added tokens.

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

struct Segment {
  size_t start;
  size_t end;
  int32_t id;  // added token id, or -1 for text to process further
};

// Leftmost-longest matcher over a set of added tokens, with Hugging Face's lstrip / rstrip /
// single_word handling (tokenizers' AddedVocabulary::find_matches).
class AddedTokenMatcher {
 public:
  void Build(const std::vector<AddedToken>* tokens, bool normalized_set, bool nfc) {
    tokens_ = tokens;
    for (auto& bucket : by_first_byte_) bucket.clear();
    contents_.assign(tokens->size(), std::string());
    empty_ = true;
    for (size_t i = 0; i < tokens->size(); ++i) {
      const AddedToken& t = (*tokens)[i];
      if (t.normalized != normalized_set || t.content.empty()) continue;
      contents_[i] = (normalized_set && nfc) ? NfcOfValid(t.content) : t.content;
      if (contents_[i].empty()) continue;
      by_first_byte_[static_cast<unsigned char>(contents_[i][0])].push_back(i);
      empty_ = false;
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(), [this](size_t a, size_t b) {
        return contents_[a].size() > contents_[b].size();
      });
    }
  }

  // Splits `s` into plain-text segments (id -1) and added-token segments.
  void Split(std::string_view s, std::vector<Segment>* out) const {
    out->clear();
    if (s.empty()) return;
    if (empty_) {
      out->push_back({0, s.size(), -1});
      return;
    }
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      const auto& bucket = by_first_byte_[static_cast<unsigned char>(s[pos])];
      const AddedToken* hit = nullptr;
      size_t hit_len = 0;
      for (size_t idx : bucket) {
        const std::string& c = contents_[idx];
        if (c.size() <= s.size() - pos && std::memcmp(s.data() + pos, c.data(), c.size()) == 0) {
          hit = &(*tokens_)[idx];
          hit_len = c.size();
          break;
        }
      }
      if (hit == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + hit_len;
      if (hit->single_word) {
        bool start_space = true, stop_space = true;
        if (start > 0) {
          size_t b;
          start_space = !IsWordChar(PrevCodePoint(s, start, &b));
        }
        if (stop < s.size()) {
          size_t i = stop;
          stop_space = !IsWordChar(NextCodePoint(s, &i));
        }
        if (!start_space || !stop_space) {
          pos = stop;  // the underlying automaton resumes after the rejected match
          continue;
        }
      }
      if (hit->lstrip) {
        size_t new_start = start;
        while (new_start > start_offset) {
          size_t b;
          if (!IsWhitespace(PrevCodePoint(s, new_start, &b))) break;
          new_start = b;
        }
        start = std::max(new_start, start_offset);
      }
      if (hit->rstrip) {
        while (stop < s.size()) {
          size_t i = stop;
          if (!IsWhitespace(NextCodePoint(s, &i))) break;
          stop = i;
        }
      }
      if (start > start_offset) out->push_back({start_offset, start, -1});
      out->push_back({start, stop, hit->id});
      start_offset = stop;
      pos = stop;
    }
    if (start_offset < s.size()) out->push_back({start_offset, s.size(), -1});
  }

 private:
  const std::vector<AddedToken>* tokens_ = nullptr;
  std::vector<std::string> contents_;
  std::vector<size_t> by_first_byte_[256];
  bool empty_ = true;
};

// The GPT-2 pre-tokenizer regex. \s / \S are spelled out as Oniguruma's Unicode \s (the
// White_Space property), which Hugging Face tokenizers uses; PCRE2's UCP \s also takes U+180E.
constexpr char kWs[] = R"(\t\n\x0B\f\r\x{85}\p{Z})";
std::string Gpt2Pattern() {
  const std::string ws = kWs;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]+";
}

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct Pcre2MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string source;
  bool nfc = false;
  bool add_prefix_space = false;
  bool use_regex = true;
  bool byte_level_decoder = true;
  bool ignore_merges = false;

  absl::flat_hash_map<std::string, int32_t> vocab;  // model vocabulary (byte-level strings)
  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, int32_t> added_by_content;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized == false
  AddedTokenMatcher normalized_matcher;  // added tokens with normalized == true

  std::vector<std::string> id_to_token;  // "" where unused
  std::vector<bool> id_used;
  std::vector<std::string> id_to_bytes;  // decoded bytes of each id
  int32_t vocab_size = 0;
  int32_t eos_id = -1;

  int32_t byte_id[256];                  // id of each byte's byte-level character, or -1
  std::string byte_char[256];            // UTF-8 of each byte's byte-level character
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a,b) -> (rank, merged)

  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> regex;

  mutable std::mutex cache_mu;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache;
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  static constexpr size_t kMaxCachedWordBytes = 256;

  void Bpe(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  void PreTokenize(std::string_view piece, pcre2_match_data* md, std::vector<int32_t>* out) const;
};

void Tokenizer::Impl::Bpe(std::string_view word, std::vector<int32_t>* out) const {
  const size_t n = word.size();
  if (n == 0) return;
  if (ignore_merges) {
    std::string mapped;
    for (char c : word) mapped += byte_char[static_cast<unsigned char>(c)];
    auto it = vocab.find(mapped);
    if (it != vocab.end()) {
      out->push_back(it->second);
      return;
    }
  }
  struct Sym {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Sym> syms;
  syms.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = byte_id[static_cast<unsigned char>(word[i])];
    if (id < 0) continue;  // byte without a token: dropped, like tokenizers without unk_token
    const int32_t pos = static_cast<int32_t>(syms.size());
    syms.push_back({id, pos - 1, pos + 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  if (syms.size() == 1) {
    out->push_back(syms[0].id);
    return;
  }
  struct Cand {
    int32_t rank;
    int32_t pos;
    int32_t left;
    int32_t right;
    int32_t merged;
  };
  // Lowest rank first; among equal ranks, leftmost first (Hugging Face's Word::merge_all order).
  auto worse = [](const Cand& a, const Cand& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Cand> heap;
  heap.reserve(n);
  auto try_push = [&](int32_t pos) {
    const int32_t next = syms[pos].next;
    if (next < 0) return;
    auto it = merges.find(PairKey(syms[pos].id, syms[next].id));
    if (it == merges.end()) return;
    heap.push_back({it->second.first, pos, syms[pos].id, syms[next].id, it->second.second});
    std::push_heap(heap.begin(), heap.end(), worse);
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) try_push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    const Cand c = heap.back();
    heap.pop_back();
    Sym& l = syms[c.pos];
    if (l.id != c.left || l.next < 0) continue;
    Sym& r = syms[l.next];
    if (r.id != c.right) continue;
    // Merge r into l. Token strings only grow, so a stale candidate can never re-validate.
    l.id = c.merged;
    r.id = -1;
    l.next = r.next;
    if (l.next >= 0) syms[l.next].prev = c.pos;
    if (l.prev >= 0) try_push(l.prev);
    try_push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out->push_back(syms[i].id);
}

void Tokenizer::Impl::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.size() <= 1 || word.size() > kMaxCachedWordBytes) {
    Bpe(word, out);
    return;
  }
  const absl::string_view key(word.data(), word.size());
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  Bpe(word, out);
  std::vector<int32_t> ids(out->begin() + before, out->end());
  std::lock_guard<std::mutex> lock(cache_mu);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(std::string(word), std::move(ids));
}

void Tokenizer::Impl::PreTokenize(std::string_view piece, pcre2_match_data* md,
                                  std::vector<int32_t>* out) const {
  std::string prefixed;
  if (add_prefix_space && !piece.empty() && piece[0] != ' ') {
    prefixed = " ";
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!use_regex) {
    EncodeWord(piece, out);
    return;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  const size_t len = piece.size();
  size_t offset = 0;
  while (offset < len) {
    int rc = pcre2_match(regex.get(), subject, len, offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // JIT resource limit (e.g. its stack): retry with the interpreter, which uses the heap.
      rc = pcre2_match(regex.get(), subject, len, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc < 0) {  // no further match: the rest is one (unmatched) piece, as HF keeps it
      EncodeWord(piece.substr(offset), out);
      return;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start > offset) EncodeWord(piece.substr(offset, start - offset), out);
    if (end > start) {
      EncodeWord(piece.substr(start, end - start), out);
      offset = end;
    } else {
      // Empty match (not possible with the GPT-2 pattern): step over one character.
      size_t i = start;
      NextCodePoint(piece, &i);
      EncodeWord(piece.substr(start, i - start), out);
      offset = i;
    }
  }
}

namespace {

absl::Status Invalid(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer file '", source, "': ", what));
}

std::string TypeOf(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return j["type"].get<std::string>();
  }
  return j.is_null() ? "null" : j.dump();
}

// Decoded bytes of a token string under the ByteLevel decoder: every character mapped back to
// its byte, or the token's own UTF-8 bytes when any character is outside the byte alphabet.
std::string ByteLevelDecode(const std::string& token,
                            const absl::flat_hash_map<int32_t, unsigned char>& char_to_byte) {
  std::string out;
  size_t i = 0;
  while (i < token.size()) {
    const int32_t cp = NextCodePoint(token, &i);
    auto it = char_to_byte.find(cp);
    if (it == char_to_byte.end()) return token;
    out.push_back(static_cast<char>(it->second));
  }
  return out;
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open tokenizer file '", tokenizer_json_path,
                                            "': ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat("cannot read tokenizer file '", tokenizer_json_path, "'"));
  }
  return FromJsonString(ss.str(), tokenizer_json_path);
}

absl::StatusOr<Tokenizer> Tokenizer::FromJsonString(std::string_view json_text,
                                                    const std::string& source) {
  json doc = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Invalid(source, "not valid JSON");
  if (!doc.is_object()) return Invalid(source, "top level is not a JSON object");
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  try {
    // model
    if (!doc.contains("model") || !doc["model"].is_object()) {
      return Invalid(source, "missing object 'model'");
    }
    const json& model = doc["model"];
    if (model.contains("type") && !(model["type"].is_string() && model["type"] == "BPE")) {
      return Invalid(source, absl::StrCat("unsupported model.type ", model["type"].dump(),
                                          " (only BPE)"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null() &&
          !(model[key].is_string() && model[key].get<std::string>().empty())) {
        return Invalid(source, absl::StrCat("unsupported model.", key, " ", model[key].dump()));
      }
    }
    if (model.contains("dropout") && model["dropout"].is_number() &&
        model["dropout"].get<double>() > 0) {
      return Invalid(source, "unsupported model.dropout (BPE dropout)");
    }
    if (model.contains("ignore_merges") && model["ignore_merges"].is_boolean()) {
      impl->ignore_merges = model["ignore_merges"].get<bool>();
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return Invalid(source, "missing object 'model.vocab'");
    }
    if (!model.contains("merges") || !model["merges"].is_array()) {
      return Invalid(source, "missing array 'model.merges'");
    }
    int32_t max_id = -1;
    impl->vocab.reserve(model["vocab"].size());
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
          it.value().get<int64_t>() > (1 << 30)) {
        return Invalid(source, absl::StrCat("model.vocab[\"", it.key(), "\"] is not a valid id: ",
                                            it.value().dump()));
      }
      const int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
      impl->vocab[it.key()] = id;
      max_id = std::max(max_id, id);
    }

    // added tokens
    if (doc.contains("added_tokens") && !doc["added_tokens"].is_null()) {
      if (!doc["added_tokens"].is_array()) return Invalid(source, "'added_tokens' is not an array");
      size_t index = 0;
      for (const json& t : doc["added_tokens"]) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
            !t.contains("content") || !t["content"].is_string()) {
          return Invalid(source, absl::StrCat("added_tokens[", index, "] lacks an integer 'id' ",
                                              "or a string 'content'"));
        }
        AddedToken a;
        a.id = static_cast<int32_t>(t["id"].get<int64_t>());
        if (a.id < 0 || a.id > (1 << 30)) {
          return Invalid(source, absl::StrCat("added_tokens[", index, "].id out of range"));
        }
        a.content = t["content"].get<std::string>();
        if (!IsValidUtf8(a.content)) {
          return Invalid(source, absl::StrCat("added_tokens[", index, "].content is not UTF-8"));
        }
        a.special = t.value("special", false);
        // tokenizers' default: special tokens are not normalized, others are.
        a.normalized = t.value("normalized", !a.special);
        a.lstrip = t.value("lstrip", false);
        a.rstrip = t.value("rstrip", false);
        a.single_word = t.value("single_word", false);
        impl->added_by_content[a.content] = a.id;
        max_id = std::max(max_id, a.id);
        impl->added.push_back(std::move(a));
        ++index;
      }
    }

    // normalizer
    const json normalizer = doc.value("normalizer", json());
    if (normalizer.is_null()) {
      impl->nfc = false;
    } else if (TypeOf(normalizer) == "NFC") {
      impl->nfc = true;
    } else if (TypeOf(normalizer) == "Sequence" && normalizer.contains("normalizers") &&
               normalizer["normalizers"].is_array() &&
               std::all_of(normalizer["normalizers"].begin(), normalizer["normalizers"].end(),
                           [](const json& n) { return TypeOf(n) == "NFC"; })) {
      impl->nfc = !normalizer["normalizers"].empty();
    } else {
      return Invalid(source, absl::StrCat("unsupported normalizer ", TypeOf(normalizer),
                                          " (only NFC or none)"));
    }

    // pre-tokenizer
    const json pre = doc.value("pre_tokenizer", json());
    if (TypeOf(pre) != "ByteLevel") {
      return Invalid(source,
                     absl::StrCat("unsupported pre_tokenizer ", TypeOf(pre), " (only ByteLevel)"));
    }
    impl->add_prefix_space = pre.value("add_prefix_space", false);
    impl->use_regex = pre.value("use_regex", true);

    // decoder
    const json decoder = doc.value("decoder", json());
    if (!decoder.is_null() && TypeOf(decoder) != "ByteLevel") {
      return Invalid(source,
                     absl::StrCat("unsupported decoder ", TypeOf(decoder), " (only ByteLevel)"));
    }
    impl->byte_level_decoder = !decoder.is_null();

    // byte alphabet
    const std::vector<int32_t> b2u = BytesToUnicode();
    absl::flat_hash_map<int32_t, unsigned char> char_to_byte;
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      AppendUtf8(b2u[b], &ch);
      impl->byte_char[b] = ch;
      char_to_byte[b2u[b]] = static_cast<unsigned char>(b);
      // GPT-NeoX lacks the bytes that never occur in UTF-8 (C0, C1, F5..FF); as in tokenizers'
      // BPE without unk_token, such characters would produce no token (they cannot occur here,
      // since Encode repairs invalid UTF-8 first).
      auto it = impl->vocab.find(ch);
      impl->byte_id[b] = it == impl->vocab.end() ? -1 : it->second;
    }

    // merges
    const json& merges = model["merges"];
    impl->merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() ||
            s.find(' ', sp + 1) != std::string::npos) {
          return Invalid(source, absl::StrCat("model.merges[", rank, "] \"", s,
                                              "\" is not two tokens separated by a space"));
        }
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return Invalid(source, absl::StrCat("model.merges[", rank, "] is malformed: ", m.dump()));
      }
      auto ia = impl->vocab.find(a);
      auto ib = impl->vocab.find(b);
      auto im = impl->vocab.find(a + b);
      if (ia == impl->vocab.end() || ib == impl->vocab.end() || im == impl->vocab.end()) {
        return Invalid(source, absl::StrCat("model.merges[", rank, "] \"", a, " ", b,
                                            "\" uses a token missing from model.vocab"));
      }
      // The first (lowest-rank) occurrence of a pair wins.
      impl->merges.try_emplace(PairKey(ia->second, ib->second),
                               static_cast<int32_t>(rank), im->second);
    }

    // id tables
    impl->vocab_size = max_id + 1;
    impl->id_to_token.assign(impl->vocab_size, std::string());
    impl->id_used.assign(impl->vocab_size, false);
    for (const auto& [tok, id] : impl->vocab) {
      impl->id_to_token[id] = tok;
      impl->id_used[id] = true;
    }
    for (const AddedToken& a : impl->added) {  // added tokens take precedence, as in tokenizers
      impl->id_to_token[a.id] = a.content;
      impl->id_used[a.id] = true;
    }
    impl->id_to_bytes.assign(impl->vocab_size, std::string());
    for (int32_t id = 0; id < impl->vocab_size; ++id) {
      if (!impl->id_used[id]) continue;
      impl->id_to_bytes[id] = impl->byte_level_decoder
                                  ? ByteLevelDecode(impl->id_to_token[id], char_to_byte)
                                  : impl->id_to_token[id];
    }
    auto eos_added = impl->added_by_content.find("<|endoftext|>");
    if (eos_added != impl->added_by_content.end()) {
      impl->eos_id = eos_added->second;
    } else if (auto eos = impl->vocab.find("<|endoftext|>"); eos != impl->vocab.end()) {
      impl->eos_id = eos->second;
    }
  } catch (const json::exception& e) {
    return Invalid(source, absl::StrCat("malformed field: ", e.what()));
  }

  impl->raw_matcher.Build(&impl->added, /*normalized_set=*/false, impl->nfc);
  impl->normalized_matcher.Build(&impl->added, /*normalized_set=*/true, impl->nfc);

  // Regex.
  int errcode = 0;
  PCRE2_SIZE erroffset = 0;
  const std::string pattern = Gpt2Pattern();
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &errcode, &erroffset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(errcode, msg, sizeof(msg));
    return absl::InternalError(absl::StrCat("pre-tokenizer regex does not compile at offset ",
                                            erroffset, ": ", reinterpret_cast<char*>(msg)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  impl->regex.reset(code);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  const Impl& im = *impl_;
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = RepairUtf8(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  if (text.empty()) return out;
  out.reserve(text.size() / 4 + 8);
  std::unique_ptr<pcre2_match_data, Pcre2MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(im.regex.get(), nullptr));
  std::vector<Segment> raw_segments, norm_segments;
  im.raw_matcher.Split(text, &raw_segments);
  for (const Segment& seg : raw_segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    const std::string_view piece = text.substr(seg.start, seg.end - seg.start);
    std::string normalized_storage;
    std::string_view normalized = piece;
    if (im.nfc && !IsAscii(piece)) {
      normalized_storage = NfcOfValid(piece);
      normalized = normalized_storage;
    }
    im.normalized_matcher.Split(normalized, &norm_segments);
    for (const Segment& s2 : norm_segments) {
      if (s2.id >= 0) {
        out.push_back(s2.id);
      } else {
        im.PreTokenize(normalized.substr(s2.start, s2.end - s2.start), md.get(), &out);
      }
    }
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::DecodeBytes(const std::vector<int32_t>& ids) const {
  const Impl& im = *impl_;
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= im.vocab_size || !im.id_used[id]) {
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " (position ", i, ") is out of vocabulary: ",
                       "tokenizer '", im.source, "' has ids 0..", im.vocab_size - 1));
    }
    out += im.id_to_bytes[id];
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  auto bytes = DecodeBytes(ids);
  if (!bytes.ok()) return bytes.status();
  return RepairUtf8(*bytes);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  const absl::string_view key(token.data(), token.size());
  if (auto it = impl_->added_by_content.find(key); it != impl_->added_by_content.end()) {
    return it->second;
  }
  if (auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size || !impl_->id_used[id]) return std::nullopt;
  return impl_->id_to_token[id];
}

int32_t Tokenizer::eos_id() const { return impl_->eos_id; }

}  // namespace kvgrid
