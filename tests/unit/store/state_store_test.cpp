#include "edge/store/state_store.hpp"

#include <gtest/gtest.h>

#include "edge/store/database_impl.hpp"

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

// A flood of device overrides (old plugins' setChannel) shares the changelog with channels;
// changelog retention must not take the channels' past with it.
TEST(StateStore, ChannelHistoryOutlivesChangelogRetention) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  s.set_log_retention(1000);
  ASSERT_TRUE(
      s.put(StateKind::kChannel, "com.example.app", "production", R"({"release":"1.0.0"})"));
  ASSERT_TRUE(
      s.put(StateKind::kChannel, "com.example.app", "production", R"({"release":"1.0.1"})"));
  ASSERT_TRUE(s.put(StateKind::kChannel, "com.example.app", "beta", R"({"release":"2.0.0"})"));
  for (int i = 0; i < 50; ++i) {
    StateStore::Batch b;
    for (int j = 0; j < 2000; ++j) {
      char id[40];
      std::snprintf(id, sizeof id, "%08x-0000-4000-8000-000000000000", i * 2000 + j);
      b.put(StateKind::kDevice, "com.example.app", id, R"({"channel":"beta"})");
    }
    ASSERT_TRUE(s.commit(b));
  }
  EXPECT_EQ(s.last_seq(), 100'003U);
  EXPECT_GT(s.log_start(), 3U) << "the channel writes left the changelog";
  auto h = s.channel_history("com.example.app", "production", 10);
  ASSERT_TRUE(h);
  ASSERT_EQ(h->size(), 2U);
  EXPECT_EQ((*h)[0].seq, 2U) << "newest first";
  EXPECT_EQ((*h)[0].value, R"({"release":"1.0.1"})");
  EXPECT_EQ((*h)[1].seq, 1U);
  EXPECT_EQ(s.channel_history("com.example.app", "beta", 10)->size(), 1U);
  EXPECT_TRUE(s.channel_history("com.example.app", "nope", 10)->empty());
  EXPECT_TRUE(s.channel_history("com.example", "app", 10)->empty()) << "no prefix bleed";
}

TEST(StateStore, ChannelHistoryKeepsTheNewestVersionsAndRecordsDeletion) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  s.set_channel_history_keep(3);
  for (int i = 1; i <= 5; ++i)
    ASSERT_TRUE(s.put(StateKind::kChannel, "a.b", "c", "{\"v\":" + std::to_string(i) + "}"));
  StateStore::Batch b;  // two versions in one batch
  b.put(StateKind::kChannel, "a.b", "c", R"({"v":6})");
  b.erase(StateKind::kChannel, "a.b", "c");
  ASSERT_TRUE(s.commit(b));
  auto h = s.channel_history("a.b", "c", 100);
  ASSERT_TRUE(h);
  ASSERT_EQ(h->size(), 3U);
  EXPECT_TRUE((*h)[0].deleted);
  EXPECT_EQ((*h)[0].seq, 7U);
  EXPECT_EQ((*h)[1].value, R"({"v":6})");
  EXPECT_EQ((*h)[2].value, R"({"v":5})");
  EXPECT_EQ(s.channel_history("a.b", "c", 1)->size(), 1U);
  // A follower's applied changes build the same history.
  TempDir tmp2;
  auto db2 = Database::open(tmp2.path() / "db");
  StateStore f(*db2);
  ASSERT_TRUE(f.apply({numbered(1, StateKind::kChannel, "c", R"({"v":1})"),
                       numbered(2, StateKind::kChannel, "c", R"({"v":2})")}));
  EXPECT_EQ(f.channel_history("com.example.app", "c", 10)->size(), 2U);
}

// A data directory written before the per-channel history existed: the history is filled
// from its changelog when it is opened.
TEST(StateStore, OldDataDirGetsItsChannelHistoryFromTheChangelog) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    StateStore s(*db);
    ASSERT_TRUE(s.put(StateKind::kChannel, "a.b", "c", R"({"v":1})"));
    ASSERT_TRUE(s.put(StateKind::kDevice, "a.b", "d", R"({"channel":"c"})"));
    ASSERT_TRUE(s.put(StateKind::kChannel, "a.b", "c", R"({"v":2})"));
    // Take away what the older format did not have.
    auto& d = db->impl();
    rocksdb::WriteBatch wb;
    wb.DeleteRange(d.handle(kCfMeta), "state_channel_history:", "state_channel_history;");
    wb.Delete(d.handle(kCfMeta), "state_channel_history_ready");
    ASSERT_FALSE(d.write(wb, true, false));
    EXPECT_TRUE(s.channel_history("a.b", "c", 10)->empty());
  }
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  auto h = s.channel_history("a.b", "c", 10);
  ASSERT_TRUE(h);
  ASSERT_EQ(h->size(), 2U);
  EXPECT_EQ((*h)[0].seq, 3U);
  EXPECT_EQ((*h)[1].value, R"({"v":1})");
  ASSERT_TRUE(s.put(StateKind::kChannel, "a.b", "c", R"({"v":3})"));
  EXPECT_EQ(s.channel_history("a.b", "c", 10)->size(), 3U);
}

TEST(StateStore, ListAfterPagesOneAppsKeys) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  StateStore s(*db);
  StateStore::Batch b;
  for (const char* id : {"c", "a", "b", "d"})
    b.put(StateKind::kDevice, "a.b", id, id);
  b.put(StateKind::kDevice, "a.bc", "a", "other app");
  b.put(StateKind::kDevice, "a", "z", "other app");
  ASSERT_TRUE(s.commit(b));
  auto p1 = s.list_after(StateKind::kDevice, "a.b", "", 2);
  ASSERT_TRUE(p1);
  ASSERT_EQ(p1->size(), 2U);
  EXPECT_EQ((*p1)[0].first, "a");
  EXPECT_EQ((*p1)[1], (std::pair<std::string, std::string>("b", "b")));
  auto p2 = s.list_after(StateKind::kDevice, "a.b", "b", 10);
  ASSERT_EQ(p2->size(), 2U) << "only this app's keys past the cursor";
  EXPECT_EQ((*p2)[0].first, "c");
  EXPECT_EQ((*p2)[1].first, "d");
  EXPECT_TRUE(s.list_after(StateKind::kDevice, "a.b", "d", 10)->empty());
  EXPECT_EQ(s.list_after(StateKind::kDevice, "a.b", "bb", 10)->size(), 2U) << "any cursor";
  EXPECT_EQ(s.list_after(StateKind::kApp, "", "", 10).error(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace edge::store
