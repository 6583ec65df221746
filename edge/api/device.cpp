#include "edge/api/device.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>

#include <boost/json.hpp>

#include "edge/control/decision.hpp"
#include "edge/core/utf8.hpp"

namespace edge::api {
namespace {

namespace json = boost::json;
using control::Decision;
using control::Kind;

Response json_reply(unsigned status, Route route, const json::value& v) {
  return make_json_response(status, json::serialize(v), route);
}

Response json_body(unsigned status, const json::object& o) {
  return json_reply(status, Route::kUpdates, o);
}

// Error messages quote at most this much of a client's value.
constexpr std::size_t kQuotedValueBytes = 128;

// Thrown-error shape of the Capgo backend (§2.2): no `kind`.
Response bad_request(std::string_view code, std::string_view message, json::object more = {}) {
  return json_body(
      400, json::object{{"error", code}, {"message", message}, {"moreInfo", std::move(more)}});
}

Response schema_error(std::string_view field) {
  return bad_request("invalid_json_body", "Cannot parse body",
                     json::object{{"parseResult", json::object{{"field", field}}}});
}

// Manifest in responses: plugin >= 5.10.0 / 6.25.0 / 7.0.35 / any 8.x (§2.3 a).
bool supports_manifest(const SemVer& p) {
  switch (p.major) {
    case 5: return at_least(p, 5, 10, 0);
    case 6: return at_least(p, 6, 25, 0);
    case 7: return at_least(p, 7, 0, 35);
    default: return p.major >= 8;
  }
}

// link/comment: plugin >= M.35.0 for M in 5..8 (a prerelease of M.35.0 counts as older).
bool supports_metadata(const SemVer& p) {
  if (p.major < 5)
    return false;
  if (p.major > 8)
    return true;
  return at_least(p, p.major, 35, 0);
}

bool is_uuid(std::string_view id) {
  return valid_device_id(id);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::optional<SemVer> coerce_version_build(std::string_view text) {
  if (auto v = SemVer::parse(text))
    return *v;
  if (text == "builtin" || text == "unknown")
    return SemVer{};
  // "1" or "1.2": numeric parts without leading zeros.
  SemVer v;
  std::uint64_t* parts[] = {&v.major, &v.minor};
  std::size_t n = 0;
  std::string_view rest = text;
  while (!rest.empty() && n < 2) {
    const auto dot = rest.find('.');
    const auto part = rest.substr(0, dot);
    if (part.empty() || (part.size() > 1 && part[0] == '0'))
      return std::nullopt;
    const auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), *parts[n]);
    if (ec != std::errc() || p != part.data() + part.size())
      return std::nullopt;
    ++n;
    if (dot == std::string_view::npos) {
      rest = {};
    } else {
      rest.remove_prefix(dot + 1);
      if (rest.empty())
        return std::nullopt;
    }
  }
  if (n == 0 || !rest.empty())
    return std::nullopt;
  return v;
}

std::string encode_path(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

Response DeviceApi::updates_now(bool post, std::string_view body,
                                std::vector<store::Checkin>& pending) const {
  if (!post)
    return json_body(200, json::object{{"status", "ok"}});
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec)
    return bad_request("invalid_json_parse_body", "Invalid JSON body");
  if (!v.is_object() || v.get_object().empty())
    return bad_request("invalid_json_body", "Cannot parse body");
  const json::object& o = v.get_object();
  const auto str = [&](std::string_view key) -> const json::string* {
    const auto* p = o.if_contains(key);
    return p != nullptr && p->is_string() ? &p->get_string() : nullptr;
  };
  // Order of checks as in the Capgo backend (§2.2).
  const auto* device = str("device_id");
  if (o.if_contains("device_id") == nullptr || (device != nullptr && device->empty())) {
    return bad_request("missing_device_id", "Cannot find device_id");
  }
  const auto* app_id = str("app_id");
  if (o.if_contains("app_id") == nullptr || (app_id != nullptr && app_id->empty())) {
    return bad_request("missing_app_id", "Cannot find app_id");
  }
  const auto* build = str("version_build");
  std::optional<SemVer> version_build;
  if (build != nullptr && !build->empty()) {
    version_build = coerce_version_build(*build);
    if (!version_build) {
      return bad_request("semver_error",
                         "Native version: " + utf8_quote(*build, kQuotedValueBytes) +
                             " doesn't follow semver convention, please check "
                             "https://capgo.app/semver_tester/ to learn more about "
                             "semver usage in Capgo");
    }
  }
  // Schema (plugin_validation.ts): every failure is the same 400, naming the field here.
  if (device == nullptr || device->size() > 36 || !is_uuid(*device))
    return schema_error("device_id");
  if (app_id == nullptr || !valid_app_id(*app_id))
    return schema_error("app_id");
  const auto* platform_text = str("platform");
  const auto platform = platform_text ? control::parse_platform(*platform_text) : std::nullopt;
  if (!platform)
    return schema_error("platform");
  const auto* plugin_text = str("plugin_version");
  const auto plugin =
      plugin_text ? SemVer::parse(*plugin_text) : Result<SemVer>(Errc::kInvalidArgument);
  if (!plugin)
    return schema_error("plugin_version");
  const auto* name = str("version_name");
  if (name == nullptr || name->empty())
    return schema_error("version_name");
  if (!version_build)
    return schema_error("version_build");
  bool is_emulator = false;
  bool is_prod = true;
  for (auto [key, out] : {std::pair{"is_emulator", &is_emulator}, {"is_prod", &is_prod}}) {
    if (const auto* b = o.if_contains(key)) {
      if (!b->is_bool())
        return schema_error(key);
      *out = b->get_bool();
    }
  }
  std::string key_id;
  if (const auto* k = o.if_contains("key_id")) {
    if (!k->is_string() || k->get_string().size() > 20)
      return schema_error("key_id");
    key_id = std::string(k->get_string());
  }
  if (const auto* s = o.if_contains("install_source")) {
    if (!s->is_string() || s->get_string().size() > 64)
      return schema_error("install_source");
  }
  std::string default_channel;
  if (const auto* d = o.if_contains("defaultChannel")) {
    if (!d->is_string())
      return schema_error("defaultChannel");
    default_channel = std::string(d->get_string());
  }

  // Step 1: an app this node does not know is answered as Capgo answers an on-prem app.
  const auto state = control_.snapshot();
  const auto app = state->app(std::string_view(*app_id));
  if (!app) {
    Response r = json_body(
        429, json::object{{"error", "on_premise_app"}, {"message", "On-premise app detected"}});
    return r;
  }

  control::UpdateRequest req;
  req.device_id = std::string(*device);
  for (char& c : req.device_id)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  req.platform = *platform;
  req.version_build = *version_build;
  // "builtin" is rewritten to the native version before use (§1.1).
  req.version_name = *name == "builtin" ? version_build->to_string() : std::string(*name);
  req.plugin_version = *plugin;
  req.is_emulator = is_emulator;
  req.is_prod = is_prod;
  req.default_channel = std::move(default_channel);
  req.key_id = std::move(key_id);

  const control::AppStateView view(*app);
  const Decision d = control::decide(req, view);
  if (checkins_ != nullptr) {
    pending.push_back(store::Checkin{std::string(*app_id), req.device_id,
                                     std::string(*platform_text), req.version_name,
                                     version_build->to_string(), "updates",
                                     d.kind == Kind::kUpdate ? "update" : d.error, now_ms()});
  }
  if (d.kind != Kind::kUpdate) {
    json::object out{{"error", d.error}, {"message", d.message}};
    if (d.major)
      out["major"] = true;
    if (d.version)
      out["version"] = *d.version;
    if (d.old)
      out["old"] = *d.old;
    if (!d.device_key_id.empty()) {
      out["deviceKeyId"] = d.device_key_id;
      out["bundleKeyId"] = d.bundle_key_id;
    }
    out["kind"] = control::kind_name(d.kind);
    return json_body(200, out);
  }

  const auto& doc = app->releases.at(d.release->name);
  json::object out;
  out["version"] = d.release->name;
  // Manifest-only bundles still need a syntactically valid url (§2.4 item 6).
  out["url"] = doc.zip ? public_url_ + "/v1/blobs/" + doc.zip->hex() + "/" +
                             encode_path(d.release->name) + ".zip"
                       : public_url_ + "/v1/blobs/no-zip/no.zip";
  out["session_key"] = doc.session_key;
  out["checksum"] = doc.checksum;
  if (!doc.manifest.empty() && supports_manifest(*plugin)) {
    json::array manifest;
    for (const auto& m : doc.manifest) {
      manifest.push_back(json::object{{"file_name", m.file_name},
                                      {"file_hash", m.file_hash},
                                      {"download_url", public_url_ + "/v1/blobs/" + m.blob.hex() +
                                                           "/" + encode_path(m.file_name)}});
    }
    out["manifest"] = std::move(manifest);
  }
  if (app->settings.expose_metadata && supports_metadata(*plugin)) {
    if (!doc.link.empty())
      out["link"] = doc.link;
    if (!doc.comment.empty())
      out["comment"] = doc.comment;
  }
  return json_body(200, out);
}

}  // namespace edge::api

