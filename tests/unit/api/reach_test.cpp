#include "edge/api/reach.hpp"

#include <filesystem>
#include <string>

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include "edge/store/checkin_store.hpp"
#include "edge/store/database.hpp"

#include <unistd.h>

namespace edge::api {
namespace {

namespace json = boost::json;

control::AppState app_with_delta_and_encrypted() {
  control::AppState app;
  app.app_id = "com.example.app";
  control::ReleaseDoc plain;
  control::ReleaseDoc sealed;
  sealed.session_key = "aXY=:a2V5";
  app.releases.emplace("1.0.0", plain);
  app.releases.emplace("2.0.0", sealed);
  control::Channel prod;
  prod.name = "production";
  prod.release = "1.0.0";
  prod.is_public = true;
  control::Channel beta;
  beta.name = "beta";
  beta.release = "1.0.0";
  beta.update_package = control::UpdatePackage::kDelta;
  control::Channel secure;
  secure.name = "secure";
  secure.release = "2.0.0";
  app.channels.emplace(prod.name, prod);
  app.channels.emplace(beta.name, beta);
  app.channels.emplace(secure.name, secure);
  return app;
}

const json::object* row(const json::object& out, std::string_view version) {
  for (const auto& v : out.at("versions").as_array()) {
    if (v.at("version").as_string() == version)
      return &v.as_object();
  }
  return nullptr;
}

std::uint64_t failing(const json::object& r, std::string_view rule) {
  for (const auto& f : r.at("flags").as_array()) {
    if (f.at("rule").as_string() == rule)
      return f.at("devices").to_number<std::uint64_t>();
  }
  return 0;
}

TEST(PluginRules, DeltaChannelsNeedManifestsEncryptedReleasesSessionKeys) {
  const auto rules = plugin_rules(app_with_delta_and_encrypted());
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].rule, "manifest");
  EXPECT_EQ(rules[0].channels, std::vector<std::string>{"beta"});
  EXPECT_EQ(rules[1].rule, "session_key");
  EXPECT_EQ(rules[1].channels, std::vector<std::string>{"secure"});

  EXPECT_EQ(rules[0].channel_count, 1u);

  // Many delta channels: the first kRuleChannels named, all counted.
  auto many = app_with_delta_and_encrypted();
  for (int i = 0; i < 30; ++i) {
    control::Channel c = many.channels.at("beta");
    c.name = "delta-" + std::to_string(100 + i);
    many.channels.emplace(c.name, c);
  }
  const auto wide = plugin_rules(many);
  EXPECT_EQ(wide[0].channels.size(), kRuleChannels);
  EXPECT_EQ(wide[0].channel_count, 31u);

  control::AppState plain;
  control::Channel c;
  c.name = "production";
  plain.channels.emplace(c.name, c);
  EXPECT_TRUE(plugin_rules(plain).empty());
}

// Rows are major.minor; a rule flags the devices of a row that fail it, by full version
// (7.0.10 lacks manifests, 7.0.40 has them).
TEST(PluginTally, CountsPerMinorAndFlagsByFullVersion) {
  PluginTally t(plugin_rules(app_with_delta_and_encrypted()));
  for (const char* v :
       {"5.2.0", "6.30.0", "7.0.10", "7.0.40", "8.52.0", "8.52.1", "4.9.0", "", "not a version"})
    t.add(v);
  EXPECT_EQ(t.devices(), 9u);
  const auto out = t.to_json();
  const auto& versions = out.at("versions").as_array();
  // Newest first, then the names that are not versions.
  std::vector<std::string> order;
  for (const auto& v : versions)
    order.emplace_back(v.at("version").as_string());
  EXPECT_EQ(order,
            (std::vector<std::string>{"8.52", "7.0", "6.30", "5.2", "4.9", "invalid", "unknown"}));
  EXPECT_EQ(row(out, "8.52")->at("devices").to_number<int>(), 2);
  EXPECT_TRUE(row(out, "8.52")->at("flags").as_array().empty());
  EXPECT_EQ(row(out, "7.0")->at("devices").to_number<int>(), 2);
  EXPECT_EQ(failing(*row(out, "7.0"), "manifest"), 1u);
  EXPECT_EQ(failing(*row(out, "5.2"), "manifest"), 1u);
  EXPECT_TRUE(row(out, "6.30")->at("flags").as_array().empty());
  EXPECT_EQ(failing(*row(out, "4.9"), "manifest"), 1u);
  EXPECT_EQ(failing(*row(out, "4.9"), "session_key"), 1u);
  EXPECT_EQ(row(out, "4.9")->at("flagged").to_number<int>(), 1);  // one device, two rules
  EXPECT_EQ(row(out, "7.0")->at("flagged").to_number<int>(), 1);
  EXPECT_EQ(failing(*row(out, "5.2"), "session_key"), 0u);
  EXPECT_TRUE(row(out, "unknown")->at("flags").as_array().empty());
  EXPECT_EQ(out.at("rules").as_array().size(), 2u);
}

