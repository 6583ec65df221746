#include "edge/control/decision.hpp"

#include <functional>
#include <map>

#include <gtest/gtest.h>

namespace edge::control {
namespace {

// An app's state in memory.
struct FakeApp final : AppView {
  std::map<std::string, Channel, std::less<>> channel_map;
  std::map<std::string, Release, std::less<>> release_map;
  std::map<std::string, std::string, std::less<>> overrides;

  const Channel* channel(std::string_view name) const override {
    auto it = channel_map.find(name);
    return it == channel_map.end() ? nullptr : &it->second;
  }
  std::vector<const Channel*> channels() const override {
    std::vector<const Channel*> out;
    for (const auto& [n, c] : channel_map)
      out.push_back(&c);
    return out;
  }
  const Release* release(std::string_view name) const override {
    auto it = release_map.find(name);
    return it == release_map.end() ? nullptr : &it->second;
  }
  std::optional<std::string> device_override(std::string_view device_id) const override {
    auto it = overrides.find(device_id);
    if (it == overrides.end())
      return std::nullopt;
    return it->second;
  }
};

SemVer v(std::string_view s) {
  return *SemVer::parse(s);
}

Release rel(std::string name) {
  Release r;
  r.name = std::move(name);
  r.has_zip = true;
  return r;
}

// A baseline: public "production" channel on 1.2.4; the device runs 1.2.3 on native 1.2.0.
FakeApp base_app() {
  FakeApp app;
  for (const char* n : {"1.2.3", "1.2.4", "1.3.0", "2.0.0", "1.1.0", "1.2.5"})
    app.release_map[n] = rel(n);
  Channel prod;
  prod.name = "production";
  prod.release = "1.2.4";
  prod.is_public = true;
  app.channel_map["production"] = prod;
  return app;
}

UpdateRequest base_request() {
  UpdateRequest r;
  r.device_id = "0a1b2c3d-1111-4222-8333-444455556666";
  r.platform = Platform::kAndroid;
  r.version_name = "1.2.3";
  r.version_build = v("1.2.0");
  r.plugin_version = v("8.51.23");
  return r;
}

struct Case {
  const char* name;
  std::function<void(FakeApp&, UpdateRequest&)> setup;
  Kind kind;
  const char* error;   // "" for an update
  const char* target;  // release expected for an update, or the `version` extra
};

class DecisionTable : public ::testing::TestWithParam<Case> {};

TEST_P(DecisionTable, Decides) {
  const Case& c = GetParam();
  FakeApp app = base_app();
  UpdateRequest req = base_request();
  c.setup(app, req);
  const Decision d = decide(req, app);
  EXPECT_EQ(d.kind, c.kind) << c.name << ": " << d.error << " " << d.message;
  EXPECT_EQ(d.error, c.error) << c.name << ": " << d.message;
  if (c.kind == Kind::kUpdate) {
    ASSERT_NE(d.release, nullptr) << c.name;
    EXPECT_EQ(d.release->name, c.target) << c.name;
  } else if (*c.target != '\0') {
    ASSERT_TRUE(d.version.has_value()) << c.name;
    EXPECT_EQ(*d.version, c.target) << c.name;
  }
}

auto ch(FakeApp& a, const char* name = "production") -> Channel& {
  return a.channel_map[name];
}
void none(FakeApp&, UpdateRequest&) {}

const Case kCases[] = {
    {"public channel offers a newer release", none, Kind::kUpdate, "", "1.2.4"},
    {"same version name: up to date", [](FakeApp&, UpdateRequest& r) { r.version_name = "1.2.4"; },
     Kind::kUpToDate, "no_new_version_available", ""},
    {"a lower release is still a candidate (string equality, not order)",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).release = "1.2.3";
       r.version_name = "1.2.5";
       r.version_build = v("1.2.0");
     },
     Kind::kUpdate, "", "1.2.3"},
    {"v4 plugin", [](FakeApp&, UpdateRequest& r) { r.plugin_version = v("4.13.0"); }, Kind::kFailed,
     "unsupported_plugin_version", ""},
    {"no public channel: no_channel", [](FakeApp& a, UpdateRequest&) { ch(a).is_public = false; },
     Kind::kFailed, "no_channel", ""},
    {"public channel disabled for the platform is not found",
     [](FakeApp& a, UpdateRequest&) { ch(a).android = false; }, Kind::kFailed, "no_channel", ""},
    {"defaultChannel names a self-set channel",
     [](FakeApp& a, UpdateRequest& r) {
       Channel beta;
       beta.name = "beta";
       beta.release = "1.3.0";
       beta.allow_device_self_set = true;
       beta.disable_auto_update = AutoUpdatePolicy::kNone;
       a.channel_map["beta"] = beta;
       r.default_channel = "beta";
     },
     Kind::kUpdate, "", "1.3.0"},
    {"defaultChannel without fallback to the public channel",
     [](FakeApp&, UpdateRequest& r) { r.default_channel = "nope"; }, Kind::kFailed, "no_channel",
     ""},
    {"defaultChannel naming a private, non-self-set channel is not found",
     [](FakeApp& a, UpdateRequest& r) {
       Channel p;
       p.name = "private";
       p.release = "1.2.5";
       a.channel_map["private"] = p;
       r.default_channel = "private";
     },
     Kind::kFailed, "no_channel", ""},
    {"override wins over the public channel, even private",
     [](FakeApp& a, UpdateRequest& r) {
       Channel p;
       p.name = "qa";
       p.release = "1.2.5";
       a.channel_map["qa"] = p;
       a.overrides[r.device_id] = "qa";
     },
     Kind::kUpdate, "", "1.2.5"},
    {"override to a channel whose release is deleted falls back",
     [](FakeApp& a, UpdateRequest& r) {
       Channel p;
       p.name = "qa";
       p.release = "1.2.5";
       a.channel_map["qa"] = p;
       a.release_map["1.2.5"].deleted = true;
       a.overrides[r.device_id] = "qa";
     },
     Kind::kUpdate, "", "1.2.4"},
    {"override ignores platform at lookup, then blocks it",
     [](FakeApp& a, UpdateRequest& r) {
       Channel p;
       p.name = "qa";
       p.release = "1.2.5";
       p.android = false;
       a.channel_map["qa"] = p;
       a.overrides[r.device_id] = "qa";
     },
     Kind::kBlocked, "disabled_platform_android", "1.2.5"},
    {"ios disabled on an override",
     [](FakeApp& a, UpdateRequest& r) {
       Channel p;
       p.name = "qa";
       p.release = "1.2.5";
       p.ios = false;
       a.channel_map["qa"] = p;
       a.overrides[r.device_id] = "qa";
       r.platform = Platform::kIos;
     },
     Kind::kBlocked, "disabled_platform_ios", "1.2.5"},
    {"major upgrade blocked by default policy",
     [](FakeApp& a, UpdateRequest&) { ch(a).release = "2.0.0"; }, Kind::kBlocked,
     "disable_auto_update_to_major", "2.0.0"},
    {"policy none lets a major through",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).release = "2.0.0";
       ch(a).disable_auto_update = AutoUpdatePolicy::kNone;
     },
     Kind::kUpdate, "", "2.0.0"},
    {"minor policy blocks a minor change against version_build",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).release = "1.3.0";
       ch(a).disable_auto_update = AutoUpdatePolicy::kMinor;
     },
     Kind::kBlocked, "disable_auto_update_to_minor", "1.3.0"},
    {"minor policy allows a patch change",
     [](FakeApp& a, UpdateRequest&) { ch(a).disable_auto_update = AutoUpdatePolicy::kMinor; },
     Kind::kUpdate, "", "1.2.4"},
    {"patch policy compares with version_build (1.2.0), not version_name",
     [](FakeApp& a, UpdateRequest&) { ch(a).disable_auto_update = AutoUpdatePolicy::kPatch; },
     Kind::kBlocked, "disable_auto_update_to_patch", "1.2.4"},
    {"version_number policy without min_update_version: misconfigured",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).disable_auto_update = AutoUpdatePolicy::kVersionNumber;
     },
     Kind::kFailed, "misconfigured_channel", "1.2.4"},
    {"version_number policy: min_update_version above version_build",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).disable_auto_update = AutoUpdatePolicy::kVersionNumber;
       a.release_map["1.2.4"].min_update_version = "1.2.1";
     },
     Kind::kBlocked, "disable_auto_update_to_metadata", "1.2.4"},
    {"version_number policy: min_update_version met",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).disable_auto_update = AutoUpdatePolicy::kVersionNumber;
       a.release_map["1.2.4"].min_update_version = "1.2.0";
     },
     Kind::kUpdate, "", "1.2.4"},
    {"under native blocked", [](FakeApp& a, UpdateRequest&) { ch(a).release = "1.1.0"; },
     Kind::kBlocked, "disable_auto_update_under_native", "1.1.0"},
    {"under native allowed when the flag is off",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).release = "1.1.0";
       ch(a).disable_auto_update_under_native = false;
     },
     Kind::kUpdate, "", "1.1.0"},
    {"prod build disabled", [](FakeApp& a, UpdateRequest&) { ch(a).allow_prod = false; },
     Kind::kBlocked, "disable_prod_build", "1.2.4"},
    {"dev build disabled",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).allow_dev = false;
       r.is_prod = false;
     },
     Kind::kBlocked, "disable_dev_build", "1.2.4"},
    {"physical device disabled", [](FakeApp& a, UpdateRequest&) { ch(a).allow_device = false; },
     Kind::kBlocked, "disable_device", "1.2.4"},
    {"emulator disabled",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).allow_emulator = false;
       r.is_emulator = true;
     },
     Kind::kBlocked, "disable_emulator", "1.2.4"},
    {"builtin channel, device on builtin: already on builtin",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).release.clear();
       r.version_name = "1.2.0";
       r.on_builtin = true;
     },
     Kind::kUpToDate, "already_on_builtin", "builtin"},
    {"builtin channel, device on an OTA bundle: sent back to builtin (no error, no kind)",
     [](FakeApp& a, UpdateRequest&) { ch(a).release.clear(); }, Kind::kRevertToBuiltin, "",
     "builtin"},
    {"builtin revert still obeys the channel's device policy",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).release.clear();
       ch(a).allow_prod = false;
     },
     Kind::kBlocked, "disable_prod_build", "builtin"},
    {"builtin with a plugin older than 6.2.0, device on builtin",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).release.clear();
       r.plugin_version = v("6.1.9");
       r.on_builtin = true;
     },
     Kind::kFailed, "revert_to_builtin_plugin_version_too_old", ""},
    {"builtin with a plugin older than 6.2.0",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).release.clear();
       r.plugin_version = v("6.1.9");
     },
     Kind::kFailed, "revert_to_builtin_plugin_version_too_old", ""},
    {"deleted release on the only public channel: no channel",
     [](FakeApp& a, UpdateRequest&) { a.release_map["1.2.4"].deleted = true; }, Kind::kFailed,
     "no_channel", ""},
    {"release without zip or manifest: no_bundle",
     [](FakeApp& a, UpdateRequest&) { a.release_map["1.2.4"].has_zip = false; }, Kind::kFailed,
     "no_bundle", ""},
    {"manifest-only release is served",
     [](FakeApp& a, UpdateRequest&) {
       a.release_map["1.2.4"].has_zip = false;
       a.release_map["1.2.4"].manifest_entries = 3;
     },
     Kind::kUpdate, "", "1.2.4"},
    {"manifest-only release, plugin without manifest support: no_url_or_manifest",
     [](FakeApp& a, UpdateRequest& r) {
       a.release_map["1.2.4"].has_zip = false;
       a.release_map["1.2.4"].manifest_entries = 3;
       r.plugin_version = v("6.24.0");
     },
     Kind::kFailed, "no_url_or_manifest", ""},
    {"zip format, release without a zip: no_bundle_url",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).update_package = UpdatePackage::kZip;
       a.release_map["1.2.4"].has_zip = false;
       a.release_map["1.2.4"].manifest_entries = 3;
     },
     Kind::kFailed, "no_bundle_url", ""},
    {"delta format, release without a manifest: no_url_or_manifest",
     [](FakeApp& a, UpdateRequest&) { ch(a).update_package = UpdatePackage::kDelta; },
     Kind::kFailed, "no_url_or_manifest", ""},
    {"key_id mismatch",
     [](FakeApp& a, UpdateRequest& r) {
       a.release_map["1.2.4"].key_id = "AAAA";
       r.key_id = "BBBB";
     },
     Kind::kBlocked, "key_id_mismatch", ""},
    {"key_id mismatch ignored for plugins up to 8.40.7",
     [](FakeApp& a, UpdateRequest& r) {
       a.release_map["1.2.4"].key_id = "AAAA";
       r.key_id = "BBBB";
       r.plugin_version = v("8.40.7");
     },
     Kind::kUpdate, "", "1.2.4"},
    {"rollout disabled: stable",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).rollout = Rollout{"1.2.5", 10000, false, false, "r1", {}};
     },
     Kind::kUpdate, "", "1.2.4"},
    {"rollout 10000 bps: everyone",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).rollout = Rollout{"1.2.5", 10000, true, false, "r1", {}};
     },
     Kind::kUpdate, "", "1.2.5"},
    {"rollout 0 bps: nobody",
     [](FakeApp& a, UpdateRequest&) { ch(a).rollout = Rollout{"1.2.5", 0, true, false, "r1", {}}; },
     Kind::kUpdate, "", "1.2.4"},
    {"rollout paused: stable for new devices",
     [](FakeApp& a, UpdateRequest&) {
       ch(a).rollout = Rollout{"1.2.5", 10000, true, true, "r1", {}};
     },
     Kind::kUpdate, "", "1.2.4"},
    {"rollout paused: a device already on it stays (up to date)",
     [](FakeApp& a, UpdateRequest& r) {
       ch(a).rollout = Rollout{"1.2.5", 10000, true, true, "r1", {}};
       r.version_name = "1.2.5";
     },
     Kind::kUpToDate, "no_new_version_available", ""},
};

