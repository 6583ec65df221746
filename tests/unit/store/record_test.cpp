#include "edge/store/record.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include "edge/core/crc32c.hpp"

namespace edge::store {
namespace {

TEST(Record, RoundTrip) {
  const std::string body = "hello, segment";
  const std::span<const std::uint8_t> b(reinterpret_cast<const std::uint8_t*>(body.data()),
                                        body.size());
  const auto id = sha256_of(b);
  const auto hdr = encode_record_header(id, b, 7);
  auto h = decode_record_header(hdr);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->id, id);
  EXPECT_EQ(h->length, body.size());
  EXPECT_EQ(h->flags, 7);
  EXPECT_TRUE(body_matches(*h, b));
  EXPECT_FALSE(body_matches(*h, b.first(3)));
  std::string flipped = body;
  flipped[0] ^= 1;
  EXPECT_FALSE(body_matches(
      *h, std::span(reinterpret_cast<const std::uint8_t*>(flipped.data()), flipped.size())));
}

TEST(Record, RejectsDamage) {
  const std::array<std::uint8_t, 4> body{1, 2, 3, 4};
  const auto id = sha256_of(body);
  auto hdr = encode_record_header(id, body);
  EXPECT_EQ(decode_record_header(std::span(hdr).first(63)).error(), Errc::kInvalidArgument);
  auto bad_magic = hdr;
  bad_magic[0] ^= 0xff;
  EXPECT_EQ(decode_record_header(bad_magic).error(), Errc::kBadMagic);
  auto bad_crc = hdr;
  bad_crc[20] ^= 0x01;  // inside the sha256
  EXPECT_EQ(decode_record_header(bad_crc).error(), Errc::kCorrupt);
  auto future = hdr;
  future[4] = 9;  // version 9, with a valid crc
  const std::uint32_t crc = crc32c(future.data(), 56);
  std::memcpy(future.data() + 56, &crc, 4);
  EXPECT_EQ(decode_record_header(future).error(), Errc::kUnsupportedVersion);
}

TEST(Record, SegmentHeader) {
  auto h = encode_segment_header(42);
  auto id = decode_segment_header(h);
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, 42U);
  auto bad = h;
  bad[0] = 'X';
  EXPECT_EQ(decode_segment_header(bad).error(), Errc::kBadMagic);
  bad = h;
  bad[17] ^= 1;
  EXPECT_EQ(decode_segment_header(bad).error(), Errc::kCorrupt);
  EXPECT_EQ(decode_segment_header(std::span(h).first(10)).error(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace edge::store
