#include "edge/core/sha256.hpp"

#include <string>
#include <unordered_set>

#include <gtest/gtest.h>

#include "edge/core/crc32c.hpp"

namespace edge {
namespace {

constexpr std::string_view kEmpty =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::string_view kAbc =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_of(std::string_view()).hex(), kEmpty);
  EXPECT_EQ(sha256_of(std::string_view("abc")).hex(), kAbc);
}

TEST(Sha256, StreamingEqualsOneShot) {
  std::string data(100000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>(i * 7 + 3);
  Sha256Hasher h;
  for (std::size_t off = 0; off < data.size(); off += 977) {
    h.update(std::string_view(data).substr(off, 977));
  }
  EXPECT_EQ(h.finish(), sha256_of(data));
  // finish() resets: the hasher can be reused.
  h.update(std::string_view("abc"));
  EXPECT_EQ(h.finish().hex(), kAbc);
}

TEST(Sha256, ParseRoundTripAndCase) {
  auto a = Sha256::parse(kAbc);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->hex(), kAbc);
  std::string upper(kAbc);
  for (char& c : upper)
    c = static_cast<char>(std::toupper(c));
  auto b = Sha256::parse(upper);
  ASSERT_TRUE(b);
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(b->hex(), kAbc) << "formatting is always lower-case";
}

TEST(Sha256, ParseRejectsBadInput) {
  EXPECT_EQ(Sha256::parse("").error(), Errc::kInvalidArgument);
  EXPECT_FALSE(Sha256::parse(kAbc.substr(1)));           // 63 chars
  EXPECT_FALSE(Sha256::parse(std::string(kAbc) + "0"));  // 65 chars
  std::string bad(kAbc);
  bad[10] = 'g';
  EXPECT_FALSE(Sha256::parse(bad));
  bad[10] = ' ';
  EXPECT_FALSE(Sha256::parse(bad));
  bad[10] = '\0';
  EXPECT_FALSE(Sha256::parse(bad));
  EXPECT_FALSE(Sha256::from_bytes(std::span<const std::uint8_t>()));
}

TEST(Sha256, OrderingAndHash) {
  auto a = *Sha256::parse(kAbc);
  auto e = *Sha256::parse(kEmpty);
  EXPECT_LT(a, e);  // 0xba < 0xe3
  std::unordered_set<Sha256, Sha256Hash> set{a, e, a};
  EXPECT_EQ(set.size(), 2U);
  EXPECT_NE(Sha256Hash{}(a), Sha256Hash{}(e));
}

TEST(Xxh3, StableValues) {
  // XXH3-64 of the empty input with seed 0 (xxHash reference value).
  EXPECT_EQ(xxh3_64(nullptr, 0), 0x2D06800538D394C2ULL);
  const std::string s = "bundle-edge";
  EXPECT_EQ(xxh3_64(s.data(), s.size()), xxh3_64(s.data(), s.size()));
  EXPECT_NE(xxh3_64(s.data(), s.size()), xxh3_64(s.data(), s.size() - 1));
}

TEST(Crc32c, KnownVector) {
  // The CRC-32C check value (RFC 3720 appendix B.4 / iSCSI): "123456789" -> 0xE3069283.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283U);
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345", 5)), 0xE3069283U) << "continuation";
}

}  // namespace
}  // namespace edge
