#pragma once

// Content codings (RFC 9110 §8.4, §12.5.3): which one a client accepts, and gzip itself.
// Pure functions; safe on any input bytes.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace edge::http {

/// JSON answers below this many bytes stay identity: with the header they fit one packet
/// either way, so gzip would cost a deflate stream and save nothing (README, Benchmarks:
/// "JSON gzip"). Most device answers are under it; one with a manifest of five files is not.
inline constexpr std::size_t kGzipMinBytes = 1024;
/// zlib level of JSON answers: 1, as nginx's default. Level 6 makes a 10k-file manifest
/// answer 6% smaller for 3x the CPU (11 vs 30 ms on the event loop per compression).
inline constexpr int kGzipLevel = 1;

/// True if an Accept-Encoding field value accepts `gzip` (or `x-gzip`, or `*` when gzip is
/// not listed) with a q-value above 0. Codings are case-insensitive; malformed members are
/// skipped; an absent or empty field accepts identity only (RFC 9110 §12.5.3).
bool accepts_gzip(std::string_view accept_encoding);

/// `in` as one gzip member (RFC 1952) at zlib `level` (1-9); nullopt only if zlib fails
/// (out of memory).
std::optional<std::string> gzip(std::string_view in, int level);

}  // namespace edge::http