namespace edge::api {
namespace {

std::string url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// "new" plugins keep the channel on the device (§4): >= 5.34.0 / 6.34.0 / 7.34.0 / 8.0.0.
bool stores_channel_locally(const std::optional<SemVer>& p) {
  if (!p)
    return true;  // missing plugin_version parses as 0.0.0, which counts as new
  SemVer t;
  t.major = p->major;
  t.minor = 34;
  switch (p->major) {
    case 5:
    case 6:
    case 7: return !(*p < t);
    default: return p->major >= 8 || (p->major == 0 && p->minor == 0 && p->patch == 0);
  }
}

// A stable numeric id for a channel (the plugin needs a number; Android throws otherwise):
// 48 bits of SHA-256(app, name), exact in a JavaScript number.
std::uint64_t channel_number(std::string_view app_id, std::string_view name) {
  Sha256Hasher h;
  h.update(app_id);
  h.update(std::string_view("\n"));
  h.update(name);
  return h.finish().leading_u64() >> 16;
}

Response channel_json(unsigned status, const json::object& o) {
  return json_reply(status, Route::kChannelSelf, o);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto item = query.substr(0, amp);
    if (!item.empty()) {
      const auto eq = item.find('=');
      out.emplace_back(url_decode(item.substr(0, eq)), eq == std::string_view::npos
                                                           ? std::string()
                                                           : url_decode(item.substr(eq + 1)));
    }
    if (amp == std::string_view::npos)
      break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

Response DeviceApi::channel_self(std::string_view method, std::string_view query,
                                 std::string_view body) const {
  // GET and DELETE carry the info object in the query string (booleans as "true"/"false").
  json::object o;
  if (method == "GET" || method == "DELETE") {
    const auto params = parse_query(query);
    if (params.empty()) {
      return channel_json(400, json::object{{"error", "invalid_query_parameters"},
                                            {"message", "Invalid query parameters"},
                                            {"moreInfo", json::object{}}});
    }
    for (const auto& [k, v] : params)
      o[k] = v;
    o["is_emulator"] = o.contains("is_emulator") && o["is_emulator"] == "true";
    o["is_prod"] = !o.contains("is_prod") || o["is_prod"] == "true";
  } else {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec)
      return channel_json(400, json::object{{"error", "invalid_json_parse_body"},
                                            {"message", "Invalid JSON body"},
                                            {"moreInfo", json::object{}}});
    if (!v.is_object() || v.get_object().empty()) {
      return channel_json(400, json::object{{"error", "invalid_json_body"},
                                            {"message", "Cannot parse body"},
                                            {"moreInfo", json::object{}}});
    }
    o = std::move(v.get_object());
  }
  const bool query_form = method == "GET" || method == "DELETE";
  const auto bad = [&](std::string_view code, std::string_view message, std::string_view field) {
    return channel_json(400, json::object{{"error", query_form && code == "invalid_json_body"
                                                        ? "invalid_query_parameters"
                                                        : code},
                                          {"message", message},
                                          {"moreInfo", json::object{{"field", field}}}});
  };
  const auto str = [&](std::string_view key) -> std::optional<std::string> {
    const auto* p = o.if_contains(key);
    if (p == nullptr || !p->is_string())
      return std::nullopt;
    return std::string(p->get_string());
  };
  const auto device = str("device_id");
  if (!query_form && (!device || device->empty()))
    return bad("missing_device_id", "Cannot find device_id", "device_id");
  const auto app_id = str("app_id");
  if (!app_id || app_id->empty())
    return bad("missing_app_id", "Cannot find app_id", "app_id");
  if (!valid_app_id(*app_id))
    return bad("invalid_json_body", "Cannot parse body", "app_id");
  const auto platform = str("platform") ? control::parse_platform(*str("platform")) : std::nullopt;
  if (!platform)
    return bad("invalid_json_body", "Cannot parse body", "platform");
  std::string device_id = device.value_or("");
  for (char& c : device_id)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if ((!query_form || !device_id.empty()) && !valid_device_id(device_id)) {
    return bad("invalid_json_body", "Cannot parse body", "device_id");
  }
  for (const char* flag : {"is_emulator", "is_prod"}) {
    if (const auto* b = o.if_contains(flag); b != nullptr && !b->is_bool())
      return bad("invalid_json_body", "Cannot parse body", flag);
  }
  if (const auto k = o.if_contains("key_id");
      k != nullptr && (!k->is_string() || k->get_string().size() > 20)) {
    return bad("invalid_json_body", "Cannot parse body", "key_id");
  }
  std::optional<SemVer> plugin;
  if (const auto p = str("plugin_version"); p && !p->empty()) {
    auto parsed = SemVer::parse(*p);
    if (!parsed)
      return bad("invalid_json_body", "Cannot parse body", "plugin_version");
    plugin = *parsed;
  }
  const bool is_emulator = o.contains("is_emulator") && o["is_emulator"].as_bool();
  const bool is_prod = !o.contains("is_prod") || o["is_prod"].as_bool();
  const std::string default_channel = str("defaultChannel").value_or("");
  const bool local = stores_channel_locally(plugin);

  const auto state = control_.snapshot();
  const auto app = state->app(*app_id);
  if (!app)
    return channel_json(
        429, json::object{{"error", "on_premise_app"}, {"message", "On-premise app detected"}});
  const auto enabled = [&](const control::Channel& c) {
    switch (*platform) {
      case control::Platform::kIos: return c.ios;
      case control::Platform::kAndroid: return c.android;
      case control::Platform::kElectron: return c.electron;
    }
    return false;
  };
  const auto public_for_platform = [&]() -> const control::Channel* {
    for (const auto& [n, c] : app->channels) {
      if (c.is_public && enabled(c))
        return &c;
    }
    return nullptr;
  };
  const std::string* current_override = app->overrides.find(device_id);
  const control::Channel* overridden = nullptr;
  if (current_override != nullptr) {
    const auto c = app->channels.find(*current_override);
    if (c != app->channels.end())
      overridden = &c->second;
  }

  if (method == "GET") {  // listChannels
    json::array out;
    for (const auto& [n, c] : app->channels) {
      if (!(c.allow_device_self_set || c.is_public) || !enabled(c))
        continue;
      if (!(is_emulator ? c.allow_emulator : c.allow_device))
        continue;
      if (!(is_prod ? c.allow_prod : c.allow_dev))
        continue;
      out.push_back(json::object{{"id", channel_number(*app_id, n)},
                                 {"name", n},
                                 {"public", c.is_public},
                                 {"allow_self_set", c.allow_device_self_set}});
    }
    Response r;
    r.route = Route::kChannelSelf;
    r.set("Content-Type", "application/json");
    r.body = json::serialize(out);
    return r;
  }
  if (method == "PUT") {  // getChannel
    if (local) {
      if (const auto ch = str("channel")) {
        return channel_json(
            200, json::object{{"channel", *ch}, {"status", "override"}, {"allowSet", true}});
      }
      return channel_json(
          200, json::object{{"channel", default_channel.empty() ? "production" : default_channel},
                            {"status", "default"}});
    }
    if (overridden != nullptr) {
      return channel_json(200, json::object{{"channel", overridden->name},
                                            {"status", "override"},
                                            {"allowSet", overridden->allow_device_self_set}});
    }
    const control::Channel* c = nullptr;
    if (!default_channel.empty()) {
      const auto it = app->channels.find(default_channel);
      if (it != app->channels.end())
        c = &it->second;
    } else {
      c = public_for_platform();
    }
    if (c == nullptr)
      return channel_json(
          200, json::object{{"error", "channel_not_found"}, {"message", "Cannot find channel"}});
    return channel_json(200, json::object{{"channel", c->name}, {"status", "default"}});
  }
  if (method == "DELETE") {  // unset (old plugins)
    if (local)
      return channel_json(200, json::object{{"status", "ok"}});
    if (current_override == nullptr ||
        (overridden != nullptr && !overridden->allow_device_self_set)) {
      return channel_json(
          200, json::object{
                   {"error", "cannot_override"},
                   {"message", "Cannot change device override current channel don't allow it"}});
    }
    return write_override(*app_id, device_id, std::nullopt, "Cannot remove the override");
  }
  // POST: setChannel
  const auto requested = str("channel");
  if (!requested)
    return channel_json(200, json::object{{"error", "missing_channel"},
                                          {"message", "Cannot find channel in body"}});
  const auto it = app->channels.find(*requested);
  if (it == app->channels.end()) {
    return channel_json(200, json::object{{"error", "channel_not_found"},
                                          {"message", "Cannot find channel"},
                                          {"channel", *requested},
                                          {"app_id", *app_id}});
  }
  const control::Channel& target = it->second;
  if (!target.allow_device_self_set) {
    return channel_json(
        200,
        target.is_public
            ? json::object{{"error", "public_channel_self_set_not_allowed"},
                           {"message", "This channel does not allow devices to self associate"}}
            : json::object{{"error", "channel_self_set_not_allowed"},
                           {"message", "This channel does not allow devices to self associate"}});
  }
  if (local)
    return channel_json(200, json::object{{"status", "ok"}, {"allowSet", true}});
  if (overridden != nullptr && !overridden->allow_device_self_set) {
    return channel_json(
        200,
        json::object{{"error", "cannot_override"},
                     {"message", "Cannot change device override current channel don't allow it"}});
  }
  const control::Channel* pub = public_for_platform();
  std::optional<std::string> next = target.name;
  if (pub != nullptr && pub->name == target.name)
    next.reset();  // back to the public channel
  if (next && current_override != nullptr && *current_override == *next) {
    return channel_json(200, json::object{{"status", "ok"}});
  }
  if (!next && current_override == nullptr)
    return channel_json(200, json::object{{"status", "ok"}});
  return write_override(*app_id, device_id, next, "Cannot set the override");
}

Response DeviceApi::write_override(std::string app_id, std::string device_id,
                                   std::optional<std::string> channel,
                                   std::string_view failure) const {
  // Off the event loop: the control service's writer thread group-commits overrides.
  return deferred(
      Route::kChannelSelf,
      [this, app_id = std::move(app_id), device_id = std::move(device_id),
       channel = std::move(channel),
       failure](const store::ChunkStore::Executor&, std::function<void(Response)> reply) mutable {
        control_.async_set_device_override(
            std::move(app_id), std::move(device_id), std::move(channel),
            [reply = std::move(reply), failure](bool ok) {
              reply(ok ? channel_json(200, json::object{{"status", "ok"}})
                       : channel_json(200, json::object{{"error", "override_not_allowed"},
                                                        {"message", failure}}));
            });
      });
}

}  // namespace edge::api

namespace edge::api {
namespace {

// The backend's allow-list of stats actions (capgo-protocol.md §3.2).
constexpr std::string_view kActions[] = {"ping",
                                         "delete",
                                         "reset",
                                         "set",
                                         "get",
                                         "set_fail",
                                         "update_fail",
                                         "download_fail",
                                         "windows_path_fail",
                                         "canonical_path_fail",
                                         "directory_path_fail",
                                         "unzip_fail",
                                         "low_mem_fail",
                                         "download_0",
                                         "download_10",
                                         "download_20",
                                         "download_30",
                                         "download_40",
                                         "download_50",
                                         "download_60",
                                         "download_70",
                                         "download_80",
                                         "download_90",
                                         "download_complete",
                                         "download_manifest_start",
                                         "download_manifest_complete",
                                         "download_zip_start",
                                         "download_zip_complete",
                                         "download_manifest_file_fail",
                                         "download_manifest_checksum_fail",
                                         "download_manifest_brotli_fail",
                                         "finish_download_fail",
                                         "manifest_path_fail",
                                         "decrypt_fail",
                                         "checksum_required",
                                         "insufficient_disk_space",
                                         "app_moved_to_foreground",
                                         "app_moved_to_background",
                                         "app_launch_start",
                                         "app_launch_ready",
                                         "app_launch_timeout",
                                         "uninstall",
                                         "needPlanUpgrade",
                                         "missingBundle",
                                         "noNew",
                                         "disablePlatformIos",
                                         "disablePlatformAndroid",
                                         "disableAutoUpdateToMajor",
                                         "cannotUpdateViaPrivateChannel",
                                         "disableAutoUpdateToMinor",
                                         "disableAutoUpdateToPatch",
                                         "channelMisconfigured",
                                         "disableAutoUpdateMetadata",
                                         "disableAutoUpdateUnderNative",
                                         "disableDevBuild",
                                         "disableProdBuild",
                                         "disableEmulator",
                                         "disableDevice",
                                         "cannotGetBundle",
                                         "checksum_fail",
                                         "NoChannelOrOverride",
                                         "setChannel",
                                         "getChannel",
                                         "rateLimited",
                                         "rate_limit_reached",
                                         "disableAutoUpdate",
                                         "keyMismatch",
                                         "InvalidIp",
                                         "blocked_by_server_url",
                                         "backend_refusal",
                                         "disablePlatformElectron",
                                         "customIdBlocked",
                                         "app_crash",
                                         "app_crash_native",
                                         "app_anr",
                                         "app_killed_low_memory",
                                         "app_killed_excessive_resource_usage",
                                         "app_initialization_failure",
                                         "app_memory_warning",
                                         "webview_javascript_error",
                                         "webview_unhandled_rejection",
                                         "webview_resource_error",
                                         "webview_security_policy_violation",
                                         "webview_unclean_restart",
                                         "webview_render_process_gone",
                                         "webview_content_process_terminated",
                                         "webview_dom_content_loaded",
                                         "webview_page_loaded",
                                         "set_next",
                                         "os_version_changed",
                                         "native_app_version_changed"};

bool allowed_action(std::string_view a) {
  return std::find(std::begin(kActions), std::end(kActions), a) != std::end(kActions);
}

Response stats_json(unsigned status, const json::value& v) {
  return json_reply(status, Route::kStats, v);
}

struct EventError {
  std::string code;
  std::string message;
};

// statsRequestSchema (§3.3). Returns the error of the first bad field, if any.
std::optional<EventError> check_event(const json::object& e) {
  const auto bad = [](std::string field) {
    return EventError{"invalid_json_body", "Cannot parse body: " + field};
  };
  const auto* device = e.if_contains("device_id");
  if (device == nullptr || !device->is_string() || device->get_string().empty()) {
    return EventError{"missing_device_id", "Cannot find device_id"};
  }
  if (device->get_string().size() > 36)
    return bad("device_id");
  for (const char* required : {"platform", "version_name", "version_os"}) {
    const auto* v = e.if_contains(required);
    if (v == nullptr || !v->is_string())
      return bad(required);
  }
  for (const char* flag : {"is_emulator", "is_prod"}) {
    if (const auto* v = e.if_contains(flag); v != nullptr && !v->is_bool())
      return bad(flag);
  }
  for (const char* opt :
       {"defaultChannel", "channel", "old_version_name", "version_code", "plugin_version",
        "version_build", "install_source", "custom_id", "key_id"}) {
    if (const auto* v = e.if_contains(opt); v != nullptr && !v->is_string())
      return bad(opt);
  }
  const auto len = [&](const char* k) {
    const auto* v = e.if_contains(k);
    return v == nullptr ? 0 : v->get_string().size();
  };
  if (len("install_source") > 64)
    return bad("install_source");
  if (len("custom_id") > 36)
    return bad("custom_id");
  if (len("key_id") > 20)
    return bad("key_id");
  if (const auto* b = e.if_contains("version_build");
      b != nullptr && !b->get_string().empty() && !coerce_version_build(b->get_string())) {
    return EventError{"semver_error",
                      "Native version: " + utf8_quote(b->get_string(), kQuotedValueBytes) +
                          " doesn't follow semver convention"};
  }
  const auto* action = e.if_contains("action");
  if (action == nullptr || !action->is_string() || !allowed_action(action->get_string()))
    return bad("action");
  if (const auto* m = e.if_contains("metadata")) {
    if (!m->is_object() || m->get_object().size() > 30)
      return bad("metadata");
    for (const auto& kv : m->get_object()) {
      if (kv.key().size() > 64 || !kv.value().is_string() ||
          kv.value().get_string().size() > 2048) {
        return bad("metadata");
      }
    }
  }
  return std::nullopt;
}

}  // namespace

Response DeviceApi::stats_now(bool post, std::string_view body,
                              std::vector<store::Checkin>& pending) const {
  if (!post)
    return stats_json(200, json::object{{"status", "ok"}});
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec)
    return stats_json(400, json::object{{"error", "invalid_json_parse_body"},
                                        {"message", "Invalid JSON body"},
                                        {"moreInfo", json::object{}}});
  const bool batch = v.is_array();
  if (batch && v.get_array().empty())
    return stats_json(200, json::object{{"status", "ok"}, {"results", json::array{}}});
  if (!batch && !v.is_object()) {
    return stats_json(400, json::object{{"error", "invalid_json_body"},
                                        {"message", "Cannot parse body"},
                                        {"moreInfo", json::object{}}});
  }
  std::vector<const json::object*> events;
  if (batch) {
    for (const auto& e : v.get_array())
      events.push_back(e.is_object() ? &e.get_object() : nullptr);
  } else {
    events.push_back(&v.get_object());
  }
  // The first event decides the app; its app id errors are 400, later ones 200 (§3.3).
  std::string app_id;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const json::value* a = events[i] != nullptr ? events[i]->if_contains("app_id") : nullptr;
    const bool present = a != nullptr && a->is_string() && !a->get_string().empty();
    const bool valid = present && valid_app_id(a->get_string());
    if (!valid) {
      const std::string message =
          present ? "App ID must be a reverse domain string" : "App ID is required";
      return stats_json(i == 0 ? 400 : 200,
                        json::object{{"error", "invalid_app_id"}, {"message", message}});
    }
    if (i == 0) {
      app_id = std::string(a->get_string());
    } else if (a->get_string() != app_id) {
      return stats_json(
          200, json::object{{"error", "mixed_app_ids"},
                            {"message", "All events in a batch must have the same app_id"}});
    }
  }
  const auto state = control_.snapshot();
  const auto app = state->app(app_id);
  if (!app && !batch)
    return stats_json(
        429, json::object{{"error", "on_premise_app"}, {"message", "On-premise app detected"}});

