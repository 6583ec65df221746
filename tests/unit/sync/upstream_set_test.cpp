// UpstreamSet's order of preference and FailoverClient's failover, against scripted
// servers on 127.0.0.1 and a port nobody listens on.
#include "origin-sync/upstream_set.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/sync/scripted_server.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace edge::sync {
namespace {

using test_support::ScriptedServer;

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
