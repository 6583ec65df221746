#include "origin-sync/http_client.hpp"

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/vector_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace edge::sync {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxReplyBytes = 1ULL << 30;  // a snapshot can be large

std::string ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty())
      out += "; ";
    out += reason != nullptr ? reason : "unknown OpenSSL error";
  }
  return out;
}

// The first non-empty buffer of a sequence (a write sends one at a time), or an empty one.
template <class Buffers>
asio::const_buffer first_bytes(const Buffers& buffers) {
  for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
       ++it) {
    const asio::const_buffer b = *it;
    if (b.size() != 0)
      return b;
  }
  return {};
}

// OpenSSL on a blocking socket (SO_RCVTIMEO/SO_SNDTIMEO bound each wait) as a Beast
// SyncReadStream and SyncWriteStream.
struct TlsIo {
  SSL* ssl;
  static void map_error(SSL* ssl, int r, boost::system::error_code& ec) {
    switch (SSL_get_error(ssl, r)) {
      case SSL_ERROR_ZERO_RETURN: ec = asio::error::eof; break;
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE: ec = asio::error::timed_out; break;  // SO_*TIMEO ran out
      default: ec = asio::error::connection_reset; break;
    }
    ERR_clear_error();
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, boost::system::error_code& ec) {
    const asio::mutable_buffer b = *asio::buffer_sequence_begin(buffers);
    std::size_t n = 0;
    ERR_clear_error();
    const int r = SSL_read_ex(ssl, b.data(), b.size(), &n);
    if (r == 1) {
      ec = {};
      return n;
    }
    map_error(ssl, r, ec);
    return 0;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, boost::system::error_code& ec) {
    const asio::const_buffer b = first_bytes(buffers);
    ec = {};
    if (b.size() == 0)
      return 0;
    std::size_t n = 0;
    ERR_clear_error();
    const int r = SSL_write_ex(ssl, b.data(), b.size(), &n);
    if (r == 1)
      return n;
    map_error(ssl, r, ec);
    return 0;
  }
};

// Plain TCP on a blocking socket, each wait bounded by SO_RCVTIMEO/SO_SNDTIMEO, as a Beast
// SyncReadStream and SyncWriteStream. Not Asio's own blocking reads: after an EAGAIN (the
// timeout) Asio polls again without a timeout, so a peer that stalls mid-reply would hold
// the thread for good.
struct PlainIo {
  int fd;
  static boost::system::error_code error_of(int err) {
    if (err == EAGAIN || err == EWOULDBLOCK)
      return asio::error::timed_out;  // SO_*TIMEO ran out
    return {err, boost::system::system_category()};
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, boost::system::error_code& ec) {
    const asio::mutable_buffer b = *asio::buffer_sequence_begin(buffers);
    while (true) {
      const ssize_t n = ::recv(fd, b.data(), b.size(), 0);
      if (n > 0) {
        ec = {};
        return static_cast<std::size_t>(n);
      }
      if (n == 0 && b.size() > 0) {
        ec = asio::error::eof;
        return 0;
      }
      if (n < 0 && errno == EINTR)
        continue;
      ec = n == 0 ? boost::system::error_code() : error_of(errno);
      return 0;
    }
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, boost::system::error_code& ec) {
    const asio::const_buffer b = first_bytes(buffers);
    ec = {};
    if (b.size() == 0)
      return 0;
    while (true) {
      const ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL);
      if (n >= 0)
        return static_cast<std::size_t>(n);
      if (errno != EINTR) {
        ec = error_of(errno);
        return 0;
      }
    }
  }
};

// The throwing forms Beast's stream concepts also ask for, over a stream's error_code forms.
template <class Stream>
struct Throwing : Stream {
  using Stream::read_some;
  using Stream::write_some;
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers) {
    boost::system::error_code ec;
    const std::size_t n = Stream::read_some(buffers, ec);
    if (ec)
      throw boost::system::system_error(ec);
    return n;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers) {
    boost::system::error_code ec;
    const std::size_t n = Stream::write_some(buffers, ec);
    if (ec)
      throw boost::system::system_error(ec);
    return n;
  }
};

