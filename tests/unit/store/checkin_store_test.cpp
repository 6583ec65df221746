#include "edge/store/checkin_store.hpp"

#include <atomic>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "edge/core/clock.hpp"
#include "edge/core/utf8.hpp"
#include "edge/store/database_impl.hpp"

#include "test_util.hpp"
#include <unistd.h>

namespace edge::store {
namespace {

using testing::TempDir;

constexpr std::int64_t kDay1 = 1764115200000;  // 2025-11-26T00:00:00Z
constexpr std::int64_t kDay2 = kDay1 + 86400000;

// These tests use fixed dates in the past: the retention sweep must leave them alone.
CheckinOptions keep_all(bool outbox = false) {
  CheckinOptions o;
  o.outbox = outbox;
  o.retention_days = 0;
  return o;
}

// A day's figures: the device counts and the sum of its hours.
struct DayView {
  std::uint64_t devices = 0;
  std::map<std::string, std::uint64_t> actions, releases, by_release;
};
DayView day_view(const CheckinStore& s, const std::string& app, std::int64_t day_ms) {
  auto a = s.analytics(app, day_ms, day_ms + 86'400'000 - 1);
  EXPECT_TRUE(a);
  DayView v;
  if (const auto it = a->days.find(utc_day(day_ms)); it != a->days.end()) {
    v.devices = it->second.devices;
    v.by_release = it->second.by_release;
  }
  for (const auto& [h, st] : a->hours) {
    for (const auto& [k, n] : st.actions)
      v.actions[k] += n;
    for (const auto& [k, n] : st.releases)
      v.releases[k] += n;
  }
  return v;
}

TEST(CheckinStore, AggregatesPerDayAndSurvivesReopen) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, keep_all());
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
  CheckinStore s(*db, keep_all());
  auto both = s.analytics("com.a.b", kDay1, kDay2 + 86'400'000 - 1);
  ASSERT_TRUE(both);
  ASSERT_EQ(both->days.size(), 2U);
  const DayView d1 = day_view(s, "com.a.b", kDay1);
  EXPECT_EQ(d1.devices, 10U) << "a device counts once per day";
  EXPECT_EQ(d1.actions.at("set"), 250U);
  EXPECT_EQ(d1.actions.at("updates"), 750U);
  EXPECT_EQ(d1.releases.at("1.0.0") + d1.releases.at("1.1.0"), 1000U);
  EXPECT_EQ(day_view(s, "com.a.b", kDay2).devices, 1U);
  auto last = s.last("com.a.b", "dev-x");
  ASSERT_TRUE(last && *last);
  EXPECT_EQ((*last)->platform, "ios");
  EXPECT_EQ((*last)->time_ms, kDay2);
  EXPECT_FALSE(s.last("com.a.b", "nobody")->has_value());
  // Sequence numbers continue after a reopen.
  s.record({"com.a.b", "dev-y", "android", "1.1.0", "1.0.0", "set", "", kDay2});
  s.flush();
  EXPECT_EQ(day_view(s, "com.a.b", kDay2).devices, 2U);
  // A device seen before the reopen is not counted again the same day (the device table
  // is rebuilt from the last check-ins).
  s.record({"com.a.b", "dev-x", "ios", "1.1.0", "1.0.0", "updates", "", kDay2 + 5});
  s.flush();
  EXPECT_EQ(day_view(s, "com.a.b", kDay2).devices, 2U);
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
  CheckinStore s(*db, keep_all());
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
  EXPECT_EQ(day_view(s, "com.a.b", kDay1).actions.at("updates"), 7U);
  // A sender whose numbering restarted (wiped or restored data) has a new generation: its
  // batches are new, whatever their numbers; a forged huge seq poisons only its generation.
  EXPECT_EQ(send("edge-a", ~std::uint64_t{0}, 1, "forged"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 1, 3, "g2"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 2, 1, "g2"), std::pair(true, false));
  EXPECT_EQ(send("edge-a", 2, 1, "g2"), std::pair(true, true));
  EXPECT_EQ(day_view(s, "com.a.b", kDay1).actions.at("updates"), 12U);
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

// A device's current day lives in the device table; its day marker is written once the
// device moves past that day. Late events must still count each device once a day: in the
// batch that moves the device on, and after a restart (the table rebuilt from disk).
TEST(CheckinStore, DistinctDevicesPerDayAcrossOneBatchAndARestart) {
  TempDir tmp;
  constexpr std::int64_t kDay3 = kDay2 + 86'400'000;
  const auto checkin = [](std::string dev, std::int64_t t) {
    return Checkin{"com.a.b", std::move(dev), "ios", "1.0.0", "1.0.0", "updates", "", t};
  };
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, keep_all());
    s.record(checkin("d1", kDay1 + 1));
    s.record(checkin("d2", kDay1 + 1));
    s.flush();
    // One batch: d1 moves to day 2, then a late day-1 event of it.
    s.record(checkin("d1", kDay2 + 1));
    s.record(checkin("d1", kDay1 + 2));
    s.flush();
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  // After the restart: d2 (counted on day 1, never moved on) moves to day 3, then late
  // events of day 1 (counted) and day 2 (not counted yet) arrive.
  s.record(checkin("d2", kDay3 + 1));
  s.flush();
  s.record(checkin("d2", kDay1 + 3));
  s.record(checkin("d2", kDay2 + 3));
  s.record(checkin("d2", kDay2 + 4));
  s.record(checkin("d1", kDay1 + 4));
  s.flush();
  auto a = s.analytics("com.a.b", kDay1, kDay3 + 86'400'000 - 1);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->days.at("2025-11-26").devices, 2U) << "d1 and d2, each once";
  EXPECT_EQ(a->days.at("2025-11-27").devices, 2U) << "d1, and d2's late events once";
  EXPECT_EQ(a->days.at("2025-11-28").devices, 1U);
}

