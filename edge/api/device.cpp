#include "edge/api/device.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include <boost/json.hpp>

#include "edge/api/device_info.hpp"
#include "edge/control/decision.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/uri.hpp"
#include "edge/core/utf8.hpp"
#include "edge/http/encoding.hpp"

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

// A refused info object, in the thrown-error shape of the Capgo backend (§2.2): no `kind`;
// moreInfo names the field and what was wrong with it.
Response info_error(const InfoError& e, Route route) {
  json::object more;
  if (!e.field.empty())
    more = json::object{{"field", e.field}, {"reason", e.reason}};
  return json_reply(
      400, route,
      json::object{{"error", e.code}, {"message", e.message}, {"moreInfo", std::move(more)}});
}

// An app this node does not know, answered as Capgo answers an on-prem app (§2.3 c), with
// the Retry-After the plugin honours (§9.7): the device backs off instead of asking again
// at once.
constexpr std::string_view kUnknownAppRetryAfter = "60";

Response unknown_app(Route route) {
  Response r =
      json_reply(429, route,
                 json::object{{"error", "on_premise_app"}, {"message", "On-premise app detected"}});
  r.set("Retry-After", kUnknownAppRetryAfter);
  return r;
}

// A small arena for parsing one device body: the info object is a few hundred bytes, so
// parsing it allocates nothing from the heap.
struct BodyArena {
  unsigned char buffer[2048];
  json::monotonic_resource resource{buffer, sizeof buffer};
  json::value value = json::value(json::storage_ptr(&resource));
};

// link/comment: plugin >= M.35.0 for M in 5..8 (a prerelease of M.35.0 counts as older).
bool supports_metadata(const SemVer& p) {
  if (p.major < 5)
    return false;
  if (p.major > 8)
    return true;
  return at_least(p, p.major, 35, 0);
}

std::string_view checkin_decision(const Decision& d) {
  switch (d.kind) {
    case Kind::kUpdate: return "update";
    case Kind::kRevertToBuiltin: return "revert_to_builtin";
    default: return d.error;
  }
}

}  // namespace

namespace {

// Why the decision came out as it did, for the admin's "test as a device".
std::string explain(const Decision& d, const control::UpdateRequest& req,
                    const control::AppStateView& view) {
  const auto resolved =
      control::resolve_channel(req.device_id, req.platform, req.default_channel, view);
  json::object why{
      {"channel", resolved.channel != nullptr ? json::value(resolved.channel->name) : nullptr},
      {"channel_reason", control::to_string(resolved.reason)},
      {"rollout", nullptr},
      {"kind", d.kind == Kind::kUpdate            ? std::string_view("update")
               : d.kind == Kind::kRevertToBuiltin ? std::string_view("revert_to_builtin")
                                                  : control::kind_name(d.kind)},
      {"error", d.error},
      {"release", d.release != nullptr ? json::value(d.release->name) : nullptr},
      {"via_override", d.via_override},
      {"via_rollout", d.via_rollout},
      {"send_zip", d.send_zip},
      {"send_manifest", d.send_manifest}};
  if (resolved.channel != nullptr && resolved.channel->rollout) {
    const auto& r = *resolved.channel->rollout;
    why["rollout"] =
        json::object{{"release", r.release},
                     {"percent", r.bps / 100.0},
                     {"enabled", r.enabled},
                     {"paused", r.paused},
                     {"selected", control::rollout_selects(r.id, req.device_id, r.bps)}};
  }
  return json::serialize(why);
}

}  // namespace

Response DeviceApi::decide_for(std::string_view app_id, std::string_view body) const {
  if (!control_.snapshot()->app(app_id))
    return error_response(404, "not_found", "no app " + std::string(app_id.substr(0, 255)));
  BodyArena arena;
  if (auto e = parse_json_body(body, arena.value))
    return info_error(*e, Route::kAdmin);
  auto& o = arena.value.get_object();
  if (const auto* given = o.if_contains("app_id");
      given != nullptr && (!given->is_string() || given->get_string() != app_id)) {
    return error_response(
        400, "invalid_json_body",
        "app_id: the body names another app than the path (" + std::string(app_id) + ")");
  }
  o["app_id"] = app_id;
  std::vector<store::Checkin> unused;
  std::string why;
  Response r = updates_now(true, json::serialize(o), unused, &why);
  if (why.empty())  // refused before any decision: the device would get this
    return r;
  JsonObjectWriter out;
  out.raw("status", std::to_string(r.status)).raw("answer", r.body).raw("why", why);
  return make_json_response(200, std::move(out).finish(), Route::kAdmin);
}

