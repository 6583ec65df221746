#include "edge/server/server.hpp"

#include <array>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "edge/core/sched.hpp"
#include "edge/http/encoding.hpp"
#include "edge/store/record.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace edge::server {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxSendfileCall = 2 << 20;  // nginx's sendfile_max_chunk
constexpr std::size_t kTurnBudget = 4 << 20;       // then yield to other connections
// One page-cache probe covers a run of pieces up to this many bytes of one segment (what a
// turn sends); a cold run is warmed 2 MiB at a time (ChunkStore::async_warm).
constexpr std::uint64_t kProbeBytes = kTurnBudget;
constexpr std::uint64_t kMaxWarmBytes = 2 << 20;
// How long a probed run counts as warm. cachestat costs per page, so probing again after
// every wait for the socket (a busy connection waits often) cost more than the probes it
// replaced; a page rarely leaves the cache within this, and the next run probes anyway.
constexpr auto kWarmFor = std::chrono::milliseconds(100);
constexpr std::size_t kCopyBuffer = 256 << 10;
constexpr std::uint64_t kUploadPauseAbove = 32 << 20;
constexpr std::uint64_t kUploadResumeBelow = 8 << 20;
constexpr std::size_t kUploadReadBuffer = 256 << 10;
constexpr std::size_t kTlsStage = 64 << 10;           // pread-into buffer of the userspace TLS path
constexpr std::size_t kTlsGather = kTlsStage + 1024;  // its records, gathered for one send
constexpr int kSweepMs = 100;  // deadline check period: the resolution of every timeout
// How long a TLS connection may take to get its close_notify out (a peer that reads
// nothing must not hold the connection), and then to drain what the peer still sends.
constexpr std::uint32_t kCloseNotifyMs = 1000;
constexpr std::uint32_t kLingerMs = 2000;

using ReusePort = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

// The nice value of the scan threads: the event loops (nice 0) weigh ~70 times more, so a
// scan takes what CPU they leave. Nice 10 measured within noise of it (admin-scans.sh).
constexpr int kScanNice = 19;

std::string_view reason(unsigned status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

}  // namespace

class Session;

// Per-io_context state: only its own thread touches it.
struct Worker {
  asio::io_context io{1};
  std::optional<tcp::acceptor> acceptor;
  std::optional<tcp::acceptor> admin;
  std::optional<tcp::acceptor> tls;
  std::unordered_set<Session*> sessions;
  // Staging buffers of the userspace TLS send path, lent to a connection for one file
  // response: memory follows the responses in flight, not the connections open.
  std::vector<std::unique_ptr<char[]>> stages;
  asio::steady_timer retry{io};
  asio::steady_timer sweep{io};
  std::uint64_t ticks = 0;  // sweeps so far
  tcp::endpoint peer[3];    // the address of the connection being accepted, per listener
};

struct Server::Impl {
  ServerOptions options;
  api::Api& api;
  std::atomic<bool> draining{false};
  // Set when the server is being destroyed: handlers destroyed by ~io_context (a fill that
  // outlived shutdown_grace_ms) must not touch worker state that is going away.
  std::atomic<bool> destroying{false};
  std::atomic<std::int64_t> connections{0};         // both listeners (drain waits for 0)
  std::atomic<std::int64_t> public_connections{0};  // against server.max_connections
  std::atomic<std::int64_t> admin_connections{0};   // against admin.max_connections
  std::mutex per_ip_mutex;
  std::unordered_map<std::string, std::size_t> per_ip;  // guarded by per_ip_mutex
  std::optional<asio::signal_set> signals;
  std::optional<asio::steady_timer> grace;
  std::uint16_t public_port = 0;
  std::uint16_t admin_port = 0;
  std::uint16_t tls_port = 0;
  std::function<void()> on_stop;
  std::mutex tls_mutex;
  TlsContextPtr tls_ctx;  // guarded by tls_mutex; SSL_new takes its own reference

  // The admin API's scans (api::Response::scan) run here, never on an event loop: a read
  // over the whole fleet must not hold the thread that serves devices. How many may wait
  // is bounded by the api (admin.max_queued_scans).
  std::optional<asio::io_context> scans;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> scans_work;
  std::vector<std::thread> scan_threads;

  // Declared after every member a Session's destructor reads: destroyed first.
  std::vector<std::unique_ptr<Worker>> workers;

  Impl(ServerOptions o, api::Api& a) : options(std::move(o)), api(a) {}
  ~Impl() {
    destroying = true;
    // Scans still queued hold sessions: they are dropped while the workers still exist.
    if (scans) {
      scans_work.reset();
      scans->stop();
      for (auto& t : scan_threads)
        t.join();
      scans.reset();
    }
    // The timer and the signal set belong to worker 0's io_context: they go first.
    grace.reset();
    signals.reset();
    workers.clear();
  }
  /// Takes a connection slot for a client: false (and nothing taken) when a limit is hit,
  /// with `why` naming it.
  bool admit(bool admin, const std::string& ip, std::string& why);
  void release(bool admin, const std::string& ip);
  /// Which listener a connection came in on.
  enum class Listener { kPublic, kAdmin, kTls };
  void accept(Worker& w, Listener which);
  TlsContextPtr current_tls() {
    std::lock_guard lock(tls_mutex);
    return tls_ctx;
  }
  std::string reload_tls();
  void drain_worker(Worker& w);
  void sweep(Worker& w);
  void stop();
  void all_closed();
};