  json::array results;
  std::optional<Response> single;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const json::object& e = *events[i];
    std::optional<EventError> err = check_event(e);
    json::object extra;
    if (!err && !app)
      err = EventError{"on_premise_app", "On-premise app detected"};
    std::string version_name;
    if (!err) {
      version_name = std::string(e.at("version_name").get_string());
      // The version is the part before ':' (per-file manifest failures); builtin and unknown
      // are placeholders that always exist.
      const std::string version = version_name.substr(0, version_name.find(':'));
      if (!version.empty() && version != "builtin" && version != "unknown" &&
          !app->releases.contains(version)) {
        err = EventError{"version_not_found", "Version not found"};
        extra = json::object{{"app_id", app_id}, {"version_name", version_name}};
      }
    }
    if (err) {
      if (!batch) {
        const bool soft = err->code == "version_not_found";
        json::object o{{"error", err->code}, {"message", err->message}};
        for (auto& kv : extra)
          o[kv.key()] = kv.value();
        if (!soft)
          o["moreInfo"] = json::object{};
        single = stats_json(soft ? 200 : 400, o);
      } else {
        results.push_back(json::object{
            {"status", "error"}, {"error", err->code}, {"message", err->message}, {"index", i}});
      }
      continue;
    }
    if (checkins_ != nullptr) {
      std::string device(e.at("device_id").get_string());
      for (char& c : device)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const auto* build = e.if_contains("version_build");
      pending.push_back(
          store::Checkin{app_id, device, std::string(e.at("platform").get_string()), version_name,
                         build != nullptr ? std::string(build->get_string()) : std::string(),
                         std::string(e.at("action").get_string()), "", now_ms()});
    }
    if (batch)
      results.push_back(json::object{{"status", "ok"}, {"index", i}});
  }
  if (!batch)
    return single ? *single : stats_json(200, json::object{{"status", "ok"}});
  return stats_json(200, json::object{{"status", "ok"}, {"results", std::move(results)}});
}

}  // namespace edge::api