Response DeviceApi::updates_now(bool post, std::string_view body,
                                std::vector<store::Checkin>& pending, std::string* why) const {
  if (!post)
    return json_body(200, json::object{{"status", "ok"}});
  // Read from the bytes without a JSON document: this is every device's hot path.
  std::string scratch;  // only for strings sent with escapes
  DeviceInfo info;
  if (auto e = parse_info(DeviceEndpoint::kUpdates, body, scratch, info))
    return info_error(*e, Route::kUpdates);

  // Step 1: an app this node does not know.
  const auto state = control_.snapshot();
  const auto app = state->app(info.app_id);
  if (!app)
    return unknown_app(Route::kUpdates);

  control::UpdateRequest req;
  req.device_id = std::move(info.device_id);
  req.platform = *info.platform;
  req.version_build = *info.version_build;
  req.version_name = info.running_version();
  req.plugin_version = *info.plugin_version;
  req.is_emulator = info.is_emulator;
  req.is_prod = info.is_prod;
  req.default_channel = std::string(info.default_channel);
  req.key_id = std::string(info.key_id);
  req.on_builtin = info.on_builtin();

  const control::AppStateView view(*app);
  const Decision d = control::decide(req, view);
  if (why != nullptr)
    *why = explain(d, req, view);
  if (checkins_ != nullptr && why == nullptr) {
    // The request's strings move into the check-in: nothing below reads them.
    pending.push_back(store::Checkin{
        std::string(info.app_id), std::move(req.device_id), std::string(info.platform_text),
        std::move(req.version_name), req.version_build.to_string(), "updates",
        std::string(checkin_decision(d)), wall_clock_ms(), req.plugin_version.to_string(),
        std::string(info.custom_id), std::move(req.default_channel)});
    if (!apply_collection(app->settings, pending.back()))
      pending.pop_back();  // the app's privacy settings, before anything is stored or sent
  }
  // The answers are written straight into the body (no JSON document built first): this is
  // the hot path of every device.
  if (d.kind == Kind::kRevertToBuiltin) {
    // No error and no kind: the plugin resets to the bundle shipped in the app (§9.1).
    return make_json_response(200, R"({"version":"builtin"})", Route::kUpdates);
  }
  if (d.kind != Kind::kUpdate) {
    JsonObjectWriter out;
    out.string("error", d.error).string("message", d.message);
    if (d.major)
      out.boolean("major", true);
    if (d.version)
      out.string("version", *d.version);
    if (d.old)
      out.string("old", *d.old);
    if (!d.device_key_id.empty())
      out.string("deviceKeyId", d.device_key_id).string("bundleKeyId", d.bundle_key_id);
    out.string("kind", control::kind_name(d.kind));
    return make_json_response(200, std::move(out).finish(), Route::kUpdates);
  }

  const auto& doc = app->releases.at(d.release->name);
  const bool metadata = app->settings.expose_metadata && supports_metadata(req.plugin_version);
  // An update's answer depends on the release and three flags only: it is built once per
  // control snapshot and io thread, then copied (building it was a fifth of this path).
  struct Answer {
    std::weak_ptr<const control::ControlState> state;  // owner identity, not ownership
    std::uint64_t api = 0;                             // DeviceApi::instance_
    const void* doc = nullptr;
    unsigned flags = 0;
    std::string body;
    std::shared_ptr<const std::string> gzip;  // for clients that take it (big manifests)
  };
  thread_local std::array<Answer, 4> answers;
  const unsigned flags =
      (d.send_zip ? 1U : 0U) | (d.send_manifest ? 2U : 0U) | (metadata ? 4U : 0U);
  // The slot from the document's address: its low bits are alignment, so they are skipped
  // (a rollout's two releases must not evict each other).
  const auto addr = reinterpret_cast<std::uintptr_t>(&doc);
  Answer& slot = answers[((addr >> 6) ^ (addr >> 10) ^ flags) & 3U];
  // `state` is held here: the same owner means the same live snapshot, so `doc` is too.
  const bool hit = slot.api == instance_ && slot.doc == &doc && slot.flags == flags &&
                   !slot.state.owner_before(state) && !state.owner_before(slot.state);
  if (!hit) {
    slot.body = update_answer(doc, d.release->name, d.send_zip, d.send_manifest, metadata);
    // Compressed once per snapshot and thread, not per device: a manifest of thousands of
    // files is most of the answer and shrinks several times (README, "JSON gzip").
    slot.gzip.reset();
    if (slot.body.size() >= http::kGzipMinBytes) {
      if (auto z = http::gzip(slot.body, http::kGzipLevel))
        slot.gzip = std::make_shared<const std::string>(std::move(*z));
    }
    slot.state = state;
    slot.api = instance_;
    slot.doc = &doc;
    slot.flags = flags;
  }
  Response r = make_json_response(200, slot.body, Route::kUpdates);
  r.gzip_body = slot.gzip;
  return r;
}