using TlsStream = Throwing<TlsIo>;
using PlainStream = Throwing<PlainIo>;

}  // namespace

// Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO: a recv that waits for the peer costs one
// syscall, where a reactor round trip (recv, epoll_wait, timerfd) costs three; on a VM the
// per-syscall cost dominates a 64 KiB chunk fetch. Connect uses a timer (rare).
struct HttpClient::Impl {
  std::string host;
  std::string port;
  std::string token;
  std::uint32_t timeout_ms;
  bool https = false;
  SSL_CTX* ctx = nullptr;          // https: the client context (verification set up)
  SSL* ssl = nullptr;              // https: the connection's TLS state
  SSL_SESSION* session = nullptr;  // https: the last session, resumed on reconnect
  std::string ctx_error;           // https: why the context could not be set up
  std::string last_error;

  ~Impl() {
    close();
    if (session != nullptr)
      SSL_SESSION_free(session);
    if (ctx != nullptr)
      SSL_CTX_free(ctx);
  }

  void setup_tls(const std::string& ca_file) {
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) {
      ctx_error = "TLS: cannot create a context: " + ssl_errors();
      return;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn);
    const int loaded = ca_file.empty()
                           ? SSL_CTX_set_default_verify_paths(ctx)
                           : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    if (loaded != 1) {
      ctx_error = ca_file.empty() ? "TLS: cannot load the system CA store: " + ssl_errors()
                                  : "TLS: upstream.ca_file '" + ca_file +
                                        "' holds no PEM certificate: " + ssl_errors();
    }
  }

  // After TCP connect: the handshake, chain and host name checked. Empty: secured.
  std::string handshake() {
    if (!ctx_error.empty())
      return ctx_error;
    // OpenSSL reads the fd itself: blocking, each wait bounded by SO_RCVTIMEO/SO_SNDTIMEO
    // (Asio left it non-blocking after the async connect).
    boost::system::error_code nb;
    socket->native_non_blocking(false, nb);
    ERR_clear_error();
    ssl = SSL_new(ctx);
    if (ssl == nullptr || SSL_set_fd(ssl, socket->native_handle()) != 1)
      return "TLS: cannot set up the connection: " + ssl_errors();
    boost::system::error_code ec;
    (void)asio::ip::make_address(host, ec);  // an IP address: checked as one, no SNI
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, host.c_str());
      SSL_set1_host(ssl, host.c_str());
    }
    if (session != nullptr)
      SSL_set_session(ssl, session);
    const int r = SSL_connect(ssl);
    if (r == 1) {
      if (SSL_SESSION* s = SSL_get1_session(ssl)) {
        if (session != nullptr)
          SSL_SESSION_free(session);
        session = s;
      }
      return {};
    }
    const long verify = SSL_get_verify_result(ssl);
    std::string why;
    if (verify != X509_V_OK) {
      why = std::string("TLS: certificate of ") + host +
            " rejected: " + X509_verify_cert_error_string(verify);
    } else {
      const int err = SSL_get_error(ssl, r);
      why = err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE
                ? std::string("TLS: handshake timed out")
                : "TLS: handshake with " + host + " failed: " + ssl_errors();
      if (why.ends_with("failed: "))
        why += "the connection closed (not a TLS server?)";
    }
    ERR_clear_error();
    return why;
  }
  asio::io_context io{1};
  std::optional<tcp::socket> socket;
  beast::flat_buffer buffer{256 << 10};
  std::mutex fd_mutex;  // guards `fd` against cancel() from another thread
  int fd = -1;
  std::atomic<bool> cancelled{false};

  static timeval to_timeval(std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    return tv;
  }
  void set_timeouts(std::chrono::milliseconds timeout) {
    const timeval tv = to_timeval(timeout);
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    read_armed = timeout;
  }
  // Bounds the next read by what is left of the request's deadline. Re-armed only once the
  // deadline has moved 100 ms closer than the armed wait: a setsockopt per read was a sixth
  // of an edge's CPU while it filled (a reply may overrun its deadline by up to 100 ms).
  void arm_read(std::chrono::milliseconds remaining) {
    if (read_armed - remaining < std::chrono::milliseconds(100))
      return;
    const timeval tv = to_timeval(remaining);
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    read_armed = remaining;
  }
  std::chrono::milliseconds read_armed{0};

  void close() {
    std::lock_guard lock(fd_mutex);
    fd = -1;
    if (ssl != nullptr) {
      SSL_free(ssl);
      ssl = nullptr;
    }
    socket.reset();
  }

  boost::system::error_code connect(std::chrono::milliseconds timeout) {
    close();
    buffer.clear();
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(host, port, ec);
    if (ec)
      return ec;
    beast::tcp_stream stream(io);
    stream.expires_after(timeout);
    stream.async_connect(endpoints,
                         [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
    io.restart();
    io.run();
    if (ec)
      return ec;
    socket.emplace(stream.release_socket());
    socket->set_option(tcp::no_delay(true), ec);
    // Blocking from here: every wait is bounded by SO_RCVTIMEO/SO_SNDTIMEO (PlainStream,
    // TlsStream), not by a reactor.
    socket->native_non_blocking(false, ec);
    std::lock_guard lock(fd_mutex);
    fd = socket->native_handle();
    return ec;
  }
};

HttpClient::HttpClient(std::string base_url, std::string token, std::uint32_t timeout_ms,
                       std::string ca_file)
    : base_url_(std::move(base_url)), impl_(std::make_unique<Impl>()) {
  // base_url was validated by the config: http(s)://host:port
  impl_->https = base_url_.starts_with("https://");
  std::string_view hp = std::string_view(base_url_).substr(impl_->https ? 8 : 7);
  if (impl_->https)
    impl_->setup_tls(ca_file);
  const auto colon = hp.rfind(':');
  std::string_view host = hp.substr(0, colon);
  if (host.size() > 2 && host.front() == '[')
    host = host.substr(1, host.size() - 2);
  impl_->host = std::string(host);
  impl_->port = std::string(hp.substr(colon + 1));
  impl_->token = std::move(token);
  impl_->timeout_ms = timeout_ms;
}

HttpClient::~HttpClient() = default;

const std::string& HttpClient::last_error() const {
  return impl_->last_error;
}

void HttpClient::cancel() {
  impl_->cancelled = true;
  {
    // Wakes a blocked recv/send; the owning thread then sees `cancelled`.
    std::lock_guard lock(impl_->fd_mutex);
    if (impl_->fd >= 0)
      ::shutdown(impl_->fd, SHUT_RDWR);
  }
  asio::post(impl_->io, [] {});  // and a connect in progress returns at its timer
}

Result<HttpReply> HttpClient::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers, std::uint32_t timeout_ms,
    std::uint64_t max_body_bytes) {
  auto& im = *impl_;
  const std::chrono::milliseconds timeout(timeout_ms != 0 ? timeout_ms : im.timeout_ms);
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, im.host + ":" + im.port);
  req.set(bhttp::field::user_agent, "bundle-edge-sync/0.1");
  if (!im.token.empty())
    req.set(bhttp::field::authorization, "Bearer " + im.token);
  for (const auto& [name, value] : headers)
    req.set(name, value);
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = std::string(body);
    req.prepare_payload();
  }
  // The timeout bounds the whole call, not each recv: a peer dripping a byte a second
  // must not hold a fill (or the sync loop) past it. Every wait gets what is left.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now());
  };
  // A kept-alive connection may have been closed by the peer meanwhile: one fresh retry.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (im.cancelled)
      return Errc::kShutdown;
    const bool reused = im.socket.has_value();
    if (!reused) {
      if (left().count() <= 0) {
        im.last_error = "timed out before connecting";
        return Errc::kIo;
      }
      if (auto ec = im.connect(left())) {
        im.last_error = "connect to " + im.host + ":" + im.port + ": " + ec.message();
        im.close();
        return im.cancelled ? Errc::kShutdown : Errc::kIo;
      }
      if (im.https) {
        im.set_timeouts(std::max(left(), std::chrono::milliseconds(1)));
        if (std::string why = im.handshake(); !why.empty()) {
          im.last_error = std::move(why);
          im.close();
          return im.cancelled ? Errc::kShutdown : Errc::kIo;
        }
      }
    }
    im.set_timeouts(std::max(left(), std::chrono::milliseconds(1)));
    boost::system::error_code ec;
    TlsStream tls{{im.ssl}};
    PlainStream plain{{im.socket->native_handle()}};
    if (im.https) {
      bhttp::write(tls, req, ec);
    } else {
      bhttp::write(plain, req, ec);
    }
    const std::uint64_t limit = max_body_bytes != 0 ? max_body_bytes : kMaxReplyBytes;
    bhttp::response_parser<bhttp::vector_body<std::uint8_t>> parser;
    parser.body_limit(limit);
    parser.eager(false);  // the header first: a sized body is read below, straight into place
    SharedBytes direct;   // the body, when it was read that way
    // One bounded read: `read(stream)` on the connection's stream, its wait bounded by what
    // is left of the deadline.
    const auto step = [&](const auto& read) {
      const auto remaining = left();
      if (remaining.count() <= 0) {
        ec = asio::error::timed_out;
        return;
      }
      im.arm_read(remaining);
      if (im.https) {
        read(tls);
      } else {
        read(plain);
      }
    };
    const auto parse_some = [&](auto& stream) { bhttp::read_some(stream, im.buffer, parser, ec); };
    while (!ec && !parser.is_header_done())
      step(parse_some);
    if (!ec && !parser.is_done() && parser.content_length()) {
      // A sized body (a blob range, a chunk) goes into one buffer that is never zero-filled,
      // in reads as large as the socket gives, without passing through the parser's buffer.
      const std::uint64_t n = *parser.content_length();
      if (n > limit) {
        ec = bhttp::error::body_limit;
      } else {
        std::uint8_t* to = nullptr;
        direct = SharedBytes::uninitialized(n, to);
        std::size_t got = std::min<std::size_t>(im.buffer.size(), n);
        std::memcpy(to, im.buffer.data().data(), got);
        im.buffer.consume(got);
        while (!ec && got < n) {
          step([&](auto& stream) { got += stream.read_some(asio::buffer(to + got, n - got), ec); });
        }
      }
    }
    while (!ec && !direct && !parser.is_done())
      step(parse_some);
    if (ec) {
      im.last_error = ec.message();
      im.close();
      im.buffer.clear();
      if (im.cancelled)
        return Errc::kShutdown;
      const bool timed_out = ec == asio::error::would_block || ec == asio::error::timed_out ||
                             ec == asio::error::try_again;
      if (ec == bhttp::error::body_limit)
        return Errc::kTooLarge;
      if (reused && !timed_out && !parser.got_some())
        continue;  // stale keep-alive connection: once more on a new one
      return Errc::kIo;
    }
    im.last_error.clear();
    auto res = parser.release();
    if (!res.keep_alive())
      im.close();
    return HttpReply{res.result_int(),
                     direct ? std::move(direct) : SharedBytes::of(std::move(res.body()))};
  }
  return Errc::kIo;
}

void Stopper::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
}

void Stopper::wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  cv_.notify_all();
}

bool Stopper::stopped() const {
  std::lock_guard lock(mutex_);
  return stop_;
}

bool Stopper::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, d, [&] { return stop_ || woken_; });
  woken_ = false;
  return !stop_;
}

std::uint32_t backoff_ms(unsigned attempt, std::uint32_t base_ms, std::uint32_t cap_ms) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const std::uint64_t d =
      std::min<std::uint64_t>(cap_ms, std::uint64_t{base_ms} << std::min(attempt, 20U));
  std::uniform_int_distribution<std::uint64_t> dist(d / 2, d);
  return static_cast<std::uint32_t>(dist(rng));
}

}  // namespace edge::sync