// A late event (an earlier day than the device's current one, relayed by an edge that was cut
// off) joins the device's timeline and its own day's counts, but does not set the device back:
// its row keeps the newest version and time, in a later batch and in the same batch, and after
// a restart the device is not counted twice on its current day nor its timeline overwritten.
TEST(CheckinStore, ALateEventDoesNotSetTheDeviceBack) {
  TempDir tmp;
  const auto checkin = [](std::string dev, std::string version, std::string action,
                          std::int64_t t) {
    return Checkin{"com.a.b", std::move(dev),    "ios", std::move(version),
                   "1.0.0",   std::move(action), "",    t};
  };
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, keep_all());
    s.record(checkin("d1", "2.0.0", "updates", kDay2 + 10));
    s.flush();
    s.record(checkin("d1", "1.0.0", "get", kDay1 + 10));  // late, a batch of its own
    s.record(checkin("d2", "2.0.0", "updates", kDay2 + 20));
    s.record(checkin("d2", "1.0.0", "get", kDay1 + 20));  // late, same batch
    s.flush();
    for (const char* dev : {"d1", "d2"}) {
      auto last = s.last("com.a.b", dev);
      ASSERT_TRUE(last && *last) << dev;
      EXPECT_EQ((*last)->version_name, "2.0.0") << dev;
      EXPECT_GE((*last)->time_ms, kDay2) << dev;
      EXPECT_EQ(s.timeline("com.a.b", dev, 10)->size(), 2U) << dev;
    }
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  s.record(checkin("d1", "2.0.0", "download_0", kDay2 + 30));
  s.flush();
  auto a = s.analytics("com.a.b", kDay1, kDay2 + 86'400'000 - 1);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->days.at("2025-11-27").devices, 2U) << "d1 and d2 once each on their current day";
  EXPECT_EQ(a->days.at("2025-11-26").devices, 2U) << "their late events count on their day";
  EXPECT_EQ(a->hours.at("2025-11-26T00").releases.at("1.0.0"), 2U);
  EXPECT_EQ(s.timeline("com.a.b", "d1", 10)->size(), 3U) << "the ring resumed past the late event";
}

