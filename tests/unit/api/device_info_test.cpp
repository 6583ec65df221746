// The info-object parser: every field rule and every endpoint's validation order
// (capgo-protocol.md §1.1, §2.2, §3.3, §4, §9.5), table-driven.
#include "edge/api/device_info.hpp"

#include <algorithm>
#include <functional>

#include <boost/json.hpp>

#include <gtest/gtest.h>

namespace edge::api {
namespace {

namespace json = boost::json;
using E = DeviceEndpoint;

constexpr E kAll[] = {E::kUpdates,    E::kManifestSize, E::kStats,       E::kChannelSet,
                      E::kChannelGet, E::kChannelList,  E::kChannelUnset};

const char* name(E e) {
  switch (e) {
    case E::kUpdates: return "updates";
    case E::kManifestSize: return "manifest_size";
    case E::kStats: return "stats";
    case E::kChannelSet: return "channel POST";
    case E::kChannelGet: return "channel PUT";
    case E::kChannelList: return "channel GET";
    case E::kChannelUnset: return "channel DELETE";
  }
  return "?";
}

// What the plugin 8.51.23 sends on each endpoint (§1.1 example).
json::object base(E e) {
  json::object o{{"platform", "android"},
                 {"device_id", "0A1B2C3D-1111-4222-8333-444455556666"},
                 {"app_id", "com.example.app"},
                 {"custom_id", ""},
                 {"version_build", "1.2.0"},
                 {"version_code", "120"},
                 {"version_os", "14"},
                 {"version_name", "1.2.3"},
                 {"plugin_version", "8.51.23"},
                 {"is_emulator", false},
                 {"is_prod", true},
                 {"install_source", "google_play"},
                 {"defaultChannel", ""}};
  if (e == E::kStats) {
    o["action"] = "set";
    o["old_version_name"] = "1.2.2";
    o["timestamp"] = 1764115200000;
  }
  if (e == E::kManifestSize) {
    o["version"] = "1.2.4";
    o["manifest"] = json::array{};
  }
  if (e == E::kChannelSet)
    o["channel"] = "beta";
  return o;
}

// The query string the plugin builds for GET/DELETE: every field as text.
std::string to_query(const json::object& o) {
  std::string q;
  for (const auto& kv : o) {
    std::string v;
    if (kv.value().is_string())
      v = std::string(kv.value().get_string());
    else
      v = json::serialize(kv.value());
    q += (q.empty() ? "" : "&") + std::string(kv.key()) + "=" + v;
  }
  return q;
}

struct Outcome {
  std::optional<InfoError> error;
  DeviceInfo info;
  json::object storage;
};

void run(E e, const json::object& body, Outcome& out) {
  if (query_form(e)) {
    if (auto err = query_object(to_query(body), out.storage)) {
      out.error = err;
      return;
    }
  } else {
    out.storage = body;
  }
  out.error = read_info(e, out.storage, out.info);
}

// parse_info on `body` answers exactly as parse_json_body + read_info do: the same refusal
// (code, field, message) or the same DeviceInfo.
testing::AssertionResult same_as_document(E e, std::string_view body) {
  DeviceInfo from_bytes;
  std::string scratch;
  const auto bytes_error = parse_info(e, body, scratch, from_bytes);
  json::value doc;
  DeviceInfo from_doc;
  auto doc_error = parse_json_body(body, doc);
  if (!doc_error)
    doc_error = read_info(e, doc.get_object(), from_doc);
  if (bytes_error.has_value() != doc_error.has_value()) {
    return testing::AssertionFailure()
           << "parse_info " << (bytes_error ? bytes_error->message : "accepts") << ", the document "
           << (doc_error ? doc_error->message : "accepts");
  }
  if (doc_error) {
    if (bytes_error->code != doc_error->code || bytes_error->field != doc_error->field ||
        bytes_error->message != doc_error->message || bytes_error->reason != doc_error->reason) {
      return testing::AssertionFailure()
             << "parse_info: " << bytes_error->code << " " << bytes_error->message
             << "; the document: " << doc_error->code << " " << doc_error->message;
    }
    return testing::AssertionSuccess() << doc_error->code;
  }
  if (!(from_bytes == from_doc))
    return testing::AssertionFailure() << "another DeviceInfo";
  return testing::AssertionSuccess();
}

constexpr E kStreamed[] = {E::kUpdates, E::kChannelSet, E::kChannelGet};

enum Only : unsigned { kAny = 0, kJson = 1, kQuery = 2 };

struct Case {
  const char* what;
  std::function<void(json::object&)> mutate;
  // Expected error code per endpoint ("" = accepted), in kAll's order.
  std::array<const char*, kDeviceEndpoints> code;
  const char* field;  // the field the error names
  unsigned only = kAny;
  const char* schema_field = nullptr;  // where a schema error names another field than `field`
};

constexpr const char* ok = "";
constexpr const char* schema = "schema";  // invalid_json_body, or invalid_query_parameters

void erase(json::object& o, const char* k) {
  o.erase(k);
}

const Case kCases[] = {
    // ---- presence, before anything else (§2.2)
    // listChannels (GET) needs no device: Capgo answers it from app_id and platform
    // (capgo-protocol §10 item 9).
    {"device_id absent",
     [](json::object& o) { erase(o, "device_id"); },
     {"missing_device_id", "missing_device_id", "missing_device_id", "missing_device_id",
      "missing_device_id", ok, "missing_device_id"},
     "device_id"},
    {"device_id empty",
     [](json::object& o) { o["device_id"] = ""; },
     {"missing_device_id", "missing_device_id", "missing_device_id", "missing_device_id",
      "missing_device_id", ok, "missing_device_id"},
     "device_id"},
    {"app_id absent",
     [](json::object& o) { erase(o, "app_id"); },
     {"missing_app_id", "missing_app_id", "missing_app_id", "missing_app_id", "missing_app_id",
      "missing_app_id", "missing_app_id"},
     "app_id"},
    {"device_id and app_id absent: device_id first",
     [](json::object& o) {
       erase(o, "device_id");
       erase(o, "app_id");
     },
     {"missing_device_id", "missing_device_id", "missing_device_id", "missing_device_id",
      "missing_device_id", "missing_app_id", "missing_device_id"},
     "device_id"},
    {"app_id absent and version_build bad: app_id first",
     [](json::object& o) {
       erase(o, "app_id");
       o["version_build"] = "1.x";
     },
     {"missing_app_id", "missing_app_id", "missing_app_id", "missing_app_id", "missing_app_id",
      "missing_app_id", "missing_app_id"},
     "app_id"},
    // ---- version_build coercion, before the schema
    {"version_build not coercible",
     [](json::object& o) { o["version_build"] = "1.2.x"; },
     {"semver_error", "semver_error", "semver_error", "semver_error", "semver_error", ok,
      "semver_error"},
     "version_build"},
    {"version_build bad and platform bad: semver_error first",
     [](json::object& o) {
       o["version_build"] = "v1";
       o["platform"] = "windows";
     },
     {"semver_error", "semver_error", "semver_error", "semver_error", "semver_error", schema,
      "semver_error"},
     "version_build",
     kAny,
     "platform"},
    {"version_build 1.2 is coerced",
     [](json::object& o) { o["version_build"] = "1.2"; },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"version_build empty",
     [](json::object& o) { o["version_build"] = ""; },
     {schema, schema, ok, ok, ok, ok, ok},
     "version_build"},
    {"version_build absent",
     [](json::object& o) { erase(o, "version_build"); },
     {schema, schema, ok, schema, schema, ok, ok},
     "version_build"},
    {"version_build not a string",
     [](json::object& o) { o["version_build"] = 12; },
     {schema, schema, schema, schema, schema, ok, schema},
     "version_build",
     kJson},
    // ---- the schema, field by field
    {"device_id not a UUID",
     [](json::object& o) { o["device_id"] = "not-a-uuid"; },
     {schema, schema, schema, schema, schema, schema, schema},
     "device_id"},
    {"device_id 37 characters",
     [](json::object& o) { o["device_id"] = "0a1b2c3d-1111-4222-8333-4444555566667"; },
     {schema, schema, schema, schema, schema, schema, schema},
     "device_id"},
    {"device_id a number",
     [](json::object& o) { o["device_id"] = 7; },
     {schema, schema, schema, schema, schema, schema, schema},
     "device_id",
     kJson},
    {"app_id not reverse-domain",
     [](json::object& o) { o["app_id"] = "example"; },
     {schema, schema, schema, schema, schema, schema, schema},
     "app_id"},
    {"platform unknown",
     [](json::object& o) { o["platform"] = "windows"; },
     {schema, schema, ok, schema, schema, schema, schema},
     "platform"},
    {"platform absent",
     [](json::object& o) { erase(o, "platform"); },
     {schema, schema, schema, schema, schema, schema, schema},
     "platform"},
    {"plugin_version not SemVer",
     [](json::object& o) { o["plugin_version"] = "8.51"; },
     {schema, schema, ok, schema, schema, schema, schema},
     "plugin_version"},
    {"plugin_version absent",
     [](json::object& o) { erase(o, "plugin_version"); },
     {schema, schema, ok, ok, ok, ok, ok},
     "plugin_version"},
    {"version_name empty",
     [](json::object& o) { o["version_name"] = ""; },
     {schema, schema, ok, ok, ok, ok, ok},
     "version_name"},
    {"version_name absent",
     [](json::object& o) { erase(o, "version_name"); },
     {schema, schema, schema, schema, schema, ok, ok},
     "version_name"},
    {"version_os absent",
     [](json::object& o) { erase(o, "version_os"); },
     {ok, ok, schema, ok, ok, ok, ok},
     "version_os"},
    {"is_emulator not a boolean",
     [](json::object& o) { o["is_emulator"] = "yes"; },
     {schema, schema, schema, schema, schema, ok, ok},
     "is_emulator",
     kJson},
    {"is_prod not a boolean",
     [](json::object& o) { o["is_prod"] = 1; },
     {schema, schema, schema, schema, schema, ok, ok},
     "is_prod",
     kJson},
    {"custom_id 37 characters (validated on /stats only, §1.1)",
     [](json::object& o) { o["custom_id"] = std::string(37, 'c'); },
     {ok, ok, schema, ok, ok, ok, ok},
     "custom_id"},
    {"version_code not a string (validated on /stats only)",
     [](json::object& o) { o["version_code"] = 120; },
     {ok, ok, schema, ok, ok, ok, ok},
     "version_code",
     kJson},
    {"install_source 65 characters",
     [](json::object& o) { o["install_source"] = std::string(65, 's'); },
     {schema, schema, schema, schema, schema, schema, schema},
     "install_source"},
    {"install_source 64 characters",
     [](json::object& o) { o["install_source"] = std::string(64, 's'); },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"install_source a number",
     [](json::object& o) { o["install_source"] = 5; },
     {schema, schema, schema, schema, schema, ok, ok},
     "install_source",
     kJson},
    {"key_id 21 characters",
     [](json::object& o) { o["key_id"] = std::string(21, 'k'); },
     {schema, schema, schema, schema, schema, schema, schema},
     "key_id"},
    {"defaultChannel not a string",
     [](json::object& o) { o["defaultChannel"] = true; },
     {schema, schema, schema, schema, schema, ok, ok},
     "defaultChannel",
     kJson},
    {"channel not a string",
     [](json::object& o) { o["channel"] = 3; },
     {ok, ok, schema, schema, schema, ok, ok},
     "channel",
     kJson},
    // ---- stats fields (§3.3, §9.5)
    {"action unknown",
     [](json::object& o) { o["action"] = "not_an_action"; },
     {ok, ok, schema, ok, ok, ok, ok},
     "action"},
    {"action absent",
     [](json::object& o) { erase(o, "action"); },
     {ok, ok, schema, ok, ok, ok, ok},
     "action"},
    {"action app_nav (new)",
     [](json::object& o) { o["action"] = "app_nav"; },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"action session_key_required (not in Capgo's list)",
     [](json::object& o) { o["action"] = "session_key_required"; },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"action checksum_required",
     [](json::object& o) { o["action"] = "checksum_required"; },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"billingOnly body: stats_mode, no optional fields",
     [](json::object& o) {
       for (const char* k : {"custom_id", "version_code", "install_source", "defaultChannel",
                             "key_id", "old_version_name", "metadata"})
         o.erase(k);
       o["stats_mode"] = "billingOnly";
     },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
    {"stats_mode not a string",
     [](json::object& o) { o["stats_mode"] = 1; },
     {ok, ok, schema, ok, ok, ok, ok},
     "stats_mode",
     kJson},
    {"metadata of 31 keys",
     [](json::object& o) {
       json::object m;
       for (int i = 0; i < 31; ++i)
         m["k" + std::to_string(i)] = "v";
       o["metadata"] = std::move(m);
     },
     {ok, ok, schema, ok, ok, ok, ok},
     "metadata",
     kJson},
    {"metadata with a number value",
     [](json::object& o) {
       o["metadata"] = json::object{{"k", 1}};
     },
     {ok, ok, schema, ok, ok, ok, ok},
     "metadata",
     kJson},
    {"metadata with a 2049-character value",
     [](json::object& o) {
       o["metadata"] = json::object{{"k", std::string(2049, 'x')}};
     },
     {ok, ok, schema, ok, ok, ok, ok},
     "metadata",
     kJson},
    {"metadata of strings",
     [](json::object& o) {
       o["metadata"] = json::object{{"k", "v"}};
     },
     {ok, ok, ok, ok, ok, ok, ok},
     "",
     kJson},
    // ---- manifest_size
    {"manifest absent",
     [](json::object& o) { erase(o, "manifest"); },
     {ok, schema, ok, ok, ok, ok, ok},
     "manifest"},
    {"manifest not an array",
     [](json::object& o) { o["manifest"] = "x"; },
     {ok, schema, ok, ok, ok, ok, ok},
     "manifest",
     kJson},
    // ---- unknown fields are ignored, as the backend does
    {"an unknown field",
     [](json::object& o) { o["colour"] = "red"; },
     {ok, ok, ok, ok, ok, ok, ok},
     ""},
};

TEST(DeviceInfo, EveryFieldRuleOnEveryEndpoint) {
  for (const Case& c : kCases) {
    for (std::size_t i = 0; i < kDeviceEndpoints; ++i) {
      const E e = kAll[i];
      if ((c.only == kJson && query_form(e)) || (c.only == kQuery && !query_form(e)))
        continue;
      json::object body = base(e);
      c.mutate(body);
      Outcome out;
      run(e, body, out);
      const std::string where = std::string(c.what) + " on " + name(e);
      if (std::find(std::begin(kStreamed), std::end(kStreamed), e) != std::end(kStreamed)) {
        EXPECT_TRUE(same_as_document(e, json::serialize(body))) << where;
      }
      std::string want = c.code[i];
      if (want == schema)
        want = query_form(e) ? "invalid_query_parameters" : "invalid_json_body";
      if (want.empty()) {
        EXPECT_FALSE(out.error) << where << ": " << out.error->message;
        continue;
      }
      ASSERT_TRUE(out.error) << where << ": accepted";
      EXPECT_EQ(out.error->code, want) << where << ": " << out.error->message;
      // A missing_<field> refusal names that field (device_id and app_id both absent: only
      // app_id on the endpoint that needs no device).
      const std::string field = c.schema_field != nullptr && std::string(c.code[i]) == schema
                                    ? c.schema_field
                                : want.starts_with("missing_") ? want.substr(8)
                                                               : c.field;
      EXPECT_EQ(out.error->field, field) << where;
      EXPECT_NE(out.error->message.find(field), std::string::npos)
          << where << ": the message names the field: " << out.error->message;
    }
  }
}

TEST(DeviceInfo, TypedValues) {
  json::object body = base(E::kUpdates);
  body["version_build"] = "2";
  body["version_name"] = "builtin";
  body["is_emulator"] = true;
  body["key_id"] = "abc";
  DeviceInfo info;
  ASSERT_FALSE(read_info(E::kUpdates, body, info));
  EXPECT_EQ(info.device_id, "0a1b2c3d-1111-4222-8333-444455556666") << "lower-cased";
  EXPECT_EQ(info.app_id, "com.example.app");
  EXPECT_EQ(info.platform, control::Platform::kAndroid);
  EXPECT_EQ(info.version_build->to_string(), "2.0.0");
  EXPECT_EQ(info.running_version(), "2.0.0") << "builtin is rewritten to version_build";
  EXPECT_TRUE(info.on_builtin());
  EXPECT_EQ(info.plugin_version->to_string(), "8.51.23");
  EXPECT_TRUE(info.is_emulator);
  EXPECT_TRUE(info.is_prod) << "defaulted";
  EXPECT_EQ(info.key_id, "abc");
}

TEST(DeviceInfo, OnBuiltinMeansTheNativeVersionRuns) {
  const auto on = [](const char* name, const char* build) {
    json::object body = base(E::kUpdates);
    body["version_name"] = name;
    body["version_build"] = build;
    DeviceInfo info;
    EXPECT_FALSE(read_info(E::kUpdates, body, info));
    return info.on_builtin();
  };
  EXPECT_TRUE(on("builtin", "1.2.0"));
  EXPECT_TRUE(on("1.2.0", "1.2.0"));
  EXPECT_TRUE(on("1.2", "1.2")) << "as sent";
  EXPECT_TRUE(on("1.2.0", "1.2")) << "as coerced";
  EXPECT_FALSE(on("1.2.3", "1.2.0")) << "an OTA bundle";
}

TEST(DeviceInfo, QueryBooleansAsTheBackendConvertsThem) {
  const auto flags = [](const std::string& q) {
    json::object o;
    EXPECT_FALSE(query_object(q, o));
    return std::pair{o.at("is_emulator").as_bool(), o.at("is_prod").as_bool()};
  };
  EXPECT_EQ(flags("app_id=a.b"), std::pair(false, true)) << "defaults";
  EXPECT_EQ(flags("is_emulator=true&is_prod=false"), std::pair(true, false));
  EXPECT_EQ(flags("is_emulator=1&is_prod=1"), std::pair(false, false)) << "only \"true\" is true";
  json::object o;
  const auto e = query_object("", o);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "invalid_query_parameters");
}

TEST(DeviceInfo, BodiesThatAreNotAnObject) {
  json::value v;
  EXPECT_EQ(parse_json_body("{", v)->code, "invalid_json_parse_body");
  EXPECT_EQ(parse_json_body("{}", v)->code, "invalid_json_body");
  EXPECT_EQ(parse_json_body("[1]", v)->code, "invalid_json_body");
  EXPECT_FALSE(parse_json_body("[1]", v, true)) << "stats batches";
  EXPECT_EQ(parse_json_body("\"x\"", v, true)->code, "invalid_json_body");
}

// The reader without a document (/updates, POST/PUT /channel_self) on what a document hides:
// escapes (also in keys, and longer than the parser's buffer), repeated keys, nested values,
// numbers, and bodies that are not JSON or not an object.
TEST(DeviceInfo, ParseInfoReadsTheBytesAsTheDocumentReaderDoes) {
  std::string body = json::serialize(base(E::kUpdates));
  body.pop_back();  // the closing brace: the cases below add fields
  const std::string longer(6000, 'x');
  std::string escaped;  // 3000 characters, every one escaped
  for (int i = 0; i < 3000; ++i)
    escaped += "\\u0078";
  const std::string bodies[] = {
      body + "}",
      body + " } \n",
      body + R"(,"device\u005fid":"0A1B2C3D-1111-4222-8333-44445555666\u0037"})",
      body + R"(,"platform":"\u0069os","version_name":"1.2.\u0033\t"})",
      body + R"(,"defaultChannel":")" + longer + R"(\n"})",
      body + R"(,"install_source":")" + longer + R"(\n"})",
      body + R"(,"custom_id":"\"quoted\"","key_id":"\ud83d\ude00"})",
      body + R"(,"device_id":"x","device_id":"0A1B2C3D-1111-4222-8333-444455556667"})",
      body + R"(,"platform":"ios","platform":7})",
      body + R"(,"extra":{"device_id":"x","a":[1,{"platform":1}]},"more":[[],{}]})",
      body + R"(,"is_prod":{"x":1}})",
      body + R"(,"is_prod":[true]})",
      body + R"(,"is_emulator":null})",
      body + R"(,"is_emulator":1})",
      body + R"(,"version_build":1.5})",
      body + R"(,"n":-12,"m":18446744073709551615,"f":1.5e300})",
      body + R"(,"f":1e999})",
      body + R"(,"defaultChannel":")" + escaped + R"("})",
      body + R"(,"f":-1e999})",
      body + "} x",
      body + "}}",
      body,
      body + ",}",
      body + R"(,"bad":"\xff"})",
      body + ",\"bad\":\"\xff\"}",
      body + R"(,"deep":)" + std::string(40, '[') + std::string(40, ']') + "}",
      body + R"(,"deep":)" + std::string(30, '[') + std::string(30, ']') + "}",
      R"({"device_id":"0A1B2C3D-1111-4222-8333-444455556666"})",
      "{}",
      "[]",
      "[1]",
      "\"x\"",
      "1",
      "null",
      "",
      " ",
  };
  for (const E e : kStreamed) {
    for (const std::string& b : bodies)
      EXPECT_TRUE(same_as_document(e, b)) << name(e) << ": " << b.substr(0, 200);
  }
  // A string with escapes keeps its unescaped text (in the scratch space, not the body).
  DeviceInfo info;
  std::string scratch;
  ASSERT_FALSE(parse_info(E::kUpdates, bodies[4], scratch, info));
  EXPECT_EQ(info.default_channel, longer + "\n");
  ASSERT_TRUE(parse_info(E::kUpdates, bodies[5], scratch, info)) << "install_source > 64 bytes";
  info = {};
  ASSERT_FALSE(parse_info(E::kUpdates, bodies[6], scratch, info));
  EXPECT_EQ(info.key_id, "\xF0\x9F\x98\x80");
  EXPECT_EQ(info.custom_id, "\"quoted\"");
  info = {};
  ASSERT_FALSE(parse_info(E::kUpdates, bodies[17], scratch, info));
  EXPECT_EQ(info.default_channel, std::string(3000, 'x'));
  // The endpoints that read objects and arrays keep the document reader.
  for (const E e : {E::kStats, E::kManifestSize}) {
    const auto refused = parse_info(e, body + "}", scratch, info);
    ASSERT_TRUE(refused) << name(e);
    EXPECT_EQ(refused->code, "invalid_json_body");
  }
}

TEST(DeviceInfo, QuotesAtMost128BytesOfAValue) {
  json::object body = base(E::kUpdates);
  body["version_build"] = std::string(10000, '9') + "x";
  DeviceInfo info;
  const auto e = read_info(E::kUpdates, body, info);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "semver_error");
  EXPECT_LT(e->message.size(), 400u);
}

TEST(DeviceInfo, StatsActionsAreSortedForTheSearch) {
  for (const char* a : {"ping", "set", "download_90", "webview_page_loaded", "InvalidIp",
                        "NoChannelOrOverride", "app_nav", "session_key_required"})
    EXPECT_TRUE(allowed_stats_action(a)) << a;
  for (const char* a : {"", "SET", "download_95", "unknown"})
    EXPECT_FALSE(allowed_stats_action(a)) << a;
}

}  // namespace
}  // namespace edge::api
