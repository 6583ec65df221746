#include "edge/http/http.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

#include "edge/core/sha256.hpp"
#include "edge/core/utf8.hpp"

namespace edge::http {
namespace {

constexpr std::string_view kWhitespace = " \t";

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kWhitespace);
  if (b == std::string_view::npos)
    return {};
  const auto e = s.find_last_not_of(kWhitespace);
  return s.substr(b, e - b + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Calls f(item) for each non-empty item of a comma-separated list (RFC 9110 §5.6.1:
// entity tags, transfer codings), trimmed.
template <class F>
void for_each_item(std::string_view list, F&& f) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto item = trim(list.substr(0, comma));
    if (!item.empty())
      f(item);
    if (comma == std::string_view::npos)
      break;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19)
    return false;  // 19 digits always fit; more is abuse
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::optional<std::vector<RangeSpec>> parse_range(std::string_view value) {
  value = trim(value);
  const auto eq = value.find('=');
  if (eq == std::string_view::npos || !iequals(trim(value.substr(0, eq)), "bytes")) {
    return std::nullopt;
  }
  std::vector<RangeSpec> specs;
  std::string_view list = value.substr(eq + 1);
  while (true) {
    const auto comma = list.find(',');
    const auto item = trim(list.substr(0, comma));
    if (!item.empty()) {  // RFC 9110 §5.6.1: empty list elements are allowed and ignored
      if (specs.size() == kMaxRanges)
        return std::nullopt;
      const auto dash = item.find('-');
      if (dash == std::string_view::npos)
        return std::nullopt;
      const auto a = item.substr(0, dash);
      const auto b = item.substr(dash + 1);
      RangeSpec s;
      if (a.empty()) {
        if (!parse_u64(b, s.suffix))
          return std::nullopt;
        s.kind = RangeSpec::Kind::kSuffix;
      } else if (b.empty()) {
        if (!parse_u64(a, s.first))
          return std::nullopt;
        s.kind = RangeSpec::Kind::kFrom;
      } else {
        if (!parse_u64(a, s.first) || !parse_u64(b, s.last) || s.last < s.first) {
          return std::nullopt;
        }
        s.kind = RangeSpec::Kind::kFromTo;
      }
      specs.push_back(s);
    }
    if (comma == std::string_view::npos)
      break;
    list.remove_prefix(comma + 1);
  }
  if (specs.empty())
    return std::nullopt;
  return specs;
}

Result<std::vector<ByteRange>> resolve_ranges(const std::vector<RangeSpec>& specs,
                                              std::uint64_t size) {
  std::vector<ByteRange> out;
  for (const auto& s : specs) {
    switch (s.kind) {
      case RangeSpec::Kind::kFromTo:
        if (s.first < size)
          out.push_back({s.first, std::min(s.last, size - 1) - s.first + 1});
        break;
      case RangeSpec::Kind::kFrom:
        if (s.first < size)
          out.push_back({s.first, size - s.first});
        break;
      case RangeSpec::Kind::kSuffix:
        // A suffix of zero bytes is unsatisfiable; a longer one than the entity is all of it.
        if (s.suffix > 0 && size > 0) {
          const std::uint64_t n = std::min(s.suffix, size);
          out.push_back({size - n, n});
        }
        break;
    }
  }
  if (out.empty())
    return Errc::kRangeNotSatisfiable;
  std::sort(out.begin(), out.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.first < b.first; });
  std::size_t w = 0;
  for (std::size_t i = 1; i < out.size(); ++i) {
    ByteRange& last = out[w];
    if (out[i].first <= last.first + last.length) {
      last.length = std::max(last.first + last.length, out[i].first + out[i].length) - last.first;
    } else {
      out[++w] = out[i];
    }
  }
  out.resize(w + 1);
  return out;
}

std::string format_etag(std::string_view tag) {
  std::string out;
  out.reserve(tag.size() + 2);
  out += '"';
  out += tag;
  out += '"';
  return out;
}

bool if_none_match(std::string_view value, std::string_view etag) {
  bool match = false;
  if (trim(value) == "*")
    return true;
  for_each_item(value, [&](std::string_view tag) {
    if (tag.starts_with("W/"))
      tag.remove_prefix(2);
    if (tag == etag)
      match = true;
  });
  return match;
}

bool if_range_matches(std::string_view value, std::string_view etag) {
  return trim(value) == etag;
}

std::string format_content_range(const ByteRange& r, std::uint64_t size) {
  return "bytes " + std::to_string(r.first) + "-" + std::to_string(r.first + r.length - 1) + "/" +
         std::to_string(size);
}

std::string format_unsatisfied_range(std::uint64_t size) {
  return "bytes */" + std::to_string(size);
}

std::string_view content_type_for(std::string_view file_name) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 22> kTypes = {{
      {"zip", "application/zip"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"json", "application/json"},
      {"map", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"woff", "font/woff"},
      {"woff2", "font/woff2"},
      {"ttf", "font/ttf"},
      {"wasm", "application/wasm"},
      {"br", "application/octet-stream"},
      {"gz", "application/gzip"},
  }};
  const auto slash = file_name.find_last_of('/');
  if (slash != std::string_view::npos)
    file_name.remove_prefix(slash + 1);
  const auto dot = file_name.find_last_of('.');
  if (dot == std::string_view::npos || dot + 1 == file_name.size()) {
    return "application/octet-stream";
  }
  const auto ext = file_name.substr(dot + 1);
  for (const auto& [e, type] : kTypes) {
    if (iequals(e, ext))
      return type;
  }
  return "application/octet-stream";
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

namespace {

// The segment as received, for an error message: printable, cut.
std::string shown_segment(std::string_view segment) {
  std::string out;
  for (const char c : segment.substr(0, 60)) {
    const auto u = static_cast<unsigned char>(c);
    out += u < 0x20 || u >= 0x7f ? '?' : c;
  }
  if (segment.size() > 60)
    out += "...";
  return out;
}

}  // namespace

std::optional<std::string> decode_path(std::string_view path, std::string& out) {
  out.clear();
  out.reserve(path.size());
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    const std::string_view segment = path.substr(start, end - start);
    const std::size_t first = out.size();
    for (std::size_t i = 0; i < segment.size(); ++i) {
      if (segment[i] != '%') {
        out += segment[i];
        continue;
      }
      const int hi = i + 2 < segment.size() ? hex_value(segment[i + 1]) : -1;
      const int lo = hi >= 0 ? hex_value(segment[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return "path segment '" + shown_segment(segment) +
               "': '%' must be followed by two hex digits";
      }
      const char c = static_cast<char>(hi * 16 + lo);
      if (c == '/')
        return "path segment '" + shown_segment(segment) + "' decodes to a '/' (%2F)";
      out += c;
      i += 2;
    }
    const std::string_view decoded = std::string_view(out).substr(first);
    for (const char c : decoded) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) {
        return "path segment '" + shown_segment(segment) +
               "' decodes to a control character (NUL, CR, LF, ...)";
      }
    }
    if (decoded.size() != segment.size() && !valid_utf8(decoded))
      return "path segment '" + shown_segment(segment) + "' does not decode to UTF-8";
    if (slash == std::string_view::npos)
      break;
    out += '/';
    start = slash + 1;
  }
  return std::nullopt;
}