TEST(CheckinStore, HourlyBucketsDistinctDevicesAndReleasesPerDay) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  constexpr std::int64_t kHour = 3'600'000;
  const auto at = [&](std::string dev, std::string platform, std::string version,
                      std::string action, std::int64_t t) {
    s.record({"com.a.b", std::move(dev), std::move(platform), std::move(version), "1.0.0",
              std::move(action), "", t});
  };
  at("d1", "ios", "1.0.0", "updates", kDay1 + 1);
  at("d1", "ios", "1.0.0", "download_0", kDay1 + 2);  // names 1.0.0 as its target
  at("d2", "android", "1.0.0", "updates", kDay1 + kHour + 5);
  at("d1", "ios", "2.0.0", "set", kDay1 + 2 * kHour);  // d1 moves to 2.0.0 the same day
  at("d2", "android", "2.0.0", "update_fail", kDay1 + 2 * kHour + 1);
  at("d2", "android", "1.0.0", "updates", kDay2 + 1);  // the next day
  s.flush();
  // A late event from day 1 (relayed by an edge after the device was seen on day 2): d3
  // is new to day 1, d2 was counted there already.
  at("d3", "ios", "1.0.0", "updates", kDay1 + 3 * kHour);
  at("d2", "android", "1.0.0", "get", kDay1 + 3 * kHour);
  s.flush();

  auto a = s.analytics("com.a.b", kDay1, kDay2 + 86'400'000 - 1);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->days.size(), 2U);
  const DayDevices& day1 = a->days.at("2025-11-26");
  EXPECT_EQ(day1.devices, 3U) << "d1, d2 and the late d3, each once";
  EXPECT_EQ(day1.by_release.at("1.0.0"), 3U);
  EXPECT_EQ(day1.by_release.at("2.0.0"), 1U) << "d1 after its set; d2's failure names 2.0.0";
  EXPECT_EQ(a->days.at("2025-11-27").devices, 1U);
  ASSERT_EQ(a->hours.size(), 5U);
  const HourStats& h0 = a->hours.at("2025-11-26T00");
  EXPECT_EQ(h0.actions.at("updates"), 1U);
  EXPECT_EQ(h0.platforms.at("ios"), 2U);
  EXPECT_EQ(h0.targets.at("1.0.0").at("download_0"), 1U);
  EXPECT_EQ(h0.releases.size(), 1U) << "a target-naming event does not count as running";
  const HourStats& h2 = a->hours.at("2025-11-26T02");
  EXPECT_EQ(h2.installs.at("2.0.0"), 1U);
  EXPECT_EQ(h2.targets.at("2.0.0").at("update_fail"), 1U);
  EXPECT_EQ(a->hours.at("2025-11-26T03").actions.at("get"), 1U);
  // A narrower range reads only its hours.
  auto one = s.analytics("com.a.b", kDay1 + kHour, kDay1 + 2 * kHour - 1);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->hours.size(), 1U);
  EXPECT_TRUE(one->hours.contains("2025-11-26T01"));
  EXPECT_TRUE(s.analytics("com.other", kDay1, kDay2)->hours.empty());
}

TEST(CheckinStore, TimelinesKeepTheLastEventsNewestFirstAcrossRestarts) {
  TempDir tmp;
  CheckinOptions o = keep_all();
  o.timeline_events = 5;
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, o);
    for (int i = 0; i < 8; ++i) {
      Checkin c = device_checkin(0);
      c.time_ms = kDay1 + i;
      c.action = "e" + std::to_string(i);
      c.plugin_version = "8.51.23";
      c.custom_id = "user-42";
      c.default_channel = "beta";
      s.record(std::move(c));
    }
    s.record(device_checkin(1));
    s.flush();
    auto t = s.timeline("com.a.b", "dev-0", 100);
    ASSERT_TRUE(t);
    ASSERT_EQ(t->size(), 5U) << "bounded: the oldest are dropped";
    EXPECT_EQ(t->front().action, "e7");
    EXPECT_EQ(t->back().action, "e3");
    EXPECT_EQ(t->front().custom_id, "user-42");
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, o);
  Checkin c = device_checkin(0);
  c.action = "after";
  c.time_ms = kDay1 + 100;
  s.record(std::move(c));
  Checkin late = device_checkin(0);  // relayed late: its time is before e7's
  late.action = "late";
  late.time_ms = kDay1 + 5;
  s.record(std::move(late));
  s.flush();
  auto t = s.timeline("com.a.b", "dev-0", 3);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->size(), 3U);
  EXPECT_EQ((*t)[0].action, "after") << "the ring goes on where it was";
  EXPECT_EQ((*t)[1].action, "e7");
  EXPECT_EQ((*t)[2].action, "e6") << "newest event time first, whatever the arrival order";
  EXPECT_EQ(s.timeline("com.a.b", "dev-1", 10)->size(), 1U);
  EXPECT_TRUE(s.timeline("com.a.b", "nobody", 10)->empty());
  // An update check that repeats the device's previous one is not added again; one with
  // another answer is, and so is the same check after another event.
  for (const char* decision : {"update", "update", "no_new_version_available", "update"})
    s.record({"com.a.b", "dev-2", "ios", "1.0.0", "1.0.0", "updates", decision, kDay1});
  s.record({"com.a.b", "dev-2", "ios", "1.0.0", "1.0.0", "get", "", kDay1});
  s.record({"com.a.b", "dev-2", "ios", "1.0.0", "1.0.0", "updates", "update", kDay1});
  s.flush();
  auto checks = s.timeline("com.a.b", "dev-2", 10);
  ASSERT_TRUE(checks);
  ASSERT_EQ(checks->size(), 5U);
  EXPECT_EQ((*checks)[0].action, "updates");
  EXPECT_EQ((*checks)[1].action, "get");
  EXPECT_EQ((*checks)[2].decision, "update");
  EXPECT_EQ((*checks)[3].decision, "no_new_version_available");
  // The new fields are kept with the last check-in; an older record (without them) reads.
  const auto last = *s.last("com.a.b", "dev-0");
  ASSERT_TRUE(last);
  EXPECT_TRUE(last->plugin_version.empty()) << "the newest event did not send one";
  EXPECT_EQ(s.table_devices(), 3U);
  EXPECT_GT(s.table_bytes(), 0U);
}

