#include "edge/control/model.hpp"

#include <gtest/gtest.h>

namespace edge::control {
namespace {

template <class T>
const T& ok(const Parsed<T>& p) {
  if (const auto* e = std::get_if<FieldError>(&p))
    ADD_FAILURE() << e->field << ": " << e->message;
  static const T empty{};
  return std::holds_alternative<T>(p) ? std::get<T>(p) : empty;
}

template <class T>
FieldError err(const Parsed<T>& p) {
  EXPECT_TRUE(std::holds_alternative<FieldError>(p));
  return std::holds_alternative<FieldError>(p) ? std::get<FieldError>(p) : FieldError{};
}

const std::string kSha = std::string(64, 'a');

TEST(Model, ChannelDefaultsAreCapgos) {
  const Channel c = ok(parse_channel("{}"));
  EXPECT_TRUE(c.release.empty()) << "null release: builtin";
  EXPECT_FALSE(c.is_public);
  EXPECT_TRUE(c.ios && c.android && c.electron);
  EXPECT_FALSE(c.allow_device_self_set);
  EXPECT_TRUE(c.allow_emulator && c.allow_device && c.allow_dev && c.allow_prod);
  EXPECT_EQ(c.disable_auto_update, AutoUpdatePolicy::kMajor);
  EXPECT_TRUE(c.disable_auto_update_under_native);
  EXPECT_FALSE(c.rollout);
}

TEST(Model, ChannelRoundTrip) {
  const Channel c = ok(parse_channel(
      R"({"release":"1.2.4","public":true,"android":false,"disable_auto_update":"version_number",
          "rollout":{"release":"1.2.5","bps":2500,"enabled":true,"paused":false,"id":"r1"}})"));
  EXPECT_EQ(c.release, "1.2.4");
  EXPECT_TRUE(c.is_public);
  EXPECT_FALSE(c.android);
  ASSERT_TRUE(c.rollout);
  EXPECT_EQ(c.rollout->bps, 2500U);
  const Channel again = ok(parse_channel(to_json(c)));
  EXPECT_EQ(to_json(again), to_json(c));
}

TEST(Model, ErrorsNameTheField) {
  EXPECT_EQ(err(parse_channel(R"({"publik":true})")).field, "publik");
  EXPECT_EQ(err(parse_channel(R"({"public":"yes"})")).field, "public");
  EXPECT_EQ(err(parse_channel(R"({"disable_auto_update":"sometimes"})")).field,
            "disable_auto_update");
  EXPECT_EQ(err(parse_channel(R"({"rollout":{"release":"x","bps":10001}})")).field, "rollout.bps");
  EXPECT_EQ(err(parse_channel(R"({"rollout":{"bps":1}})")).field, "rollout.release");
  EXPECT_EQ(err(parse_channel("[1]")).field, "");
  EXPECT_EQ(err(parse_channel("{")).field, "");
  EXPECT_EQ(err(parse_release(R"({"zip":"nothex"})")).field, "zip");
  EXPECT_EQ(err(parse_release(R"({"key_id":"123456789012345678901"})")).field, "key_id");
  EXPECT_EQ(err(parse_release(R"({"min_update_version":"one"})")).field, "min_update_version");
  EXPECT_EQ(err(parse_release(R"({"manifest":[{"file_name":"a.js","file_hash":"h"}]})")).field,
            "manifest[0].blob");
  EXPECT_EQ(err(parse_device("{}")).field, "channel");
  EXPECT_EQ(err(parse_app(R"({"expose_metadata":1})")).field, "expose_metadata");
}

TEST(Model, AppPrivacySettings) {
  const AppSettings defaults = ok(parse_app("{}"));
  EXPECT_EQ(defaults.stats_mode, StatsMode::kAll);
  EXPECT_EQ(defaults.collect, DeviceDataCollection{});
  const AppSettings a = ok(parse_app(
      R"({"stats_mode":"billingOnly","device_data_collection":{"platform":false,"custom_id":false}})"));
  EXPECT_EQ(a.stats_mode, StatsMode::kBillingOnly);
  EXPECT_FALSE(a.collect.platform);
  EXPECT_FALSE(a.collect.custom_id);
  EXPECT_TRUE(a.collect.plugin_version);
  // The document round-trips, every field spelled out.
  const AppSettings back = ok(parse_app(to_json(a)));
  EXPECT_EQ(back.stats_mode, StatsMode::kBillingOnly);
  EXPECT_EQ(back.collect, a.collect);
  EXPECT_EQ(ok(parse_app(R"({"stats_mode":"updatesOnly"})")).stats_mode, StatsMode::kUpdatesOnly);
  EXPECT_EQ(err(parse_app(R"({"stats_mode":"none"})")).field, "stats_mode");
  EXPECT_EQ(err(parse_app(R"({"stats_mode":1})")).field, "stats_mode");
  EXPECT_EQ(err(parse_app(R"({"device_data_collection":[]})")).field, "device_data_collection");
  EXPECT_EQ(err(parse_app(R"({"device_data_collection":{"platform":0}})")).field,
            "device_data_collection.platform");
  EXPECT_EQ(err(parse_app(R"({"device_data_collection":{"ip":false}})")).field,
            "device_data_collection.ip");
  // A newer node's field is ignored by an older one reading synced documents.
  EXPECT_TRUE(ok(parse_app(R"({"device_data_collection":{"ip":false}})", Unknown::kIgnore))
                  .collect.platform);
}

TEST(Model, ReleaseRoundTripAndDecisionView) {
  const std::string text = R"({"zip":")" + kSha + R"(","checksum":"c","key_id":"k",
      "manifest":[{"file_name":"a.js","file_hash":"h1","blob":")" +
                           kSha + R"("}],
      "min_update_version":"1.0.0","link":"https://x","comment":null})";
  const ReleaseDoc r = ok(parse_release(text));
  ASSERT_TRUE(r.zip);
  EXPECT_EQ(r.manifest.size(), 1U);
  EXPECT_TRUE(r.comment.empty());
  EXPECT_EQ(to_json(ok(parse_release(to_json(r)))), to_json(r));
  const Release view = to_release("1.2.4", r);
  EXPECT_TRUE(view.has_zip);
  EXPECT_EQ(view.manifest_entries, 1U);
  EXPECT_EQ(view.min_update_version, "1.0.0");
}

