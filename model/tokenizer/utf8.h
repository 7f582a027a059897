// UTF-8 for the tokenizer: sequence validation (Unicode's maximal-subpart rule), code point
// iteration, the pre-tokenizer's character classes, NFC through utf8proc, and repair of invalid
// bytes. Public: RepairUtf8 and NormalizeNfc (tokenizer.h); the rest serves tokenizer.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvgrid::utf8 {

// Length of the valid UTF-8 sequence starting at p[0] (1..4), or, when invalid, minus the length
// of its maximal invalid subpart (-1..-3), following the Unicode "maximal subpart" practice.
int Utf8Sequence(const unsigned char* p, size_t n);

bool IsValidUtf8(std::string_view s);

bool IsAscii(std::string_view s);

// Decodes the code point at s[i] (s must be valid UTF-8); advances i.
int32_t NextCodePoint(std::string_view s, size_t* i);

// Code point ending at s[end) (valid UTF-8).
int32_t PrevCodePoint(std::string_view s, size_t end, size_t* start);

void AppendUtf8(int32_t cp, std::string* out);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(int32_t cp);

// Word character as the `regex` crate defines \w (used by single_word added tokens).
bool IsWordChar(int32_t cp);

// NFC of valid UTF-8.
std::string NfcOfValid(std::string_view text);

}  // namespace kvgrid::utf8
