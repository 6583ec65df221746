#include "edge/core/utf8.hpp"

#include <string>

#include <gtest/gtest.h>

namespace edge {
namespace {

TEST(Utf8, SequencesFollowRfc3629) {
  EXPECT_EQ(utf8_sequence_length("a"), 1U);
  EXPECT_EQ(utf8_sequence_length("\xc3\xa9"), 2U);          // é
  EXPECT_EQ(utf8_sequence_length("\xe2\x82\xac"), 3U);      // €
  EXPECT_EQ(utf8_sequence_length("\xf0\x9f\x98\x80"), 4U);  // 😀
  EXPECT_EQ(utf8_sequence_length("\xc0\xaf"), 0U) << "overlong";
  EXPECT_EQ(utf8_sequence_length("\xe0\x80\xaf"), 0U) << "overlong";
  EXPECT_EQ(utf8_sequence_length("\xed\xa0\x80"), 0U) << "surrogate";
  EXPECT_EQ(utf8_sequence_length("\xf4\x90\x80\x80"), 0U) << "above U+10FFFF";
  EXPECT_EQ(utf8_sequence_length("\xe2\x82"), 0U) << "truncated";
  EXPECT_EQ(utf8_sequence_length("\x80"), 0U) << "a lone continuation byte";
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xe2\x82\xac"));
  EXPECT_FALSE(valid_utf8("caf\xc3"));
  // Long ASCII runs are checked 8 bytes at a time: a bad byte at any offset is still found.
  for (std::size_t at = 0; at < 24; ++at) {
    std::string s(24, 'a');
    s[at] = '\xff';
    EXPECT_FALSE(valid_utf8(s)) << "bad byte at " << at;
    s[at] = '\x7f';
    EXPECT_TRUE(valid_utf8(s));
  }
  EXPECT_TRUE(valid_utf8("0a1b2c3d-1111-4222-8333-\xc3\xa9-444455556666"));
  EXPECT_FALSE(valid_utf8("0a1b2c3d-1111-4222-8333-\xed\xa0\x80-444455556666"));  // surrogate
}

TEST(Utf8, ClampNeverSplitsACharacter) {
  std::string euros;
  for (int i = 0; i < 400; ++i)
    euros += "\xe2\x82\xac";
  const std::string cut = utf8_clamp(euros, 1024);
  EXPECT_EQ(cut.size(), 1023U);
  EXPECT_TRUE(valid_utf8(cut));
  EXPECT_EQ(utf8_clamp("ab\xff\xfe"
                       "c",
                       10),
            "ab??c")
      << "bad bytes become '?'";
  EXPECT_EQ(utf8_clamp("abc", 2), "ab");
}

TEST(Utf8, QuoteMarksWhatWasCut) {
  EXPECT_EQ(utf8_quote("short", 10), "short");
  EXPECT_EQ(utf8_quote(std::string(20, 'x'), 5), "xxxxx...");
  EXPECT_EQ(utf8_quote("a\xff", 10), "a?");
}

}  // namespace
}  // namespace edge
