#include "edge/s3/s3_client.hpp"

#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "edge/core/sha256.hpp"
#include "edge/core/uri.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace edge::s3 {
namespace {

// A one-connection-at-a-time HTTP listener on 127.0.0.1 that records each request (head and
// body) and answers with the next canned response (Connection: close), so a test sees
// exactly what libcurl sent, Authorization included.
class CaptureServer {
 public:
  explicit CaptureServer(std::vector<std::string> answers)
      : answers_(answers.begin(), answers.end()) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~CaptureServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        return;
      std::string in;
      char buf[4096];
      std::size_t want = std::string::npos;
      while (true) {
        const auto head_end = in.find("\r\n\r\n");
        if (head_end != std::string::npos && want == std::string::npos) {
          std::size_t body = 0;
          std::string lower = in.substr(0, head_end);
          for (auto& ch : lower)
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (const auto cl = lower.find("\ncontent-length:"); cl != std::string::npos)
            body = std::stoul(lower.substr(cl + 16));
          want = head_end + 4 + body;
        }
        if (want != std::string::npos && in.size() >= want)
          break;
        const auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0)
          break;
        in.append(buf, static_cast<std::size_t>(n));
      }
      std::string answer;
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(in);
        if (!answers_.empty()) {
          answer = answers_.front();
          if (answers_.size() > 1)
            answers_.pop_front();
        }
      }
      (void)::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::shutdown(c, SHUT_WR);
      while (::recv(c, buf, sizeof buf, 0) > 0) {
      }
      ::close(c);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::deque<std::string> answers_;    // guarded by mutex_
  std::vector<std::string> requests_;  // guarded by mutex_
  std::thread thread_;
};

std::string answer(int status, std::string_view reason, std::string_view body = {}) {
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         std::string(body);
}

// The value of header `name` (case-insensitive) in a captured request, or "".
std::string header_of(const std::string& request, std::string_view name) {
  std::size_t at = 0;
  while (true) {
    const auto eol = request.find("\r\n", at);
    if (eol == std::string::npos || eol == at)
      return "";
    const std::string line = request.substr(at, eol - at);
    const auto colon = line.find(':');
    if (colon == name.size() && strncasecmp(line.data(), name.data(), name.size()) == 0) {
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ')
        v.erase(0, 1);
      return v;
    }
    at = eol + 2;
  }
}

