// Range, If-None-Match, If-Range and Accept-Encoding values come straight from clients.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "edge/http/encoding.hpp"
#include "edge/http/http.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto specs = edge::http::parse_range(text)) {
    for (std::uint64_t n : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{1} << 40}) {
      if (auto r = edge::http::resolve_ranges(*specs, n)) {
        for (const auto& br : *r) {
          if (br.length == 0 || br.first + br.length > n)
            __builtin_trap();
        }
      }
    }
  }
  (void)edge::http::if_none_match(text, "\"x\"");
  (void)edge::http::if_range_matches(text, "\"x\"");
  (void)edge::http::content_type_for(text);
  // Accept-Encoding values pick the coding of JSON answers.
  (void)edge::http::accepts_gzip(text);
  if (size <= 4096 && !edge::http::gzip(text, 1))
    __builtin_trap();
  // Request targets and framing fields (issue #9 item 3).
  const std::string_view target = edge::http::origin_form(text);
  if (target.size() > text.size())
    __builtin_trap();
  edge::http::RequestHead head;
  head.target = text;
  head.transfer_encoding.push_back(text);
  head.host_fields = size % 3;
  head.version = size % 2 ? 11 : 10;
  if (auto bad = edge::http::check_request_head(head); bad && bad->empty())
    __builtin_trap();
  // Admin path segments: decoded once; what comes out is never longer, has as many
  // segments, and has no NUL or other control byte, and no '/' that was not a separator.
  std::string decoded;
  if (auto bad = edge::http::decode_path(text, decoded)) {
    if (bad->empty() || bad->size() > 200)
      __builtin_trap();
  } else {
    if (decoded.size() > text.size())
      __builtin_trap();
    if (std::count(decoded.begin(), decoded.end(), '/') !=
        std::count(text.begin(), text.end(), '/'))
      __builtin_trap();
    for (const char c : decoded) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f)
        __builtin_trap();
    }
  }
  return 0;
}