// The byte stream Beast's parsers read from: the socket itself, or OpenSSL on the socket
// (SSL_set_fd, so that the kernel can take the record layer). TLS reads try SSL_read first
// (it may hold decrypted bytes) and wait for readiness only when OpenSSL asks.
class Conn {
 public:
  using executor_type = tcp::socket::executor_type;
  Conn(tcp::socket s, SSL* ssl, api::Metrics& metrics)
      : socket(std::move(s)), ssl(ssl), metrics_(metrics) {}
  ~Conn() {
    if (ssl != nullptr)
      SSL_free(ssl);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  executor_type get_executor() { return socket.get_executor(); }

  template <class Buffers, class Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    if (ssl == nullptr)
      return socket.async_read_some(buffers, std::forward<Handler>(handler));
    const asio::mutable_buffer b = *asio::buffer_sequence_begin(buffers);
    error_code ec;
    const std::size_t n = tls_read(b, ec);
    if (ec == asio::error::would_block)
      return wait_and_read(b, std::forward<Handler>(handler));
    // Completed at once: the handler must not run inside its initiating call.
    asio::post(socket.get_executor(),
               [h = std::forward<Handler>(handler), ec, n]() mutable { h(ec, n); });
  }

  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, error_code& ec) {
    if (ssl == nullptr)
      return socket.read_some(buffers, ec);
    return tls_read(*asio::buffer_sequence_begin(buffers), ec);
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers) {
    error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec)
      throw boost::system::system_error(ec);
    return n;
  }

  /// One SSL_write_ex of up to `len` bytes: bytes written, or 0 with `want` set to the
  /// readiness OpenSSL waits for (wait_write / wait_read), or 0 and `failed`.
  std::size_t tls_write(const char* data, std::size_t len, tcp::socket::wait_type& want,
                        bool& failed) {
    clear_stale_errors();
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl, data, len, &n);
    failed = false;
    record_pending = false;
    if (r == 1 && !peer_misbehaved())
      return n;
    const std::size_t none =
        write_failed(r == 1 ? SSL_ERROR_SSL : SSL_get_error(ssl, r), want, failed);
    record_pending = !failed;  // OpenSSL keeps the rest of a record for the retry
    return none;
  }

  /// kTLS: one SSL_sendfile of up to `len` bytes of `fd` at `offset` (the kernel encrypts);
  /// results as tls_write.
  std::size_t tls_sendfile(int fd, off_t offset, std::size_t len, tcp::socket::wait_type& want,
                           bool& failed) {
    clear_stale_errors();
    const ossl_ssize_t r = SSL_sendfile(ssl, fd, offset, len, 0);
    failed = false;
    if (r > 0)
      return static_cast<std::size_t>(r);
    return write_failed(r < 0 ? SSL_get_error(ssl, static_cast<int>(r)) : SSL_ERROR_SSL, want,
                        failed);
  }

  /// True (and counted once) when the peer did what this server does not take after a
  /// handshake: a renegotiation, or a KeyUpdate asking for ours while the kernel sends.
  bool peer_misbehaved() {
    if (events.key_updates_seen != key_updates_counted_) {
      for (; key_updates_counted_ < events.key_updates_seen; ++key_updates_counted_)
        metrics_.tls(api::Metrics::Tls::kKeyUpdate);
    }
    if (misbehaviour_counted_)
      return true;
    if (events.renegotiation) {
      metrics_.tls(api::Metrics::Tls::kRenegotiation);
    } else if (events.key_update_requested && ktls_send) {
      metrics_.tls(api::Metrics::Tls::kKeyUpdateClosed);
    } else {
      return false;
    }
    misbehaviour_counted_ = true;
    return true;
  }

  tcp::socket socket;
  SSL* ssl;
  bool ktls_send = false;
  // The last SSL_write stopped inside a record: nothing else (no alert) may be written
  // until that record is finished by the same write (OpenSSL's write-retry rule).
  bool record_pending = false;
  TlsPeerEvents events;
  CoalescingWriter writer;  // userspace TLS: the write BIO (attached after the handshake)
  CipherFeed feed;          // the read BIO (attached before the handshake)

 private:
  // After a write call that did not write: 0, with `want` set when OpenSSL waits for
  // readiness, or with `failed` set (error queue cleared).
  static std::size_t write_failed(int err, tcp::socket::wait_type& want, bool& failed) {
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      want = err == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write;
      return 0;
    }
    failed = true;
    ERR_clear_error();
    return 0;
  }

  // SSL_get_error needs an empty error queue before the call; every failure path clears
  // it after itself, so a peek (no 16-slot clear loop per call) is enough here.
  static void clear_stale_errors() {
    if (ERR_peek_error() != 0)
      ERR_clear_error();
  }

  std::size_t tls_read(asio::mutable_buffer b, error_code& ec) {
    clear_stale_errors();
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl, b.data(), b.size(), &n);
    if (peer_misbehaved()) {
      ec = asio::error::connection_aborted;
      return 0;
    }
    if (r == 1) {
      ec = {};
      return n;
    }
    switch (SSL_get_error(ssl, r)) {
      case SSL_ERROR_WANT_READ:
        want_ = tcp::socket::wait_read;
        ec = asio::error::would_block;
        break;
      case SSL_ERROR_WANT_WRITE:
        want_ = tcp::socket::wait_write;
        ec = asio::error::would_block;
        break;
      case SSL_ERROR_ZERO_RETURN: ec = asio::error::eof; break;
      default: ec = asio::error::connection_reset; break;
    }
    ERR_clear_error();
    return 0;
  }

  template <class Handler>
  void wait_and_read(asio::mutable_buffer b, Handler&& handler) {
    auto again = [this, b, h = std::forward<Handler>(handler)](error_code ec,
                                                               std::size_t fed) mutable {
      if (ec)
        return h(ec, std::size_t{0});
      feed.filled(fed);
      const std::size_t n = tls_read(b, ec);
      if (ec == asio::error::would_block)
        return wait_and_read(b, std::move(h));
      h(ec, n);
    };
    if (want_ == tcp::socket::wait_write) {
      socket.async_wait(tcp::socket::wait_write,
                        [again = std::move(again)](error_code ec) mutable { again(ec, 0); });
      return;
    }
    // Ciphertext goes to the feed with a speculative read: no epoll_ctl per wait.
    char* space = feed.space();
    socket.async_read_some(asio::buffer(space, feed.space_size()), std::move(again));
  }

  api::Metrics& metrics_;
  tcp::socket::wait_type want_ = tcp::socket::wait_read;
  unsigned key_updates_counted_ = 0;
  bool misbehaviour_counted_ = false;
};

// One connection: read a request, answer it, repeat (keep-alive; pipelined requests wait in
// the buffer and are answered in order).
class Session : public std::enable_shared_from_this<Session> {
 public:
  // `counted`: the connection holds a slot taken by Impl::admit for `ip` (a refused one
  // does not).
  // `ssl`: the connection's TLS state (owned from here on), null for plain HTTP.
  Session(tcp::socket socket, SSL* ssl, Worker& worker, Server::Impl& server, bool admin,
          bool counted, std::string ip)
      : conn_(std::move(socket), ssl, server.api.metrics()),
        worker_(worker),
        server_(server),
        admin_(admin),
        counted_(counted),
        ip_(std::move(ip)) {
    buffer_.max_size(server_.options.header_limit_bytes + kUploadReadBuffer);
    if (counted_)
      server_.api.metrics().connection_opened();
  }
  ~Session() {
    if (counted_)
      server_.api.metrics().connection_closed();
    if (server_.destroying.load(std::memory_order_relaxed))
      return;  // the worker (and its session set) is being destroyed
    worker_.sessions.erase(this);
    if (!counted_)
      return;
    server_.release(admin_, ip_);
    if (server_.connections.fetch_sub(1, std::memory_order_relaxed) == 1 &&
        server_.draining.load(std::memory_order_relaxed)) {
      server_.all_closed();
    }
  }

  void start() {
    worker_.sessions.insert(this);
    error_code ec;
    conn_.socket.set_option(tcp::no_delay(true), ec);
    conn_.socket.native_non_blocking(true, ec);
    if (conn_.ssl != nullptr) {
      // The handshake falls under the header timeout (a stalled one is a slow header).
      arm(Timeout::kHeader, opt().header_timeout_ms);
      watch_peer(conn_.ssl, &conn_.events);
      conn_.feed.attach(conn_.ssl);
      return handshake();
    }
    read_request();
  }

  // Over a connection limit: answer 503 at once and close (lingering, so the answer is
  // not lost to a reset when the client's request is still unread). A TLS connection is
  // closed without a handshake: an answer would cost the handshake the limit is there to
  // spare.
  void refuse(const std::string& why) {
    worker_.sessions.insert(this);
    error_code ec;
    if (conn_.ssl != nullptr) {
      spdlog::debug("TLS connection from {} refused: {} reached", ip_, why);
      return close();
    }
    conn_.socket.native_non_blocking(true, ec);
    api::Response r = api::error_response(503, "busy", why + " reached");
    r.set("Retry-After", "1");
    keep_alive_ = false;
    started_ = Clock::now();
    respond(std::move(r));
  }

  // Called on shutdown: idle connections close now; busy ones after their response.
  void drain() {
    if (idle_) {
      // The pending read ends with operation_aborted and on_header closes (TLS: with a
      // close_notify, as every end of a TLS connection).
      error_code ec;
      conn_.socket.cancel(ec);
    }
  }

  // The shutdown grace period is over (the io_context stops next): a TLS connection gets
  // one non-blocking try at its close_notify, then the socket closes.
  void hang_up() {
    if (tls_can_notify()) {
      (void)conn_.writer.flush();
      if (!conn_.writer.pending() && !conn_.writer.broken())
        send_close_notify();
      (void)conn_.writer.flush();
    }
    close_socket();
  }

 private:
  enum class Timeout { kNone, kIdle, kHeader, kRequest, kSend, kClose };

  const ServerOptions& opt() const { return server_.options; }

  // Timeouts are deadlines checked by the worker's sweep (every kSweepMs), not one Asio
  // timer per phase: re-arming a timer per request costs allocations and timerfd syscalls
  // on the hot path, and second-scale timeouts do not need millisecond precision.
  void arm(Timeout what, std::uint32_t ms) {
    timeout_ = Timeout::kNone;
    armed_ = what;
    deadline_ = Clock::now() + std::chrono::milliseconds(ms);
  }
  void disarm() { armed_ = Timeout::kNone; }

