#pragma once

// Pure HTTP helpers (DESIGN §1 edge/http): parsing and formatting of the header fields the
// blob routes need. No I/O; every function is safe on any input bytes.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::http {

/// At most this many ranges are honoured in one request (more: the Range is ignored).
inline constexpr std::size_t kMaxRanges = 16;

/// One byte-range-spec of RFC 9110 §14.1.1, as written by the client.
struct RangeSpec {
  enum class Kind { kFromTo, kFrom, kSuffix };
  Kind kind = Kind::kFromTo;
  std::uint64_t first = 0;   ///< kFromTo, kFrom
  std::uint64_t last = 0;    ///< kFromTo (inclusive)
  std::uint64_t suffix = 0;  ///< kSuffix: the last `suffix` bytes
};

/// A resolved range: bytes [first, first + length) of the representation.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t length = 0;
  friend bool operator==(const ByteRange&, const ByteRange&) = default;
};

/// A whole decimal number of 1-19 digits (no sign, no spaces: always fits in 64 bits), the
/// form of every number in a header or a query string. False for anything else.
bool parse_u64(std::string_view s, std::uint64_t& out);

/// Parses a Range field value. Returns nullopt when the field must be ignored: not the
/// `bytes` unit, a syntax error, an empty set, or more than kMaxRanges specs. RFC 9110
/// §14.2 lets a server ignore a Range it cannot parse; we do, and answer 200.
std::optional<std::vector<RangeSpec>> parse_range(std::string_view value);

/// Resolves specs against the representation's size: unsatisfiable specs are dropped,
/// `last` is clamped, and overlapping or adjacent ranges are coalesced (RFC 9110 §14.2
/// permits it; it also defeats many-small-overlapping-ranges amplification). The result
/// is sorted. Returns Errc::kRangeNotSatisfiable (-> 416) if no spec is satisfiable.
Result<std::vector<ByteRange>> resolve_ranges(const std::vector<RangeSpec>& specs,
                                              std::uint64_t size);

/// `"<tag>"`: a strong entity tag.
std::string format_etag(std::string_view tag);

/// True if an If-None-Match value matches the strong tag `etag` (already quoted): `*`, or
/// any listed tag, compared weakly as RFC 9110 §13.1.2 requires (W/ prefixes ignored).
bool if_none_match(std::string_view value, std::string_view etag);

/// True if an If-Range value permits a partial response for `etag` (quoted): only an exact
/// strong match does (RFC 9110 §13.1.5); an HTTP-date or a weak tag never matches here,
/// because content-addressed bytes have no useful Last-Modified.
bool if_range_matches(std::string_view value, std::string_view etag);

/// `bytes <first>-<last>/<size>`.
std::string format_content_range(const ByteRange& r, std::uint64_t size);
/// `bytes */<size>` (for 416).
std::string format_unsatisfied_range(std::uint64_t size);

/// A Content-Type from the file name's extension (case-insensitive); default
/// `application/octet-stream`.
std::string_view content_type_for(std::string_view file_name);

/// Splits a request target at '?': the path part only (query strings are ignored).
std::string_view path_of(std::string_view target);

/// Percent-decodes each '/'-separated segment of a request path once (RFC 3986 §2.1;
/// `+` stays `+`: form encoding is for query strings), keeping the separators, so that
/// `/v1/admin/apps/a/releases/1.0.3%2Bbuild.7` becomes `.../1.0.3+build.7` and `b%C3%AAta`
/// becomes `bêta`. Writes the decoded path to `out` and returns nullopt, or returns the
/// message of a 400 naming the segment (cut to a few dozen bytes) when a segment has a `%`
/// not followed by two hex digits, or decodes to a `/` (it would become two segments), a
/// NUL or another control character (below 0x20, or 0x7f), or to bytes that are not UTF-8.
/// Undecoded bytes are left as they are (names are validated after decoding).
std::optional<std::string> decode_path(std::string_view path, std::string& out);

/// The origin form (RFC 9112 §3.2.1) of a request target: an absolute-form target
/// (`http://host:port/path?q`, §3.2.2, which a server MUST accept) loses its scheme and
/// authority (`/path?q`; `/` when it has no path); any other target is returned as it is.
std::string_view origin_form(std::string_view target);

/// What the server's parser saw of a request's framing, for check_request_head().
struct RequestHead {
  unsigned version = 11;                            ///< 10 or 11
  std::string_view target;                          ///< as received
  std::vector<std::string_view> transfer_encoding;  ///< every Transfer-Encoding field line
  std::size_t host_fields = 0;                      ///< how many Host field lines
  bool content_length = false;                      ///< a Content-Length field is present
};

/// The framing rules a request must pass before its body may be read, beyond what the
/// parser enforces; nullopt if it passes, else a message for a 400 (after which the
/// connection MUST be closed: the end of the message is unknown):
///  * Transfer-Encoding, if present, is exactly `chunked` (RFC 9112 §6.3 rule 4: chunked
///    not final -> 400; we implement no other coding, so `gzip, chunked` is refused too),
///    is not combined with Content-Length (§6.1, a smuggling vector), and is not in an
///    HTTP/1.0 request (§6.1);
///  * exactly one Host in HTTP/1.1, at most one in HTTP/1.0 (§3.2);
///  * the target is origin form or absolute `http(s)://` form (`*` and authority form are
///    for OPTIONS and CONNECT, which no route takes).
/// Values quoted in the message are cut to a few dozen bytes.
std::optional<std::string> check_request_head(const RequestHead& head);

}  // namespace edge::http
