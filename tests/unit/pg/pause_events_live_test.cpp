// PauseEvents::sweep against a real PostgreSQL: the test skips unless BUNDLE_EDGE_TEST_PG_URL
// names a database (tests/integration/tier_pause_test.py starts one and runs it).
#include <cstdlib>

#include <gtest/gtest.h>

#include "edge/pg/connection.hpp"
#include "edge/pg/pause_events.hpp"
#include "edge/pg/schema.hpp"

namespace edge::pg {
namespace {

TEST(PauseEventsLive, SweepKeepsTheNewestRowsOfEachApp) {
  const char* url = std::getenv("BUNDLE_EDGE_TEST_PG_URL");
  if (url == nullptr)
    GTEST_SKIP() << "BUNDLE_EDGE_TEST_PG_URL is not set (tier_pause_test.py sets it)";
  Connection c(url);
  ASSERT_TRUE(migrate_schema(c, nullptr));
  ASSERT_TRUE(c.exec_script("DELETE FROM be_pause_events"));
  const auto insert = [&](const char* app, int n) {
    ASSERT_TRUE(c.exec(
        "INSERT INTO be_pause_events (time_ms, app_id, device_id, version_name, action, decision) "
        "SELECT 0, $1, 'd' || g, '1.0.1', 'download_fail', '' FROM generate_series(1, $2) g",
        {std::string(app), std::to_string(n)}));
  };
  insert("com.example.flood", 30);
  insert("com.example.calm", 5);
  auto newest = c.exec(
      "SELECT min(id) FROM (SELECT id FROM be_pause_events WHERE app_id = "
      "'com.example.flood' ORDER BY id DESC LIMIT 10) t");
  ASSERT_TRUE(newest);
  PauseEvents events(url);
  auto removed = events.sweep(10);
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 20U);
  auto left = c.exec(
      "SELECT app_id, count(*), min(id) FROM be_pause_events GROUP BY app_id ORDER BY app_id");
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 2);
  EXPECT_EQ(left->text(0, 0), "com.example.calm");
  EXPECT_EQ(left->i64(0, 1), 5);
  EXPECT_EQ(left->text(1, 0), "com.example.flood");
  EXPECT_EQ(left->i64(1, 1), 10);
  EXPECT_EQ(left->i64(1, 2), newest->i64(0, 0)) << "the newest rows stay";
  EXPECT_EQ(*events.sweep(10), 0U);
}

}  // namespace
}  // namespace edge::pg
