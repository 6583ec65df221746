#include "edge/http/http.hpp"

#include <gtest/gtest.h>

namespace edge::http {
namespace {

std::vector<ByteRange> ranges(std::string_view header, std::uint64_t size) {
  auto specs = parse_range(header);
  EXPECT_TRUE(specs) << header;
  if (!specs)
    return {};
  auto r = resolve_ranges(*specs, size);
  return r ? *r : std::vector<ByteRange>{};
}

TEST(Range, SingleForms) {
  EXPECT_EQ(ranges("bytes=0-99", 1000), (std::vector<ByteRange>{{0, 100}}));
  EXPECT_EQ(ranges("bytes=900-", 1000), (std::vector<ByteRange>{{900, 100}}));
  EXPECT_EQ(ranges("bytes=-100", 1000), (std::vector<ByteRange>{{900, 100}}));
  EXPECT_EQ(ranges("bytes=-5000", 1000), (std::vector<ByteRange>{{0, 1000}})) << "suffix > size";
  EXPECT_EQ(ranges("bytes=500-5000", 1000), (std::vector<ByteRange>{{500, 500}})) << "clamped";
  EXPECT_EQ(ranges("Bytes = 1-1 ", 10), (std::vector<ByteRange>{{1, 1}}));
}

TEST(Range, ManyAreCoalescedAndSorted) {
  EXPECT_EQ(ranges("bytes=500-599,0-99", 1000), (std::vector<ByteRange>{{0, 100}, {500, 100}}));
  EXPECT_EQ(ranges("bytes=0-99,50-149", 1000), (std::vector<ByteRange>{{0, 150}}));
  EXPECT_EQ(ranges("bytes=0-99,100-199", 1000), (std::vector<ByteRange>{{0, 200}})) << "adjacent";
  EXPECT_EQ(ranges("bytes=0-0,-1,,", 10), (std::vector<ByteRange>{{0, 1}, {9, 1}}));
  std::string sixteen = "bytes=";
  for (int i = 0; i < 16; ++i)
    sixteen += std::to_string(i * 10) + "-" + std::to_string(i * 10) + ",";
  EXPECT_EQ(ranges(sixteen, 1000).size(), 16U);
  EXPECT_FALSE(parse_range(sixteen + "999-999")) << "17 ranges: ignored";
}

TEST(Range, SyntaxErrorsMeanIgnore) {
  for (const char* bad : {"", "bytes", "bytes=", "items=0-1", "bytes=a-b", "bytes=5-1", "bytes=-",
                          "bytes=1-2-3", "bytes=0-1,x", "bytes=99999999999999999999-", "bytes= - 5",
                          "bytes=+1-2", "bytes=0x10-20"}) {
    EXPECT_FALSE(parse_range(bad)) << bad;
  }
}

TEST(Range, Unsatisfiable) {
  auto specs = parse_range("bytes=1000-2000,-0");
  ASSERT_TRUE(specs);
  EXPECT_EQ(resolve_ranges(*specs, 1000).error(), Errc::kRangeNotSatisfiable);
  EXPECT_EQ(resolve_ranges(*parse_range("bytes=0-"), 0).error(), Errc::kRangeNotSatisfiable);
  EXPECT_EQ(resolve_ranges(*parse_range("bytes=-10"), 0).error(), Errc::kRangeNotSatisfiable);
  EXPECT_EQ(ranges("bytes=2000-3000,5-6", 1000), (std::vector<ByteRange>{{5, 2}}))
      << "unsatisfiable specs are dropped, the rest served";
}

TEST(Conditional, EtagsAndPreconditions) {
  const std::string etag = format_etag("abc");
  EXPECT_EQ(etag, "\"abc\"");
  EXPECT_TRUE(if_none_match("\"abc\"", etag));
  EXPECT_TRUE(if_none_match("\"x\", \"abc\"", etag));
  EXPECT_TRUE(if_none_match("W/\"abc\"", etag)) << "If-None-Match uses weak comparison";
  EXPECT_TRUE(if_none_match(" * ", etag));
  EXPECT_FALSE(if_none_match("\"abcd\"", etag));
  EXPECT_FALSE(if_none_match("", etag));
  EXPECT_TRUE(if_range_matches("\"abc\"", etag));
  EXPECT_FALSE(if_range_matches("W/\"abc\"", etag)) << "If-Range needs a strong match";
  EXPECT_FALSE(if_range_matches("Wed, 21 Oct 2015 07:28:00 GMT", etag));
}

TEST(Format, ContentRangeAndTypes) {
  EXPECT_EQ(format_content_range({0, 100}, 1000), "bytes 0-99/1000");
  EXPECT_EQ(format_unsatisfied_range(1000), "bytes */1000");
  EXPECT_EQ(content_type_for("bundle.zip"), "application/zip");
  EXPECT_EQ(content_type_for("assets/app.JS"), "text/javascript; charset=utf-8");
  EXPECT_EQ(content_type_for("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(content_type_for("noext"), "application/octet-stream");
  EXPECT_EQ(content_type_for("trailing."), "application/octet-stream");
  EXPECT_EQ(content_type_for(".hidden.unknownext"), "application/octet-stream");
  EXPECT_EQ(path_of("/v1/blobs/x?device_id=1"), "/v1/blobs/x");
  EXPECT_EQ(path_of("/a"), "/a");
}

TEST(RequestHead, OriginFormOfAbsoluteTargets) {
  EXPECT_EQ(origin_form("/v1/blobs/x?q=1"), "/v1/blobs/x?q=1");
  EXPECT_EQ(origin_form("http://edge.example:8080/healthz"), "/healthz");
  EXPECT_EQ(origin_form("HTTPS://edge.example/updates?x"), "/updates?x");
  EXPECT_EQ(origin_form("http://edge.example"), "/");
  EXPECT_EQ(origin_form("http://edge.example?x"), "/");
  EXPECT_EQ(origin_form("*"), "*");
}

TEST(RequestHead, FramingRulesOfRfc9112) {
  const auto head = [](unsigned version, std::vector<std::string_view> te, std::size_t hosts,
                       bool cl = false, std::string_view target = "/updates") {
    RequestHead h;
    h.version = version;
    h.transfer_encoding = std::move(te);
    h.host_fields = hosts;
    h.content_length = cl;
    h.target = target;
    return check_request_head(h);
  };
  EXPECT_FALSE(head(11, {}, 1));
  EXPECT_FALSE(head(11, {"chunked"}, 1));
  EXPECT_FALSE(head(11, {" Chunked "}, 1)) << "codings are case-insensitive, OWS trimmed";
  EXPECT_FALSE(head(10, {}, 0)) << "HTTP/1.0 needs no Host";
  EXPECT_FALSE(head(11, {}, 1, false, "http://x/updates"));
  // Each of these is a way to make two parsers disagree on where the body ends.
  for (std::string_view te :
       {"xchunked", "identity", "chunked, identity", "gzip, chunked", ",", ""}) {
    const auto bad = head(11, {te}, 1);
    ASSERT_TRUE(bad) << te;
    EXPECT_NE(bad->find("Transfer-Encoding"), std::string::npos) << *bad;
  }
  EXPECT_TRUE(head(11, {"chunked", "chunked"}, 1)) << "two field lines, two codings";
  EXPECT_TRUE(head(11, {"chunked"}, 1, true)) << "TE with Content-Length";
  EXPECT_TRUE(head(10, {"chunked"}, 1)) << "TE in HTTP/1.0";
  EXPECT_TRUE(head(11, {}, 0)) << "no Host";
  EXPECT_TRUE(head(11, {}, 2)) << "two Hosts";
  EXPECT_TRUE(head(10, {}, 2)) << "two Hosts in 1.0 too";
  EXPECT_TRUE(head(11, {}, 1, false, "*"));
  EXPECT_TRUE(head(11, {}, 1, false, "example.com:443"));
  const auto quoted = head(11, {std::string_view("x\r\n" + std::string(200, 'y'))}, 1);
  ASSERT_TRUE(quoted);
  EXPECT_LT(quoted->size(), 160U) << "values are quoted short, control bytes masked";
  EXPECT_EQ(quoted->find('\r'), std::string::npos);
}

TEST(DecodePath, EachSegmentOnce) {
  std::string out;
  EXPECT_FALSE(decode_path("/v1/admin/apps/a/releases/1.0.3%2Bbuild.7", out));
  EXPECT_EQ(out, "/v1/admin/apps/a/releases/1.0.3+build.7");
  EXPECT_FALSE(decode_path("/c/b%C3%AAta", out));
  EXPECT_EQ(out, "/c/b\xC3\xAAta");
  EXPECT_FALSE(decode_path("/c/b\xC3\xAAta", out)) << "raw UTF-8 stays as it is";
  EXPECT_EQ(out, "/c/b\xC3\xAAta");
  EXPECT_FALSE(decode_path("/a+b/%2525", out)) << "'+' is no space; decoded once";
  EXPECT_EQ(out, "/a+b/%25");
  EXPECT_FALSE(decode_path("/x//y/", out)) << "empty segments are kept";
  EXPECT_EQ(out, "/x//y/");
  EXPECT_FALSE(decode_path("", out));
  EXPECT_EQ(out, "");
  EXPECT_FALSE(decode_path("/%7e%7E", out)) << "hex digits of either case";
  EXPECT_EQ(out, "/~~");
}

TEST(DecodePath, RefusesWhatCannotBeOneSegment) {
  std::string out;
  const auto refused = [&](std::string_view path, std::string_view why) {
    const auto bad = decode_path(path, out);
    ASSERT_TRUE(bad) << path;
    EXPECT_NE(bad->find(why), std::string::npos) << *bad;
  };
  refused("/r/1.0%ZZ", "two hex digits");
  refused("/r/1.0%2", "two hex digits");
  refused("/r/%", "two hex digits");
  refused("/r/a%2Fb", "'/'");
  refused("/r/a%2fb", "'/'");
  refused("/r/a%00b", "control character");
  refused("/r/a%0D%0Ab", "control character");
  refused("/r/a%7F", "control character");
  refused("/r/a%C3", "UTF-8");
  refused("/r/%FF", "UTF-8");
  const auto bad = decode_path("/r/" + std::string(300, 'x') + "%", out);
  ASSERT_TRUE(bad);
  EXPECT_LT(bad->size(), 160U) << "the segment is quoted short";
  const auto named = decode_path("/apps/ok/r%zzseg", out);
  ASSERT_TRUE(named);
  EXPECT_NE(named->find("'r%zzseg'"), std::string::npos) << "names the bad segment: " << *named;
}

}  // namespace
}  // namespace edge::http
