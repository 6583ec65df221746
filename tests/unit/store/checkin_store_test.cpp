#include "edge/store/checkin_store.hpp"

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "edge/core/utf8.hpp"

#include "test_util.hpp"

namespace edge::store {
namespace {

using testing::TempDir;

constexpr std::int64_t kDay1 = 1764115200000;  // 2025-11-26T00:00:00Z
constexpr std::int64_t kDay2 = kDay1 + 86400000;

TEST(CheckinStore, AggregatesPerDayAndSurvivesReopen) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db);
    // Many threads record at once: the writer group-commits.
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&s, t] {
        for (int i = 0; i < 250; ++i) {
          s.record({"com.a.b", "dev-" + std::to_string(i % 10), "android",
                    i % 2 ? "1.0.0" : "1.1.0", "1.0.0", t == 0 ? "set" : "updates", "", kDay1 + i});
        }
      });
    }
    for (auto& th : threads)
      th.join();
    s.record({"com.a.b", "dev-x", "ios", "1.1.0", "1.0.0", "set", "", kDay2});
    s.record({"com.other.app", "dev-0", "ios", "2.0.0", "2.0.0", "set", "", kDay2});
    s.flush();
    EXPECT_EQ(s.committed(), 1002U);
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db);
  auto stats = s.stats("com.a.b");
  ASSERT_TRUE(stats);
  ASSERT_EQ(stats->size(), 2U);
  const DayStats& d1 = stats->at("2025-11-26");
  EXPECT_EQ(d1.devices, 10U) << "a device counts once per day";
  EXPECT_EQ(d1.actions.at("set"), 250U);
  EXPECT_EQ(d1.actions.at("updates"), 750U);
  EXPECT_EQ(d1.releases.at("1.0.0") + d1.releases.at("1.1.0"), 1000U);
  EXPECT_EQ(stats->at("2025-11-27").devices, 1U);
  auto last = s.last("com.a.b", "dev-x");
  ASSERT_TRUE(last && *last);
  EXPECT_EQ((*last)->platform, "ios");
  EXPECT_EQ((*last)->time_ms, kDay2);
  EXPECT_FALSE(s.last("com.a.b", "nobody")->has_value());
  // Sequence numbers continue after a reopen.
  s.record({"com.a.b", "dev-y", "android", "1.1.0", "1.0.0", "set", "", kDay2});
  s.flush();
  EXPECT_EQ(s.stats("com.a.b")->at("2025-11-27").devices, 2U);
}

}  // namespace
}  // namespace edge::store

namespace edge::store {
namespace {

Checkin device_checkin(int i) {
  return {"com.a.b", "dev-" + std::to_string(i), "ios", "1.0.0", "1.0.0", "updates", "update",
          kDay1 + i};
}

// Records and waits for the durable callback, as an edge's device endpoint does.
void record_durably(CheckinStore& s, Checkin c) {
  std::promise<bool> p;
  s.record(std::move(c), [&p](bool ok) { p.set_value(ok); });
  ASSERT_TRUE(p.get_future().get());
}

TEST(CheckinStore, OutboxBatchesAreStableUntilAcknowledgedAcrossRestarts) {
  TempDir tmp;
  OutboxBatch first;
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, {true, 1 << 20});
    for (int i = 0; i < 5; ++i)
      record_durably(s, device_checkin(i));
    EXPECT_EQ(s.outbox_stats().depth, 5U);
    EXPECT_EQ(s.outbox_stats().oldest_ms, kDay1);
    first = *s.outbox_next(3);
    EXPECT_EQ(first.batch_seq, 1U);
    ASSERT_EQ(first.checkins.size(), 3U);
    record_durably(s, device_checkin(5));
    // Not acknowledged: the same batch again, not a bigger one.
    const auto again = *s.outbox_next(10);
    EXPECT_EQ(again.batch_seq, 1U);
    EXPECT_EQ(again.checkins.size(), 3U);
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, {true, 1 << 20});
  EXPECT_EQ(s.outbox_stats().depth, 6U) << "the outbox survives a restart";
  const auto after = *s.outbox_next(10);
  EXPECT_EQ(after.batch_seq, 1U) << "the in-flight batch keeps its key across a restart";
  ASSERT_EQ(after.checkins.size(), 3U);
  EXPECT_EQ(after.checkins[0].device_id, "dev-0");
  ASSERT_TRUE(s.outbox_ack(after));
  const auto next = *s.outbox_next(10);
  EXPECT_EQ(next.batch_seq, 2U);
  ASSERT_EQ(next.checkins.size(), 3U);
  EXPECT_EQ(next.checkins[0].device_id, "dev-3");
  ASSERT_TRUE(s.outbox_ack(next));
  EXPECT_EQ(s.outbox_stats().depth, 0U);
  EXPECT_TRUE(s.outbox_next(10)->checkins.empty());

