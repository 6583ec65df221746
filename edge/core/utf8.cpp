#include "edge/core/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace edge {

std::size_t utf8_sequence_length(std::string_view s) noexcept {
  if (s.empty())
    return 0;
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80)
    return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0)
      lo = 0xa0;  // overlong
    if (c == 0xed)
      hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0)
      lo = 0x90;  // overlong
    if (c == 0xf4)
      hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n)
    return 0;
  if (b(1) < lo || b(1) > hi)
    return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xbf)
      return 0;
  }
  return n;
}

bool valid_utf8(std::string_view s) noexcept {
  while (!s.empty()) {
    // ASCII, 8 bytes at a time (device ids, versions, names: nearly every byte checked).
    if (s.size() >= 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, s.data(), 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        s.remove_prefix(8);
        continue;
      }
    }
    if (static_cast<unsigned char>(s[0]) < 0x80) {  // the tail of short ASCII strings
      s.remove_prefix(1);
      continue;
    }
    const std::size_t n = utf8_sequence_length(s);
    if (n == 0)
      return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string utf8_clamp(std::string_view s, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  while (!s.empty()) {
    std::size_t n = utf8_sequence_length(s);
    const bool bad = n == 0;
    if (bad)
      n = 1;
    if (out.size() + n > max_bytes)
      break;
    if (bad) {
      out += '?';
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

std::string utf8_quote(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes && valid_utf8(s))
    return std::string(s);
  std::string out = utf8_clamp(s, max_bytes);
  if (s.size() > max_bytes)
    out += "...";
  return out;
}

bool is_plain_name(std::string_view s, std::size_t max) noexcept {
  if (s.empty() || s.size() > max)
    return false;
  for (const char c : s) {
    if (!(ascii_alnum(c) || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace edge
