#include "edge/core/semver.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace edge {
namespace {

SemVer v(std::string_view s) {
  auto r = SemVer::parse(s);
  EXPECT_TRUE(r) << s;
  return r ? *r : SemVer{};
}

TEST(SemVer, ParsesValid) {
  const auto a = v("1.2.3");
  EXPECT_EQ(a.major, 1U);
  EXPECT_EQ(a.minor, 2U);
  EXPECT_EQ(a.patch, 3U);
  const auto b = v("10.20.30-alpha.1+build.5");
  EXPECT_EQ(b.prerelease, (std::vector<std::string>{"alpha", "1"}));
  EXPECT_EQ(b.build, (std::vector<std::string>{"build", "5"}));
  EXPECT_EQ(b.to_string(), "10.20.30-alpha.1+build.5");
  EXPECT_EQ(v("0.0.0").to_string(), "0.0.0");
  EXPECT_EQ(v("1.0.0-0A.is.legal").prerelease.size(), 3U);
  EXPECT_EQ(v("1.0.0+0001").build[0], "0001") << "build identifiers may have leading zeros";
  EXPECT_EQ(v("1.0.0-x-y-z.--").prerelease[1], "--");
  EXPECT_EQ(v("18446744073709551615.0.0").major, 18446744073709551615ULL);
}

TEST(SemVer, RejectsInvalid) {
  for (const char* bad : {"",          "1",          "1.2",
                          "1.2.3.4",   "01.2.3",     "1.02.3",
                          "1.2.03",    "v1.2.3",     " 1.2.3",
                          "1.2.3 ",    "1.2.3-",     "1.2.3+",
                          "1.2.3-01",  "1.2.3-a..b", "1.2.3+a..b",
                          "1.2.3-a_b", "-1.2.3",     "1.-2.3",
                          "a.b.c",     "1.2.3-+",    "18446744073709551616.0.0",
                          "1..3",      "builtin"}) {
    EXPECT_FALSE(SemVer::parse(bad)) << '"' << bad << '"';
  }
}

TEST(SemVer, PrecedenceFollowsSpecExample) {
  // semver.org §11.4's chain, in increasing precedence.
  const std::vector<std::string> chain = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                          "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                                          "1.0.0-rc.1",  "1.0.0",         "1.0.1",
                                          "1.1.0",       "2.0.0"};
  for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
    EXPECT_LT(v(chain[i]), v(chain[i + 1])) << chain[i] << " < " << chain[i + 1];
    EXPECT_GT(v(chain[i + 1]), v(chain[i]));
  }
}

TEST(SemVer, PrereleaseIsLowerThanRelease) {
  EXPECT_LT(v("1.2.3-rc.1"), v("1.2.3"));
  EXPECT_GT(v("1.2.3"), v("1.2.3-zzz"));
  EXPECT_LT(v("1.2.2"), v("1.2.3-alpha"));
}

TEST(SemVer, NumericComparisonAndBuildIgnored) {
  EXPECT_LT(v("1.9.0"), v("1.10.0"));
  EXPECT_LT(v("1.0.0-2"), v("1.0.0-10"));
  EXPECT_LT(v("1.0.0-999"), v("1.0.0-a")) << "numeric identifiers sort before alphanumeric";
  EXPECT_EQ(v("1.0.0+a"), v("1.0.0+b"));
  EXPECT_EQ(v("1.0.0-rc.1+x"), v("1.0.0-rc.1"));
}

}  // namespace
}  // namespace edge
