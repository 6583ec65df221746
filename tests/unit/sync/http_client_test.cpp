// HttpClient's reply bodies (DESIGN §10): a sized body is read straight into one buffer
// that is never zero-filled, past Beast's parser; chunked bodies and everything else go
// through the parser. Against a scripted server on 127.0.0.1 (port 0) that sends its
// answer in pieces.
#include "origin-sync/http_client.hpp"

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "edge/core/errc.hpp"

#include "tests/unit/sync/scripted_server.hpp"

namespace edge::sync {
namespace {

using test_support::ScriptedServer;

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

}  // namespace
}  // namespace edge::sync