 public:
  // Called by the sweep on this session's thread.
  void check_deadline(Clock::time_point now) {
    if (conn_.ssl != nullptr && idle_ && armed_ == Timeout::kIdle && !buffers_released_) {
      // An idle TLS connection holds no record buffers (once per idle spell).
      buffers_released_ = SSL_free_buffers(conn_.ssl) == 1;
    }
    if (armed_ == Timeout::kNone)
      return;
    if (armed_ == Timeout::kIdle && idle_ && buffer_.size() > 0) {
      // The first bytes of the next request arrived: the header timeout runs from here.
      idle_ = false;
      armed_ = Timeout::kHeader;
      deadline_ = now + std::chrono::milliseconds(opt().header_timeout_ms);
      return;
    }
    if (now < deadline_)
      return;
    timeout_ = armed_;
    armed_ = Timeout::kNone;
    error_code ignored;
    conn_.socket.cancel(ignored);
  }

 private:
  // --- TLS handshake -------------------------------------------------------------------

  void handshake() {
    if (timeout_ == Timeout::kHeader) {
      server_.api.metrics().tls(api::Metrics::Tls::kTimeout);
      return close();
    }
    ERR_clear_error();
    const int r = SSL_do_handshake(conn_.ssl);
    if (r == 1)
      return handshake_done();
    const int err = SSL_get_error(conn_.ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      auto next = [self = shared_from_this()](error_code ec, std::size_t fed) {
        if (self->timeout_ == Timeout::kHeader) {
          self->server_.api.metrics().tls(api::Metrics::Tls::kTimeout);
          return self->close();
        }
        if (ec) {
          // The client left mid-handshake (or never sent a ClientHello).
          self->server_.api.metrics().tls(api::Metrics::Tls::kFailed);
          return self->close();
        }
        self->conn_.feed.filled(fed);
        self->handshake();
      };
      if (err == SSL_ERROR_WANT_WRITE) {
        conn_.socket.async_wait(tcp::socket::wait_write,
                                [next = std::move(next)](error_code ec) { next(ec, 0); });
        return;
      }
      char* space = conn_.feed.space();
      conn_.socket.async_read_some(asio::buffer(space, conn_.feed.space_size()), std::move(next));
      return;
    }
    const unsigned long e = ERR_peek_error();
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
                                          ERR_GET_REASON(e) == SSL_R_HTTPS_PROXY_REQUEST)) {
      ERR_clear_error();
      return plain_http_on_tls_port();
    }
    server_.api.metrics().tls(api::Metrics::Tls::kFailed);
    const std::string why = drain_ssl_errors();
    spdlog::debug("TLS handshake from {} failed: {}", ip_, why.empty() ? "connection closed" : why);
    close();
  }

  void handshake_done() {
    conn_.events.established = true;
    auto& m = server_.api.metrics();
    m.tls(SSL_session_reused(conn_.ssl) == 1 ? api::Metrics::Tls::kResumed
                                             : api::Metrics::Tls::kHandshake);
    conn_.ktls_send = BIO_get_ktls_send(SSL_get_wbio(conn_.ssl));
    m.tls(conn_.ktls_send ? api::Metrics::Tls::kKtls : api::Metrics::Tls::kUserspace);
    if (!conn_.ktls_send)
      conn_.writer.attach(conn_.ssl, conn_.socket.native_handle());
    read_request();
  }

  // Plain HTTP on the TLS port (OpenSSL saw "GET " where a ClientHello belongs): say so in
  // plain text, as nginx does, and close.
  void plain_http_on_tls_port() {
    server_.api.metrics().tls(api::Metrics::Tls::kPlainHttp);
    SSL_free(conn_.ssl);
    conn_.ssl = nullptr;
    keep_alive_ = false;
    started_ = Clock::now();
    buffer_.clear();
    respond(api::error_response(400, "plain_http_to_https_port",
                                "this port speaks HTTPS: use an https:// URL"));
  }

  void read_request() {
    if (server_.draining.load(std::memory_order_relaxed) && buffer_.size() == 0)
      return close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(opt().header_limit_bytes));
    // The admin listener takes uploads far above the JSON limit; which limit applies is
    // known once the target is (read_small_body, begin_upload).
    if (admin_) {
      parser_->body_limit(boost::none);
    } else {
      parser_->body_limit(opt().json_body_limit_bytes);
    }
    // Idle keep-alive (nothing buffered): the idle timeout runs until the first byte, then
    // the header timeout (check_deadline switches).
    idle_ = buffer_.size() == 0;
    if (idle_) {
      arm(Timeout::kIdle, opt().idle_timeout_ms);
    } else {
      arm(Timeout::kHeader, opt().header_timeout_ms);
    }
    read_header();
  }

  void read_header() {
    bhttp::async_read_header(
        conn_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    idle_ = false;
    accepts_gzip_ = false;
    buffers_released_ = false;
    if (timeout_ == Timeout::kIdle)
      return close();  // an idle keep-alive connection
    if (timeout_ == Timeout::kHeader) {
      return fail(408, "request_timeout",
                  "the request header did not arrive within header_timeout_ms");
    }
    // connection_aborted: a TLS peer renegotiated (counted by the connection).
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_aborted) {
      return close();
    }
    if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
      return fail(431, "header_too_large",
                  "request header exceeds " + std::to_string(opt().header_limit_bytes) + " bytes");
    }
    if (ec == bhttp::error::body_limit) {
      return fail(413, "too_large",
                  "request body exceeds " + std::to_string(opt().json_body_limit_bytes) + " bytes");
    }
    if (ec)
      return fail(400, "bad_request", "malformed request: " + ec.message());
    started_ = Clock::now();
    const auto& req = parser_->get();
    // RFC 9112 framing rules Beast's parser leaves to us (request smuggling: a
    // Transfer-Encoding it does not treat as chunked would leave the body to be read as the
    // next request). A violation is answered 400 and the connection closed.
    if (auto bad = api::framing_error(req))
      return fail(400, "bad_request", *bad);
    keep_alive_ = req.keep_alive();
    client_closes_ = !keep_alive_;
    if (const auto ae = req.find(bhttp::field::accept_encoding); ae != req.end())
      accepts_gzip_ = http::accepts_gzip(std::string_view(ae->value().data(), ae->value().size()));
    if (admin_ && api::Api::is_upload(req))
      return begin_upload();
    if (!parser_->is_done())
      return read_small_body();
    respond(admin_ ? server_.api.handle_admin(req) : server_.api.handle_public(req, {}, ip_));
  }

  // A non-upload request with a body: read it (bounded by json_body_limit_bytes).
  void read_small_body() {
    if (const auto n = parser_->content_length(); n && *n > opt().json_body_limit_bytes) {
      return fail(413, "too_large",
                  "request body of " + std::to_string(*n) + " bytes exceeds " +
                      std::to_string(opt().json_body_limit_bytes));
    }
    string_parser_.emplace(std::move(*parser_));
    string_parser_->body_limit(opt().json_body_limit_bytes);
    // A JSON body is small: it gets the short body timeout, not the uploads' one, so slow
    // senders cannot hold connections for minutes.
    arm(Timeout::kRequest, opt().body_timeout_ms);
    if (const auto n = string_parser_->content_length(); n && buffer_.size() >= *n) {
      // The whole body came with the head (as a device's /updates does): the parser takes it
      // from the buffer without touching the socket, and the answer needs no trip through
      // the event loop.
      error_code ec;
      bhttp::read(conn_, buffer_, *string_parser_, ec);
      return on_small_body(ec);
    }
    send_continue_if_expected(string_parser_->get());
    bhttp::async_read(
        conn_, buffer_, *string_parser_, [self = shared_from_this()](error_code ec, std::size_t) {
          if (self->timeout_ == Timeout::kRequest) {
            return self->fail(408, "request_timeout",
                              "the request body did not arrive within server.body_timeout_ms");
          }
          self->on_small_body(ec);
        });
  }

  void on_small_body(error_code ec) {
    if (ec == bhttp::error::body_limit) {
      return fail(413, "too_large",
                  "request body exceeds " + std::to_string(opt().json_body_limit_bytes) + " bytes");
    }
    if (ec)
      return fail(400, "bad_request", "malformed request body: " + ec.message());
    const auto& req = string_parser_->get();
    const std::string_view body = req.body();
    respond(admin_ ? server_.api.handle_admin(req, body)
                   : server_.api.handle_public(req, body, ip_));
  }

  template <class Message>
  void send_continue_if_expected(const Message& req) {
    const auto it = req.find(bhttp::field::expect);
    if (it == req.end() || !boost::beast::iequals(it->value(), "100-continue"))
      return;
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    if (conn_.ssl != nullptr) {
      // One small record on a socket that was just readable: it goes out whole. Were it
      // to block, OpenSSL would hold a partial record that the response must not follow.
      tcp::socket::wait_type want{};
      bool failed = false;
      if (conn_.tls_write(kContinue.data(), kContinue.size(), want, failed) != kContinue.size()) {
        spdlog::warn("100 Continue to {} could not be sent at once: closing", ip_);
        keep_alive_ = false;
        error_code ec;
        conn_.socket.shutdown(tcp::socket::shutdown_both, ec);
      }
      return;
    }
    // Tiny and the socket is writable right after a request: a blocking-free best effort.
    (void)::send(conn_.socket.native_handle(), kContinue.data(), kContinue.size(), MSG_NOSIGNAL);
  }

  // --- uploads (admin listener) --------------------------------------------------------

  void begin_upload() {
    const auto& req = parser_->get();
    std::optional<std::uint64_t> length;
    if (const auto n = parser_->content_length())
      length = *n;
    auto started = server_.api.begin_upload(req, length);
    if (auto* err = std::get_if<api::Response>(&started)) {
      keep_alive_ = false;
      return respond(std::move(*err));
    }
    upload_ = std::move(std::get<std::unique_ptr<api::Upload>>(started));
    upload_parser_.emplace(std::move(*parser_));
    upload_parser_->body_limit(boost::none);  // the Upload enforces max_upload_bytes itself
    upload_buf_.resize(kUploadReadBuffer);
    arm(Timeout::kRequest, opt().request_timeout_ms);
    send_continue_if_expected(upload_parser_->get());
    read_upload();
  }

  void read_upload() {
    if (upload_parser_->is_done())
      return finish_upload();
    if (upload_->bytes_in_flight() > kUploadPauseAbove) {
      // Backpressure: stop reading the socket until the store has caught up.
      upload_->async_wait_below(kUploadResumeBelow, worker_.io.get_executor(),
                                [self = shared_from_this()] { self->read_upload(); });
      return;
    }
    auto& body = upload_parser_->get().body();
    body.data = upload_buf_.data();
    body.size = upload_buf_.size();
    bhttp::async_read_some(
        conn_, buffer_, *upload_parser_,
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_upload_read(ec); });
  }

  void on_upload_read(error_code ec) {
    if (timeout_ == Timeout::kRequest) {
      return fail(408, "request_timeout", "the upload did not complete within request_timeout_ms");
    }
    if (ec == bhttp::error::need_buffer)
      ec = {};
    if (ec)
      return fail(400, "bad_request", "upload aborted: " + ec.message());
    auto& body = upload_parser_->get().body();
    const std::size_t n = upload_buf_.size() - body.size;
    if (!upload_->write(std::span(upload_buf_.data(), n))) {
      upload_.reset();
      return fail(413, "too_large", "upload exceeds admin.max_upload_bytes");
    }
    read_upload();
  }

  void finish_upload() {
    disarm();
    upload_->finish(worker_.io.get_executor(), [self = shared_from_this()](api::Response r) {
      self->upload_.reset();
      self->upload_parser_.reset();
      self->respond(std::move(r));
    });
  }

  // --- responses -----------------------------------------------------------------------

  // An error before (or instead of) a routed response: answer and close.
  void fail(unsigned status, std::string_view code, const std::string& message) {
    client_closes_ = false;  // the client may still be sending: linger
    api::Response r = api::error_response(status, code, message);
    keep_alive_ = false;
    if (started_ == Clock::time_point{})
      started_ = Clock::now();
    respond(std::move(r));
  }

  // A reference to this session for a callback that may run, and be destroyed, on any
  // thread (a store or fill thread): the session must still die on its own thread (its
  // destructor touches worker state), so the last reference is handed back to the worker.
  struct Keep {
    explicit Keep(std::shared_ptr<Session> s) : session(std::move(s)) {}
    Keep(const Keep&) = delete;
    Keep& operator=(const Keep&) = delete;
    ~Keep() {
      if (session->server_.destroying.load(std::memory_order_relaxed))
        return;  // the io_context is going away; the session dies here
      auto& io = session->worker_.io;
      asio::post(io, [s = std::move(session)] {});
    }
    std::shared_ptr<Session> session;
  };

  void respond(api::Response r) {
    // HEAD and 304 send no body: their header (Content-Length: stream_length) goes at once.
    if (r.stream && !stream_ && !r.head_only && r.status != 304) {
      // A streamed body: its first pieces before the header, so that a failure is still a
      // clean answer; the header (with the whole length) leaves with them.
      disarm();
      auto keep = std::make_shared<Keep>(shared_from_this());
      auto stream = r.stream;
      stream_ = stream;
      stream->next([keep, r = std::make_shared<api::Response>(std::move(r))](
                       error_code ec, std::vector<store::Piece> pieces) mutable {
        asio::post(keep->session->worker_.io, [self = keep->session, r = std::move(r), ec,
                                               pieces = std::move(pieces)]() mutable {
          if (!self->conn_.socket.is_open())
            return;
          if (ec) {
            auto failed = std::move(self->stream_);
            return self->respond(failed->failure(ec));
          }
          r->parts.clear();
          r->parts.push_back({std::string(), std::move(pieces)});
          self->respond(std::move(*r));
        });
      });
      return;
    }
    if (r.later) {
      // Deferred: nothing is armed while the handler works (its own timeouts bound it); the
      // reply comes back to this connection's thread.
      disarm();
      auto keep = std::make_shared<Keep>(shared_from_this());
      auto later = std::move(r.later);
      auto reply = [keep](api::Response real) {
        asio::post(keep->session->worker_.io,
                   [self = keep->session, real = std::move(real)]() mutable {
                     real.later = nullptr;
                     self->respond(std::move(real));
                   });
      };
      if (r.scan && server_.scans) {
        asio::post(*server_.scans,
                   [later = std::move(later), ex = worker_.io.get_executor(),
                    reply = std::move(reply)]() mutable { later(ex, std::move(reply)); });
        return;
      }
      later(worker_.io.get_executor(), std::move(reply));
      return;
    }
    if (r.close || server_.draining.load(std::memory_order_relaxed))
      keep_alive_ = false;
    api::encode_json(r, accepts_gzip_);  // JSON answers only; downloads stay identity
    status_ = r.status;
    route_ = r.route;
    const std::uint64_t length = r.content_length();
    body_bytes_ = r.head_only ? 0 : length;
    std::string& head = out_head_;
    head.clear();
    head += "HTTP/1.1 ";
    head += std::to_string(r.status);
    head += ' ';
    head += reason(r.status);
    head += "\r\n";
    head += r.headers;
    if (r.status != 304) {
      head += "Content-Length: ";
      head += std::to_string(length);
      head += "\r\n";
    }
    if (!keep_alive_)
      head += "Connection: close\r\n";
    head += "\r\n";
    items_.clear();
    items_.push_back({&out_head_, nullptr});
    if (!r.head_only && r.status != 304 && r.parts.empty()) {
      head += r.body;  // an in-memory body leaves with its header: one send(2)
    } else if (!r.head_only && r.status != 304) {
      out_parts_ = std::move(r.parts);
      out_tail_ = std::move(r.body);
      for (auto& part : out_parts_) {
        if (!part.prefix.empty())
          items_.push_back({&part.prefix, nullptr});
        for (auto& piece : part.pieces)
          items_.push_back({nullptr, &piece});
      }
      if (!out_tail_.empty())
        items_.push_back({&out_tail_, nullptr});
    }
    item_ = 0;
    item_pos_ = 0;
    warmed_ = false;
    forget_warm();
    copy_len_ = copy_pos_ = 0;
    if (conn_.ssl != nullptr && !conn_.ktls_send && items_.size() > 1)
      borrow_stage();
    // No TCP_CORK around multi-piece bodies: measured on loopback it more than doubled the
    // CPU per 1 MiB response (800 vs 300 us); MSG_MORE on the header is enough.
    arm(Timeout::kSend, opt().send_timeout_ms);
    write_loop();
  }

  // Sends items_ with non-blocking syscalls; waits for writability on EAGAIN.
  void write_loop() {
    if (timeout_ == Timeout::kSend)
      return close();
    if (conn_.ssl != nullptr)
      return tls_write_loop();
    const int fd = conn_.socket.native_handle();
    std::size_t turn = 0;
    while (item_ < items_.size()) {
      const bool more = item_ + 1 < items_.size();
      const Item& it = items_[item_];
      ssize_t n = 0;
      if (it.text != nullptr) {
        const std::string& s = *it.text;
        // MSG_MORE holds the header back until the body follows (nginx's tcp_nopush).
        n = ::send(fd, s.data() + item_pos_, s.size() - item_pos_,
                   MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (n > 0) {
          item_pos_ += static_cast<std::size_t>(n);
          if (item_pos_ == s.size())
            next_item();
        }
      } else {
        const store::Piece& p = *it.piece;
        if (p.length == 0) {
          next_item();
          continue;
        }
        if (p.memory) {
          // Verified bytes of a streaming fill, sent from memory.
          n = ::send(fd, p.memory.data + p.offset + item_pos_, p.length - item_pos_,
                     MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        } else if (opt().use_sendfile) {
          if (cold_unwarmed(p))
            return warm_then_write(p);
          off_t off = static_cast<off_t>(p.offset + item_pos_);
          const std::size_t want = std::min<std::uint64_t>(p.length - item_pos_, kMaxSendfileCall);
          n = ::sendfile(fd, p.segment->fd(), &off, want);
          if (n == 0)
            return close();  // file shorter than the index says: headers are out
        } else {
          n = copy_send(fd, p);
        }
        if (n > 0) {
          item_pos_ += static_cast<std::size_t>(n);
          if (item_pos_ == p.length)
            next_item();
        }
      }
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return resume_when(tcp::socket::wait_write);
        return close();
      }
      turn += static_cast<std::size_t>(n);
      if (turn >= kTurnBudget) {
        // Fairness: one fast reader must not starve the other connections of this thread.
        asio::post(worker_.io, [self = shared_from_this()] { self->write_loop(); });
        return;
      }
    }
    body_sent();
  }

  // What is staged is out: a streamed body asks for its next pieces, anything else is done.
  void body_sent() {
    if (!stream_)
      return on_sent();
    disarm();  // the fill has its own deadlines (upstream.timeout_ms)
    auto keep = std::make_shared<Keep>(shared_from_this());
    stream_->next([keep](error_code ec, std::vector<store::Piece> pieces) {
      asio::post(keep->session->worker_.io,
                 [self = keep->session, ec, pieces = std::move(pieces)]() mutable {
                   self->on_stream(ec, std::move(pieces));
                 });
    });
  }

  void on_stream(error_code ec, std::vector<store::Piece> pieces) {
    if (!conn_.socket.is_open())
      return;
    if (ec) {
      // The header is out: cutting the connection short is the only honest answer (the
      // client sees a short body and resumes with Range). Over TLS the cut ends with a
      // close_notify (close()): without one, the 8.52 engine takes the EOF for a TLS error,
      // deletes the partial file and never resumes (capgo-protocol §10 item 2).
      stream_.reset();
      spdlog::warn("stream: cut a {} response after a fill failed: {}", api::route_name(route_),
                   ec.message());
      return close();
    }
    if (pieces.empty()) {
      stream_.reset();
      return on_sent();
    }
    out_parts_.clear();
    out_parts_.push_back({std::string(), std::move(pieces)});
    items_.clear();
    for (auto& piece : out_parts_.front().pieces)
      items_.push_back({nullptr, &piece});
    item_ = 0;
    item_pos_ = 0;
    warmed_ = false;
    forget_warm();
    if (conn_.ssl != nullptr && !conn_.ktls_send && stage_ == nullptr)
      borrow_stage();
    arm(Timeout::kSend, opt().send_timeout_ms);
    write_loop();
  }

  // --- TLS send path ---------------------------------------------------------------------
  //
  // kTLS (the kernel took the send side): text with SSL_write, file pieces with
  // SSL_sendfile, zero-copy as on plain HTTP. Userspace: in-memory bodies are written from
  // where they are; a response with file pieces is staged (header, then pread file bytes)
  // in a buffer lent by the worker, so that the header shares the first record.

  void tls_write_loop() {
    if (timeout_ == Timeout::kSend)
      return close();
    std::size_t turn = 0;
    tcp::socket::wait_type want = tcp::socket::wait_write;
    bool failed = false;
    while (true) {
      std::size_t n = 0;
      if (stage_ != nullptr) {
        if (stage_pos_ == stage_len_) {
          stage_pos_ = stage_len_ = 0;
          if (item_ == items_.size()) {
            // The last records are gathered in the writer: out they go before the next
            // request is read.
            if (!conn_.writer.flush())
              return conn_.writer.broken() ? close() : resume_when(tcp::socket::wait_write);
            break;
          }
          const int filled = fill_stage();
          if (filled < 0)
            return close();
          if (filled == 0)
            return;  // warming a cold range: write_loop runs again when it is read
          continue;
        }
        n = conn_.tls_write(stage_.get() + stage_pos_, stage_len_ - stage_pos_, want, failed);
        stage_pos_ += n;
      } else {
        if (item_ == items_.size())
          break;
        const Item& it = items_[item_];
        if (it.text != nullptr) {
          const std::string& t = *it.text;
          if (item_pos_ == t.size()) {
            next_item();
            continue;
          }
          n = conn_.tls_write(t.data() + item_pos_, t.size() - item_pos_, want, failed);
          item_pos_ += n;
        } else {
          const store::Piece& p = *it.piece;
          if (item_pos_ == p.length) {
            next_item();
            continue;
          }
          if (p.memory) {
            n = conn_.tls_write(reinterpret_cast<const char*>(p.memory.data) + p.offset + item_pos_,
                                p.length - item_pos_, want, failed);
          } else {
            if (cold_unwarmed(p))
              return warm_then_write(p);
            n = conn_.tls_sendfile(p.segment->fd(), static_cast<off_t>(p.offset + item_pos_),
                                   std::min<std::uint64_t>(p.length - item_pos_, kMaxSendfileCall),
                                   want, failed);
          }
          item_pos_ += n;
        }
      }
      if (failed)
        return close();
      if (n == 0)
        return resume_when(want);
      tls_sent_ += n;
      turn += n;
      if (turn >= kTurnBudget) {
        asio::post(worker_.io, [self = shared_from_this()] { self->write_loop(); });
        return;
      }
    }
    body_sent();
  }

  // Userspace TLS: fills the empty stage from the items (text copied, file bytes pread).
  // 1: something to write; 0: a cold range is being warmed (write_loop runs again); -1: a
  // read failed.
  int fill_stage() {
    while (item_ < items_.size() && stage_len_ < kTlsStage) {
      const Item& it = items_[item_];
      const std::size_t room = kTlsStage - stage_len_;
      if (it.text != nullptr) {
        const std::string& t = *it.text;
        const std::size_t n = std::min(room, t.size() - item_pos_);
        std::memcpy(stage_.get() + stage_len_, t.data() + item_pos_, n);
        stage_len_ += n;
        item_pos_ += n;
        if (item_pos_ == t.size())
          next_item();
        continue;
      }
      const store::Piece& p = *it.piece;
      if (item_pos_ == p.length) {
        next_item();
        continue;
      }
      if (p.memory) {
        const std::size_t n = std::min<std::uint64_t>(room, p.length - item_pos_);
        std::memcpy(stage_.get() + stage_len_, p.memory.data + p.offset + item_pos_, n);
        stage_len_ += n;
        item_pos_ += n;
        if (item_pos_ == p.length)
          next_item();
        continue;
      }
      if (cold_unwarmed(p)) {
        if (stage_len_ > 0)
          return 1;                  // send what is staged; warm on the next fill
        (void)conn_.writer.flush();  // what is gathered leaves while the disk reads
        warm_then_write(p);
        return 0;
      }
      const std::size_t want = std::min<std::uint64_t>(room, p.length - item_pos_);
      const ssize_t r = ::pread(p.segment->fd(), stage_.get() + stage_len_, want,
                                static_cast<off_t>(p.offset + item_pos_));
      if (r <= 0)
        return -1;
      stage_len_ += static_cast<std::size_t>(r);
      item_pos_ += static_cast<std::size_t>(r);
      if (item_pos_ == p.length)
        next_item();
    }
    return stage_len_ > 0 || item_ == items_.size() ? 1 : -1;
  }

  // One block: the plaintext stage, then the writer's gathering buffer (a stage's records,
  // 4 x (16 KiB + 22 bytes), fit in kTlsGather).
  void borrow_stage() {
    if (!worker_.stages.empty()) {
      stage_ = std::move(worker_.stages.back());
      worker_.stages.pop_back();
    } else {
      stage_ = std::make_unique<char[]>(kTlsStage + kTlsGather);
    }
    stage_pos_ = stage_len_ = 0;
    conn_.writer.lend(stage_.get() + kTlsStage, kTlsGather);
  }
  void return_stage() {
    if (stage_ == nullptr)
      return;
    conn_.writer.unlend();
    if (worker_.stages.size() < 64)
      worker_.stages.push_back(std::move(stage_));
    stage_.reset();
  }

  // Resumes write_loop once the socket is ready for `want` (the send timeout re-armed).
  void resume_when(tcp::socket::wait_type want) {
    conn_.socket.async_wait(want, [self = shared_from_this()](error_code ec) {
      if (ec)
        return self->close();
      self->arm(Timeout::kSend, self->opt().send_timeout_ms);
      self->write_loop();
    });
  }

  // True when the piece about to start (items_[item_]) is not in the page cache and has not
  // been warmed: sending it would block the event loop on the disk (DESIGN §4). The probe
  // covers the run of pieces that follow it in the same segment (up to kProbeBytes), so the
  // next pieces of the run need none.
  bool cold_unwarmed(const store::Piece& p) {
    if (p.memory || warmed_ || !opt().warm_cold_ranges || item_pos_ != 0)
      return false;
    if (p.segment.get() == warm_file_ && p.offset >= warm_begin_ &&
        p.offset + p.length <= warm_end_ && Clock::now() < warm_until_) {
      return false;
    }
    std::size_t run = 1;
    while (item_ + run < items_.size() && items_[item_ + run].piece == &p + run)
      ++run;
    cold_ = store::file_stretch(std::span(&p, run), store::kRecordHeaderBytes, kProbeBytes);
    if (!opt().warm_always && p.segment->cached(cold_.offset, cold_.length)) {
      know_warm(p, cold_.offset, cold_.length);
      return false;
    }
    return true;
  }
  // Reads the run that cold_unwarmed found cold (its first 2 MiB) through io_uring, then
  // write_loop goes on.
  void warm_then_write(const store::Piece& p) {
    warmed_ = true;
    const store::Piece run{p.segment, cold_.offset, std::min(cold_.length, kMaxWarmBytes)};
    server_.api.warm(run, worker_.io.get_executor(), [self = shared_from_this(), run](error_code) {
      self->know_warm(run, run.offset, run.length);
      self->write_loop();
    });
  }
  // Bytes of one segment just probed or warmed: the pieces inside go without a probe for
  // kWarmFor (a page may leave the cache while a slow reader holds us).
  void know_warm(const store::Piece& p, std::uint64_t offset, std::uint64_t length) {
    warm_file_ = p.segment.get();
    warm_begin_ = offset;
    warm_end_ = offset + length;
    warm_until_ = Clock::now() + kWarmFor;
  }
  void forget_warm() { warm_file_ = nullptr; }

  void next_item() {
    ++item_;
    item_pos_ = 0;
    warmed_ = false;
  }

  // Copy path: pread into a buffer, send from it (what the benchmark compares against).
  ssize_t copy_send(int fd, const store::Piece& p) {
    if (copy_pos_ == copy_len_) {
      if (copy_buf_.empty())
        copy_buf_.resize(kCopyBuffer);
      const std::size_t want = std::min<std::uint64_t>(p.length - item_pos_, copy_buf_.size());
      const ssize_t r = ::pread(p.segment->fd(), copy_buf_.data(), want,
                                static_cast<off_t>(p.offset + item_pos_));
      if (r <= 0) {
        errno = EIO;
        return -1;
      }
      copy_len_ = static_cast<std::size_t>(r);
      copy_pos_ = 0;
    }
    const ssize_t n = ::send(fd, copy_buf_.data() + copy_pos_, copy_len_ - copy_pos_, MSG_NOSIGNAL);
    if (n > 0)
      copy_pos_ += static_cast<std::size_t>(n);
    if (copy_pos_ == copy_len_)
      copy_len_ = copy_pos_ = 0;
    return n;
  }

  void on_sent() {
    disarm();
    if (conn_.ssl != nullptr) {
      return_stage();
      server_.api.metrics().tls_bytes(conn_.ktls_send, tls_sent_);
      tls_sent_ = 0;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - started_).count();
    server_.api.metrics().record(route_, status_, body_bytes_, secs);
    if (opt().access_log) {
      spdlog::info("access {} {} {} {}B {:.3f}ms", admin_ ? "admin" : "public",
                   api::route_name(route_), status_, body_bytes_, secs * 1000);
    }
    started_ = {};
    out_parts_.clear();
    out_tail_.clear();
    items_.clear();
    string_parser_.reset();
    if (!keep_alive_)
      return client_closes_ && nothing_unread() ? close_now() : linger_close();
    read_request();
  }

  // True when the client asked to close and no byte of it is left unread (here, in
  // OpenSSL, or in the kernel): a close then sends FIN, not RST, and needs no linger.
  bool nothing_unread() {
    if (buffer_.size() != 0)
      return false;
    if (conn_.ssl != nullptr && SSL_pending(conn_.ssl) != 0)
      return false;
    int unread = 0;
    return ::ioctl(conn_.socket.native_handle(), FIONREAD, &unread) == 0 && unread == 0;
  }

  void close_now() { close(); }

  // Closing with unread request bytes makes the kernel send RST, which can destroy the
  // response before the client reads it (e.g. a 431 for a huge header). So: shut down our
  // side, then read and discard for a short while, as nginx's lingering_close does.
  void linger_close() {
    linger_ = true;
    close();
  }

  // Ends the connection. TLS: a close_notify goes first (RFC 8446 §6.1), whatever ends the
  // connection (a response done, a fill failed after the header, a timeout, an error
  // answer, shutdown), bounded by kCloseNotifyMs; then FIN, and a linger when the peer may
  // still be sending. Plain HTTP: the linger when asked for, else the socket closes now.
  void close() {
    if (ending_ || !conn_.socket.is_open())
      return close_socket();
    ending_ = true;
    if (!tls_can_notify())
      return linger_ ? shut_and_linger() : close_socket();
    arm(Timeout::kClose, kCloseNotifyMs);
    notify_step();
  }

  // A close_notify can follow: the handshake is done and no record is half-written.
  bool tls_can_notify() const {
    return conn_.ssl != nullptr && conn_.events.established && !conn_.record_pending &&
           conn_.socket.is_open();
  }

  // One step of the close_notify: what the writer gathered, the alert, the alert's flush;
  // waits for writability in between (the kClose deadline cancels the wait).
  void notify_step() {
    if (timeout_ == Timeout::kClose || conn_.writer.broken())
      return close_socket();
    if (conn_.writer.pending() && !conn_.writer.flush())
      return conn_.writer.broken() ? close_socket() : notify_when_writable();
    if (!notified_) {
      ERR_clear_error();
      const int r = SSL_shutdown(conn_.ssl);  // 0: ours sent, the peer's not yet read
      const int err = r < 0 ? SSL_get_error(conn_.ssl, r) : SSL_ERROR_NONE;
      ERR_clear_error();
      if (err == SSL_ERROR_WANT_WRITE)
        return notify_when_writable();
      if (err != SSL_ERROR_NONE)
        return close_socket();
      notified_ = true;
      if (conn_.writer.pending() && !conn_.writer.flush())  // a lent buffer gathered it
        return conn_.writer.broken() ? close_socket() : notify_when_writable();
    }
    // The peer may answer with its own close_notify, or still be sending: unread bytes at
    // close() would make the kernel send RST, which can destroy what the peer has not read.
    if (linger_ || !nothing_unread())
      return shut_and_linger();
    close_socket();
  }
  void notify_when_writable() {
    conn_.socket.async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
      if (ec)
        return self->close_socket();
      self->notify_step();
    });
  }

  // TLS close_notify at once, no wait (the grace expiry): written if the socket takes it.
  void send_close_notify() {
    ERR_clear_error();
    (void)SSL_shutdown(conn_.ssl);
    ERR_clear_error();
  }

  void shut_and_linger() {
    error_code ec;
    conn_.socket.shutdown(tcp::socket::shutdown_send, ec);
    if (ec)
      return close_socket();
    arm(Timeout::kIdle, kLingerMs);
    linger_buf_.resize(4096);
    linger_read();
  }
  void linger_read() {
    conn_.socket.async_read_some(asio::buffer(linger_buf_),
                                 [self = shared_from_this()](error_code ec, std::size_t) {
                                   if (ec || self->timeout_ != Timeout::kNone)
                                     return self->close_socket();
                                   self->linger_read();
                                 });
  }

  void close_socket() {
    disarm();
    error_code ec;
    conn_.socket.close(ec);
  }

  struct Item {
    const std::string* text;
    const store::Piece* piece;
  };

  Conn conn_;
  Timeout armed_ = Timeout::kNone;
  Clock::time_point deadline_{};
  Worker& worker_;
  Server::Impl& server_;
  bool admin_;
  bool counted_;
  std::string ip_;
  boost::beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::empty_body>> parser_;
  std::optional<bhttp::request_parser<bhttp::string_body>> string_parser_;
  std::optional<bhttp::request_parser<bhttp::buffer_body>> upload_parser_;
  std::unique_ptr<api::Upload> upload_;
  std::vector<std::uint8_t> upload_buf_;
  Timeout timeout_ = Timeout::kNone;
  bool idle_ = false;
  bool keep_alive_ = true;
  bool client_closes_ = false;  // the request said "Connection: close" (or was HTTP/1.0)
  bool accepts_gzip_ = false;   // the request's Accept-Encoding takes gzip
  Clock::time_point started_{};
  unsigned status_ = 0;
  api::Route route_ = api::Route::kOther;
  std::uint64_t body_bytes_ = 0;
  std::string out_head_;
  std::string out_tail_;
  std::vector<api::FilePart> out_parts_;
  std::vector<Item> items_;
  std::shared_ptr<api::BodyStream> stream_;  // a streamed body being sent
  std::size_t item_ = 0;
  std::size_t item_pos_ = 0;
  bool warmed_ = false;
  // The run of pieces being probed or warmed (cold_unwarmed), and the bytes of one segment
  // known to be in the page cache (know_warm); the pieces hold the file while it is set.
  store::FileStretch cold_;
  const store::SegmentFile* warm_file_ = nullptr;
  std::uint64_t warm_begin_ = 0;
  std::uint64_t warm_end_ = 0;
  Clock::time_point warm_until_{};
  std::vector<char> copy_buf_;
  std::vector<char> linger_buf_;
  std::size_t copy_len_ = 0;
  std::size_t copy_pos_ = 0;
  std::unique_ptr<char[]> stage_;  // userspace TLS: lent by the worker for one response
  std::size_t stage_len_ = 0;
  std::size_t stage_pos_ = 0;
  std::uint64_t tls_sent_ = 0;
  bool buffers_released_ = false;  // TLS: the record buffers were freed in this idle spell
  bool ending_ = false;            // close() began: what ends the connection is under way
  bool linger_ = false;            // the peer may still be sending: drain before closing
  bool notified_ = false;          // TLS: our close_notify is written
};