// Whatever versions devices send, the tally keeps kMaxPluginNames (the first seen) and the
// answer kPluginTop rows plus "other", which adds up the rest (flags included).
TEST(PluginTally, BoundedWhateverDevicesSend) {
  PluginTally t(plugin_rules(app_with_delta_and_encrypted()));
  for (int i = 0; i < 50; ++i)
    t.add("8.52.0");
  for (int i = 0; i < 2000; ++i)
    t.add("5." + std::to_string(i) + ".0");
  const auto out = t.to_json();
  const auto& versions = out.at("versions").as_array();
  ASSERT_EQ(versions.size(), kPluginTop + 1);
  EXPECT_EQ(versions[0].at("version").as_string(), "8.52");
  std::uint64_t sum = 0;
  for (const auto& v : versions)
    sum += v.at("devices").to_number<std::uint64_t>();
  EXPECT_EQ(sum, 2050u);
  EXPECT_EQ(t.devices(), 2050u);
  const auto* other = row(out, "other");
  ASSERT_NE(other, nullptr);
  // 5.0-5.9 lack manifests (10 devices), all in "other" but for the top versions kept.
  std::uint64_t flagged = 0;
  for (const auto& v : versions)
    flagged += failing(v.as_object(), "manifest");
  EXPECT_EQ(flagged, 10u);
}

TEST(ReachTally, PopulationReleaseAndEvents) {
  const auto app = app_with_delta_and_encrypted();
  ReachTally t(app);
  const auto* prod = &app.channels.at("production");
  store::Checkin c;
  for (int i = 0; i < 4; ++i) {
    c.version_name = i < 3 ? "1.0.0" : "builtin";
    t.add(c, prod);
  }
  c.version_name = "2.0.0";
  t.add(c, &app.channels.at("secure"));
  c.version_name = "weird";
  t.add(c, nullptr);
  store::Analytics a;
  a.hours["2026-12-06T10"].installs["1.0.0"] = 3;
  a.hours["2026-12-06T10"].targets["2.0.0"]["download_complete"] = 2;
  a.hours["2026-12-06T11"].targets["2.0.0"]["decrypt_fail"] = 1;
  a.days["2026-12-06"].by_release["1.0.0"] = 2;
  const auto out = t.to_json(a, "2026-12-06");
  EXPECT_EQ(t.devices(), 6u);
  const auto& chans = out.at("channels").as_array();
  ASSERT_EQ(chans.size(), 3u);
  // Channels by name: beta, production, secure.
  EXPECT_EQ(chans[1].at("channel").as_string(), "production");
  EXPECT_EQ(chans[1].at("devices").to_number<int>(), 4);
  EXPECT_EQ(chans[1].at("on_release").to_number<int>(), 3);
  EXPECT_EQ(chans[2].at("on_release").to_number<int>(), 1);
  EXPECT_EQ(chans[0].at("devices").to_number<int>(), 0);
  std::map<std::string, json::object> rel;
  for (const auto& r : out.at("releases").as_array())
    rel[std::string(r.at("release").as_string())] = r.as_object();
  EXPECT_EQ(rel.at("1.0.0").at("running").to_number<int>(), 3);
  EXPECT_EQ(rel.at("1.0.0").at("installs").to_number<int>(), 3);
  EXPECT_EQ(rel.at("1.0.0").at("checked_in_today").to_number<int>(), 2);
  EXPECT_EQ(rel.at("2.0.0").at("downloads").to_number<int>(), 2);
  EXPECT_EQ(rel.at("2.0.0").at("failures").to_number<int>(), 1);
  EXPECT_EQ(rel.at("other").at("running").to_number<int>(), 1);  // "weird" is no release
  EXPECT_EQ(rel.at("builtin").at("running").to_number<int>(), 1);
}