// AWS's SigV4 test suite, case "get-vanilla": GET / on example.amazonaws.com, service
// "service", signed with the suite's example credentials at 20150830T123600Z. libcurl signs
// with the X-Amz-Date the caller sends.
TEST(SigV4, GetVanillaOfTheAwsTestSuite) {
  CaptureServer server({answer(200, "OK")});
  SignedRequest req;
  req.method = "GET";
  req.target = {"http://127.0.0.1:" + std::to_string(server.port()) + "/", "example.amazonaws.com"};
  req.service = "service";
  req.region = "us-east-1";
  req.amz_date = "20150830T123600Z";
  req.content_sha256 = "";  // the suite's canonical request signs host and x-amz-date only
  const Credentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
  std::string error;
  auto reply = perform(req, creds, &error);
  ASSERT_TRUE(reply) << error;
  EXPECT_EQ(reply->status, 200);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1U);
  EXPECT_EQ(header_of(requests[0], "Authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  EXPECT_EQ(header_of(requests[0], "Host"), "example.amazonaws.com");
  EXPECT_EQ(header_of(requests[0], "X-Amz-Date"), "20150830T123600Z");
  EXPECT_EQ(requests[0].find("wJalrXUtnFEMI"), std::string::npos);
}

// The S3 API reference's example of header signing: GET /test.txt from examplebucket with a
// Range and x-amz-content-sha256 (the empty body's hash), at 20130524T000000Z.
TEST(SigV4, GetObjectExampleOfTheS3Reference) {
  CaptureServer server({answer(206, "Partial Content", "0123456789")});
  SignedRequest req;
  req.target = {"http://127.0.0.1:" + std::to_string(server.port()) + "/test.txt",
                "examplebucket.s3.amazonaws.com"};
  req.region = "us-east-1";
  req.amz_date = "20130524T000000Z";
  req.content_sha256 = sha256_of(std::span<const std::uint8_t>{}).hex();
  req.headers = {{"Range", "bytes=0-9"}};
  const Credentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  std::string error;
  auto reply = perform(req, creds, &error);
  ASSERT_TRUE(reply) << error;
  EXPECT_EQ(reply->status, 206);
  EXPECT_EQ(std::string(reply->body.begin(), reply->body.end()), "0123456789");
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1U);
  EXPECT_EQ(header_of(requests[0], "Authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(header_of(requests[0], "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

S3Client client_for(int port, bool path_style = true) {
  S3Options o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(port);
  o.bucket = "bundles";
  o.path_style = path_style;
  o.timeout_ms = 5000;
  o.retries = 2;
  return S3Client(o, Credentials{"AKIDTEST", "the-secret-key-xyz", "a-session-token"});
}

TEST(S3Client, PutSendsThePayloadHashAndSignsHostWithItsPort) {
  CaptureServer server({answer(200, "OK")});
  S3Client c(S3Options{"http://127.0.0.1:" + std::to_string(server.port()), "bundles", "eu-west-1",
                       true, 5000, 0},
             Credentials{"AKIDTEST", "the-secret-key-xyz", "a-session-token"});
  const std::string body = "chunk bytes";
  const std::span bytes(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
  ASSERT_TRUE(c.put("chunks/ab cd", bytes));
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1U);
  const auto& r = requests[0];
  EXPECT_TRUE(r.starts_with("PUT /bundles/chunks/ab%20cd HTTP/1.1\r\n")) << r;
  EXPECT_EQ(header_of(r, "Host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(header_of(r, "x-amz-content-sha256"), sha256_of(bytes).hex());
  EXPECT_EQ(header_of(r, "x-amz-security-token"), "a-session-token");
  EXPECT_EQ(header_of(r, "Content-Length"), std::to_string(body.size()));
  EXPECT_TRUE(r.ends_with("\r\n\r\n" + body));
  const auto auth = header_of(r, "Authorization");
  EXPECT_TRUE(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")) << auth;
  EXPECT_NE(auth.find("/eu-west-1/s3/aws4_request"), std::string::npos) << auth;
  EXPECT_NE(auth.find("host;x-amz-content-sha256;x-amz-date;x-amz-security-token"),
            std::string::npos)
      << auth;
  EXPECT_EQ(r.find("the-secret-key-xyz"), std::string::npos);
  EXPECT_EQ(c.stats().requests_of(store::ObjectStoreStats::Op::kPut,
                                  store::ObjectStoreStats::Outcome::kOk),
            1U);
  EXPECT_EQ(c.stats().bytes_sent.load(), body.size());
}

TEST(S3Client, ErrorsMapAndNameTheStoresCodeNeverTheSecret) {
  CaptureServer server({answer(403, "Forbidden",
                               "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
                               "<Message>Access Denied</Message></Error>")});
  auto c = client_for(server.port());
  auto got = c.get("chunks/x", 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kIo);
  EXPECT_EQ(server.requests().size(), 1U);  // a 403 is not retried
  const auto why = c.stats().last_error();
  EXPECT_NE(why.find("HTTP 403 AccessDenied"), std::string::npos) << why;
  EXPECT_NE(why.find("chunks/x"), std::string::npos) << why;
  EXPECT_EQ(why.find("the-secret-key-xyz"), std::string::npos) << why;
  EXPECT_EQ(why.find("AKIDTEST"), std::string::npos) << why;
  EXPECT_EQ(c.stats().reachable.load(), 1U);  // it answered
}

TEST(S3Client, NotFoundIsNotAnError) {
  CaptureServer server({answer(404, "Not Found", "<Error><Code>NoSuchKey</Code></Error>")});
  auto c = client_for(server.port());
  auto got = c.get("recipes/y", 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kNotFound);
  auto there = c.exists("recipes/y");
  ASSERT_TRUE(there);
  EXPECT_FALSE(*there);
  EXPECT_TRUE(c.remove("recipes/y"));  // deleting what is gone is success
}

TEST(S3Client, ServerErrorsAreRetriedThenReported) {
  CaptureServer server({answer(503, "Slow Down", "<Error><Code>SlowDown</Code></Error>")});
  auto c = client_for(server.port());
  auto got = c.get("chunks/z", 1024);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kIo);
  EXPECT_EQ(server.requests().size(), 3U);  // 1 + retries (2)
  EXPECT_EQ(c.stats().reachable.load(), 0U);
  EXPECT_NE(c.stats().last_error().find("HTTP 503 SlowDown"), std::string::npos);
}

TEST(S3Client, OversizedBodyIsCutShort) {
  CaptureServer server({answer(200, "OK", std::string(5000, 'x'))});
  auto c = client_for(server.port());
  auto got = c.get("chunks/big", 1000);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kTooLarge);
}

TEST(S3Client, AnErrorBodyLongerThanASmallObjectIsStillAnError) {
  CaptureServer server({answer(
      403, "Forbidden",
      "<Error><Code>AccessDenied</Code><Message>" + std::string(300, 'm') + "</Message></Error>")});
  auto c = client_for(server.port());
  auto got = c.get("chunks/tiny", 10);  // a 10-byte chunk: its limit is 10 bytes
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kIo);  // not kTooLarge, which would read as a bad object
  EXPECT_NE(c.stats().last_error().find("HTTP 403 AccessDenied"), std::string::npos);
}

TEST(S3Client, AnEmptyObjectIsPutWithAnEmptyBody) {
  CaptureServer server({answer(200, "OK")});
  auto c = client_for(server.port());
  ASSERT_TRUE(c.put("recipes/empty", {}));
  const auto r = server.requests().at(0);
  EXPECT_EQ(header_of(r, "Content-Length"), "0");
  EXPECT_EQ(header_of(r, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(S3Client, UnreachableStoreIsAnIoError) {
  int port = 0;
  {
    CaptureServer gone({});
    port = gone.port();
  }
  auto c = client_for(port);
  auto got = c.get("chunks/a", 10);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), Errc::kIo);
  EXPECT_EQ(c.stats().reachable.load(), 0U);
  EXPECT_FALSE(c.stats().last_error().empty());
}

TEST(S3Client, ListParsesPagesAndSendsACanonicalQuery) {
  CaptureServer server(
      {answer(200, "OK",
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bundles</Name>"
              "<IsTruncated>true</IsTruncated><Contents><Key>chunks/a&amp;b</Key><Size>12</Size>"
              "</Contents><Contents><Key>chunks/c</Key><Size>7</Size></Contents>"
              "<NextContinuationToken>tok/1=</NextContinuationToken></ListBucketResult>")});
  auto c = client_for(server.port());
  auto page = c.list("chunks/", "prev token");
  ASSERT_TRUE(page);
  ASSERT_EQ(page->objects.size(), 2U);
  EXPECT_EQ(page->objects[0].key, "chunks/a&b");
  EXPECT_EQ(page->objects[0].size, 12U);
  EXPECT_EQ(page->next, "tok/1=");
  const auto r = server.requests().at(0);
  EXPECT_TRUE(
      r.starts_with("GET /bundles?continuation-token=prev%20token&list-type=2&prefix=chunks%2F "))
      << r;
}

TEST(S3Url, PathAndVirtualHostStyle) {
  const auto e = parse_endpoint("https://s3.eu-west-1.amazonaws.com");
  ASSERT_TRUE(e);
  S3Options o;
  o.bucket = "my-bundles";
  o.path_style = true;
  auto t = object_target(*e, o, "chunks/00ff");
  EXPECT_EQ(t.url, "https://s3.eu-west-1.amazonaws.com/my-bundles/chunks/00ff");
  EXPECT_EQ(t.host, "s3.eu-west-1.amazonaws.com");
  o.path_style = false;
  t = object_target(*e, o, "chunks/00ff");
  EXPECT_EQ(t.url, "https://my-bundles.s3.eu-west-1.amazonaws.com/chunks/00ff");
  EXPECT_EQ(t.host, "my-bundles.s3.eu-west-1.amazonaws.com");
  t = object_target(*e, o, "", "list-type=2&prefix=");
  EXPECT_EQ(t.url, "https://my-bundles.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=");
  o.path_style = true;
  t = object_target(*e, o, "", "list-type=2&prefix=");
  EXPECT_EQ(t.url, "https://s3.eu-west-1.amazonaws.com/my-bundles?list-type=2&prefix=");

  const auto local = parse_endpoint("http://127.0.0.1:3900/");
  ASSERT_TRUE(local);
  t = object_target(*local, o, "recipes/ab");
  EXPECT_EQ(t.url, "http://127.0.0.1:3900/my-bundles/recipes/ab");
  EXPECT_EQ(t.host, "127.0.0.1:3900");
}

TEST(S3Url, KeysAreEncodedAsSigV4Wants) {
  EXPECT_EQ(percent_encode("chunks/abc-DEF_1.2~3", true), "chunks/abc-DEF_1.2~3");
  EXPECT_EQ(percent_encode("a b+c/d", true), "a%20b%2Bc/d");
  EXPECT_EQ(percent_encode("a b+c/d", false), "a%20b%2Bc%2Fd");
  EXPECT_EQ(percent_encode("\xc3\xa9*", true), "%C3%A9%2A");
  EXPECT_EQ(list_query("chunks/", ""), "list-type=2&prefix=chunks%2F");
  EXPECT_EQ(list_query("", "a=b"), "continuation-token=a%3Db&list-type=2&prefix=");
}

TEST(S3Url, EndpointsAreChecked) {
  auto v6 = parse_endpoint("http://[::1]:9000");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "[::1]");
  EXPECT_EQ(v6->port, "9000");
  auto r2 = parse_endpoint("https://0123abcd.r2.cloudflarestorage.com");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->scheme, "https");
  EXPECT_EQ(r2->port, "");
  for (const char* bad :
       {"s3.amazonaws.com", "ftp://host", "http://", "http://host/path", "http://host:0",
        "http://host:99999", "http://host:x", "http://user@host", "http://host?x"}) {
    EXPECT_FALSE(parse_endpoint(bad)) << bad;
  }
  EXPECT_THROW(S3Client(S3Options{"nope", "b"}, Credentials{"a", "b", ""}), std::invalid_argument);
  EXPECT_THROW(S3Client(S3Options{"http://h", ""}, Credentials{"a", "b", ""}),
               std::invalid_argument);
}

TEST(S3Status, Mapping) {
  EXPECT_EQ(map_status(200, false).errc, Errc::kOk);
  EXPECT_EQ(map_status(204, true).errc, Errc::kOk);
  EXPECT_EQ(map_status(404, false).errc, Errc::kNotFound);
  EXPECT_EQ(map_status(404, true).errc, Errc::kOk);
  EXPECT_EQ(map_status(403, false).errc, Errc::kIo);
  EXPECT_FALSE(map_status(403, false).retry);
  EXPECT_FALSE(map_status(400, false).retry);
  EXPECT_TRUE(map_status(500, false).retry);
  EXPECT_TRUE(map_status(503, false).retry);
  EXPECT_TRUE(map_status(429, false).retry);
  EXPECT_EQ(error_code_of("<Error><Code>NoSuchBucket</Code></Error>"), "NoSuchBucket");
  EXPECT_EQ(error_code_of("not xml"), "");
  EXPECT_FALSE(parse_listing("<html>"));
  EXPECT_FALSE(
      parse_listing("<ListBucketResult><IsTruncated>true</IsTruncated>"
                    "</ListBucketResult>"));  // more pages, no token
}

TEST(S3Listing, LastModified) {
  auto page = parse_listing(
      "<ListBucketResult><Contents><Key>chunks/a</Key><LastModified>2026-12-07T01:02:03.000Z"
      "</LastModified><Size>5</Size></Contents><Contents><Key>chunks/b</Key><Size>1</Size>"
      "</Contents><Contents><Key>chunks/c</Key><LastModified>yesterday</LastModified>"
      "</Contents><IsTruncated>false</IsTruncated></ListBucketResult>");
  ASSERT_TRUE(page);
  ASSERT_EQ(page->objects.size(), 3U);
  EXPECT_EQ(page->objects[0].modified_s, 1796605323);  // date -ud @1796605323
  EXPECT_EQ(page->objects[0].size, 5U);
  EXPECT_EQ(page->objects[1].modified_s, -1);  // not said: a collector keeps it
  EXPECT_EQ(page->objects[2].modified_s, -1);
  EXPECT_EQ(parse_timestamp("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_timestamp("2026-13-01T00:00:00Z"), -1);
  EXPECT_EQ(parse_timestamp(""), -1);
}

}  // namespace
}  // namespace edge::s3