void Server::Impl::accept(Worker& w, Listener which) {
  const bool admin = which == Listener::kAdmin;
  auto& acceptor = admin ? *w.admin : which == Listener::kTls ? *w.tls : *w.acceptor;
  // The peer's address comes with the accept (no getpeername(2) per connection).
  tcp::endpoint& peer = w.peer[static_cast<std::size_t>(which)];
  acceptor.async_accept(
      w.io, peer, [this, &w, which, admin, &peer](error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || draining.load())
          return;
        if (ec) {
          // EMFILE and friends: back off briefly instead of spinning.
          spdlog::warn("accept failed: {}", ec.message());
          w.retry.expires_after(std::chrono::milliseconds(100));
          w.retry.async_wait([this, &w, which](error_code) { accept(w, which); });
          return;
        }
        std::string ip = peer.address().to_string();
        // TLS: the public TLS listener, and the admin one when tls.admin is set.
        SSL* ssl = nullptr;
        if (which == Listener::kTls || (admin && options.tls.enabled && options.tls.admin)) {
          const TlsContextPtr ctx = current_tls();
          ssl = SSL_new(ctx.get());
          if (ssl == nullptr || SSL_set_fd(ssl, socket.native_handle()) != 1) {
            spdlog::error("TLS: cannot set up a connection: {}", drain_ssl_errors());
            if (ssl != nullptr)
              SSL_free(ssl);
            accept(w, which);
            return;
          }
          SSL_set_accept_state(ssl);
        }
        std::string why;
        if (!admit(admin, ip, why)) {
          api.metrics().connection_refused();
          std::make_shared<Session>(std::move(socket), ssl, w, *this, admin, false, std::move(ip))
              ->refuse(why);
        } else {
          std::make_shared<Session>(std::move(socket), ssl, w, *this, admin, true, std::move(ip))
              ->start();
        }
        accept(w, which);
      });
}