// A device that repeats its update check (an app checks at every start) keeps its row in
// the device index for the rest of the minute it was written in: the last check-in's time
// is right to the minute, every check-in is still in the raw log and the counters, and any
// change (another field, another answer, another event, a new minute) writes the row.
TEST(CheckinStore, ARepeatedCheckRefreshesTheDeviceRowOncePerMinute) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  const auto check = [&](std::int64_t t, std::string custom_id = "") {
    Checkin c{"com.a.b", "dev-r", "ios", "1.0.0", "1.0.0", "updates", "no_new_version_available",
              t};
    c.custom_id = std::move(custom_id);
    s.record(std::move(c));
    s.flush();
    return (*s.last("com.a.b", "dev-r"))->time_ms;
  };
  constexpr std::int64_t kMinute = 60'000;
  const std::int64_t t0 = kDay1 + 10 * kMinute + 5;
  EXPECT_EQ(check(t0), t0);
  EXPECT_EQ(check(t0 + 1000), t0) << "the same check in the same minute: the row stays";
  EXPECT_EQ(check(t0 + 2000, "user-1"), t0 + 2000) << "another field: written at once";
  EXPECT_EQ(check(t0 + 3000, "user-1"), t0 + 2000);
  EXPECT_EQ(check(t0 + kMinute), t0 + kMinute) << "the next minute refreshes it";
  std::size_t logged = 0;
  ASSERT_TRUE(s.scan_back(0, 100, [&](const Checkin&) { ++logged; }));
  EXPECT_EQ(logged, 5U) << "every check-in is in the raw log";
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 86'400'000 - 1);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->hours.at("2025-11-26T00").actions.at("updates"), 5U);
  EXPECT_EQ(a->days.at("2025-11-26").devices, 1U);
  EXPECT_EQ(s.timeline("com.a.b", "dev-r", 10)->size(), 3U)
      << "the first check, the first with a custom id, the first without it again";
}

// A data directory from before timelines were chained through the raw log: a device's row
// ends with its ring's event count, the ring is in the timeline family. The ring is read
// behind the chain's events, and goes with its device once idle past the retention.
TEST(CheckinStore, TimelineRingsFromBeforeTheChainAreStillRead) {
  TempDir tmp;
  const auto event = [](std::string action, std::int64_t t) {
    return Checkin{"com.a.b", "dev-old", "ios", "1.0.0", "1.0.0", std::move(action), "", t};
  };
  {
    // Written as the store before the chain wrote them: three events in a ring of 5.
    auto db = Database::open(tmp.path() / "db");
    auto& d = db->impl();
    const auto encoded = [](const Checkin& c) {
      std::string out;
      for (const std::string* f : {&c.app_id, &c.device_id, &c.platform, &c.version_name,
                                   &c.version_build, &c.action, &c.decision})
        out += *f + '\0';
      return out + std::to_string(c.time_ms) + std::string(3, '\0');  // empty later fields
    };
    rocksdb::WriteBatch wb;
    for (std::uint32_t slot = 0; slot < 3; ++slot) {
      const std::string ring_key = std::string("com.a.b\0dev-old\0\0\0\0", 19) + char(slot);
      wb.Put(d.handle(kCfTimeline), ring_key,
             encoded(event("old" + std::to_string(slot), kDay1 + slot)));
    }
    wb.Put(d.handle(kCfDeviceSeen), std::string("com.a.b\0dev-old", 15),
           encoded(event("old2", kDay1 + 2)) + '\0' + "3");
    ASSERT_FALSE(d.write(wb, true, false));
  }
  CheckinOptions o = keep_all();
  o.timeline_events = 5;
  {
    auto db = Database::open(tmp.path() / "db");
    CheckinStore s(*db, o);
    auto t = s.timeline("com.a.b", "dev-old", 10);
    ASSERT_TRUE(t);
    ASSERT_EQ(t->size(), 3U);
    EXPECT_EQ(t->front().action, "old2");
    for (int i = 0; i < 3; ++i)
      s.record(event("new" + std::to_string(i), kDay1 + 10 + i));
    s.flush();
  }
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, o);
  auto t = s.timeline("com.a.b", "dev-old", 10);
  ASSERT_TRUE(t);
  std::vector<std::string> actions;
  for (const auto& c : *t)
    actions.push_back(c.action);
  EXPECT_EQ(actions, (std::vector<std::string>{"new2", "new1", "new0", "old2", "old1"}))
      << "the chain, then the ring, up to timeline_events, across a restart";
  EXPECT_EQ((*s.last("com.a.b", "dev-old"))->action, "new2");
}

