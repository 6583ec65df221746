#include <string>

#include <gtest/gtest.h>

#include "edge/pg/access.hpp"

namespace edge::pg {
namespace {

// Refusal keys hold '\0' separators and any path byte; PostgreSQL text holds neither.
TEST(AccessKey, AnyBytesRoundTripThroughHexInByteOrder) {
  const std::string key("origin-a\0dash\0PUT\0/v1/\xff\x01", 24);
  const std::string hex = hex_key(key);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
  std::string back;
  ASSERT_TRUE(unhex_key(hex, back));
  EXPECT_EQ(back, key);
  EXPECT_LT(hex_key(std::string("a\x7f", 2)), hex_key(std::string("a\x80", 2)));
  EXPECT_LT(hex_key("ab"), hex_key("b"));
}

TEST(AccessKey, MalformedHexIsRefused) {
  std::string out;
  EXPECT_FALSE(unhex_key("abc", out));
  EXPECT_FALSE(unhex_key("zz", out));
  EXPECT_FALSE(unhex_key("AB", out));
  EXPECT_TRUE(unhex_key("", out));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace edge::pg