// An app's key_id (the public key its devices ship) round-trips, is absent from documents of
// apps without one (they stay byte for byte as before), and must look like a key id.
TEST(Model, AppKeyId) {
  const AppSettings plain = ok(parse_app(R"({"expose_metadata":true})"));
  EXPECT_EQ(to_json(plain), R"({"expose_metadata":true,"allow_device_custom_id":false})");
  const AppSettings keyed = ok(parse_app(R"({"key_id":"MIIBCgKCAQEAxkr/EJMn"})"));
  EXPECT_EQ(keyed.key_id, "MIIBCgKCAQEAxkr/EJMn");
  EXPECT_EQ(ok(parse_app(to_json(keyed))).key_id, keyed.key_id);
  EXPECT_TRUE(ok(parse_app(R"({"key_id":null})")).key_id.empty());
  EXPECT_EQ(err(parse_app(R"({"key_id":"MIIBCgKCAQEAxkr/EJMnX"})")).field, "key_id");
  EXPECT_EQ(err(parse_app(R"({"key_id":"has space"})")).field, "key_id");
  EXPECT_EQ(err(parse_app(R"({"key_id":7})")).field, "key_id");
  // An edge older than key_id reads an origin's app document without failing.
  EXPECT_EQ(err(parse_app(R"({"key_id":"k","later":1})")).field, "later");
  EXPECT_EQ(ok(parse_app(R"({"key_id":"k","later":1})", Unknown::kIgnore)).key_id, "k");
}

// recipe_sha256 pins the recipe of each blob the release names; it round-trips, is absent
// (not {}) when empty, and refuses bad hex and blobs the release does not name.
TEST(Model, ReleaseRecipePins) {
  const std::string other(64, 'b');
  const std::string pin(64, 'c');
  const std::string text = R"({"zip":")" + kSha +
                           R"(","manifest":[{"file_name":"a.js","file_hash":"h",
      "blob":")" + other + R"("}],"recipe_sha256":{")" +
                           kSha + R"(":")" + pin + R"(",")" + other + R"(":")" + pin + R"("}})";
  const ReleaseDoc r = ok(parse_release(text));
  ASSERT_EQ(r.recipe_sha256.size(), 2U);
  EXPECT_EQ(r.recipe_sha256.at(*Sha256::parse(kSha)).hex(), pin);
  EXPECT_EQ(to_json(ok(parse_release(to_json(r)))), to_json(r));
  EXPECT_NE(to_json(r).find("recipe_sha256"), std::string::npos);
  EXPECT_EQ(to_json(ok(parse_release(R"({"zip":")" + kSha + R"("})"))).find("recipe_sha256"),
            std::string::npos);
  const auto bad = [&](const std::string& pins) {
    return err(parse_release(R"({"zip":")" + kSha + R"(","recipe_sha256":)" + pins + "}"));
  };
  EXPECT_EQ(bad("[]").field, "recipe_sha256");
  EXPECT_EQ(bad(R"({"nothex":")" + pin + R"("})").field, "recipe_sha256");
  EXPECT_EQ(bad(R"({")" + kSha + R"(":42})").field, "recipe_sha256");
  const FieldError stranger = bad(R"({")" + other + R"(":")" + pin + R"("})");
  EXPECT_EQ(stranger.field, "recipe_sha256");
  EXPECT_NE(stranger.message.find(other), std::string::npos);
}

}  // namespace
}  // namespace edge::control