std::uint64_t DeviceApi::next_instance() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

std::string DeviceApi::update_answer(const control::ReleaseDoc& doc, const std::string& name,
                                     bool send_zip, bool send_manifest, bool metadata) const {
  return build_update_answer(doc, name, public_url_, send_zip, send_manifest, metadata);
}

std::uint64_t largest_update_answer_bytes(const control::ReleaseDoc& doc, const std::string& name,
                                          std::size_t public_url_bytes) {
  return build_update_answer(doc, name, std::string(public_url_bytes, 'x'), doc.zip.has_value(),
                             true, true)
      .size();
}

std::string build_update_answer(const control::ReleaseDoc& doc, const std::string& name,
                                const std::string& public_url, bool send_zip, bool send_manifest,
                                bool metadata) {
  JsonObjectWriter out;
  out.string("version", name);
  // Without the zip (delta format, manifest-only release) the url is still a syntactically
  // valid one, as plugins require (§2.4 item 6).
  std::string url = public_url;
  if (send_zip) {
    url += "/v1/blobs/" + doc.zip->hex() + "/" + percent_encode(name, true) + ".zip";
  } else {
    url += "/v1/blobs/no-zip/no.zip";
  }
  out.string("url", url);
  out.string("session_key", doc.session_key);
  out.string("checksum", doc.checksum);
  if (send_manifest) {
    std::string manifest = "[";
    for (const auto& m : doc.manifest) {
      if (manifest.size() > 1)
        manifest += ',';
      JsonObjectWriter entry;
      entry.string("file_name", m.file_name)
          .string("file_hash", m.file_hash)
          .string("download_url", public_url + "/v1/blobs/" + m.blob.hex() + "/" +
                                      percent_encode(m.file_name, true));
      manifest += std::move(entry).finish();
    }
    manifest += ']';
    out.raw("manifest", manifest);
  }
  if (metadata) {
    if (!doc.link.empty())
      out.string("link", doc.link);
    if (!doc.comment.empty())
      out.string("comment", doc.comment);
  }
  return std::move(out).finish();
}

}  // namespace edge::api

