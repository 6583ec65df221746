// encode_json: which answers may be gzip-encoded (JSON, big enough, asked for) and which
// never are (downloads), with Vary on every JSON answer.
#include "edge/api/response.hpp"

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "edge/http/encoding.hpp"

namespace edge::api {
namespace {

std::string big_json() {
  std::string s = "[";
  while (s.size() < http::kGzipMinBytes + 100)
    s += R"({"file_name":"www/a.js","file_hash":"0123456789abcdef"},)";
  s.back() = ']';
  return s;
}

TEST(EncodeJson, BigJsonIsGzipWhenAsked) {
  Response r = make_json_response(200, big_json());
  const std::size_t identity = r.body.size();
  encode_json(r, true);
  EXPECT_EQ(r.header("Content-Encoding"), "gzip");
  EXPECT_EQ(r.header("Vary"), "Accept-Encoding");
  EXPECT_LT(r.body.size(), identity / 4);
  EXPECT_EQ(static_cast<unsigned char>(r.body[0]), 0x1f);
}

TEST(EncodeJson, IdentityWhenNotAskedOrSmall) {
  Response big = make_json_response(200, big_json());
  const std::string body = big.body;
  encode_json(big, false);
  EXPECT_EQ(big.body, body);
  EXPECT_EQ(big.header("Content-Encoding"), "");
  EXPECT_EQ(big.header("Vary"), "Accept-Encoding");  // a cache must still key on it

  Response small = make_json_response(200, R"({"status":"ok"})");
  encode_json(small, true);
  EXPECT_EQ(small.body, R"({"status":"ok"})");
  EXPECT_EQ(small.header("Content-Encoding"), "");
  EXPECT_EQ(small.header("Vary"), "Accept-Encoding");
}

TEST(EncodeJson, TheCachedEncodingIsUsed) {
  Response r = make_json_response(200, big_json());
  r.gzip_body = std::make_shared<const std::string>("cached bytes");
  encode_json(r, true);
  EXPECT_EQ(r.body, "cached bytes");
  EXPECT_EQ(r.header("Content-Encoding"), "gzip");
}

TEST(EncodeJson, DownloadsAndOtherTypesAreNeverEncoded) {
  Response file;
  file.set("Content-Type", "application/json");  // a .json file of a bundle
  file.parts.push_back({std::string(), {}});
  file.body = big_json();
  encode_json(file, true);
  EXPECT_EQ(file.header("Content-Encoding"), "");
  EXPECT_EQ(file.header("Vary"), "");

  Response text;
  text.set("Content-Type", "text/plain");
  text.body = big_json();
  encode_json(text, true);
  EXPECT_EQ(text.header("Content-Encoding"), "");

  Response not_modified = make_json_response(304, big_json());
  encode_json(not_modified, true);
  EXPECT_EQ(not_modified.header("Content-Encoding"), "");
}

}  // namespace
}  // namespace edge::api