std::string Server::Impl::reload_tls() {
  if (!options.tls.enabled)
    return "tls: not enabled ([tls] listen is not set)";
  std::string error;
  TlsContextPtr fresh = make_server_context(options.tls, error, current_tls().get());
  if (!fresh) {
    api.metrics().tls(api::Metrics::Tls::kReloadFailed);
    return error;
  }
  {
    std::lock_guard lock(tls_mutex);
    tls_ctx = std::move(fresh);
  }
  api.metrics().tls(api::Metrics::Tls::kReloaded);
  return {};
}

bool Server::Impl::admit(bool admin, const std::string& ip, std::string& why) {
  // Each listener has a budget of its own, so that a flood of device connections never
  // locks the operator out of /healthz and /metrics.
  auto& count = admin ? admin_connections : public_connections;
  const std::size_t limit = admin ? options.admin_max_connections : options.max_connections;
  if (count.fetch_add(1, std::memory_order_relaxed) >= static_cast<std::int64_t>(limit)) {
    count.fetch_sub(1, std::memory_order_relaxed);
    why = std::string(admin ? "admin" : "server") + ".max_connections (" + std::to_string(limit) +
          ")";
    return false;
  }
  if (!admin && options.max_connections_per_ip > 0) {
    std::lock_guard lock(per_ip_mutex);
    auto& n = per_ip[ip];
    if (n >= options.max_connections_per_ip) {
      count.fetch_sub(1, std::memory_order_relaxed);
      why = "server.max_connections_per_ip (" + std::to_string(options.max_connections_per_ip) +
            ") for " + ip;
      return false;
    }
    ++n;
  }
  connections.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Server::Impl::release(bool admin, const std::string& ip) {
  (admin ? admin_connections : public_connections).fetch_sub(1, std::memory_order_relaxed);
  if (admin || options.max_connections_per_ip == 0)
    return;
  std::lock_guard lock(per_ip_mutex);
  if (auto it = per_ip.find(ip); it != per_ip.end() && --it->second == 0)
    per_ip.erase(it);
}

void Server::Impl::sweep(Worker& w) {
  w.sweep.expires_after(std::chrono::milliseconds(kSweepMs));
  w.sweep.async_wait([this, &w](error_code ec) {
    if (ec)
      return;
    const auto now = Clock::now();
    // Copy: a check may close a socket, and the session may leave the set later.
    const std::vector<Session*> sessions(w.sessions.begin(), w.sessions.end());
    for (Session* s : sessions)
      s->check_deadline(now);
    // Expired TLS sessions leave the session-id cache every 10 s (OpenSSL's own sweep is
    // off: it ran on the handshake path).
    if (&w == workers[0].get() && options.tls.enabled && ++w.ticks % (10'000 / kSweepMs) == 0)
      flush_expired_sessions(current_tls().get());
    // Once draining and empty, stop ticking so that io_context::run() can return.
    if (!(draining.load(std::memory_order_relaxed) && w.sessions.empty()))
      sweep(w);
  });
}

void Server::Impl::drain_worker(Worker& w) {
  error_code ec;
  if (w.acceptor)
    w.acceptor->close(ec);
  if (w.admin)
    w.admin->close(ec);
  if (w.tls)
    w.tls->close(ec);
  w.retry.cancel();
  // Copy: drain() may close sockets, whose handlers run later and erase from the set.
  const std::vector<Session*> sessions(w.sessions.begin(), w.sessions.end());
  for (Session* s : sessions)
    s->drain();
}

void Server::Impl::stop() {
  if (draining.exchange(true))
    return;
  spdlog::info("shutting down: no new connections; in-flight responses get {} ms",
               options.shutdown_grace_ms);
  if (on_stop)
    on_stop();  // e.g. answer long polls now rather than at the end of their wait
  for (auto& w : workers)
    asio::post(w->io, [this, wp = w.get()] { drain_worker(*wp); });
  asio::post(workers[0]->io, [this] {
    if (signals)
      signals->cancel();
    if (connections.load() == 0)
      return;  // nothing in flight: run() returns now
    grace.emplace(workers[0]->io, std::chrono::milliseconds(options.shutdown_grace_ms));
    grace->async_wait([this](error_code ec) {
      if (ec)
        return;
      spdlog::warn("shutdown grace period over: closing {} connections",
                   connections.load(std::memory_order_relaxed));
      // Each connection is closed on its own thread, a TLS one after a close_notify.
      for (auto& w : workers) {
        asio::post(w->io, [wp = w.get()] {
          const std::vector<Session*> sessions(wp->sessions.begin(), wp->sessions.end());
          for (Session* s : sessions)
            s->hang_up();
          wp->io.stop();
        });
      }
    });
  });
}

void Server::Impl::all_closed() {
  asio::post(workers[0]->io, [this] {
    if (grace)
      grace->cancel();
  });
}

namespace {

tcp::acceptor make_acceptor(asio::io_context& io, const std::string& host, std::uint16_t port,
                            bool reuse_port, const char* what) {
  error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec)
    throw std::runtime_error(std::string(what) + ": '" + host + "' is not an IP address");
  tcp::acceptor a(io);
  const tcp::endpoint ep(address, port);
  a.open(ep.protocol(), ec);
  if (!ec)
    a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec && reuse_port)
    a.set_option(ReusePort(true), ec);
  if (!ec)
    a.bind(ep, ec);
  if (!ec)
    a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error(std::string(what) + ": cannot listen on " + host + ":" +
                             std::to_string(port) + ": " + ec.message());
  }
  return a;
}

}  // namespace

