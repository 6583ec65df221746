// The /updates answer cache (DeviceApi keeps each update's JSON answer per control snapshot
// and io thread): an answer never outlives the snapshot it came from, and never crosses
// from one DeviceApi to another, even one built at the same address.
#include <filesystem>
#include <optional>
#include <string>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include <gtest/gtest.h>

#include "edge/api/control_service.hpp"
#include "edge/api/device.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"

#include <unistd.h>

namespace {

namespace bhttp = boost::beast::http;
using namespace edge;

constexpr const char* kBody =
    R"({"platform":"android","device_id":"0a1b2c3d-1111-4222-8333-444455556666",)"
    R"("app_id":"com.example.app","version_build":"1.0.0","version_name":"builtin",)"
    R"("plugin_version":"8.51.23","is_emulator":false,"is_prod":true})";

struct DeviceAnswer : ::testing::Test {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("device-answer-" + std::to_string(::getpid()));
  std::unique_ptr<store::Database> db;
  std::unique_ptr<store::ChunkStore> chunks;
  std::unique_ptr<store::BlobStore> blobs;
  std::unique_ptr<store::StateStore> states;
  std::unique_ptr<api::ControlService> control;
  std::string zip1, zip2;

  void SetUp() override {
    std::filesystem::remove_all(dir);
    db = store::Database::open(dir / "db");
    chunks = store::ChunkStore::open(*db, dir / "seg");
    blobs = std::make_unique<store::BlobStore>(*chunks);
    states = std::make_unique<store::StateStore>(*db);
    control = std::make_unique<api::ControlService>(*states, *blobs);
    zip1 = put_blob("one");
    zip2 = put_blob("two");
    put("/v1/admin/apps/com.example.app", "{}");
    put("/v1/admin/apps/com.example.app/releases/1.0.1", R"({"zip":")" + zip1 + R"("})");
    put("/v1/admin/apps/com.example.app/releases/1.0.2", R"({"zip":")" + zip2 + R"("})");
    put("/v1/admin/apps/com.example.app/channels/production",
        R"({"release":"1.0.1","public":true})");
  }
  void TearDown() override {
    control.reset();
    states.reset();
    blobs.reset();
    chunks.reset();
    db.reset();
    std::filesystem::remove_all(dir);
  }
  std::string put_blob(const std::string& text) {
    auto info =
        blobs->put(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    return info->id.hex();
  }
  void put(const std::string& path, const std::string& body) {
    bhttp::request<bhttp::empty_body> req(bhttp::verb::put, path, 11);
    const auto r = control->handle(req, path, body);
    ASSERT_LT(r.status, 300U) << path << ": " << r.body;
  }
};

TEST_F(DeviceAnswer, AnAnswerFollowsTheSnapshotAndTheNodeItCameFrom) {
  {
    const api::DeviceApi a(*control, "http://a.example");
    const auto r = a.updates(true, kBody);
    EXPECT_NE(r.body.find("http://a.example/v1/blobs/" + zip1), std::string::npos) << r.body;
    EXPECT_EQ(a.updates(true, kBody).body, r.body) << "the cached answer is the same";
  }
  for (int i = 0; i < 3; ++i) {
    // Built and dropped in turn, likely at the address `a` had: its own URL every time.
    const std::string url = "http://b" + std::to_string(i) + ".example";
    const api::DeviceApi b(*control, url);
    const auto r = b.updates(true, kBody);
    EXPECT_NE(r.body.find(url + "/v1/blobs/" + zip1), std::string::npos) << r.body;
  }
  const api::DeviceApi c(*control, "http://c.example");
  EXPECT_NE(c.updates(true, kBody).body.find(zip1), std::string::npos);
  // A change makes a new snapshot: the next answer is built from it.
  put("/v1/admin/apps/com.example.app/channels/production", R"({"release":"1.0.2","public":true})");
  const auto moved = c.updates(true, kBody);
  EXPECT_NE(moved.body.find(R"("version":"1.0.2")"), std::string::npos) << moved.body;
  EXPECT_NE(moved.body.find(zip2), std::string::npos) << moved.body;
  EXPECT_EQ(moved.body.find(zip1), std::string::npos) << moved.body;
}

}  // namespace

namespace {

edge::store::Checkin event(std::string action) {
  return {"com.example.app",
          "0a1b2c3d-1111-4222-8333-444455556666",
          "ios",
          "1.0.1",
          "1.0.0",
          std::move(action),
          "",
          1,
          "8.52.0",
          "user-7",
          "beta"};
}

}  // namespace

TEST(Collection, StatsModesDropOrKeepEvents) {
  using edge::control::AppSettings;
  using edge::control::StatsMode;
  AppSettings all;
  AppSettings updates_only;
  updates_only.stats_mode = StatsMode::kUpdatesOnly;
  AppSettings billing;
  billing.stats_mode = StatsMode::kBillingOnly;
  for (const char* a : {"updates", "set", "download_complete", "download_fail",
                        "app_moved_to_foreground", "webview_page_loaded", "ping", "download_10"}) {
    auto c = event(a);
    EXPECT_TRUE(edge::api::apply_collection(all, c)) << a;
    EXPECT_EQ(c.custom_id, "user-7");
  }
  for (const char* a : {"updates", "set", "download_10", "checksum_fail", "set_next"}) {
    auto c = event(a);
    EXPECT_TRUE(edge::api::apply_collection(updates_only, c)) << a;
  }
  for (const char* a :
       {"app_moved_to_background", "app_crash", "webview_javascript_error", "ping"}) {
    auto c = event(a);
    EXPECT_FALSE(edge::api::apply_collection(updates_only, c)) << a;
  }
  for (const char* a :
       {"updates", "set", "download_complete", "set_fail", "update_fail", "download_fail"}) {
    auto c = event(a);
    EXPECT_TRUE(edge::api::apply_collection(billing, c)) << a;
    EXPECT_EQ(c.custom_id, "") << "billingOnly keeps no custom id";
    EXPECT_EQ(c.default_channel, "");
    EXPECT_EQ(c.platform, "ios");
  }
  for (const char* a : {"download_10", "app_moved_to_foreground", "checksum_fail", "set_next"}) {
    auto c = event(a);
    EXPECT_FALSE(edge::api::apply_collection(billing, c)) << a;
  }
}

TEST(Collection, FieldsNotCollectedAreCleared) {
  edge::control::AppSettings s;
  s.collect.platform = false;
  s.collect.plugin_version = false;
  s.collect.version_build = false;
  s.collect.custom_id = false;
  auto c = event("set");
  ASSERT_TRUE(edge::api::apply_collection(s, c));
  EXPECT_EQ(c.platform, "");
  EXPECT_EQ(c.plugin_version, "");
  EXPECT_EQ(c.version_build, "");
  EXPECT_EQ(c.custom_id, "");
  EXPECT_EQ(c.version_name, "1.0.1");  // what analytics and auto-pause need stays
  EXPECT_EQ(c.device_id, "0a1b2c3d-1111-4222-8333-444455556666");
  EXPECT_EQ(c.default_channel, "beta");
}
