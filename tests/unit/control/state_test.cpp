#include "edge/control/state.hpp"

#include <gtest/gtest.h>

namespace edge::control {
namespace {

TEST(Overrides, SetFindEraseAndCount) {
  Overrides o;
  o.set("dev-1", "beta");
  o.set("dev-2", "alpha");
  o.set("dev-1", "gamma");  // replaces
  ASSERT_NE(o.find("dev-1"), nullptr);
  EXPECT_EQ(*o.find("dev-1"), "gamma");
  EXPECT_EQ(o.size(), 2U);
  o.erase("dev-2");
  o.erase("nobody");
  EXPECT_FALSE(o.contains("dev-2"));
  EXPECT_EQ(o.size(), 1U);
}

TEST(Overrides, ACopyIsUnchangedByWritesToTheOriginalAndSharesTheRest) {
  Overrides a;
  for (int i = 0; i < 30'000; ++i)
    a.set("dev-" + std::to_string(i), "beta");
  const Overrides snapshot = a;  // what a published state holds
  a.set("dev-new", "alpha");
  a.erase("dev-7");
  EXPECT_FALSE(snapshot.contains("dev-new"));
  EXPECT_TRUE(snapshot.contains("dev-7"));
  EXPECT_EQ(snapshot.size(), 30'000U);
  EXPECT_EQ(a.size(), 30'000U);
  std::size_t n = 0;
  snapshot.for_each([&](const std::string&, const std::string&) { ++n; });
  EXPECT_EQ(n, 30'000U);
}

TEST(ControlState, ApplyCopiesOnlyWhatItChanges) {
  ControlState s;
  ASSERT_FALSE(s.apply_in_place(ControlState::Kind::kApp, "com.a.b", "", "{}"));
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(s.apply_in_place(ControlState::Kind::kDevice, "com.a.b",
                                  "dev-" + std::to_string(i), R"({"channel":"beta"})"));
  }
  auto next = s.apply(ControlState::Kind::kDevice, "com.a.b", "dev-x", R"({"channel":"beta"})");
  ASSERT_TRUE(std::holds_alternative<ControlState>(next));
  EXPECT_FALSE(s.app("com.a.b")->overrides.contains("dev-x")) << "the old state is immutable";
  EXPECT_TRUE(std::get<ControlState>(next).app("com.a.b")->overrides.contains("dev-x"));
  EXPECT_EQ(std::get<ControlState>(next).app("com.a.b")->overrides.size(), 1001U);
}

TEST(ControlState, UnknownFieldsFromUpstreamAreIgnoredButRefusedFromAdmins) {
  ControlState s;
  ASSERT_FALSE(s.apply_in_place(ControlState::Kind::kApp, "com.a.b", "", "{}"));
  const std::string doc = R"({"release":null,"public":true,"added_by_a_newer_origin":{"x":1}})";
  const auto refused = s.apply_in_place(ControlState::Kind::kChannel, "com.a.b", "prod", doc);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->field, "added_by_a_newer_origin");
  EXPECT_EQ(s.app("com.a.b")->channels.count("prod"), 0U) << "an error changes nothing";
  EXPECT_FALSE(
      s.apply_in_place(ControlState::Kind::kChannel, "com.a.b", "prod", doc, Unknown::kIgnore));
  EXPECT_TRUE(s.app("com.a.b")->channels.at("prod").is_public);
}

}  // namespace
}  // namespace edge::control