namespace edge::api {

Response DeviceApi::updates(bool post, std::string_view body) const {
  std::vector<store::Checkin> pending;
  Response r = updates_now(post, body, pending);
  return record_then(std::move(r), std::move(pending));
}

Response DeviceApi::stats(bool post, std::string_view body) const {
  std::vector<store::Checkin> pending;
  Response r = stats_now(post, body, pending);
  return record_then(std::move(r), std::move(pending));
}

namespace {

// The answer when storage is full and a check-in could not be recorded: /updates is a read
// (answered from memory; the refused check-in is counted in
// edge_storage_writes_refused_total); /stats exists to be written: 503 storage_full.
Response storage_full_answer(Response r) {
  if (r.route == Route::kStats)
    return storage_full_response(503, "the event", Route::kStats);
  return r;
}

}  // namespace

Response DeviceApi::record_then(Response r, std::vector<store::Checkin> pending) const {
  if (pending.empty())
    return r;
  if (!checkins_->writable()) {
    for (auto& c : pending)
      checkins_->record(std::move(c));  // refused by the store, and counted
    return storage_full_answer(std::move(r));
  }
  if (!durable_) {
    // The origin: queued for the next group commit, answered now.
    for (auto& c : pending)
      checkins_->record(std::move(c));
    return r;
  }
  // An edge: the check-ins go upstream from the outbox, so they must be on disk before
  // the device hears back (DESIGN §6). One group commit holds them all.
  const Route route = r.route;
  return deferred(route, [this, r = std::move(r), pending = std::move(pending)](
                             const store::ChunkStore::Executor&,
                             std::function<void(Response)> reply) mutable {
    struct Join {
      std::atomic<std::size_t> left;
      std::atomic<bool> failed{false};
      Response answer;
      std::function<void(Response)> reply;
    };
    auto join = std::make_shared<Join>();
    join->left = pending.size();
    join->answer = std::move(r);
    join->reply = std::move(reply);
    for (auto& c : pending) {
      checkins_->record(std::move(c), [this, join](bool ok) {
        if (!ok)
          join->failed = true;
        if (join->left.fetch_sub(1) != 1)
          return;
        if (join->failed && join->answer.route == Route::kUpdates && !checkins_->writable()) {
          join->reply(std::move(join->answer));  // storage filled up meanwhile: a read
        } else if (join->failed) {
          join->reply(error_response(503, "store_error", "the check-in could not be stored; retry",
                                     join->answer.route));
        } else {
          join->reply(std::move(join->answer));
        }
      });
    }
  });
}

Response DeviceApi::manifest_size(std::string_view body) const {
  const auto reply = [](unsigned status, const json::value& v) {
    return json_reply(status, Route::kUpdates, v);
  };
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec)
    return reply(400, json::object{{"error", "invalid_json_parse_body"},
                                   {"message", "Invalid JSON body"},
                                   {"moreInfo", json::object{}}});
  const auto* manifest = v.is_object() ? v.get_object().if_contains("manifest") : nullptr;
  if (manifest == nullptr || !manifest->is_array()) {
    return reply(400, json::object{{"error", "invalid_json_body"},
                                   {"message", "Cannot parse body"},
                                   {"moreInfo", json::object{{"field", "manifest"}}}});
  }
  // Entries are de-duplicated by (file_name, file_hash), as the Capgo backend does.
  std::vector<std::pair<std::string, std::string>> seen;
  json::array files;
  std::uint64_t total = 0;
  std::uint64_t known = 0;
  std::uint64_t unknown = 0;
  const std::string prefix = public_url_ + "/v1/blobs/";
  for (const auto& e : manifest->get_array()) {
    if (!e.is_object())
      continue;
    const auto& o = e.get_object();
    const auto text = [&](std::string_view k) {
      const auto* p = o.if_contains(k);
      return p != nullptr && p->is_string() ? std::string(p->get_string()) : std::string();
    };
    const std::string name = text("file_name");
    const std::string hash = text("file_hash");
    const std::string url = text("download_url");
    if (std::find(seen.begin(), seen.end(), std::pair{name, hash}) != seen.end())
      continue;
    seen.emplace_back(name, hash);
    json::object f{{"file_name", name}, {"file_hash", hash}, {"download_url", url}};
    std::optional<std::uint64_t> size;
    if (blobs_ != nullptr && url.starts_with(prefix)) {
      const std::string_view rest = std::string_view(url).substr(prefix.size());
      if (auto id = Sha256::parse(rest.substr(0, rest.find('/')))) {
        if (auto r = blobs_->recipe(*id))
          size = (*r)->size;
      }
    }
    if (size) {
      f["size"] = *size;
      total += *size;
      ++known;
    } else {
      f["error"] = "size_unknown";
      ++unknown;
    }
    files.push_back(std::move(f));
  }
  return reply(200, json::object{{"totalSize", total},
                                 {"knownFiles", known},
                                 {"unknownFiles", unknown},
                                 {"files", std::move(files)}});
}

}  // namespace edge::api
