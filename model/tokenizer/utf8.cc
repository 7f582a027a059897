#include "model/tokenizer/utf8.h"

#include <utf8proc.h>

#include <cstdlib>
#include <cstring>

#include "model/tokenizer/tokenizer.h"

namespace kvgrid {
namespace utf8 {

// Length of the valid UTF-8 sequence starting at p[0] (1..4), or, when invalid, minus the length
// of its maximal invalid subpart (-1..-3), following the Unicode "maximal subpart" practice.
int Utf8Sequence(const unsigned char* p, size_t n) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < len; ++i) {
    if (static_cast<size_t>(i) >= n) return -i;
    const unsigned char b = p[i];
    const unsigned char l = (i == 1) ? lo : 0x80;
    const unsigned char h = (i == 1) ? hi : 0xBF;
    if (b < l || b > h) return -i;
  }
  return len;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const int len = Utf8Sequence(p + i, n - i);
    if (len < 0) return false;
    i += len;
  }
  return true;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Decodes the code point at s[i] (s must be valid UTF-8); advances i.
int32_t NextCodePoint(std::string_view s, size_t* i) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t len = utf8proc_iterate(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data() + *i), s.size() - *i, &cp);
  *i += len > 0 ? len : 1;
  return len > 0 ? cp : 0xFFFD;
}

// Code point ending at s[end) (valid UTF-8).
int32_t PrevCodePoint(std::string_view s, size_t end, size_t* start) {
  size_t b = end;
  while (b > 0) {
    --b;
    if ((static_cast<unsigned char>(s[b]) & 0xC0) != 0x80) break;
  }
  *start = b;
  size_t i = b;
  return NextCodePoint(s.substr(0, end), &i);
}

void AppendUtf8(int32_t cp, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t len = utf8proc_encode_char(cp, buf);
  out->append(reinterpret_cast<const char*>(buf), len);
}

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(int32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  if (cp == 0x20 || cp == 0x85) return true;
  if (cp < 0x80) return false;
  const utf8proc_category_t cat = utf8proc_category(cp);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// Word character as the `regex` crate defines \w (used by single_word added tokens).
bool IsWordChar(int32_t cp) {
  if (cp < 0x80) return std::isalnum(cp) != 0 || cp == '_';
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// NFC of valid UTF-8.
std::string NfcOfValid(std::string_view text) {
  if (IsAscii(text)) return std::string(text);
  utf8proc_uint8_t* dst = nullptr;
  const utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &dst,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0) {  // cannot happen for valid UTF-8 short of memory exhaustion
    std::free(dst);
    return std::string(text);
  }
  std::string out(reinterpret_cast<const char*>(dst), static_cast<size_t>(len));
  std::free(dst);
  return out;
}

}  // namespace utf8

using utf8::IsValidUtf8;
using utf8::NfcOfValid;
using utf8::Utf8Sequence;

std::string RepairUtf8(std::string_view bytes) {
  if (IsValidUtf8(bytes)) return std::string(bytes);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n + 16);
  size_t i = 0;
  while (i < n) {
    const int len = Utf8Sequence(p + i, n - i);
    if (len > 0) {
      out.append(bytes.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += -len;
    }
  }
  return out;
}

std::string NormalizeNfc(std::string_view text) {
  if (IsValidUtf8(text)) return NfcOfValid(text);
  return NfcOfValid(RepairUtf8(text));
}

}  // namespace kvgrid