Server::Server(ServerOptions options, api::Api& api)
    : impl_(std::make_unique<Impl>(std::move(options), api)) {
  auto& o = impl_->options;
  if (o.threads == 0)
    o.threads = 1;
  for (unsigned i = 0; i < o.threads; ++i)
    impl_->workers.push_back(std::make_unique<Worker>());
  if (o.tls.enabled) {
    std::string error;
    impl_->tls_ctx = make_server_context(o.tls, error);
    if (!impl_->tls_ctx)
      throw std::runtime_error(error);
  }
  if (!o.plain && !o.tls.enabled)
    throw std::runtime_error("server.listen: may be empty only when [tls] listen is set");
  // With port 0 the first listener picks a port; the others share it through SO_REUSEPORT.
  std::uint16_t port = o.listen_port;
  std::uint16_t tls_port = o.tls.listen_port;
  for (auto& w : impl_->workers) {
    if (o.plain) {
      w->acceptor.emplace(make_acceptor(w->io, o.listen_host, port, true, "server.listen"));
      port = w->acceptor->local_endpoint().port();
    }
    if (o.tls.enabled) {
      w->tls.emplace(make_acceptor(w->io, o.tls.listen_host, tls_port, true, "tls.listen"));
      tls_port = w->tls->local_endpoint().port();
    }
  }
  impl_->public_port = o.plain ? port : 0;
  impl_->tls_port = o.tls.enabled ? tls_port : 0;
  if (o.admin_scan_threads > 0) {
    impl_->scans.emplace();
    impl_->scans_work.emplace(impl_->scans->get_executor());
    for (unsigned i = 0; i < o.admin_scan_threads; ++i) {
      impl_->scan_threads.push_back(named_thread("admin-scan-" + std::to_string(i), [this] {
        // Below the event loops: on a busy core a scan takes the time they leave.
        (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kScanNice);
        impl_->scans->run();
      }));
    }
  }
  auto& w0 = *impl_->workers[0];
  w0.admin.emplace(make_acceptor(w0.io, o.admin_host, o.admin_port, false, "admin.listen"));
  impl_->admin_port = w0.admin->local_endpoint().port();
}

