#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace edge {

/// Length of the longest well-formed UTF-8 sequence that starts `s` (RFC 3629: no overlong
/// forms, no surrogates, nothing above U+10FFFF); 0 if `s` starts with a bad byte.
std::size_t utf8_sequence_length(std::string_view s) noexcept;

/// True if every byte of `s` belongs to a well-formed UTF-8 sequence.
bool valid_utf8(std::string_view s) noexcept;

/// `s` cut to at most `max_bytes` without splitting a character, every byte that is not
/// part of a well-formed sequence replaced by '?'. The result is always valid UTF-8, so it
/// can be put in a JSON string that any strict parser accepts.
std::string utf8_clamp(std::string_view s, std::size_t max_bytes);

/// For error messages that quote client input: at most `max_bytes` of `s` (valid UTF-8,
/// as utf8_clamp), with "..." appended when something was cut.
std::string utf8_quote(std::string_view s, std::size_t max_bytes);

/// True for 1..`max` bytes of [A-Za-z0-9._-]: node ids, token names (what logs, keys and
/// URLs carry without escaping).
bool is_plain_name(std::string_view s, std::size_t max = 64) noexcept;

/// [A-Za-z0-9], whatever the C locale says (std::isalnum is a call through the locale).
constexpr bool ascii_alnum(char c) noexcept {
  const auto l = static_cast<unsigned char>(c | 0x20);
  return (c >= '0' && c <= '9') || (l >= 'a' && l <= 'z');
}

/// [0-9A-Fa-f], whatever the C locale says.
constexpr bool ascii_hex_digit(char c) noexcept {
  const auto l = static_cast<unsigned char>(c | 0x20);
  return (c >= '0' && c <= '9') || (l >= 'a' && l <= 'f');
}

/// `s` with A-Z lowered (device ids, hex digits); other bytes as they are.
std::string ascii_lower(std::string_view s);

}  // namespace edge
