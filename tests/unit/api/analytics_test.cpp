#include "edge/api/analytics.hpp"

#include <filesystem>
#include <random>
#include <string>

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include "edge/store/checkin_store.hpp"
#include "edge/store/database.hpp"

#include <unistd.h>

namespace edge::api {
namespace {

namespace json = boost::json;

constexpr std::int64_t kDay1 = 1764115200000;  // 2025-11-26T00:00:00Z
constexpr std::int64_t kHourMs = 3'600'000;

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "analytics_test.XXXXXX").string();
    path = mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A day's bucket sums its 24 hours: each hour is capped in the store, the sum is capped
// again here (top names by count, the rest under "other"), and so is the range's summary.
TEST(Analytics, SummedBucketsKeepTheTopNamesAndOther) {
  TempDir tmp;
  auto db = store::Database::open(tmp.path / "db");
  store::CheckinOptions o;
  o.retention_days = 0;
  store::CheckinStore s(*db, o);
  constexpr std::size_t kMax = store::kMaxAnalyticsNames;
  // 24 hours x 100 distinct running versions and target releases: 2400 names in the day.
  std::uint64_t n = 0;
  for (int h = 0; h < 24; ++h) {
    for (int i = 0; i < 100; ++i) {
      const std::string v = "v" + std::to_string(h) + "." + std::to_string(i);
      const std::int64_t t = kDay1 + h * kHourMs + i;
      s.record({"com.a.b", "d" + std::to_string(n), "ios", v, "1.0.0", "updates", "", t});
      s.record({"com.a.b", "d" + std::to_string(n), "ios", v, "1.0.0", "download_fail", "", t});
      ++n;
    }
  }
  // One name seen often: it must be among the names kept.
  for (int i = 0; i < 50; ++i)
    s.record({"com.a.b", "hot", "ios", "zz-hot", "1.0.0", "updates", "", kDay1 + 23 * kHourMs});
  s.flush();
  control::AppState app;
  app.app_id = "com.a.b";
  const Response r =
      analytics_response(s, app, "from=2025-11-26&to=2025-11-26&resolution=day", kDay1);
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_LT(r.body.size(), 64U << 10);
  const json::object doc = json::parse(r.body).as_object();
  const json::object& day = doc.at("days").as_array().at(0).as_object();
  const json::object& releases = day.at("releases").as_object();
  EXPECT_EQ(releases.size(), kMax + 1);
  EXPECT_EQ(releases.at("zz-hot").as_int64(), 50);
  std::uint64_t sum = 0;
  for (const auto& kv : releases)
    sum += kv.value().as_int64();
  EXPECT_EQ(sum, n + 50) << "every check-in is counted";
  EXPECT_EQ(day.at("targets").as_object().size(), kMax + 1);
  EXPECT_LE(day.at("devices_by_release").as_object().size(), kMax + 1);
  // The summary: one entry per kept target (and "other").
  EXPECT_EQ(doc.at("releases").as_array().size(), kMax + 1);
}

}  // namespace
}  // namespace edge::api