// A channel on builtin: its devices report their native version (or "builtin").
TEST(ReachTally, BuiltinChannelCountsNativeVersions) {
  auto app = app_with_delta_and_encrypted();
  app.channels.at("beta").release = "";
  ReachTally t(app);
  store::Checkin c;
  c.version_build = "0.9.0";
  for (const char* v : {"0.9.0", "builtin", "1.0.0"}) {
    c.version_name = v;
    t.add(c, &app.channels.at("beta"));
  }
  const auto out = t.to_json({}, "2026-12-06");
  const auto& beta = out.at("channels").as_array()[0];
  EXPECT_EQ(beta.at("release").as_string(), "builtin");
  EXPECT_EQ(beta.at("devices").to_number<int>(), 3);
  EXPECT_EQ(beta.at("on_release").to_number<int>(), 2);
  std::map<std::string, std::uint64_t> running;
  for (const auto& r : out.at("releases").as_array())
    running[std::string(r.at("release").as_string())] = r.at("running").to_number<std::uint64_t>();
  // Every channel's release is listed, run or not (secure: 2.0.0).
  EXPECT_EQ(running,
            (std::map<std::string, std::uint64_t>{{"builtin", 2}, {"1.0.0", 1}, {"2.0.0", 0}}));
}

// The routes read at most kMaxReachScan rows of the device index and say so.
TEST(ReachRoutes, ReadAtMostTheBoundAndSaySo) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("reach_test." + std::to_string(getpid()));
  {
    auto db = store::Database::open(dir);
    store::CheckinStore checkins(*db);
    const auto app = app_with_delta_and_encrypted();
    const auto record = [&](std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        store::Checkin c;
        c.app_id = app.app_id;
        c.device_id = "0a1b2c3d-4444-4222-8333-" + std::string(12 - std::to_string(i).size(), '0') +
                      std::to_string(i);
        c.platform = "android";
        c.version_name = "1.0.0";
        c.version_build = "0.9.0";
        c.action = "updates";
        c.time_ms = 1764115200000 + static_cast<std::int64_t>(i);
        c.plugin_version = i % 2 ? "8.52.0" : "7.0.10";
        checkins.record(std::move(c));
      }
      checkins.flush();
    };
    const auto answer = [&](bool reach) {
      const auto r = reach ? reach_response(checkins, app, 1764115200000 + 3'600'000)
                           : plugins_response(checkins, app);
      EXPECT_EQ(r.status, 200u);
      return json::parse(r.body).as_object();
    };
    record(kMaxReachScan);
    for (const bool reach : {false, true}) {
      const auto out = answer(reach);
      EXPECT_EQ(out.at("devices").to_number<std::size_t>(), kMaxReachScan);
      EXPECT_TRUE(out.at("complete").as_bool());
    }
    EXPECT_EQ(answer(false).at("versions").as_array()[0].at("devices").to_number<std::size_t>(),
              kMaxReachScan / 2);
    record(kMaxReachScan + 1);  // the same ids again and one more
    for (const bool reach : {false, true}) {
      const auto out = answer(reach);
      EXPECT_EQ(out.at("devices").to_number<std::size_t>(), kMaxReachScan);
      EXPECT_FALSE(out.at("complete").as_bool());
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace edge::api