TEST(CheckinStore, RetentionDeletesOldBucketsLogAndIdleTimelines) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinOptions o = keep_all();
  o.retention_days = 30;
  CheckinStore s(*db, o);
  // Relative to now: the writer's own hourly sweep runs too.
  const std::int64_t recent = wall_clock_ms() - 86'400'000;
  const std::int64_t old_day = recent - 40LL * 86'400'000;
  Checkin c = device_checkin(0);
  c.time_ms = old_day;
  s.record(c);  // an idle device
  c.device_id = "dev-1";
  s.record(c);
  c.time_ms = recent;
  c.action = "app_moved_to_foreground";
  s.record(c);  // dev-1 came back
  s.flush();
  s.sweep_retention(recent + 1);
  auto a = s.analytics("com.a.b", old_day, recent + 1);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->days.size(), 1U) << "the old day is gone";
  EXPECT_TRUE(a->days.contains(utc_day(recent)));
  EXPECT_TRUE(s.timeline("com.a.b", "dev-0", 10)->empty()) << "an idle device's timeline";
  auto seen = s.timeline("com.a.b", "dev-1", 10);
  ASSERT_EQ(seen->size(), 1U) << "a timeline is a chain through the raw log: it goes with it";
  EXPECT_EQ(seen->front().action, "app_moved_to_foreground");
  EXPECT_TRUE(s.last("com.a.b", "dev-0")->has_value()) << "the device index keeps it";
  std::size_t logged = 0;
  ASSERT_TRUE(s.scan_back(0, 100, [&](const Checkin&) { ++logged; }));
  EXPECT_EQ(logged, 1U) << "the raw log before the cutoff is deleted";
}

// kill -9 while devices check in (each check-in acknowledged only once durable): after every
// restart each device's timeline holds exactly its acknowledged events but repeated update
// checks, oldest first, perhaps followed by the one in flight at the kill; its row in the
// device index is no older than its last acknowledged event that was not a repeat; and the
// chains go on from where they were (an event after the restart joins them).
namespace {

// Event `i` of a device: a stats event, an update check, the same check again (a repeat), a
// check with another answer, and that again.
Checkin crash_event(const std::string& dev, std::uint64_t i) {
  const std::uint64_t k = i % 5;
  Checkin c{"com.a.b", dev,
            "ios",     "1.0.0",
            "1.0.0",   k == 0 ? "get" : "updates",
            "",        kDay1 + static_cast<std::int64_t>(i) * 1000};
  if (k != 0)
    c.decision = k <= 2 ? "update" : "no_new_version_available";
  return c;
}

bool crash_repeat(std::uint64_t i) {
  return i % 5 == 2 || i % 5 == 4;
}

// The child of a round: 3 devices per thread check in from 4 threads until it is killed.
void checkin_child(const std::filesystem::path& dir, int out_fd, int round) {
  auto db = Database::open(dir);
  CheckinOptions o = keep_all();
  o.timeline_events = 1000;
  CheckinStore s(*db, o);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::uint64_t i = 0;; ++i) {
        for (int d = 0; d < 3; ++d) {
          const std::string dev =
              "r" + std::to_string(round) + "-t" + std::to_string(t) + "-d" + std::to_string(d);
          std::promise<bool> kept;
          s.record(crash_event(dev, i), [&kept](bool ok) { kept.set_value(ok); });
          if (!kept.get_future().get())
            _exit(3);
          testing::write_ack(out_fd, dev + " " + std::to_string(i) + "\n");
        }
      }
    });
  }
  for (auto& th : threads)
    th.join();
}

}  // namespace

