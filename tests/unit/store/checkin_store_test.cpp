#include "edge/store/checkin_store.hpp"

#include <thread>

#include <gtest/gtest.h>

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
