#include "edge/pg/checkin_rows.hpp"

#include <gtest/gtest.h>

namespace edge::pg {
namespace {

using store::Checkin;

constexpr std::int64_t kNow = 1764115200000;  // 2025-11-26T00:00:00Z
constexpr std::int64_t kHour = 3'600'000;
constexpr std::int64_t kDay = 86'400'000;

Checkin event(std::string device, std::string action, std::string version, std::int64_t t,
              std::string platform = "ios") {
  Checkin c;
  c.app_id = "app";
  c.device_id = std::move(device);
  c.platform = std::move(platform);
  c.version_name = std::move(version);
  c.version_build = "100";
  c.action = std::move(action);
  c.time_ms = t;
  return c;
}

bool is_release(std::string_view app, std::string_view r) {
  return app == "app" && (r == "1.0.0" || r == "1.1.0" || r == "2.0.0");
}

std::uint64_t count(const BatchRows& rows, std::string bucket, char kind, std::string name,
                    std::string sub = "") {
  const auto it =
      rows.counts.find(CountKey{"app", std::move(bucket), kind, std::move(name), std::move(sub)});
  return it == rows.counts.end() ? 0 : it->second;
}

TEST(CheckinRows, CountsFollowTheHourlyRulesOfTheEmbeddedStore) {
  const std::vector<Checkin> batch = {
      event("d1", "updates", "1.0.0", kNow + 10),
      event("d1", "set", "1.1.0", kNow + 20),
      event("d2", "download_complete", "2.0.0", kNow + 30, "android"),
      event("d2", "download_fail", "junk", kNow + 40, "windows"),
      event("d3", "updates", "100", kNow + 50),  // a device on builtin reports its native version
      event("d4", "updates", "9.9.9", kNow + kHour),  // no such release: not in usage counts
  };
  const BatchRows rows = aggregate(batch, kNow, 50, is_release);
  const std::string h0 = "2025-11-26T00", h1 = "2025-11-26T01";
  EXPECT_EQ(count(rows, h0, 'a', "updates"), 2u);
  EXPECT_EQ(count(rows, h1, 'a', "updates"), 1u);
  EXPECT_EQ(count(rows, h0, 'a', "set"), 1u);
  EXPECT_EQ(count(rows, h0, 'p', "ios"), 3u);
  EXPECT_EQ(count(rows, h0, 'p', "android"), 1u);
  EXPECT_EQ(count(rows, h0, 'p', "other"), 1u);
  EXPECT_EQ(count(rows, h0, 'r', "1.0.0"), 1u);
  EXPECT_EQ(count(rows, h0, 'r', "1.1.0"), 1u);
  EXPECT_EQ(count(rows, h0, 'r', "builtin"), 1u);
  EXPECT_EQ(count(rows, h1, 'r', "9.9.9"), 0u);
  EXPECT_EQ(count(rows, h0, 'i', "1.1.0"), 1u);
  // Target-naming events count against the release they name, unknown names under other.
  EXPECT_EQ(count(rows, h0, 't', "2.0.0", "download_complete"), 1u);
  EXPECT_EQ(count(rows, h0, 't', "other", "download_fail"), 1u);
  EXPECT_EQ(count(rows, h0, 'r', "2.0.0"), 0u);
}

TEST(CheckinRows, ADevicesRowIsItsNewestEventAndATargetKeepsTheRunningVersion) {
  const std::vector<Checkin> batch = {
      event("d1", "updates", "1.0.0", kNow + 100),
      event("d1", "download_complete", "2.0.0", kNow + 200),
      event("d1", "updates", "0.9.0", kNow + 50),  // late: arrives last, older
      event("d2", "download_complete", "2.0.0", kNow + 10),
  };
  const BatchRows rows = aggregate(batch, kNow, 50, is_release);
  const DeviceRow& d1 = rows.devices.at({"app", "d1"});
  ASSERT_NE(d1.last, nullptr);
  EXPECT_EQ(d1.last->action, "download_complete");
  EXPECT_EQ(d1.version, std::optional<std::string>("1.0.0"));
  EXPECT_EQ(d1.timeline.size(), 3u);
  // Only a target in the batch: the stored version is kept (nullopt).
  const DeviceRow& d2 = rows.devices.at({"app", "d2"});
  EXPECT_EQ(d2.version, std::nullopt);
}

TEST(CheckinRows, ARepeatedUpdateCheckAddsNothingToTheTimeline) {
  const std::vector<Checkin> batch = {event("d1", "updates", "1.0.0", kNow + 1),
                                      event("d1", "updates", "1.0.0", kNow + 2),
                                      event("d1", "updates", "1.1.0", kNow + 3),
                                      event("d1", "app_moved_to_foreground", "1.1.0", kNow + 4),
                                      event("d1", "updates", "1.1.0", kNow + 5)};
  const BatchRows rows = aggregate(batch, kNow, 50, is_release);
  const auto& tl = rows.devices.at({"app", "d1"}).timeline;
  ASSERT_EQ(tl.size(), 4u);
  EXPECT_EQ(tl[0]->time_ms, kNow + 1);
  EXPECT_EQ(tl[1]->time_ms, kNow + 3);
  EXPECT_EQ(tl[3]->time_ms, kNow + 5);
  // No timelines: nothing gathered.
  EXPECT_TRUE(aggregate(batch, kNow, 0, is_release).devices.at({"app", "d1"}).timeline.empty());
}

TEST(CheckinRows, DevicesAreSeenOnlyInOpenDays) {
  const std::vector<Checkin> batch = {
      event("d1", "updates", "1.0.0", kNow + 10), event("d1", "updates", "1.1.0", kNow + 20),
      event("d2", "download_complete", "2.0.0", kNow + 30),  // runs nothing known in the batch
      event("d3", "updates", "1.0.0", kNow - 5 * kDay),      // a closed day: counts only
  };
  const BatchRows rows = aggregate(batch, kNow + kHour, 50, is_release);
  const std::set<SeenKey> want = {{"app", "2025-11-26", "d1", ""},
                                  {"app", "2025-11-26", "d1", "1.0.0"},
                                  {"app", "2025-11-26", "d1", "1.1.0"},
                                  {"app", "2025-11-26", "d2", ""}};
  EXPECT_EQ(rows.seen, want);
  EXPECT_EQ(count(rows, "2025-11-21T00", 'a', "updates"), 1u);
  EXPECT_EQ(first_open_day(kNow + kHour), "2025-11-24");
}

TEST(CheckinRows, DayCountsCountNewRowsPerDeviceAndRelease) {
  const auto counts = day_counts({{"app", "2025-11-26", "d1", ""},
                                  {"app", "2025-11-26", "d2", ""},
                                  {"app", "2025-11-26", "d1", "1.0.0"},
                                  {"app", "2025-11-25", "d1", ""}});
  EXPECT_EQ(counts.at(CountKey{"app", "2025-11-26", 'D', "", ""}), 2u);
  EXPECT_EQ(counts.at(CountKey{"app", "2025-11-26", 'v', "1.0.0", ""}), 1u);
  EXPECT_EQ(counts.at(CountKey{"app", "2025-11-25", 'D', "", ""}), 1u);
  EXPECT_EQ(counts.size(), 3u);
}

TEST(CheckinRows, NamesBeyondTheCapCountUnderOtherAndKnownNamesStay) {
  NameCaps caps;
  const std::string h = "2025-11-26T00";
  EXPECT_FALSE(caps.loaded("app", h));
  caps.clear("app", h);
  for (std::size_t i = 0; i < store::kMaxAnalyticsNames; ++i)
    caps.add_stored("app", h, 'a', "action" + std::to_string(i), "");
  caps.add_stored("app", h, 't', "1.0.0", "download_fail");
  EXPECT_TRUE(caps.loaded("app", h));
  EXPECT_TRUE(caps.is_new(CountKey{"app", h, 'a', "new", ""}));
  EXPECT_FALSE(caps.is_new(CountKey{"app", h, 'a', "action7", ""}));
  EXPECT_FALSE(caps.is_new(CountKey{"app", h, 'D', "", ""}));
  EXPECT_TRUE(caps.is_new(CountKey{"app", h, 't', "1.0.0", "download_complete"}));

  std::map<CountKey, std::uint64_t> raw = {{{"app", h, 'a', "action7", ""}, 2},
                                           {{"app", h, 'a', "new1", ""}, 3},
                                           {{"app", h, 'a', "new2", ""}, 4},
                                           {{"app", h, 'p', "ios", ""}, 5},
                                           {{"app", h, 't', "1.0.0", "download_complete"}, 6}};
  const auto capped = cap_counts(raw, caps);
  EXPECT_EQ(capped.at(CountKey{"app", h, 'a', "action7", ""}), 2u);
  EXPECT_EQ(capped.at(CountKey{"app", h, 'a', "other", ""}), 7u);  // both new names folded
  EXPECT_EQ(capped.at(CountKey{"app", h, 'p', "ios", ""}), 5u);    // another map has room
  EXPECT_EQ(capped.at(CountKey{"app", h, 't', "1.0.0", "download_complete"}), 6u);
  EXPECT_EQ(capped.size(), 4u);
  // Admitted names are known from then on; clearing the bucket forgets them.
  EXPECT_FALSE(caps.is_new(CountKey{"app", h, 'p', "ios", ""}));
  caps.clear("app", h);
  EXPECT_TRUE(caps.is_new(CountKey{"app", h, 'p', "ios", ""}));
  EXPECT_FALSE(caps.loaded("app", "2025-11-26T01"));
}

TEST(CheckinRows, ATargetsReleasesAndTheirActionsAreCappedApart) {
  NameCaps caps;
  const std::string h = "2025-11-26T00";
  caps.clear("app", h);
  for (std::size_t i = 0; i < store::kMaxAnalyticsNames; ++i)
    caps.add_stored("app", h, 't', "r" + std::to_string(i), "download_fail");
  EXPECT_EQ(caps.admit(CountKey{"app", h, 't', "r1", "download_complete"}),
            (CountKey{"app", h, 't', "r1", "download_complete"}));
  EXPECT_EQ(caps.admit(CountKey{"app", h, 't', "fresh", "download_complete"}),
            (CountKey{"app", h, 't', "other", "download_complete"}));
}

}  // namespace
}  // namespace edge::pg