INSTANTIATE_TEST_SUITE_P(Capgo, DecisionTable, ::testing::ValuesIn(kCases));

// update_package (§9.4): what each format sends, for a release with both a zip and a
// manifest, to a device on an OTA bundle and to one on builtin, and to a plugin without
// manifest support.
TEST(UpdatePackageFormat, EachValueSendsItsParts) {
  struct Row {
    UpdatePackage format;
    bool on_builtin;
    const char* plugin;
    bool zip, manifest;
  } rows[] = {
      {UpdatePackage::kAll, false, "8.51.23", true, true},
      {UpdatePackage::kAll, false, "6.24.0", true, false},
      {UpdatePackage::kZip, false, "8.51.23", true, false},
      {UpdatePackage::kDelta, false, "8.51.23", false, true},
      {UpdatePackage::kZipFromBuiltin, false, "8.51.23", true, true},
      {UpdatePackage::kZipFromBuiltin, true, "8.51.23", true, false},
      {UpdatePackage::kDeltaFromBuiltin, false, "8.51.23", true, true},
      {UpdatePackage::kDeltaFromBuiltin, true, "8.51.23", false, true},
  };
  for (const Row& row : rows) {
    FakeApp app = base_app();
    app.release_map["1.2.4"].manifest_entries = 2;
    ch(app).update_package = row.format;
    UpdateRequest req = base_request();
    req.plugin_version = v(row.plugin);
    req.on_builtin = row.on_builtin;
    if (row.on_builtin)
      req.version_name = "1.2.0";
    const Decision d = decide(req, app);
    const std::string what = std::string(update_package_name(row.format)) +
                             (row.on_builtin ? " on builtin" : " on a bundle") + " plugin " +
                             row.plugin;
    ASSERT_EQ(d.kind, Kind::kUpdate) << what << ": " << d.error;
    EXPECT_EQ(d.send_zip, row.zip) << what;
    EXPECT_EQ(d.send_manifest, row.manifest) << what;
  }
}