  // Batches are bounded in bytes too (request bodies are bounded upstream).
  for (int i = 0; i < 10; ++i)
    record_durably(s, device_checkin(i));
  const auto small = *s.outbox_next(100, 100);
  EXPECT_GE(small.checkins.size(), 1U);
  EXPECT_LT(small.checkins.size(), 10U);
}

TEST(CheckinStore, ReceivedBatchesApplyOncePerNodeAndSequence) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db);
  const auto send = [&](std::string node, std::uint64_t seq, int n, std::string gen = "g1") {
    std::vector<Checkin> list;
    for (int i = 0; i < n; ++i)
      list.push_back(device_checkin(i));
    std::promise<std::pair<bool, bool>> p;
    s.record_batch(std::move(node), std::move(gen), seq, std::move(list), [&p](bool ok, bool dup) {
      p.set_value({ok, dup});
    });
    return p.get_future().get();
  };
  EXPECT_EQ(send("edge-a", 1, 4), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 1, 4), std::pair(true, true)) << "a retried batch";
  EXPECT_EQ(send("edge-b", 1, 2), std::pair(true, false)) << "keys are per node";
  EXPECT_EQ(send("edge-a", 2, 1), std::pair(true, false));
  EXPECT_EQ(s.stats("com.a.b")->at("2025-11-26").actions.at("updates"), 7U);
  // A sender whose numbering restarted (wiped or restored data) has a new generation: its
  // batches are new, whatever their numbers; a forged huge seq poisons only its generation.
  EXPECT_EQ(send("edge-a", ~std::uint64_t{0}, 1, "forged"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 1, 3, "g2"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 2, 1, "g2"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 2, 1, "g2"), std::pair(true, true));
  EXPECT_EQ(s.stats("com.a.b")->at("2025-11-26").actions.at("updates"), 12U);
}

TEST(CheckinStore, EachStartHasANewGenerationAndTheInflightBatchKeepsItsOwn) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  OutboxBatch first;
  std::uint64_t gen1 = 0;
  {
    CheckinStore s(*db, {true, 1 << 20});
    gen1 = s.generation();
    for (int i = 0; i < 3; ++i)
      record_durably(s, device_checkin(i));
    first = *s.outbox_next(2);
    EXPECT_EQ(first.generation, gen1);
  }
  CheckinStore s(*db, {true, 1 << 20});
  EXPECT_NE(s.generation(), gen1);
  const auto again = *s.outbox_next(10);
  EXPECT_EQ(again.generation, gen1) << "a retry carries the key it was numbered with";
  EXPECT_EQ(again.batch_seq, first.batch_seq);
  ASSERT_TRUE(s.outbox_ack(again));
  EXPECT_EQ(s.outbox_next(10)->generation, s.generation());
}