TEST(CheckinStore, KillNineKeepsEveryAcknowledgedTimelineEvent) {
  TempDir tmp;
  std::mt19937 rng(20261203);
  std::map<std::string, std::uint64_t> acked;  // device -> events acknowledged
  for (int round = 0; round < 8; ++round) {
    const auto run = testing::run_until_killed(
        [&](int fd) { checkin_child(tmp.path() / "db", fd, round); }, rng, 300);
    ASSERT_TRUE(run.killed) << "child exited early with status " << run.exit_status;
    std::istringstream lines(run.output);
    std::string dev;
    std::uint64_t i = 0;
    const std::string prefix = "r" + std::to_string(round) + "-";
    while (lines >> dev >> i)
      acked[dev] = std::max(acked[dev], i + 1);

    auto db = Database::open(tmp.path() / "db");
    CheckinOptions o = keep_all();
    o.timeline_events = 1000;
    CheckinStore s(*db, o);
    std::size_t checked = 0;
    for (const auto& [device, n] : acked) {
      if (!device.starts_with(prefix))
        continue;
      ++checked;
      auto t = s.timeline("com.a.b", device, 10000);
      ASSERT_TRUE(t);
      std::vector<std::int64_t> got;  // event times, oldest first
      for (auto it = t->rbegin(); it != t->rend(); ++it)
        got.push_back(it->time_ms);
      std::vector<std::int64_t> want;
      std::int64_t last_kept = 0;
      for (std::uint64_t e = 0; e < n; ++e) {
        if (!crash_repeat(e)) {
          want.push_back(crash_event(device, e).time_ms);
          last_kept = want.back();
        }
      }
      ASSERT_GE(got.size(), want.size()) << device << ": acknowledged events lost";
      ASSERT_LE(got.size(), want.size() + 1) << device << ": more than the one in flight";
      EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin())) << device;
      if (got.size() > want.size()) {
        EXPECT_EQ(got.back(), crash_event(device, n).time_ms) << device << ": not the next one";
      }
      auto last = s.last("com.a.b", device);
      ASSERT_TRUE(last && *last) << device;
      EXPECT_GE((*last)->time_ms, last_kept) << device;
      // The chain goes on after the restart.
      s.record(crash_event(device, 1'000'000));
      s.flush();
      EXPECT_EQ(s.timeline("com.a.b", device, 10000)->size(), got.size() + 1) << device;
    }
    EXPECT_GT(checked, 0U) << "round " << round << " acknowledged nothing";
    if (::testing::Test::HasFailure())
      return;
  }
}

// Device-reported names (platform, running version, target, action) are keys of the
// counters: each map of a bucket is bounded, and what it does not keep counts as "other".

// Applies `list` as one relayed batch (the way an edge's check-ins reach the origin).
void relay(CheckinStore& s, std::vector<Checkin> list, std::uint64_t seq) {
  std::promise<bool> p;
  s.record_batch("edge-a", "g1", seq, std::move(list), [&p](bool ok, bool) { p.set_value(ok); });
  ASSERT_TRUE(p.get_future().get());
}

TEST(CheckinStore, PlatformsOutsideIosAndroidElectronCountAsOther) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  int i = 0;
  for (const char* platform : {"ios", "android", "electron", "web", "Windows", "ios ", "x\x01y"})
    s.record({"com.a.b", "d" + std::to_string(i), platform, "1.0.0", "1.0.0", "updates", "",
              kDay1 + i++});
  s.flush();
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 3'599'999);
  ASSERT_TRUE(a);
  const auto& p = a->hours.at("2025-11-26T00").platforms;
  EXPECT_EQ(p, (std::map<std::string, std::uint64_t>{
                   {"android", 1}, {"electron", 1}, {"ios", 1}, {"other", 4}}));
  // The device's own record keeps what it sent.
  auto last = s.last("com.a.b", "d3");
  ASSERT_TRUE(last && *last);
  EXPECT_EQ((*last)->platform, "web");
}

TEST(CheckinStore, TargetsCountUnderTheirReleaseAndUnknownNamesAsOther) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinOptions o = keep_all();
  std::atomic<int> asked{0};
  o.is_release = [&asked](std::string_view app, std::string_view release) {
    ++asked;
    return app == "com.a.b" && (release == "1.2.3" || release == "1.3.0");
  };
  CheckinStore s(*db, o);
  const auto ev = [](std::string dev, std::string version, std::string action, int t) {
    return Checkin{"com.a.b", std::move(dev),    "ios", std::move(version),
                   "1.0.0",   std::move(action), "",    kDay1 + t};
  };
  s.record(ev("d1", "1.2.3:main.js", "download_fail", 1));    // a failing file of 1.2.3
  s.record(ev("d1", "1.2.3:vendor.js", "download_fail", 2));  // another one
  s.record(ev("d1", "1.2.3", "checksum_fail", 3));
  s.record(ev("d2", "builtin", "set_next", 4));             // the builtin bundle is always a target
  s.record(ev("d2", "9.9.9:main.js", "download_fail", 5));  // not a release of the app
  s.record(ev("d3", "random-name", "download_fail", 6));
  s.record(ev("d3", ":x", "download_fail", 7));
  // A running version with a file suffix counts under its release too.
  s.record(ev("d4", "1.3.0:main.js", "app_moved_to_foreground", 8));
  s.flush();
  // Relayed from an edge: checked against the same releases.
  relay(s,
        {ev("d5", "1.3.0:index.html", "download_fail", 9),
         ev("d5", "1.4.0-nope:index.html", "download_fail", 10)},
        1);
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 3'599'999);
  ASSERT_TRUE(a);
  const HourStats& h = a->hours.at("2025-11-26T00");
  using Counts = std::map<std::string, std::uint64_t>;
  EXPECT_EQ(h.targets.size(), 4U);
  EXPECT_EQ(h.targets.at("1.2.3"), (Counts{{"checksum_fail", 1}, {"download_fail", 2}}));
  EXPECT_EQ(h.targets.at("1.3.0"), (Counts{{"download_fail", 1}}));
  EXPECT_EQ(h.targets.at("builtin"), (Counts{{"set_next", 1}}));
  EXPECT_EQ(h.targets.at("other"), (Counts{{"download_fail", 4}}));
  EXPECT_EQ(h.releases.at("1.3.0"), 1U);
  EXPECT_FALSE(h.releases.contains("1.3.0:main.js"));
  EXPECT_EQ(a->days.at("2025-11-26").by_release.count("1.3.0:main.js"), 0U);
  EXPECT_GT(asked.load(), 0);
  // The timeline keeps the names as sent.
  auto t = s.timeline("com.a.b", "d1", 10);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->size(), 3U);
  EXPECT_EQ(t->back().version_name, "1.2.3:main.js");
}