namespace {

std::size_t scheme_length(std::string_view target) {
  if (iequals(target.substr(0, 7), "http://"))
    return 7;
  if (iequals(target.substr(0, 8), "https://"))
    return 8;
  return 0;
}

}  // namespace

std::string_view origin_form(std::string_view target) {
  const std::size_t scheme = scheme_length(target);
  if (scheme == 0)
    return target;
  const std::string_view rest = target.substr(scheme);
  const std::size_t end = rest.find_first_of("/?#");
  if (end == std::string_view::npos || rest[end] != '/')
    return "/";
  return rest.substr(end);
}

std::optional<std::string> check_request_head(const RequestHead& head) {
  const auto quoted = [](std::string_view v) {
    std::string out(v.substr(0, 40));
    for (char& c : out) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
        c = '?';
    }
    return "'" + out + (v.size() > 40 ? "...'" : "'");
  };
  if (!head.transfer_encoding.empty()) {
    if (head.version < 11)
      return std::string("Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (head.content_length)
      return std::string("a request may not carry both Transfer-Encoding and Content-Length");
    std::size_t codings = 0;
    std::string_view refused;  // the first coding not taken
    for (const std::string_view line : head.transfer_encoding) {
      for_each_item(line, [&](std::string_view item) {
        if ((++codings > 1 || !iequals(item, "chunked")) && refused.empty())
          refused = item;
      });
    }
    if (!refused.empty()) {
      return "Transfer-Encoding " + quoted(refused) +
             " is not supported: the only coding taken is 'chunked', alone";
    }
    if (codings == 0)
      return std::string("Transfer-Encoding is empty");
  }
  if (head.host_fields > 1)
    return std::string("more than one Host header field");
  if (head.host_fields == 0 && head.version >= 11)
    return std::string("an HTTP/1.1 request needs a Host header field");
  const std::string_view t = head.target;
  if (t.empty() || (t.front() != '/' && scheme_length(t) == 0))
    return "request target " + quoted(t) + " is neither a path nor an http(s) URL";
  return std::nullopt;
}

}  // namespace edge::http
