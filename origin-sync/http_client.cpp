#include "origin-sync/http_client.hpp"

#include <chrono>
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
#include <boost/beast/http/write.hpp>

namespace edge::sync {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxReplyBytes = 1ULL << 30;  // a snapshot can be large

}  // namespace

struct HttpClient::Impl {
  std::string host;
  std::string port;
  std::string token;
  std::uint32_t timeout_ms;
  asio::io_context io{1};
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  std::atomic<bool> cancelled{false};

  // Runs the io_context until the operation in flight completes.
  void run() {
    io.restart();
    io.run();
  }

  boost::system::error_code connect(std::chrono::milliseconds timeout) {
    stream.emplace(io);
    buffer.clear();
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(host, port, ec);
    if (ec)
      return ec;
    stream->expires_after(timeout);
    stream->async_connect(endpoints,
                          [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (!ec)
      stream->socket().set_option(tcp::no_delay(true), ec);
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
  asio::post(impl_->io, [impl = impl_.get()] {
    if (impl->stream)
      impl->stream->cancel();
  });
}

Result<HttpReply> HttpClient::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers, std::uint32_t timeout_ms) {
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
  // A kept-alive connection may have been closed by the peer meanwhile: one fresh retry.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (im.cancelled)
      return Errc::kShutdown;
    const bool reused = im.stream.has_value();
    if (!reused) {
      if (auto ec = im.connect(timeout)) {
        im.stream.reset();
        return im.cancelled ? Errc::kShutdown : Errc::kIo;
      }
    }
    boost::system::error_code ec;
    im.stream->expires_after(timeout);
    bhttp::async_write(*im.stream, req, [&](boost::system::error_code e, std::size_t) { ec = e; });
    im.run();
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(kMaxReplyBytes);
    if (!ec) {
      bhttp::async_read(*im.stream, im.buffer, parser,
                        [&](boost::system::error_code e, std::size_t) { ec = e; });
      im.run();
    }
    if (ec) {
      im.stream.reset();
      if (im.cancelled)
        return Errc::kShutdown;
      if (reused && ec != beast::error::timeout)
        continue;  // stale keep-alive connection: once more on a new one
      return Errc::kIo;
    }
    auto res = parser.release();
    if (!res.keep_alive())
      im.stream.reset();
    return HttpReply{res.result_int(), std::move(res.body())};
  }
  return Errc::kIo;
}

std::uint32_t backoff_ms(unsigned attempt, std::uint32_t base_ms, std::uint32_t cap_ms) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const std::uint64_t d =
      std::min<std::uint64_t>(cap_ms, std::uint64_t{base_ms} << std::min(attempt, 20U));
  std::uniform_int_distribution<std::uint64_t> dist(d / 2, d);
  return static_cast<std::uint32_t>(dist(rng));
}

}  // namespace edge::sync