TEST(UpdatePackageFormat, NamesRoundTrip) {
  for (const char* n : {"all", "zip", "delta", "zip_from_builtin", "delta_from_builtin"}) {
    const auto p = parse_update_package(n);
    ASSERT_TRUE(p) << n;
    EXPECT_EQ(update_package_name(*p), n);
  }
  EXPECT_FALSE(parse_update_package("ZIP"));
  EXPECT_FALSE(parse_update_package(""));
}

TEST(Rollout, StickyAndMonotone) {
  int selected_at_30 = 0;
  int kept = 0;
  for (int i = 0; i < 4000; ++i) {
    const std::string device = "device-" + std::to_string(i);
    const bool at30 = rollout_selects("r1", device, 3000);
    EXPECT_EQ(at30, rollout_selects("r1", device, 3000)) << "deterministic";
    if (at30) {
      ++selected_at_30;
      kept += rollout_selects("r1", device, 6000);  // increase: every selected device stays
      EXPECT_TRUE(rollout_selects("r1", device, 6000));
    } else {
      EXPECT_FALSE(rollout_selects("r1", device, 1000)) << "decrease only removes devices";
    }
  }
  EXPECT_NEAR(selected_at_30, 1200, 150) << "about 30% of devices";
  EXPECT_EQ(kept, selected_at_30);
  // A new rollout id re-draws the population.
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string device = "device-" + std::to_string(i);
    same += rollout_selects("r1", device, 5000) == rollout_selects("r2", device, 5000);
  }
  EXPECT_LT(same, 650);
  EXPECT_FALSE(rollout_selects("r1", "x", 0));
  EXPECT_TRUE(rollout_selects("r1", "x", 10000));
}

TEST(Decision, ExtrasAndKinds) {
  FakeApp app = base_app();
  UpdateRequest req = base_request();
  ch(app).release = "2.0.0";
  const Decision d = decide(req, app);
  EXPECT_EQ(kind_name(d.kind), "blocked");
  EXPECT_TRUE(d.major);
  EXPECT_EQ(d.old, "1.2.0") << "old = version_build for version-policy errors";
  EXPECT_EQ(kind_name(Kind::kUpToDate), "up_to_date");
  EXPECT_EQ(kind_name(Kind::kFailed), "failed");
  EXPECT_EQ(parse_platform("electron"), Platform::kElectron);
  EXPECT_FALSE(parse_platform("windows"));
}

}  // namespace
}  // namespace edge::control
