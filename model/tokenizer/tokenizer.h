// GPT-NeoX byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (no torch).
//
// Pipeline, as Hugging Face tokenizers runs it for this tokenizer:
//   1. split the text on added tokens whose `normalized` is false (e.g. <|endoftext|>),
//   2. NFC-normalise the remaining pieces, then split them on `normalized` added tokens
//      (GPT-NeoX's whitespace runs 50254-50276),
//   3. pre-tokenise with the GPT-2 regex, map bytes to the byte-level alphabet,
//   4. BPE merges by rank.
// Decode maps ids to tokens and undoes the byte-level mapping (invalid UTF-8 in the result is
// replaced by U+FFFD, like Rust's String::from_utf8_lossy). Invalid UTF-8 input to Encode is
// first repaired the same way (Hugging Face only accepts valid strings).
//
// A Tokenizer is cheap to copy (shared immutable state plus a shared, locked word cache) and
// Encode/Decode are safe to call from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvgrid {

class Tokenizer {
 public:
  // Loads a tokenizer.json. Errors name the file: unreadable, not JSON, missing or malformed
  // model.vocab / model.merges, unsupported model/normalizer/pre-tokenizer/decoder type.
  static absl::StatusOr<Tokenizer> FromFile(const std::string& tokenizer_json_path);
  // Same from the JSON text; `source` names it in errors.
  static absl::StatusOr<Tokenizer> FromJsonString(std::string_view json_text,
                                                  const std::string& source);

  // Token ids of `text`; no special tokens are added (Pythia adds no BOS).
  std::vector<int32_t> Encode(std::string_view text) const;

  // Text of `ids`; the error names the first id outside [0, vocab_size()).
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of `ids` (no U+FFFD repair): for streaming, where a character may span ids.
  absl::StatusOr<std::string> DecodeBytes(const std::vector<int32_t>& ids) const;

  // Number of ids, added tokens included (50277 for GPT-NeoX-20B).
  int32_t vocab_size() const;
  // Id of a token as written in tokenizer.json (byte-level form, e.g. "Ġthe"), or of an added
  // token's content.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of `id` (byte-level form), or nullopt when out of range / unused.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Id of "<|endoftext|>" (0 for Pythia); -1 if the vocabulary has none.
  int32_t eos_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Replaces each maximal invalid UTF-8 subsequence by U+FFFD (as from_utf8_lossy / Python's
// errors="replace" do). Valid input is returned unchanged.
std::string RepairUtf8(std::string_view bytes);
// Unicode NFC of `text` (invalid UTF-8 is repaired first), with utf8proc.
std::string NormalizeNfc(std::string_view text);

}  // namespace kvgrid
