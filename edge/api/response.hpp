#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/system/error_code.hpp>

#include "edge/store/blob_store.hpp"

namespace edge::api {

/// Routes, as labels for metrics and logs.
enum class Route {
  kBlob,
  kChunk,
  kRecipe,
  kHealth,
  kReady,
  kMetrics,
  kUpload,
  kUpdates,
  kChannelSelf,
  kStats,
  kAdmin,
  kSync,      ///< /v1/sync/* (node to node)
  kCheckins,  ///< POST /v1/checkins (node to node)
  kOther,
  kCount
};
std::string_view route_name(Route r);

/// A part of a file-backed body: `prefix` bytes (e.g. a multipart part header) followed by
/// file pieces to send with sendfile.
struct FilePart {
  std::string prefix;
  std::vector<store::Piece> pieces;
};

struct Response;

/// A body produced while it is sent: an edge streaming a blob it is filling (DESIGN §10).
/// The server asks for the first pieces before it writes the header (so a dead upstream
/// still gets a clean error answer), then for more each time what it has is sent. Every
/// piece handed out is verified and stored: no byte of a chunk leaves before its SHA-256
/// matched.
class BodyStream {
 public:
  using Ready = std::function<void(boost::system::error_code, std::vector<store::Piece>)>;
  virtual ~BodyStream() = default;
  /// The next pieces of the body, in order. `ready` runs once, on any thread: with pieces,
  /// with none once the body is complete, or with an error (then the server cuts the
  /// connection short, and the client resumes with Range).
  virtual void next(Ready ready) = 0;
  /// The answer to send instead when the first next() failed with `ec`.
  virtual Response failure(boost::system::error_code ec) const = 0;
};

/// What a handler answers. The server adds Content-Length, Connection and Date-less
/// framing; handlers never touch sockets. A file-backed body is `parts` followed by
/// `body` (the multipart closing delimiter); otherwise `body` is the whole body.
struct Response {
  unsigned status = 200;
  /// Header fields, already framed ("Name: value\r\n" each): one buffer instead of a
  /// vector of string pairs keeps the tiny-response path to one allocation.
  std::string headers;
  std::string body;
  std::vector<FilePart> parts;
  bool head_only = false;  ///< HEAD: send the header with the GET's Content-Length
  bool close = false;      ///< close the connection after this response
  Route route = Route::kOther;
  /// Set when the answer is not known yet (an edge filling a blob from upstream, a check-in
  /// that must be durable first, a long poll). The server calls it once with the
  /// connection's executor and a `reply` to call exactly once, from any thread, with the
  /// real response; the other fields are ignored.
  std::function<void(const store::ChunkStore::Executor&, std::function<void(Response)> reply)>
      later;
  /// With `later`: an admin read whose cost grows with the fleet (a scan of the device
  /// table, the check-in buckets, the changelog). `later` does that work at once on the
  /// calling thread, so the server calls it on its scan threads, never on an event loop.
  bool scan = false;
  /// Set for a streamed body (BodyStream): `stream_length` bytes in all, of which `parts`
  /// (the server fills them from the first next()) go first. Ignored for HEAD and 304.
  std::shared_ptr<BodyStream> stream;
  std::uint64_t stream_length = 0;
  /// `body` already gzip-encoded, when the handler keeps it at hand (a cached answer):
  /// encode_json() sends it instead of compressing again. Shared: never copied per answer.
  std::shared_ptr<const std::string> gzip_body;

  /// Bytes of the body as framed (Content-Length).
  std::uint64_t content_length() const;
  /// The value of header field `name` as set() wrote it (exact case), empty if absent.
  std::string_view header(std::string_view name) const;
  /// Appends a header field. Names and values come from handlers, never raw from clients.
  void set(std::string_view name, std::string_view value) {
    if (headers.capacity() < 256)
      headers.reserve(256);  // one allocation for all fields
    headers.append(name).append(": ").append(value).append("\r\n");
  }
};

/// Content coding of a JSON answer (`Content-Type: application/json`, an in-memory body):
/// gzip when `client_accepts_gzip` and the body has at least http::kGzipMinBytes bytes,
/// identity otherwise; such answers get `Vary: Accept-Encoding` either way. Downloads
/// (file parts, streams) and other types are never encoded: devices need their bytes
/// exact (capgo-protocol §10 item 3). Called by the server on every answer.
void encode_json(Response& r, bool client_accepts_gzip);

/// The change seq an admin write answered with (its X-Change-Seq field), 0 if none.
std::uint64_t change_seq_of(const Response& r);

/// A response with a JSON body (`Content-Type: application/json`).
Response make_json_response(unsigned status, std::string body, Route route = Route::kOther);

/// Longest error message sent back; longer ones (quoting a huge client value) are cut.
inline constexpr std::size_t kMaxErrorMessageBytes = 512;

/// A JSON error body `{"error":code,"message":text}` with the given status; `text` is cut
/// to kMaxErrorMessageBytes (at a UTF-8 character boundary, "..." appended).
Response error_response(unsigned status, std::string_view code, std::string_view message,
                        Route route = Route::kOther);

/// The answer to a read the store could not make: 503 `state_backend_unavailable` when its
/// backend cannot be reached (the tier's PostgreSQL; a retry may succeed), else 500
/// `store_error`. `what` says what was being read ("reading stats").
Response store_read_error(const boost::system::error_code& e, std::string_view what,
                          Route route = Route::kOther);

/// 405 `method_not_allowed` naming the methods `allow`s, with the Allow field.
Response method_not_allowed(std::string_view allow, Route route = Route::kOther);

/// The answer to a write refused because the data directory is below store.min_free:
/// `status` is 507 (Insufficient Storage, RFC 4918 §11.5) for admin writes and uploads,
/// 503 for device and node-to-node writes (a client that retries later is right to).
/// `what` names the refused write.
Response storage_full_response(unsigned status, std::string_view what, Route route);

/// Escapes a string for a JSON string literal (without the quotes).
std::string json_escape(std::string_view s);
/// Appends `s` escaped for a JSON string literal (without the quotes) to `out`.
void append_json_escaped(std::string& out, std::string_view s);

/// Writes one flat JSON object straight into a string: for the answers on the device path,
/// where building a boost::json::object first costs more than the decision. Values are
/// valid UTF-8 (they came through a JSON parser or the admin API's).
class JsonObjectWriter {
 public:
  JsonObjectWriter() {
    out_.reserve(384);
    out_ += '{';
  }
  JsonObjectWriter& string(std::string_view key, std::string_view value) {
    this->key(key);
    out_ += '"';
    append_json_escaped(out_, value);
    out_ += '"';
    return *this;
  }
  JsonObjectWriter& boolean(std::string_view key, bool value) {
    this->key(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  /// `json` is a complete JSON value (an array built by the caller).
  JsonObjectWriter& raw(std::string_view key, std::string_view json) {
    this->key(key);
    out_ += json;
    return *this;
  }
  std::string finish() && {
    out_ += '}';
    return std::move(out_);
  }

 private:
  void key(std::string_view k) {
    if (out_.size() > 1)
      out_ += ',';
    out_ += '"';
    out_ += k;  // keys are literals of this code
    out_ += "\":";
  }
  std::string out_;
};

}  // namespace edge::api

namespace edge::api {

/// A response that is produced later by `fn(executor, reply)` (see Response::later).
inline Response deferred(
    Route route,
    std::function<void(const store::ChunkStore::Executor&, std::function<void(Response)>)> fn) {
  Response r;
  r.route = route;
  r.later = std::move(fn);
  return r;
}

}  // namespace edge::api