TEST(CheckinStore, EachMapKeepsItsFirstNamesAndCountsTheRestAsOther) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  constexpr std::size_t kMax = kMaxAnalyticsNames;
  const auto check = [&](std::size_t i, const std::string& version) {
    s.record({"com.a.b", "d" + std::to_string(i), "android", version, "1.0.0", "updates", "",
              kDay1 + static_cast<std::int64_t>(i)});
  };
  // Most names in one commit, the map's last free places and beyond in later ones: the
  // count of names held comes from the database as well as from the batch.
  for (std::size_t i = 0; i + 10 < kMax; ++i)
    check(i, "v" + std::to_string(i));
  s.flush();
  for (std::size_t i = kMax - 10; i < kMax + 50; ++i)
    check(i, "v" + std::to_string(i));
  s.flush();
  check(1000, "v3");           // a name the map holds keeps counting under itself
  check(1001, "other");        // a device may call its version "other": it joins the rest
  check(1002, "v-late-name");  // the map is full
  s.flush();
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 3'599'999);
  ASSERT_TRUE(a);
  const HourStats& h = a->hours.at("2025-11-26T00");
  EXPECT_EQ(h.releases.size(), kMax + 1);
  EXPECT_EQ(h.releases.at("v0"), 1U);
  EXPECT_EQ(h.releases.at("v" + std::to_string(kMax - 1)), 1U);
  EXPECT_FALSE(h.releases.contains("v" + std::to_string(kMax)));
  EXPECT_EQ(h.releases.at("v3"), 2U);
  EXPECT_EQ(h.releases.at("other"), 52U);
  std::uint64_t sum = 0;
  for (const auto& [r, n] : h.releases)
    sum += n;
  EXPECT_EQ(sum, kMax + 53) << "every check-in is counted, under its name or other";
  const DayDevices& day = a->days.at("2025-11-26");
  EXPECT_EQ(day.devices, kMax + 53);
  EXPECT_EQ(day.by_release.size(), kMax + 1);
  EXPECT_EQ(day.by_release.at("other"), 52U);
}

TEST(CheckinStore, AFullMapStaysFullAcrossARestart) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  const auto check = [](CheckinStore& s, std::size_t i, const std::string& platform_action) {
    s.record({"com.a.b", "d", "ios", "1.0.0", "1.0.0", platform_action, "",
              kDay1 + static_cast<std::int64_t>(i)});
  };
  {
    CheckinStore s(*db, keep_all());
    std::vector<Checkin> list;
    for (std::size_t i = 0; i < kMaxAnalyticsNames + 5; ++i)
      list.push_back({"com.a.b", "d", "ios", "1.0.0", "1.0.0", "a" + std::to_string(i), "",
                      kDay1 + static_cast<std::int64_t>(i)});
    relay(s, std::move(list), 1);
  }
  CheckinStore s(*db, keep_all());
  check(s, 1, "a-new");  // the map is read back full: a new name is other
  check(s, 2, "a0");     // a kept one still counts under itself
  s.flush();
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 3'599'999);
  ASSERT_TRUE(a);
  const auto& actions = a->hours.at("2025-11-26T00").actions;
  EXPECT_EQ(actions.size(), kMaxAnalyticsNames + 1);
  EXPECT_EQ(actions.at("other"), 6U);
  EXPECT_EQ(actions.at("a0"), 2U);
}

