#include "edge/store/state_store.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace edge::store {
namespace {

using testing::TempDir;

TEST(StateStore, WritesGetSequenceNumbersAndChangelog) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  EXPECT_EQ(s.last_seq(), 0U);
  EXPECT_EQ(*s.put(StateKind::kApp, "com.example.app", "", R"({"expose_metadata":false})"), 1U);
  EXPECT_EQ(*s.put(StateKind::kRelease, "com.example.app", "1.2.4", R"({"zip":"ab"})"), 2U);
  EXPECT_EQ(*s.put(StateKind::kChannel, "com.example.app", "production", R"({"release":"1.2.4"})"),
            3U);
  EXPECT_EQ(*s.put(StateKind::kChannel, "com.example.app", "beta", R"({"release":null})"), 4U);
  EXPECT_EQ(*s.put(StateKind::kChannel, "com.other.app", "production", "{}"), 5U);
  EXPECT_EQ(*s.erase(StateKind::kChannel, "com.example.app", "beta"), 6U);

  EXPECT_EQ(**s.get(StateKind::kRelease, "com.example.app", "1.2.4"), R"({"zip":"ab"})");
  EXPECT_FALSE(s.get(StateKind::kChannel, "com.example.app", "beta")->has_value());
  auto channels = s.list(StateKind::kChannel, "com.example.app");
  ASSERT_TRUE(channels);
  ASSERT_EQ(channels->size(), 1U) << "prefix scan stays within one app";
  EXPECT_EQ((*channels)[0].first, "production");
  auto apps = s.list(StateKind::kApp, "");
  ASSERT_EQ(apps->size(), 1U);
  EXPECT_EQ((*apps)[0].first, "com.example.app");

  auto all = s.changes_after(0, 100);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 6U);
  for (std::size_t i = 0; i < all->size(); ++i)
    EXPECT_EQ((*all)[i].seq, i + 1);
  EXPECT_EQ((*all)[1].kind, StateKind::kRelease);
  EXPECT_EQ((*all)[1].key, "1.2.4");
  EXPECT_TRUE((*all)[5].deleted);
  EXPECT_TRUE((*all)[5].value.empty());
  auto tail = s.changes_after(4, 1);
  ASSERT_EQ(tail->size(), 1U);
  EXPECT_EQ((*tail)[0].seq, 5U);
  EXPECT_EQ((*tail)[0].app_id, "com.other.app");
  EXPECT_TRUE(s.changes_after(6, 10)->empty());
}

TEST(StateStore, BatchIsAtomicAndSurvivesReopen) {
  TempDir tmp;
  std::vector<Change> before;
  {
    auto db = Database::open(tmp.path() / "db");
    StateStore s(*db);
    StateStore::Batch b;
    b.put(StateKind::kChannel, "a.b", "production", R"({"public":true})");
    b.put(StateKind::kChannel, "a.b", "old-public", R"({"public":false})");
    b.put(StateKind::kDevice, "a.b", "0a1b2c3d-1111-4222-8333-444455556666",
          R"({"channel":"beta"})");
    EXPECT_EQ(*s.commit(b), 3U);
    StateStore::Batch empty;
    EXPECT_EQ(s.commit(empty).error(), Errc::kInvalidArgument);
    EXPECT_EQ(s.put(StateKind::kChannel, std::string("a\0b", 3), "x", "{}").error(),
              Errc::kInvalidArgument)
        << "a NUL would break the key layout";
    before = *s.changes_after(0, 100);
  }
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  EXPECT_EQ(s.last_seq(), 3U);
  EXPECT_EQ(*s.changes_after(0, 100), before);
  EXPECT_EQ(*s.put(StateKind::kApp, "a.b", "", "{}"), 4U) << "numbering continues";
}

}  // namespace
}  // namespace edge::store
