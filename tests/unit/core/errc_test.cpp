#include "edge/core/errc.hpp"

#include <gtest/gtest.h>

namespace edge {
namespace {

Result<int> half(int v) {
  if (v % 2 != 0)
    return Errc::kInvalidArgument;
  return v / 2;
}

TEST(Errc, CategoryAndMessages) {
  const boost::system::error_code ec = Errc::kChecksumMismatch;
  EXPECT_STREQ(ec.category().name(), "edge");
  EXPECT_EQ(ec.message(), "checksum mismatch");
  EXPECT_EQ(ec, Errc::kChecksumMismatch);
  EXPECT_NE(ec, Errc::kCorrupt);
  EXPECT_FALSE(boost::system::error_code(Errc::kOk)) << "kOk is success";
}

TEST(Errc, Result) {
  auto ok = half(4);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 2);
  auto bad = half(3);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), Errc::kInvalidArgument);
  Result<void> v = Errc::kIo;
  EXPECT_FALSE(v);
  Result<void> fine;
  EXPECT_TRUE(fine);
}

}  // namespace
}  // namespace edge