namespace edge::api {
namespace {

// "new" plugins keep the channel on the device (§4): >= 5.34.0 / 6.34.0 / 7.34.0 / 8.0.0.
// A missing plugin_version reads as 0.0.0, which counts as legacy since §9.6.
bool stores_channel_locally(const std::optional<SemVer>& p) {
  if (!p)
    return false;
  SemVer t;
  t.major = p->major;
  t.minor = 34;
  switch (p->major) {
    case 5:
    case 6:
    case 7: return !(*p < t);
    default: return p->major >= 8;
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

DeviceEndpoint channel_endpoint(std::string_view method) {
  if (method == "GET")
    return DeviceEndpoint::kChannelList;
  if (method == "DELETE")
    return DeviceEndpoint::kChannelUnset;
  if (method == "PUT")
    return DeviceEndpoint::kChannelGet;
  return DeviceEndpoint::kChannelSet;
}

}  // namespace

Response DeviceApi::website_live() {
  return json_reply(200, Route::kOther, json::object{{"allowed", false}, {"mode", "capgo"}});
}

Response DeviceApi::channel_self(std::string_view method, std::string_view query,
                                 std::string_view body) const {
  const DeviceEndpoint endpoint = channel_endpoint(method);
  BodyArena arena;
  std::string scratch;
  DeviceInfo info;
  if (query_form(endpoint)) {
    // GET and DELETE carry the info object in the query string.
    arena.value.emplace_object();
    if (auto e = query_object(query, arena.value.get_object()))
      return info_error(*e, Route::kChannelSelf);
    if (auto e = read_info(endpoint, arena.value.get_object(), info))
      return info_error(*e, Route::kChannelSelf);
  } else if (auto e = parse_info(endpoint, body, scratch, info)) {
    return info_error(*e, Route::kChannelSelf);
  }
  const std::string app_id(info.app_id);
  const std::string& device_id = info.device_id;
  const bool local = stores_channel_locally(info.plugin_version);

  const auto state = control_.snapshot();
  const auto app = state->app(app_id);
  if (!app)
    return unknown_app(Route::kChannelSelf);
  const auto enabled = [&](const control::Channel& c) {
    return control::platform_enabled(c, *info.platform);
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

  if (endpoint == DeviceEndpoint::kChannelList) {
    json::array out;
    for (const auto& [n, c] : app->channels) {
      if (!(c.allow_device_self_set || c.is_public) || !enabled(c))
        continue;
      if (!(info.is_emulator ? c.allow_emulator : c.allow_device))
        continue;
      if (!(info.is_prod ? c.allow_prod : c.allow_dev))
        continue;
      out.push_back(json::object{{"id", channel_number(app_id, n)},
                                 {"name", n},
                                 {"public", c.is_public},
                                 {"allow_self_set", c.allow_device_self_set}});
    }
    return json_reply(200, Route::kChannelSelf, out);
  }
  if (endpoint == DeviceEndpoint::kChannelGet) {
    if (local) {
      if (info.channel) {
        return channel_json(
            200,
            json::object{{"channel", *info.channel}, {"status", "override"}, {"allowSet", true}});
      }
      return channel_json(200, json::object{{"channel", info.default_channel.empty()
                                                            ? std::string_view("production")
                                                            : info.default_channel},
                                            {"status", "default"}});
    }
    if (overridden != nullptr) {
      return channel_json(200, json::object{{"channel", overridden->name},
                                            {"status", "override"},
                                            {"allowSet", overridden->allow_device_self_set}});
    }
    const control::Channel* c = nullptr;
    if (!info.default_channel.empty()) {
      const auto it = app->channels.find(std::string(info.default_channel));
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
  if (endpoint == DeviceEndpoint::kChannelUnset) {  // old plugins
    if (local)
      return channel_json(200, json::object{{"status", "ok"}});
    if (current_override == nullptr ||
        (overridden != nullptr && !overridden->allow_device_self_set)) {
      return channel_json(
          200, json::object{
                   {"error", "cannot_override"},
                   {"message", "Cannot change device override current channel don't allow it"}});
    }
    return write_override(app_id, device_id, std::nullopt, "Cannot remove the override");
  }
  // POST: setChannel
  if (!info.channel)
    return channel_json(200, json::object{{"error", "missing_channel"},
                                          {"message", "Cannot find channel in body"}});
  const std::string requested(*info.channel);
  const auto it = app->channels.find(requested);
  if (it == app->channels.end()) {
    return channel_json(200, json::object{{"error", "channel_not_found"},
                                          {"message", "Cannot find channel"},
                                          {"channel", requested},
                                          {"app_id", app_id}});
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
  return write_override(app_id, device_id, next, "Cannot set the override");
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

Response stats_json(unsigned status, const json::value& v) {
  return json_reply(status, Route::kStats, v);
}

}  // namespace

Response DeviceApi::stats_now(bool post, std::string_view body,
                              std::vector<store::Checkin>& pending) const {
  if (!post)
    return stats_json(200, json::object{{"status", "ok"}});
  json::value v;  // a batch holds up to 200 events: the default resource
  if (auto e = parse_json_body(body, v, true))
    return info_error(*e, Route::kStats);
  const bool batch = v.is_array();
  if (batch && v.get_array().empty())
    return stats_json(200, json::object{{"status", "ok"}, {"results", json::array{}}});
  std::vector<const json::object*> events;
  if (batch) {
    for (const auto& e : v.get_array())
      events.push_back(e.is_object() ? &e.get_object() : nullptr);
  } else {
    events.push_back(&v.get_object());
  }
  // The first event decides the app. A bad app id is 400 for a single event (§3.3) but 200
  // for a batch, wherever it sits: the engine drops a whole batch on any other 4xx, and
  // 8.52 wants 2xx for every batch (§10 item 7); nothing of such a batch is recorded.
  std::string app_id;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const json::value* a = events[i] != nullptr ? events[i]->if_contains("app_id") : nullptr;
    const bool present = a != nullptr && a->is_string() && !a->get_string().empty();
    const bool valid = present && valid_app_id(a->get_string());
    if (!valid) {
      const std::string message =
          present ? "App ID must be a reverse domain string" : "App ID is required";
      return stats_json(batch ? 200 : 400,
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
    return unknown_app(Route::kStats);

  json::array results;
  std::optional<Response> single;
  for (std::size_t i = 0; i < events.size(); ++i) {
    DeviceInfo info;
    std::optional<InfoError> err = read_info(DeviceEndpoint::kStats, *events[i], info);
    if (!err && !app)
      err = InfoError{"on_premise_app", "On-premise app detected", "", ""};
    // A version that is not a release is recorded all the same (§10 item 8): a device keeps
    // running a deleted bundle, and builtin comes as the native version_build. Only the
    // per-release usage counters, downstream, skip names that are not releases.
    if (err) {
      if (!batch) {
        single = info_error(*err, Route::kStats);
      } else {
        results.push_back(json::object{
            {"status", "error"}, {"error", err->code}, {"message", err->message}, {"index", i}});
      }
      continue;
    }
    if (checkins_ != nullptr) {
      pending.push_back(store::Checkin{
          app_id, info.device_id, std::string(info.platform_text), std::string(info.version_name),
          std::string(info.version_build_text), std::string(info.action), "", wall_clock_ms(),
          info.plugin_version ? info.plugin_version->to_string() : std::string(),
          std::string(info.custom_id), std::string(info.default_channel)});
      if (!apply_collection(app->settings, pending.back()))
        pending.pop_back();  // dropped by stats_mode: answered as recorded
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

bool apply_collection(const control::AppSettings& settings, store::Checkin& c) {
  using control::StatsMode;
  const std::string_view a = c.action;
  const bool update_check = a == "updates";
  switch (settings.stats_mode) {
    case StatsMode::kAll: break;
    case StatsMode::kUpdatesOnly:
      if (a.starts_with("app_") || a.starts_with("webview_") || a == "ping")
        return false;
      break;
    case StatsMode::kBillingOnly:
      if (!update_check && a != "set" && a != "download_complete" && a != "set_fail" &&
          a != "update_fail" && a != "download_fail")
        return false;
      c.custom_id.clear();
      c.default_channel.clear();
      break;
  }
  const auto& keep = settings.collect;
  if (!keep.platform)
    c.platform.clear();
  if (!keep.plugin_version)
    c.plugin_version.clear();
  if (!keep.version_build)
    c.version_build.clear();
  if (!keep.custom_id)
    c.custom_id.clear();
  return true;
}

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
  json::value v;
  if (auto e = parse_json_body(body, v))
    return info_error(*e, Route::kUpdates);
  DeviceInfo info;
  if (auto e = read_info(DeviceEndpoint::kManifestSize, v.get_object(), info))
    return info_error(*e, Route::kUpdates);
  const json::array* manifest = info.manifest;
  // Entries are de-duplicated by (file_name, file_hash), as the Capgo backend does.
  std::vector<std::pair<std::string, std::string>> seen;
  json::array files;
  std::uint64_t total = 0;
  std::uint64_t known = 0;
  std::uint64_t unknown = 0;
  const std::string prefix = public_url_ + "/v1/blobs/";
  for (const auto& e : *manifest) {
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