Server::~Server() = default;

std::uint16_t Server::public_port() const {
  return impl_->public_port;
}
std::uint16_t Server::admin_port() const {
  return impl_->admin_port;
}
std::uint16_t Server::tls_port() const {
  return impl_->tls_port;
}
std::string Server::reload_tls() {
  return impl_->reload_tls();
}

void Server::set_on_stop(std::function<void()> fn) {
  impl_->on_stop = std::move(fn);
}

void Server::stop() {
  impl_->stop();
}

void Server::wait_signal() {
  impl_->signals->async_wait([this](error_code ec, int sig) {
    if (ec)
      return;
    if (sig == SIGHUP) {
      // Certificates for new connections; open ones keep theirs.
      if (!impl_->options.tls.enabled) {
        spdlog::info("received SIGHUP: nothing to reload ([tls] is off)");
      } else if (const std::string error = reload_tls(); error.empty()) {
        spdlog::info("received SIGHUP: TLS certificate reloaded from {} for new connections",
                     impl_->options.tls.cert_file);
      } else {
        spdlog::error("received SIGHUP: TLS reload refused, the old certificate stays: {}", error);
      }
      return wait_signal();
    }
    spdlog::info("received signal {}", sig);
    stop();
  });
}

void Server::run() {
  auto& impl = *impl_;
  for (auto& w : impl.workers) {
    if (w->acceptor)
      impl.accept(*w, Impl::Listener::kPublic);
    if (w->tls)
      impl.accept(*w, Impl::Listener::kTls);
    impl.sweep(*w);
  }
  impl.accept(*impl.workers[0], Impl::Listener::kAdmin);
  impl.signals.emplace(impl.workers[0]->io, SIGINT, SIGTERM, SIGHUP);
  wait_signal();
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < impl.workers.size(); ++i) {
    // io 0 is the main thread: it keeps the process's name.
    threads.push_back(
        named_thread("io-" + std::to_string(i), [w = impl.workers[i].get()] { w->io.run(); }));
  }
  impl.workers[0]->io.run();
  for (auto& t : threads)
    t.join();
}

}  // namespace edge::server