TEST(CheckinStore, FieldsAreCutAtCharacterBoundariesAndStayValidUtf8) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, {true, 1 << 20});
  Checkin c = device_checkin(1);
  std::string euros;
  for (int i = 0; i < 400; ++i)
    euros += "\xe2\x82\xac";  // U+20AC, 3 bytes: 1024 is not a multiple of 3
  c.version_name = euros;
  c.version_build = "1.0\xff\xfe";  // not UTF-8 at all
  record_durably(s, c);
  const auto got = s.outbox_next(10)->checkins.at(0);
  EXPECT_EQ(got.version_name.size(), 1023U);
  EXPECT_TRUE(valid_utf8(got.version_name));
  EXPECT_EQ(got.version_build, "1.0??");
}

TEST(CheckinStore, BatchesAreBoundedByTheSendersCost) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, {true, 1 << 20});
  for (int i = 0; i < 50; ++i)
    record_durably(s, device_checkin(i));
  // A cost six times the stored size (control characters escaped as \u00XX).
  const auto cost = [](const Checkin& c) { return 6 * (c.device_id.size() + c.app_id.size()); };
  const auto b = *s.outbox_next(100, 6 * 10 * (5 + 7), cost);
  EXPECT_EQ(b.checkins.size(), 10U);
}

TEST(CheckinStore, ARefusedBatchBecomesADeadLetterAndTheRestFlows) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  {
    CheckinStore s(*db, {true, 1 << 20});
    for (int i = 0; i < 5; ++i)
      record_durably(s, device_checkin(i));
    const auto bad = *s.outbox_next(2);
    ASSERT_TRUE(s.outbox_dead_letter(bad, "HTTP 400 invalid_body"));
    const auto next = *s.outbox_next(10);
    ASSERT_EQ(next.checkins.size(), 3U) << "the queue moves on";
    EXPECT_EQ(next.checkins.front().device_id, "dev-2");
    EXPECT_NE(next.batch_seq, bad.batch_seq);
  }
  CheckinStore s(*db, {true, 1 << 20});  // kept across restarts, counted again
  EXPECT_EQ(s.outbox_stats().dead_batches, 1U);
  EXPECT_EQ(s.outbox_stats().dead_checkins, 2U);
  const auto dead = *s.dead_letters();
  ASSERT_EQ(dead.size(), 1U);
  EXPECT_EQ(dead[0].reason, "HTTP 400 invalid_body");
  ASSERT_EQ(dead[0].checkins.size(), 2U);
  EXPECT_EQ(dead[0].checkins[1].device_id, "dev-1");
  EXPECT_GT(dead[0].time_ms, 0);
}

TEST(CheckinStore, FieldsAreStoredWithoutNulAndBounded) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, {true, 1 << 20});
  Checkin c = device_checkin(1);
  c.version_name = std::string("1.0\0evil", 8);
  c.platform = std::string(5000, 'x');
  record_durably(s, c);
  const auto last = *s.last("com.a.b", "dev-1");
  ASSERT_TRUE(last);
  EXPECT_EQ(last->version_name, "1.0?evil");
  EXPECT_EQ(last->platform.size(), kMaxCheckinField);
  EXPECT_EQ(last->time_ms, kDay1 + 1) << "later fields did not shift";
  EXPECT_EQ(s.outbox_next(10)->checkins.at(0).version_name, "1.0?evil");
}

TEST(CheckinStore, AFullOutboxDropsTheOldestAndCountsThem) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, {true, 600});  // room for a handful of records
  for (int i = 0; i < 40; ++i)
    record_durably(s, device_checkin(i));
  const auto st = s.outbox_stats();
  EXPECT_LE(st.bytes, 600U);
  EXPECT_GT(st.dropped, 0U);
  EXPECT_EQ(st.depth + st.dropped, 40U);
  const auto batch = *s.outbox_next(100);
  ASSERT_FALSE(batch.checkins.empty());
  EXPECT_EQ(batch.checkins.back().device_id, "dev-39") << "the newest are kept";
}

}  // namespace
}  // namespace edge::store