namespace edge::pg {
namespace {

TEST(CheckinRows, ColumnsAreArrayLiteralsWithQuotesAndBackslashesEscaped) {
  Columns cols(3);
  cols.text(0, "plain");
  cols.number(1, -5);
  cols.null(2);
  cols.text(0, "a \"q\" \\ {x,y}");
  cols.number(1, 7);
  cols.text(2, "");
  const auto p = cols.params();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(*p[0], R"({"plain","a \"q\" \\ {x,y}"})");
  EXPECT_EQ(*p[1], "{-5,7}");
  EXPECT_EQ(*p[2], R"({NULL,""})");
  // Used again: empty columns.
  EXPECT_EQ(*cols.params()[0], "{}");
}

}  // namespace
}  // namespace edge::pg

namespace edge::pg {
namespace {

TEST(CheckinRows, WhatAnEarlierBatchCommittedIsNotWrittenAgain) {
  RecentDevices recent;
  const std::vector<Checkin> first = {event("d1", "updates", "1.0.0", kNow + 1),
                                      event("d2", "app_moved_to_foreground", "1.0.0", kNow + 2)};
  const BatchRows a = aggregate(first, kNow, 50, is_release, &recent);
  EXPECT_EQ(a.seen.size(), 4u);
  recent.remember(a);
  // The same update check again, a new one, and a device on another release.
  const std::vector<Checkin> second = {event("d1", "updates", "1.0.0", kNow + 10),
                                       event("d2", "updates", "1.0.0", kNow + 11),
                                       event("d3", "updates", "1.1.0", kNow + 12)};
  const BatchRows b = aggregate(second, kNow, 50, is_release, &recent);
  EXPECT_TRUE(b.devices.at({"app", "d1"}).timeline.empty());        // a repeat: no timeline entry
  EXPECT_EQ(b.devices.at({"app", "d1"}).last->time_ms, kNow + 10);  // its row still moves on
  EXPECT_EQ(b.devices.at({"app", "d2"}).timeline.size(), 1u);
  const std::set<SeenKey> want = {{"app", "2025-11-26", "d3", ""},
                                  {"app", "2025-11-26", "d3", "1.1.0"}};
  EXPECT_EQ(b.seen, want);
  // Counters count every check-in whatever was remembered.
  EXPECT_EQ(count(b, "2025-11-26T00", 'a', "updates"), 3u);
  // Forgetting past the bound costs writes, never counts.
  RecentDevices small(4);
  small.remember(a);
  EXPECT_TRUE(aggregate(first, kNow, 50, is_release, &small).seen.empty());
  small.remember(b);  // 4 + 2 rows: over the bound, the older ones are forgotten
  EXPECT_EQ(aggregate(first, kNow, 50, is_release, &small).seen.size(), 4u);
}

}  // namespace
}  // namespace edge::pg
