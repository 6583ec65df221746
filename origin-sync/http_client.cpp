#include "origin-sync/http_client.hpp"

#include <chrono>
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

#include <sys/socket.h>
#include <sys/time.h>

namespace edge::sync {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxReplyBytes = 1ULL << 30;  // a snapshot can be large

}  // namespace

// Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO: a recv that waits for the peer costs one
// syscall, where a reactor round trip (recv, epoll_wait, timerfd) costs three; on a VM the
// per-syscall cost dominates a 64 KiB chunk fetch. Connect uses a timer (rare).
struct HttpClient::Impl {
  std::string host;
  std::string port;
  std::string token;
  std::uint32_t timeout_ms;
  asio::io_context io{1};
  std::optional<tcp::socket> socket;
  beast::flat_buffer buffer{256 << 10};
  std::mutex fd_mutex;  // guards `fd` against cancel() from another thread
  int fd = -1;
  std::atomic<bool> cancelled{false};

  void set_timeouts(std::chrono::milliseconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(socket->native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }

  void close() {
    std::lock_guard lock(fd_mutex);
    fd = -1;
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
    std::lock_guard lock(fd_mutex);
    fd = socket->native_handle();
    return ec;
  }
};

HttpClient::HttpClient(std::string base_url, std::string token, std::uint32_t timeout_ms)
    : base_url_(std::move(base_url)), impl_(std::make_unique<Impl>()) {
  // base_url was validated by the config: http://host:port
  std::string_view hp = std::string_view(base_url_).substr(7);
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
      if (left().count() <= 0)
        return Errc::kIo;
      if (auto ec = im.connect(left())) {
        im.close();
        return im.cancelled ? Errc::kShutdown : Errc::kIo;
      }
    }
    im.set_timeouts(std::max(left(), std::chrono::milliseconds(1)));
    boost::system::error_code ec;
    bhttp::write(*im.socket, req, ec);
    bhttp::response_parser<bhttp::vector_body<std::uint8_t>> parser;
    parser.body_limit(max_body_bytes != 0 ? max_body_bytes : kMaxReplyBytes);
    while (!ec && !parser.is_done()) {
      const auto remaining = left();
      if (remaining.count() <= 0) {
        ec = asio::error::timed_out;
        break;
      }
      im.set_timeouts(remaining);
      bhttp::read_some(*im.socket, im.buffer, parser, ec);
    }
    if (ec) {
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
    auto res = parser.release();
    if (!res.keep_alive())
      im.close();
    return HttpReply{res.result_int(), std::move(res.body())};
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