TEST(CheckinStore, TenThousandRandomNamesLeaveTheCountersBounded) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  CheckinStore s(*db, keep_all());
  std::mt19937_64 rng(42);
  const auto word = [&rng] {
    std::string w = "n";
    for (int i = 0; i < 12; ++i)
      w += static_cast<char>('a' + rng() % 26);
    return w;
  };
  // Through a device-facing record and relayed batches (which may carry any action).
  std::vector<Checkin> batch;
  std::uint64_t seq = 0;
  for (int i = 0; i < 10'000; ++i) {
    const std::string dev = "d" + std::to_string(i % 500);
    const std::int64_t t = kDay1 + i;
    s.record({"com.a.b", dev, word(), word(), "1.0.0", "updates", "", t});
    s.record({"com.a.b", dev, "ios", word() + ":" + word(), "1.0.0", "download_fail", "", t});
    batch.push_back({"com.a.b", dev, "android", word(), "1.0.0", word(), "", t});
    batch.push_back({"com.a.b", dev, "android", word(), "1.0.0", word() + "_fail", "", t});
    if (batch.size() >= 500) {
      relay(s, std::move(batch), ++seq);
      batch.clear();
    }
  }
  s.flush();
  constexpr std::size_t kMax = kMaxAnalyticsNames;
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 86'399'999);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->hours.size(), 1U);
  const HourStats& h = a->hours.begin()->second;
  EXPECT_LE(h.platforms.size(), 4U);
  EXPECT_EQ(h.platforms.at("other"), 10'000U);
  EXPECT_EQ(h.releases.size(), kMax + 1);
  EXPECT_EQ(h.actions.size(), kMax + 1);
  EXPECT_EQ(h.targets.size(), kMax + 1);
  for (const auto& [r, by_action] : h.targets)
    EXPECT_LE(by_action.size(), kMax + 1) << r;
  EXPECT_LE(a->days.begin()->second.by_release.size(), kMax + 1);
  std::uint64_t actions = 0;
  for (const auto& [k, n] : h.actions)
    actions += n;
  EXPECT_EQ(actions, 40'000U) << "nothing is lost, only folded";
  // The stored counters themselves (not only the answer): per map at most kMax + 1 keys.
  auto& d = db->impl();
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDaily)));
  std::size_t keys = 0;
  const std::string prefix = std::string("com.a.b") + '\0';
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    ++keys;
  // a, p, r, i (hour), v (day) maps, the targets' releases each with its actions, D.
  EXPECT_LE(keys, 3 * (kMax + 1) + 4 + (kMax + 1) * (kMax + 1) + (kMax + 1) + 1);
  EXPECT_GT(keys, 4 * kMax) << "the maps filled up to the cap";
}

TEST(CheckinStore, BucketsWrittenBeforeTheCapReadBackBounded) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  {
    // Counters as a node without the caps wrote them: 1000 names per map.
    auto& d = db->impl();
    rocksdb::WriteBatch wb;
    const auto put = [&](std::string_view kind, const std::string& name) {
      const std::string one("\x01\0\0\0\0\0\0\0", 8);
      wb.Put(d.handle(kCfDaily),
             std::string("com.a.b\0", 8) + (kind == "v" ? "2025-11-26" : "2025-11-26T00") + '\0' +
                 std::string(kind) + '\0' + name,
             one);
    };
    for (int i = 0; i < 1000; ++i) {
      const std::string n = std::to_string(i);
      put("p", "platform-" + n);
      put("r", "1.0." + n);
      put("v", "1.0." + n);
      put("t", "1.2.3:file-" + n + ".js" + '\0' + "download_fail");
    }
    ASSERT_FALSE(d.write(wb, true, false));
  }
  CheckinStore s(*db, keep_all());
  auto a = s.analytics("com.a.b", kDay1, kDay1 + 3'599'999);
  ASSERT_TRUE(a);
  const HourStats& h = a->hours.at("2025-11-26T00");
  EXPECT_EQ(h.platforms, (std::map<std::string, std::uint64_t>{{"other", 1000}}));
  EXPECT_EQ(h.releases.size(), kMaxAnalyticsNames + 1);
  EXPECT_EQ(h.releases.at("other"), 1000 - kMaxAnalyticsNames);
  EXPECT_EQ(h.targets, (std::map<std::string, std::map<std::string, std::uint64_t>>{
                           {"1.2.3", {{"download_fail", 1000}}}}));
  EXPECT_EQ(a->days.at("2025-11-26").by_release.size(), kMaxAnalyticsNames + 1);
}

}  // namespace
}  // namespace edge::store
