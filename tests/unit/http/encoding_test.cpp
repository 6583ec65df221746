#include "edge/http/encoding.hpp"

#include <string>

#include <gtest/gtest.h>

#include <zlib.h>

namespace edge::http {
namespace {

TEST(AcceptsGzip, WhatTheEngineAndBrowsersSend) {
  EXPECT_TRUE(accepts_gzip("gzip"));  // plugin 8.52's JSON calls (capgo-protocol §10.3)
  EXPECT_TRUE(accepts_gzip("gzip, deflate, br"));
  EXPECT_TRUE(accepts_gzip("br;q=1.0, gzip;q=0.8, *;q=0.1"));
  EXPECT_TRUE(accepts_gzip(" GZip "));
  EXPECT_TRUE(accepts_gzip("x-gzip"));
  EXPECT_FALSE(accepts_gzip("identity"));  // its downloads
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("deflate, br"));
}

TEST(AcceptsGzip, QValues) {
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip; q=0.000"));
  EXPECT_TRUE(accepts_gzip("gzip;q=0.001"));
  EXPECT_TRUE(accepts_gzip("gzip;Q=1.000"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_FALSE(accepts_gzip("*;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0, *"));  // gzip named: its own q decides
  EXPECT_TRUE(accepts_gzip("gzip;q=0, gzip;q=0.5"));
}

TEST(AcceptsGzip, MalformedMembersAreSkipped) {
  EXPECT_FALSE(accepts_gzip("gzip;q=2"));
  EXPECT_FALSE(accepts_gzip("gzip;q=1.5"));
  EXPECT_FALSE(accepts_gzip("gzip;q=abc"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0.0001"));
  EXPECT_TRUE(accepts_gzip("gzip;q=, gzip"));
  EXPECT_TRUE(accepts_gzip(",,gzip,,"));
  EXPECT_FALSE(accepts_gzip("gzipx"));
  EXPECT_TRUE(accepts_gzip("gzip;foo=bar"));
}

std::string gunzip(const std::string& in) {
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  inflateEnd(&z);
  return out;
}

TEST(Gzip, RoundTripsAsOneGzipMember) {
  std::string json = "[";
  for (int i = 0; i < 2000; ++i)
    json += R"({"file_name":"www/file)" + std::to_string(i) + R"(.js","file_hash":"abc"},)";
  json.back() = ']';
  for (int level : {1, 6, 9}) {
    const auto z = gzip(json, level);
    ASSERT_TRUE(z);
    EXPECT_EQ(static_cast<unsigned char>((*z)[0]), 0x1f);  // the gzip magic (RFC 1952)
    EXPECT_EQ(static_cast<unsigned char>((*z)[1]), 0x8b);
    EXPECT_LT(z->size(), json.size() / 4);
    EXPECT_EQ(gunzip(*z), json);
  }
  const auto empty = gzip("", 6);
  ASSERT_TRUE(empty);
  EXPECT_EQ(gunzip(*empty), "");
}

}  // namespace
}  // namespace edge::http
