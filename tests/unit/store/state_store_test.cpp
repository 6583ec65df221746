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

namespace edge::store {
namespace {

Change numbered(std::uint64_t seq, StateKind kind, std::string key, std::string value) {
  return {seq, kind, value.empty(), "com.example.app", std::move(key), std::move(value)};
}

TEST(StateStore, ApplyTakesUpstreamNumbersAndMovesTheCursorWithThem) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    StateStore s(*db);
    std::vector<Change> batch = {numbered(1, StateKind::kApp, "", "{}"),
                                 numbered(2, StateKind::kChannel, "production", R"({"a":1})")};
    EXPECT_EQ(*s.apply(batch), 2U);
    // Replayed changes are skipped; the new one lands.
    batch.push_back(numbered(3, StateKind::kChannel, "production", ""));
    EXPECT_EQ(*s.apply(batch), 3U);
    EXPECT_FALSE(s.get(StateKind::kChannel, "com.example.app", "production")->has_value());
    // A gap writes nothing.
    const auto gap = s.apply({numbered(5, StateKind::kChannel, "beta", "{}")});
    EXPECT_EQ(gap.error(), Errc::kInvalidArgument);
    EXPECT_EQ(s.last_seq(), 3U);
    EXPECT_FALSE(s.get(StateKind::kChannel, "com.example.app", "beta")->has_value());
  }
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  EXPECT_EQ(s.last_seq(), 3U) << "the cursor is durable with the changes";
  auto log = s.changes_after(0, 10);
  ASSERT_EQ(log->size(), 3U);
  EXPECT_TRUE((*log)[2].deleted);
}

TEST(StateStore, RetentionCompactsTheLogAndSnapshotsReplaceEverything) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  s.set_log_retention(2);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(s.put(StateKind::kRelease, "com.example.app", "r" + std::to_string(i), "{}"));
  EXPECT_EQ(s.last_seq(), 5U);
  EXPECT_EQ(s.log_start(), 4U) << "entries 1-3 compacted away";
  EXPECT_EQ(s.changes_after(0, 10)->size(), 2U);

  auto snap = s.snapshot();
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->seq, 5U);
  EXPECT_EQ(snap->docs.size(), 5U);

  // Another node takes the snapshot: its old documents and log go.
  TempDir tmp2;
  auto db2 = Database::open(tmp2.path() / "db");
  StateStore other(*db2);
  ASSERT_TRUE(other.put(StateKind::kChannel, "com.gone.app", "x", "{}"));
  EXPECT_EQ(*other.replace(*snap), 5U);
  EXPECT_EQ(other.last_seq(), 5U);
  EXPECT_EQ(other.log_start(), 6U);
  EXPECT_TRUE(other.changes_after(0, 10)->empty());
  EXPECT_FALSE(other.get(StateKind::kChannel, "com.gone.app", "x")->has_value());
  EXPECT_EQ(other.list(StateKind::kRelease, "com.example.app")->size(), 5U);
  EXPECT_EQ(*other.apply({numbered(6, StateKind::kApp, "", "{}")}), 6U) << "then follows the log";
}

}  // namespace
}  // namespace edge::store
