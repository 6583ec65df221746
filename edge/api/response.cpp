#include "edge/api/response.hpp"

#include <array>
#include <charconv>
#include <cstdio>

#include "edge/core/errc.hpp"
#include "edge/core/utf8.hpp"
#include "edge/http/encoding.hpp"

namespace edge::api {

std::string_view route_name(Route r) {
  switch (r) {
    case Route::kBlob: return "blob";
    case Route::kChunk: return "chunk";
    case Route::kRecipe: return "recipe";
    case Route::kHealth: return "healthz";
    case Route::kReady: return "readyz";
    case Route::kMetrics: return "metrics";
    case Route::kUpload: return "admin_blob_upload";
    case Route::kUpdates: return "updates";
    case Route::kChannelSelf: return "channel_self";
    case Route::kStats: return "stats";
    case Route::kAdmin: return "admin_control";
    case Route::kSync: return "sync";
    case Route::kCheckins: return "checkins";
    case Route::kOther:
    case Route::kCount: break;
  }
  return "other";
}

std::string_view Response::header(std::string_view name) const {
  for (std::size_t at = 0; at < headers.size();) {
    const std::size_t end = headers.find("\r\n", at);
    const std::string_view line(headers.data() + at,
                                (end == std::string::npos ? headers.size() : end) - at);
    if (line.size() > name.size() + 1 && line.starts_with(name) && line[name.size()] == ':')
      return line.substr(name.size() + 2);
    if (end == std::string::npos)
      break;
    at = end + 2;
  }
  return {};
}

Response method_not_allowed(std::string_view allow, Route route) {
  Response r = error_response(405, "method_not_allowed", "allowed: " + std::string(allow), route);
  r.set("Allow", allow);
  return r;
}

void encode_json(Response& r, bool client_accepts_gzip) {
  if (!r.parts.empty() || r.stream || r.later || r.status == 304 || r.status == 204 ||
      !r.header("Content-Type").starts_with("application/json")) {
    return;
  }
  r.set("Vary", "Accept-Encoding");
  if (!client_accepts_gzip || r.body.size() < http::kGzipMinBytes)
    return;
  if (r.gzip_body) {
    r.body = *r.gzip_body;
  } else if (auto z = http::gzip(r.body, http::kGzipLevel)) {
    r.body = std::move(*z);
  } else {
    return;  // zlib out of memory: identity is always acceptable
  }
  r.gzip_body.reset();
  r.set("Content-Encoding", "gzip");
}

std::uint64_t change_seq_of(const Response& r) {
  const std::string_view v = r.header("X-Change-Seq");
  std::uint64_t seq = 0;
  (void)std::from_chars(v.data(), v.data() + v.size(), seq);
  return seq;
}

std::uint64_t Response::content_length() const {
  if (stream)
    return stream_length;
  std::uint64_t n = body.size();
  for (const auto& p : parts) {
    n += p.prefix.size();
    for (const auto& piece : p.pieces)
      n += piece.length;
  }
  return n;
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  append_json_escaped(out, s);
  return out;
}

void append_json_escaped(std::string& out, std::string_view s) {
  // Runs of bytes that need no escape (nearly all of them) are appended whole: byte-wise
  // appends were the single largest user-space cost of an /updates answer.
  static constexpr auto kEscape = [] {
    std::array<bool, 256> t{};
    for (unsigned c = 0; c < 0x20; ++c)
      t[c] = true;
    t['"'] = t['\\'] = true;
    return t;
  }();
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!kEscape[c])
      continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
}

Response make_json_response(unsigned status, std::string body, Route route) {
  Response r;
  r.status = status;
  r.route = route;
  r.set("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

Response error_response(unsigned status, std::string_view code, std::string_view message,
                        Route route) {
  // Messages quote client input (a bad field's value): cap what comes back, and keep it
  // valid UTF-8, whatever the input was.
  JsonObjectWriter body;
  body.string("error", code).string("message", utf8_quote(message, kMaxErrorMessageBytes));
  return make_json_response(status, std::move(body).finish(), route);
}

Response store_read_error(const boost::system::error_code& e, std::string_view what, Route route) {
  if (e == Errc::kUnavailable) {
    return error_response(503, "state_backend_unavailable",
                          std::string(what) + ": the state database cannot be read now; retry",
                          route);
  }
  return error_response(500, "store_error", std::string(what) + ": " + e.message(), route);
}

Response storage_full_response(unsigned status, std::string_view what, Route route) {
  Response r = error_response(status, "storage_full",
                              std::string(what) +
                                  " refused: the data directory is below store.min_free; "
                                  "reads are served, writes resume when space returns",
                              route);
  r.set("Retry-After", "30");
  return r;
}

}  // namespace edge::api
