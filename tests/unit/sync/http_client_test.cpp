// HttpClient's reply bodies (DESIGN §10): a sized body is read straight into one buffer
// that is never zero-filled, past Beast's parser; chunked bodies and everything else go
// through the parser. Against a scripted server on 127.0.0.1 (port 0) that sends its
// answer in pieces. Then UpstreamSet's order and FailoverClient's failover.
#include "origin-sync/http_client.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "edge/core/errc.hpp"
#include "origin-sync/upstream_set.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace edge::sync {
namespace {

// Accepts one connection and, for each scripted answer in turn, reads one request head
// and sends the answer's pieces with a pause between them; then closes.
class ScriptedServer {
 public:
  using Answers = std::vector<std::vector<std::string>>;
  explicit ScriptedServer(Answers answers) : answers_(std::move(answers)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }
  /// The head of the last request read.
  std::string last_head() const {
    std::lock_guard lock(mutex_);
    return last_head_;
  }

 private:
  void run() {
    const int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0)
      return;
    std::string in;
    for (const auto& pieces : answers_) {
      while (in.find("\r\n\r\n") == std::string::npos) {
        char buf[4096];
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        in.append(buf, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        last_head_ = in.substr(0, in.find("\r\n\r\n"));
      }
      in.erase(0, in.find("\r\n\r\n") + 4);
      ++requests_;
      for (const auto& piece : pieces) {
        (void)::send(c, piece.data(), piece.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    ::close(c);
  }

  Answers answers_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> requests_{0};
  mutable std::mutex mutex_;
  std::string last_head_;  // guarded by mutex_
  std::thread thread_;
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

std::string body_of(const HttpReply& r) {
  return std::string(r.text());
}

TEST(HttpClient, SizedBodiesInPiecesOnOneKeptAliveConnection) {
  const std::string big = pattern(3 << 20);
  const std::string small = pattern(1000);
  const std::string head =
      "HTTP/1.1 206 Partial Content\r\nContent-Length: " + std::to_string(big.size()) + "\r\n\r\n";
  // The first piece carries the header and the start of the body (it is in the parser's
  // buffer when the header is done); the rest arrives later, across many reads. The second
  // answer follows on the same connection.
  ScriptedServer server(ScriptedServer::Answers{
      {head + big.substr(0, 5000), big.substr(5000, 1 << 20), big.substr(5000 + (1 << 20))},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + small}});
  HttpClient client(server.url(), "", 5000);
  auto r = client.request("GET", "/a");
  ASSERT_TRUE(r) << client.last_error();
  EXPECT_EQ(r->status, 206U);
  EXPECT_EQ(body_of(*r), big);
  auto r2 = client.request("GET", "/b");
  ASSERT_TRUE(r2) << client.last_error();
  EXPECT_EQ(body_of(*r2), small);
  EXPECT_EQ(server.requests(), 2) << "one connection for both";
}

TEST(HttpClient, ChunkedBodiesGoThroughTheParser) {
  ScriptedServer server(
      ScriptedServer::Answers{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
                               "\r\n6\r\n world\r\n0\r\n\r\n"}});
  HttpClient client(server.url(), "", 5000);
  auto r = client.request("GET", "/c");
  ASSERT_TRUE(r) << client.last_error();
  EXPECT_EQ(body_of(*r), "hello world");
}

TEST(HttpClient, ABodyOverTheLimitIsRefusedUnread) {
  ScriptedServer server(
      ScriptedServer::Answers{{"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + pattern(5000)}});
  HttpClient client(server.url(), "", 5000);
  auto r = client.request("GET", "/d", {}, {}, 0, 4096);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kTooLarge);
}

TEST(HttpClient, ABodyCutShortIsAnError) {
  // 100 of 5000 promised bytes, then the server closes: never a short body as an answer.
  ScriptedServer server(
      ScriptedServer::Answers{{"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + pattern(100)}});
  HttpClient client(server.url(), "", 5000);
  auto r = client.request("GET", "/e");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kIo);
}

TEST(HttpClient, AReplyThatStallsEndsAtTheTimeout) {
  // The header and 100 of 5000 bytes, then nothing (the connection stays open: the server
  // waits for a next request). The call must end at its timeout, not wait for the peer.
  ScriptedServer server(ScriptedServer::Answers{
      {"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + pattern(100)}, {}});
  HttpClient client(server.url(), "", 5000);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = client.request("GET", "/f", {}, {}, 500);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kIo);
  EXPECT_LT(took, std::chrono::seconds(3))
      << "bounded by the 500 ms timeout (+100 ms re-arm slack)";
}

api::UpstreamOptions upstreams(std::vector<std::string> urls) {
  api::UpstreamOptions o;
  o.urls = std::move(urls);
  o.timeout_ms = 2000;
  o.backoff_max_ms = 60'000;  // no backoff ends within a test
  return o;
}

// A loopback port nobody listens on (bound, then closed): connections are refused.
std::string dead_url() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
}

TEST(UpstreamSet, TheFirstHealthyInListOrderIsUsed) {
  api::SyncMetrics metrics;
  UpstreamSet set(upstreams({"http://a:1", "http://b:2", "http://c:3"}), &metrics);
  using Order = std::vector<std::size_t>;
  EXPECT_EQ(set.order(), (Order{0, 1, 2}));
  EXPECT_EQ(set.current(), 0U);
  EXPECT_EQ(metrics.current_upstream(), "http://a:1");

  set.failed(0, "connection refused");
  EXPECT_EQ(set.order(), (Order{1, 2, 0})) << "a failed one is tried last";
  EXPECT_EQ(set.current(), 1U);
  EXPECT_EQ(metrics.upstream_switches.load(), 1U);
  EXPECT_EQ(metrics.current_upstream(), "http://b:2");
  EXPECT_FALSE(metrics.upstreams()[0].up);
  set.failed(0, "again, from another thread");  // the same outage: nothing changes
  EXPECT_EQ(metrics.upstream_switches.load(), 1U);

  set.failed(2, "timeout");  // not the one in use: no switch
  EXPECT_EQ(set.current(), 1U);
  EXPECT_EQ(set.order(), (Order{1, 0, 2}));
  EXPECT_EQ(metrics.upstream_switches.load(), 1U);

  set.failed(1, "HTTP 503");  // none healthy: every one is still tried, in list order
  EXPECT_EQ(set.order(), (Order{0, 1, 2}));
  EXPECT_EQ(set.current(), 1U) << "the last one in use, until one answers";

  set.succeeded(2);
  EXPECT_EQ(set.current(), 2U);
  set.succeeded(0);  // the preferred one answers again: back to it
  EXPECT_EQ(set.current(), 0U);
  EXPECT_EQ(set.order(), (Order{0, 2, 1}));
  EXPECT_EQ(metrics.upstream_switches.load(), 3U);
  const auto list = metrics.upstreams();
  ASSERT_EQ(list.size(), 3U);
  EXPECT_TRUE(list[0].up && list[0].current);
  EXPECT_TRUE(!list[1].up && !list[1].current);
  EXPECT_TRUE(list[2].up && !list[2].current);
}

TEST(FailoverClient, ARequestMovesOnAfterARefusalOrA5xxUnchanged) {
  // Upstream 1 refuses connections, upstream 2 answers 503, upstream 3 takes the request:
  // it reaches 2 and 3 with the same method, target and Idempotency-Key.
  ScriptedServer failing(ScriptedServer::Answers{
      {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"}});
  ScriptedServer taking(
      ScriptedServer::Answers{{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"}});
  api::SyncMetrics metrics;
  UpstreamSet set(upstreams({dead_url(), failing.url(), taking.url()}), &metrics);
  FailoverClient client(set, upstreams({}));
  auto r = client.request("POST", "/v1/checkins", R"({"checkins":[]})",
                          {{"Idempotency-Key", "node-a:00000000000000ff:7"}});
  ASSERT_TRUE(r) << client.last_error();
  EXPECT_EQ(r->status, 200U);
  EXPECT_EQ(client.base_url(), taking.url());
  for (const auto* server : {&failing, &taking}) {
    EXPECT_EQ(server->requests(), 1);
    const std::string head = server->last_head();
    EXPECT_EQ(head.rfind("POST /v1/checkins HTTP/1.1", 0), 0U) << head;
    EXPECT_NE(head.find("Idempotency-Key: node-a:00000000000000ff:7"), std::string::npos) << head;
  }
  EXPECT_EQ(set.current(), 2U);
  EXPECT_EQ(metrics.upstream_switches.load(), 2U);  // 1 -> 2 -> 3
}

TEST(FailoverClient, EveryUpstreamFailingGivesTheLastFailure) {
  ScriptedServer failing(
      ScriptedServer::Answers{{"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad"}});
  UpstreamSet set(upstreams({dead_url(), failing.url()}), nullptr);
  FailoverClient client(set, upstreams({}));
  auto r = client.request("GET", "/v1/chunks/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502U) << "the caller sees the last answer and decides";
  EXPECT_EQ(client.last_error(), "HTTP 502");
  // Nothing answered: both are failed, and the next request still tries both.
  EXPECT_EQ(set.order(), (std::vector<std::size_t>{0, 1}));
}

}  // namespace
}  // namespace edge::sync
