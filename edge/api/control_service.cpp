#include "edge/api/control_service.hpp"

#include <algorithm>
#include <unordered_map>

#include <boost/json.hpp>

#include "edge/api/access.hpp"
#include "edge/api/analytics.hpp"
#include "edge/api/device.hpp"
#include "edge/api/device_info.hpp"
#include "edge/api/reach.hpp"
#include "edge/api/sync.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"
#include "edge/core/semver.hpp"
#include "edge/core/sha256.hpp"
#include "edge/core/utf8.hpp"
#include "edge/http/http.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

namespace json = boost::json;
namespace bhttp = boost::beast::http;
using control::ControlState;
using store::StateKind;

constexpr std::string_view kPrefix = "/v1/admin/apps";

/// Set by commit() when the shared log refused a write as based on an old state; read by
/// the caller on the same thread, which follows the log and runs the write again.
thread_local bool t_conflict = false;
/// How often one write is run again after conflicts before its 503 stands.
constexpr int kConflictRetries = 8;

ControlState::Kind to_control(StateKind k) {
  switch (k) {
    case StateKind::kApp: return ControlState::Kind::kApp;
    case StateKind::kRelease: return ControlState::Kind::kRelease;
    case StateKind::kChannel: return ControlState::Kind::kChannel;
    case StateKind::kDevice: return ControlState::Kind::kDevice;
  }
  return ControlState::Kind::kApp;
}

Response json_response(unsigned status, const json::value& v) {
  return make_json_response(status, json::serialize(v));
}

Response field_error(const control::FieldError& e) {
  return error_response(400, "invalid_body",
                        e.field.empty() ? e.message : e.field + ": " + e.message);
}

// A stored document with its name added in front.
json::value named(std::string_view key_name, std::string_view key, std::string_view doc) {
  json::object o;
  o[key_name] = key;
  boost::system::error_code ec;
  json::value v = json::parse(doc, ec);
  if (!ec && v.is_object()) {
    for (auto& kv : v.get_object())
      o[kv.key()] = kv.value();
  }
  return o;
}

// Release, channel and device names are path segments: printable, no '/', bounded, and
// valid UTF-8 (they are echoed in JSON answers, to devices too).
bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128 || !valid_utf8(s))
    return false;
  for (const char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == '/' || c == 0x7f || c == '%')
      return false;
  }
  return true;
}

bool overlaps(const control::Channel& a, const control::Channel& b) {
  return (a.ios && b.ios) || (a.android && b.android) || (a.electron && b.electron);
}

}  // namespace

Response edge_refusal() {
  return error_response(409, "edge_node", "this node is an edge; publish to the origin");
}

bool valid_app_id(std::string_view id) {
  // ^[a-z0-9]+(\.[\w-]+)+$ (case-insensitive)
  std::size_t i = 0;
  while (i < id.size() && ascii_alnum(id[i]))
    ++i;
  if (i == 0)
    return false;
  int groups = 0;
  while (i < id.size()) {
    if (id[i] != '.')
      return false;
    ++i;
    const std::size_t start = i;
    while (i < id.size() && (ascii_alnum(id[i]) || id[i] == '_' || id[i] == '-'))
      ++i;
    if (i == start)
      return false;
    ++groups;
  }
  return groups > 0 && id.size() <= 255;
}

bool valid_device_id(std::string_view id) {
  if (id.size() != 36)
    return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? id[i] != '-' : !ascii_hex_digit(id[i]))
      return false;
  }
  return true;
}

ControlService::ControlService(store::StateStore& state, store::BlobStore& blobs)
    : store_(state), blobs_(blobs) {
  ControlState s;
  const auto load = [&](StateKind kind, std::string_view app_id) {
    auto docs = store_.list(kind, app_id);
    if (!docs)
      throw store::StoreError(Errc::kDatabase, "loading control state: " + docs.error().message());
    for (const auto& [key, doc] : *docs) {
      const std::string_view app = kind == StateKind::kApp ? std::string_view(key) : app_id;
      const std::string_view k =
          kind == StateKind::kApp ? std::string_view() : std::string_view(key);
      // Ignoring unknown fields: an edge stores documents as its upstream sent them.
      if (auto e = s.apply_in_place(to_control(kind), app, k, doc, control::Unknown::kIgnore)) {
        throw store::StoreError(Errc::kCorrupt,
                                "stored " + std::string(store::state_kind_name(kind)) + " " +
                                    std::string(app) + "/" + std::string(k) +
                                    " does not parse: " + e->field + ": " + e->message);
      }
    }
  };
  load(StateKind::kApp, "");
  std::vector<std::string> ids;
  for (const auto& [id, app] : s.apps())
    ids.push_back(id);
  for (const auto& id : ids) {
    load(StateKind::kRelease, id);
    load(StateKind::kChannel, id);
    load(StateKind::kDevice, id);
  }
  state_.store(std::make_shared<const ControlState>(std::move(s)));
}

Response ControlService::commit(store::StateStore::Batch& batch, unsigned status,
                                std::string body) {
  // Caller holds write_mutex_. Validate the resulting state before anything is written.
  auto current = state_.load();
  ControlState next = *current;
  for (const auto& c : batch.changes()) {
    if (auto e = next.apply_in_place(to_control(c.kind), c.app_id, c.key,
                                     c.deleted ? std::string_view() : c.value))
      return field_error(*e);
  }
  auto seq = log_->commit(batch, store_.last_seq());
  if (!seq && seq.error() == Errc::kConflict) {
    t_conflict = true;  // handle() follows the log and runs the write again
    return error_response(503, "state_conflict",
                          "another origin changed the state at the same time; retry");
  }
  if (!seq && seq.error() == Errc::kUnavailable) {
    log_available_.store(false, std::memory_order_relaxed);
    return error_response(503, "state_backend_unavailable",
                          "the state database cannot take writes now (down or failing over); "
                          "nothing was changed, retry");
  }
  log_available_.store(true, std::memory_order_relaxed);
  if (!seq && seq.error() == Errc::kStorageFull)
    return storage_full_response(507, "the change", Route::kAdmin);
  if (!seq)
    return error_response(500, "store_error",
                          "writing the change failed: " + seq.error().message());
  state_.store(std::make_shared<const ControlState>(std::move(next)));
  committed(*seq);
  Response r;
  r.status = status;
  r.set("Content-Type", "application/json");
  r.set("X-Change-Seq", std::to_string(*seq));
  r.body = std::move(body);
  return r;
}

void ControlService::committed(std::uint64_t seq) const {
  if (on_commit_)
    on_commit_(seq);
}

std::shared_ptr<const ControlState> ControlService::preview(
    const std::vector<store::Change>& changes) const {
  const std::uint64_t cursor = store_.last_seq();
  ControlState next = *state_.load();
  for (const auto& c : changes) {
    if (c.seq <= cursor)
      continue;
    // Forward compatibility: fields a newer upstream added are kept in the stored document
    // and ignored here.
    if (next.apply_in_place(to_control(c.kind), c.app_id, c.key,
                            c.deleted ? std::string_view() : c.value, control::Unknown::kIgnore))
      return nullptr;
  }
  return std::make_shared<const ControlState>(std::move(next));
}

std::shared_ptr<const ControlState> ControlService::preview(
    const store::StateStore::Snapshot& snap) {
  ControlState next;
  // Apps first: releases, channels and devices need their app.
  for (const bool apps : {true, false}) {
    for (const auto& c : snap.docs) {
      if ((c.kind == StateKind::kApp) != apps)
        continue;
      if (next.apply_in_place(to_control(c.kind), c.app_id, c.key, c.value,
                              control::Unknown::kIgnore))
        return nullptr;
    }
  }
  return std::make_shared<const ControlState>(std::move(next));
}

Result<std::uint64_t> ControlService::apply_changes(const std::vector<store::Change>& changes) {
  std::lock_guard lock(write_mutex_);
  const std::uint64_t cursor = store_.last_seq();
  auto next = preview(changes);
  if (!next)
    return Errc::kInvalidArgument;
  auto seq = store_.apply(changes);
  if (!seq)
    return seq.error();
  if (*seq != cursor) {
    state_.store(std::move(next));
    committed(*seq);
  }
  return seq;
}

Result<std::uint64_t> ControlService::apply_snapshot(const store::StateStore::Snapshot& snap) {
  std::lock_guard lock(write_mutex_);
  auto next = preview(snap);
  if (!next)
    return Errc::kInvalidArgument;
  auto seq = store_.replace(snap);
  if (!seq)
    return seq.error();
  state_.store(std::move(next));
  committed(*seq);
  return seq;
}

ControlService::~ControlService() {
  stop_following();
  drain();
}

Result<void> ControlService::catch_up() {
  if (!log_->shared())
    return {};
  std::lock_guard one(catch_up_mutex_);
  for (int round = 0; round < 1000; ++round) {
    auto step = log_->follow(store_.last_seq(), store_.epoch(), 4096);
    if (!step) {
      log_available_.store(false, std::memory_order_relaxed);
      return step.error();
    }
    log_available_.store(true, std::memory_order_relaxed);
    if (step->snapshot) {
      spdlog::warn(
          "control: local state at seq {} (epoch '{}') is behind the shared log's "
          "retained changes or of another epoch: replacing it with a snapshot at seq {}",
          store_.last_seq(), store_.epoch(), step->snapshot->seq);
      auto r = apply_snapshot(*step->snapshot);
      if (!r)
        return r.error();
      continue;
    }
    if (step->changes.empty())
      return {};
    auto r = apply_changes(step->changes);
    if (!r) {
      spdlog::error("control: applying changes {}..{} of the shared log failed: {}",
                    step->changes.front().seq, step->changes.back().seq, r.error().message());
      return r.error();
    }
  }
  return {};
}

void ControlService::start_following() {
  if (!log_->shared() || follow_thread_.joinable())
    return;
  follow_stop_ = false;
  follow_thread_ = named_thread("state-follow", [this] {
    bool down = false;
    while (!follow_stop_.load()) {
      auto r = catch_up();
      if (!r && !down)
        spdlog::warn("control: following the shared state failed ({}); retrying",
                     r.error().message());
      else if (r && down)
        spdlog::info("control: following the shared state again at seq {}", store_.last_seq());
      down = !r;
      log_->wait_change(down ? std::chrono::milliseconds(500) : std::chrono::milliseconds(1000));
    }
  });
}

void ControlService::stop_following() {
  if (!follow_thread_.joinable())
    return;
  follow_stop_ = true;
  log_->interrupt();
  follow_thread_.join();
}

void ControlService::drain() {
  {
    std::lock_guard lock(override_mutex_);
    override_stop_ = true;
  }
  override_cv_.notify_all();
  if (override_thread_.joinable())
    override_thread_.join();
}

void ControlService::async_set_device_override(std::string app_id, std::string device_id,
                                               std::optional<std::string> channel,
                                               std::function<void(bool)> done) {
  if (read_only_) {
    done(false);  // an edge mirrors its upstream's numbered changes; it writes none
    return;
  }
  {
    std::lock_guard lock(override_mutex_);
    if (!override_thread_.joinable())
      override_thread_ = named_thread("override-write", [this] { override_writer(); });
    override_queue_.push_back(
        {std::move(app_id), std::move(device_id), std::move(channel), std::move(done)});
  }
  override_cv_.notify_one();
}

void ControlService::override_writer() {
  std::vector<OverrideWrite> batch;
  while (true) {
    {
      std::unique_lock lock(override_mutex_);
      override_cv_.wait(lock, [&] { return override_stop_ || !override_queue_.empty(); });
      if (override_queue_.empty())
        return;
      batch.swap(override_queue_);
    }
    bool ok = false;
    for (int attempt = 0; attempt <= kConflictRetries; ++attempt) {
      if (attempt > 0 && !catch_up())
        break;
      t_conflict = false;
      std::lock_guard lock(write_mutex_);
      store::StateStore::Batch b;
      for (const auto& w : batch) {
        if (w.channel) {
          b.put(StateKind::kDevice, w.app_id, w.device_id,
                control::to_json(control::DeviceOverride{*w.channel}));
        } else {
          b.erase(StateKind::kDevice, w.app_id, w.device_id);
        }
      }
      ok = commit(b, 200, {}).status == 200;
      if (!t_conflict)
        break;
    }
    for (auto& w : batch)
      w.done(ok);
    batch.clear();
  }
}

Response ControlService::put_app(const std::string& app_id, std::string_view body) {
  auto p = control::parse_app(body.empty() ? std::string_view("{}") : body);
  if (auto* e = std::get_if<control::FieldError>(&p))
    return field_error(*e);
  const std::string doc = control::to_json(std::get<control::AppSettings>(p));
  const bool existed = state_.load()->app(app_id) != nullptr;
  store::StateStore::Batch b;
  b.put(StateKind::kApp, app_id, "", doc);
  return commit(b, existed ? 200 : 201, json::serialize(named("app_id", app_id, doc)));
}

namespace {

constexpr std::size_t kMaxReleaseSecretBytes = 1024;

bool is_hex(std::string_view s, std::size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) { return hex_value(c) >= 0; });
}

bool base64_part(std::string_view s) {
  if (s.empty())
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return ascii_alnum(c) || c == '+' || c == '/' || c == '=' || c == '-' || c == '_';
  });
}

// capgo-protocol.md §2.6 / §9.3: "<base64 iv>:<base64 RSA-encrypted AES key>".
bool valid_session_key(std::string_view k) {
  const auto colon = k.find(':');
  return colon != std::string_view::npos && base64_part(k.substr(0, colon)) &&
         base64_part(k.substr(colon + 1));
}

std::string quote_value(std::string_view s) {
  return "'" + utf8_quote(s, 80) + "'";
}

// The files a release serves and how devices verify them: what may not change once
// published under a version name (devices cache a version by its name, §2.4 item 6).
bool same_files(const control::ReleaseDoc& a, const control::ReleaseDoc& b) {
  if (a.zip != b.zip || a.checksum != b.checksum || a.session_key != b.session_key ||
      a.manifest.size() != b.manifest.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.manifest.size(); ++i) {
    const auto& x = a.manifest[i];
    const auto& y = b.manifest[i];
    if (x.file_name != y.file_name || x.file_hash != y.file_hash || x.blob != y.blob)
      return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> ControlService::native_floor_warning(const std::string& app_id,
                                                                const std::string& version) const {
  const auto target = SemVer::parse(version);
  const auto app = state_.load()->app(app_id);
  if (!target || !app || checkins_ == nullptr)
    return std::nullopt;
  std::vector<std::string> channels;
  for (const auto& [name, c] : app->channels) {
    if (c.disable_auto_update_under_native)
      channels.push_back(name);
  }
  if (channels.empty())
    return std::nullopt;
  auto builds = checkins_->native_builds(app_id, 200000);
  if (!builds)
    return std::nullopt;
  std::uint64_t devices = 0;
  std::optional<SemVer> highest;
  for (const auto& [text, count] : *builds) {
    const auto build = coerce_version_build(text);
    if (!build || *target > *build)
      continue;
    devices += count;
    if (!highest || *highest < *build)
      highest = *build;
  }
  if (devices == 0)
    return std::nullopt;
  std::string names;
  for (const auto& c : channels)
    names += (names.empty() ? "" : ", ") + c;
  return "version " + version + " sorts at or below the native version " + highest->to_string() +
         " that " + std::to_string(devices) + " device(s) of this app report: channel(s) " + names +
         " have disable_auto_update_under_native on and would answer those devices "
         "disable_auto_update_under_native instead of this update";
}

Response ControlService::put_release(const control::AppState& app, const std::string& name,
                                     std::string_view body,
                                     const std::optional<std::string>& floor_warning) {
  auto p = control::parse_release(body);
  if (auto* e = std::get_if<control::FieldError>(&p))
    return field_error(*e);
  auto& doc = std::get<control::ReleaseDoc>(p);
  // Every referenced blob must be stored here already: a device must never be offered a
  // download that 404s.
  const auto missing = [&](const Sha256& id, const std::string& what) {
    return error_response(
        422, "missing_blob",
        what + " blob " + id.hex() +
            " is not stored on this node; upload it first with PUT /v1/admin/blobs");
  };
  // Each blob's recipe is pinned in the document (recipe_sha256), computed here from the
  // stored recipe whatever the body said: edges check the recipes they fetch against it.
  doc.recipe_sha256.clear();
  const auto pin = [&](const Sha256& id) {
    auto recipe = blobs_.recipe(id);
    if (recipe)
      doc.recipe_sha256[id] = (*recipe)->digest();
    return recipe.has_value();
  };
  if (doc.zip && !pin(*doc.zip))
    return missing(*doc.zip, "zip");
  for (std::size_t i = 0; i < doc.manifest.size(); ++i) {
    if (!pin(doc.manifest[i].blob)) {
      return missing(doc.manifest[i].blob,
                     "manifest[" + std::to_string(i) + "] (" + doc.manifest[i].file_name + ")");
    }
  }
  // Publish-time checks (capgo-protocol.md §9.2, §9.3): what devices would refuse is
  // refused here, naming the field, instead of failing on every device.
  if (!doc.manifest.empty()) {
    // Plugin 8.52 reads at most 16 MiB of JSON (§10 item 5): a bigger /updates answer would
    // fail on every device, gzip or not.
    const std::uint64_t bytes = largest_update_answer_bytes(doc, name, kPublicUrlAllowance);
    if (bytes > kMaxJsonAnswerBytes) {
      return error_response(
          422, "manifest_too_large",
          "manifest: " + std::to_string(doc.manifest.size()) + " files make a /updates answer of " +
              std::to_string(bytes) + " bytes, over the " + std::to_string(kMaxJsonAnswerBytes) +
              " (16 MiB) a device reads; ship fewer, larger files or the zip alone");
    }
  }
  json::array warnings;
  // An RSA-2048 session key is ~370 characters and an encrypted checksum 344 (base64) or 512
  // (hex): anything far past that is not one, and every /updates answer would carry it.
  for (const auto& [field, value] :
       {std::pair{"session_key", &doc.session_key}, {"checksum", &doc.checksum}}) {
    if (value->size() > kMaxReleaseSecretBytes) {
      return error_response(400, std::string("invalid_") + field,
                            std::string(field) + ": at most " +
                                std::to_string(kMaxReleaseSecretBytes) + " bytes, got " +
                                std::to_string(value->size()));
    }
  }
  if (!doc.session_key.empty() && !valid_session_key(doc.session_key)) {
    return error_response(400, "invalid_session_key",
                          "session_key: expected '<base64 iv>:<base64 encrypted key>' (two "
                          "non-empty base64 parts joined by ':'), got " +
                              quote_value(doc.session_key));
  }
  const bool encrypted = !doc.session_key.empty();
  if (encrypted) {
    // The checksum of an encrypted zip is the publisher's encrypted digest: kept as given.
    if (doc.zip && doc.checksum.empty()) {
      return error_response(400, "invalid_checksum",
                            "checksum: an encrypted zip needs the encrypted checksum its "
                            "publisher computed; plugin 8.51.23 refuses a zip without one");
    }
  } else if (!doc.checksum.empty()) {
    if (is_hex(doc.checksum, 64)) {
      doc.checksum = ascii_lower(doc.checksum);  // devices compare case-sensitively (§2.5)
      if (doc.zip && doc.checksum != doc.zip->hex()) {
        return error_response(422, "checksum_mismatch",
                              "checksum: " + doc.checksum + " is not the SHA-256 of zip blob " +
                                  doc.zip->hex() + "; every device would refuse the download");
      }
    } else if (is_hex(doc.checksum, 8)) {
      doc.checksum = ascii_lower(doc.checksum);
      warnings.push_back(json::value(
          "checksum: " + doc.checksum +
          " is a CRC32 (8 hex digits) from old tooling: plugins before 8.51.23 verify it, "
          "8.51.23 and later refuse it; leave checksum out to serve the zip's SHA-256"));
    } else {
      return error_response(400, "invalid_checksum",
                            "checksum: expected the zip's SHA-256 (64 hex digits) or a legacy "
                            "CRC32 (8 hex digits), got " +
                                quote_value(doc.checksum));
    }
  } else if (doc.zip) {
    doc.checksum = doc.zip->hex();
  }
  // The app's registered key (bundle-edge-ctl app set-key): devices that ship it decrypt
  // with it, so a bundle encrypted under another key would fail on every one of them.
  const std::string& app_key = app.settings.key_id;
  const bool has_files = doc.zip || !doc.manifest.empty();
  if (!app_key.empty() && encrypted && !doc.key_id.empty() && doc.key_id != app_key) {
    return error_response(
        422, "key_id_mismatch",
        "key_id: the release is encrypted for key " + doc.key_id + " but app " + app.app_id +
            " ships key " + app_key +
            "; its devices would refuse it (encrypt with the app's private key, or register "
            "the new public key with `bundle-edge-ctl app set-key` first)");
  }
  if (!app_key.empty() && encrypted && doc.key_id.empty()) {
    warnings.push_back(
        json::value("key_id: not given, so it was not checked against the app's "
                    "key " +
                    app_key + "; devices of another key would fail to decrypt"));
  }
  if (!app_key.empty() && !encrypted && has_files) {
    warnings.push_back(json::value(
        "session_key: app " + app.app_id + " ships public key " + app_key +
        ": devices with it refuse an unencrypted bundle (session_key_required); publish with "
        "--encrypt"));
  }
  const auto existing = app.releases.find(name);
  if (existing != app.releases.end()) {
    const control::ReleaseDoc& old = existing->second;
    const bool had_files = old.zip || !old.manifest.empty();
    if (had_files && !same_files(old, doc)) {
      return error_response(
          409, "release_exists",
          "release '" + name + "' already exists with other files (zip " +
              (old.zip ? old.zip->hex().substr(0, 12) : std::string("none")) +
              "): devices keep a version by its name, so publish the change as a new version");
    }
  }
  const std::string text = control::to_json(doc);
  json::value out = named("name", name, text);
  if (floor_warning)
    warnings.push_back(json::value(*floor_warning));
  out.get_object()["warnings"] = std::move(warnings);
  if (existing != app.releases.end() && control::to_json(existing->second) == text) {
    out.get_object()["unchanged"] = true;  // the same publish again: nothing to write
    return json_response(200, out);
  }
  out.get_object()["unchanged"] = false;
  store::StateStore::Batch b;
  b.put(StateKind::kRelease, app.app_id, name, text);
  return commit(b, existing != app.releases.end() ? 200 : 201, json::serialize(out));
}

Response ControlService::delete_release(const control::AppState& app, const std::string& name) {
  const auto it = app.releases.find(name);
  if (it == app.releases.end()) {
    return error_response(404, "not_found", "no release '" + name + "' in app " + app.app_id);
  }
  // Capgo keeps deleted versions as rows with deleted=true; channels pointing at them stop
  // resolving (capgo-protocol.md §5 step 3).
  control::ReleaseDoc doc = it->second;
  doc.deleted = true;
  const std::string text = control::to_json(doc);
  store::StateStore::Batch b;
  b.put(StateKind::kRelease, app.app_id, name, text);
  return commit(b, 200, json::serialize(named("name", name, text)));
}

Response ControlService::put_channel(const control::AppState& app, const std::string& name,
                                     std::string_view body) {
  auto p = control::parse_channel(body);
  if (auto* e = std::get_if<control::FieldError>(&p))
    return field_error(*e);
  auto& c = std::get<control::Channel>(p);
  c.name = name;
  const auto release_ok = [&](const std::string& r) {
    const auto it = app.releases.find(r);
    return it != app.releases.end() && !it->second.deleted;
  };
  if (!c.release.empty() && c.release != "builtin" && !release_ok(c.release)) {
    return error_response(
        422, "unknown_release",
        "release: '" + c.release + "' is not a live release of app " + app.app_id);
  }
  if (c.release == "builtin")
    c.release.clear();
  if (c.rollout) {
    if (!release_ok(c.rollout->release)) {
      return error_response(422, "unknown_release",
                            "rollout.release: '" + c.rollout->release +
                                "' is not a live release of app " + app.app_id);
    }
    if (c.rollout->id.empty())
      c.rollout->id = name + ":" + c.rollout->release;
  }
  store::StateStore::Batch b;
  const std::string text = control::to_json(c);
  b.put(StateKind::kChannel, app.app_id, name, text);
  // At most one public channel per platform: a new public channel demotes the ones it
  // overlaps (as Capgo does).
  json::array demoted;
  if (c.is_public) {
    for (const auto& [other_name, other] : app.channels) {
      if (other_name == name || !other.is_public || !overlaps(c, other))
        continue;
      control::Channel d = other;
      d.is_public = false;
      b.put(StateKind::kChannel, app.app_id, other_name, control::to_json(d));
      demoted.push_back(json::value(other_name));
    }
  }
  json::value out = named("name", name, text);
  out.get_object()["demoted"] = std::move(demoted);
  return commit(b, app.channels.contains(name) ? 200 : 201, json::serialize(out));
}

namespace {

// The release an edge moves from when `name` is published: the highest other live release
// with files that sorts below it (semver precedence; names that are not semver sort by
// name, below every semver name).
std::optional<std::string> previous_release(const control::AppState& app, const std::string& name) {
  const auto key = [](const std::string& n) {
    auto v = SemVer::parse(n);
    return std::pair<std::optional<SemVer>, std::string>(v ? std::optional(*v) : std::nullopt, n);
  };
  const auto below = [](const auto& a, const auto& b) {  // a sorts below b
    if (a.first.has_value() != b.first.has_value())
      return !a.first.has_value();
    if (a.first && *a.first != *b.first)
      return *a.first < *b.first;
    return a.second < b.second;
  };
  const auto self = key(name);
  std::optional<std::pair<std::optional<SemVer>, std::string>> best;
  for (const auto& [n, doc] : app.releases) {
    if (n == name || doc.deleted || (!doc.zip && doc.manifest.empty()))
      continue;
    auto k = key(n);
    if (below(k, self) && (!best || below(*best, k)))
      best = std::move(k);
  }
  if (!best)
    return std::nullopt;
  return best->second;
}

}  // namespace

Response ControlService::release_files(const control::AppState& app, const std::string& name,
                                       std::string_view query) const {
  const auto it = app.releases.find(name);
  if (it == app.releases.end())
    return error_response(404, "not_found", "no release '" + name + "' in app " + app.app_id);
  std::optional<std::string> base = previous_release(app, name);
  for (const auto& param : parse_query(query)) {
    if (param.first != "base") {
      return error_response(
          400, "invalid_query_parameters",
          "unknown parameter '" + param.first.substr(0, 64) + "' (expected base)");
    }
    if (param.second.empty()) {
      base.reset();  // base= : no comparison
    } else if (!app.releases.contains(param.second) || param.second == name) {
      return error_response(
          400, "invalid_query_parameters",
          "base: no other release '" + param.second.substr(0, 128) + "' in app " + app.app_id);
    } else {
      base = param.second;
    }
  }
  // The chunks of a release's files; a blob whose recipe is not here (an edge that has not
  // filled it) is listed with stored: false and adds no chunks.
  struct Files {
    json::array list;
    std::unordered_map<Sha256, std::uint32_t, Sha256Hash> chunks;
    std::uint64_t size = 0;
  };
  const auto files_of = [&](const control::ReleaseDoc& doc) {
    Files f;
    const auto add = [&](std::string_view kind, std::string_view file_name, const Sha256& blob) {
      json::object o{{"kind", kind}, {"file_name", file_name}, {"blob", blob.hex()}};
      auto recipe = blobs_.recipe(blob);
      o["stored"] = recipe.has_value();
      if (recipe) {
        o["size"] = (*recipe)->size;
        o["chunks"] = (*recipe)->chunks.size();
        f.size += (*recipe)->size;
        for (const auto& c : (*recipe)->chunks)
          f.chunks.emplace(c.id, c.length);
      }
      f.list.push_back(std::move(o));
    };
    if (doc.zip)
      add("zip", "", *doc.zip);
    for (const auto& m : doc.manifest)
      add("manifest", m.file_name, m.blob);
    return f;
  };
  Files self = files_of(it->second);
  std::unordered_map<Sha256, std::uint32_t, Sha256Hash> base_chunks;
  if (base)
    base_chunks = files_of(app.releases.at(*base)).chunks;
  std::uint64_t chunk_bytes = 0, shared = 0, shared_bytes = 0;
  for (const auto& [id, size] : self.chunks) {
    chunk_bytes += size;
    if (base_chunks.contains(id)) {
      ++shared;
      shared_bytes += size;
    }
  }
  const control::ReleaseDoc& doc = it->second;
  json::object out{{"app_id", app.app_id},
                   {"release", name},
                   {"base", base ? json::value(*base) : json::value(nullptr)},
                   {"encrypted", !doc.session_key.empty()},
                   {"files", std::move(self.list)},
                   {"size", self.size},
                   {"chunks", self.chunks.size()},
                   {"chunk_bytes", chunk_bytes},
                   {"shared_chunks", shared},
                   {"shared_bytes", shared_bytes},
                   {"new_chunks", self.chunks.size() - shared},
                   {"new_bytes", chunk_bytes - shared_bytes}};
  return json_response(200, out);
}

Response ControlService::device_index(const control::AppState& app, std::string_view query) const {
  if (checkins_ == nullptr)
    return error_response(404, "not_found", "check-ins are not kept on this node");
  std::string release, platform, channel, cursor, custom_id;
  std::optional<std::int64_t> since;
  std::size_t limit = 100;
  for (const auto& param : parse_query(query)) {
    // Named references, not a structured binding: clang 14 cannot capture those.
    const std::string& key = param.first;
    const std::string& value = param.second;
    const auto bad = [&](const std::string& why) {
      return error_response(400, "invalid_query_parameters", key + ": " + why);
    };
    if (key == "release") {
      release = value;
    } else if (key == "platform") {
      if (!control::parse_platform(value))
        return bad("expected ios, android or electron, got '" + value.substr(0, 64) + "'");
      platform = value;
    } else if (key == "channel") {
      if (!app.channels.contains(value))
        return bad("no channel '" + value.substr(0, 128) + "' in app " + app.app_id);
      channel = value;
    } else if (key == "custom_id") {
      if (value.empty() || value.size() > 36)
        return bad("expected a prefix of 1-36 bytes, got " + std::to_string(value.size()));
      custom_id = value;
    } else if (key == "cursor") {
      if (value.size() > 200)
        return bad("not a cursor this node gave");
      cursor = value;
    } else if (key == "seen_since" || key == "limit") {
      std::uint64_t n = 0;
      if (!http::parse_u64(value, n) || n > std::uint64_t{INT64_MAX})
        return bad("expected a non-negative integer, got '" + value.substr(0, 64) + "'");
      if (key == "limit" && (n < 1 || n > 1000))
        return bad("expected 1..1000, got " + value);
      if (key == "limit")
        limit = static_cast<std::size_t>(n);
      else
        since = static_cast<std::int64_t>(n);
    } else {
      return error_response(400, "invalid_query_parameters",
                            "unknown parameter '" + key.substr(0, 64) +
                                "' (expected release, platform, channel, custom_id, seen_since, "
                                "cursor, limit)");
    }
  }
  // The channel the decision would resolve for the device from what it last sent: its
  // override, its defaultChannel, or the first public channel for its platform (§5).
  const control::AppStateView view(app);
  const auto resolve = [&](const store::Checkin& c) -> control::ResolvedChannel {
    const auto p = control::parse_platform(c.platform);
    if (!p)
      return {};
    return control::resolve_channel(c.device_id, *p, c.default_channel, view);
  };
  auto page = checkins_->devices(app.app_id, cursor, limit, 200'000, [&](const store::Checkin& c) {
    if (!release.empty() && c.version_name != release)
      return false;
    if (!platform.empty() && c.platform != platform)
      return false;
    if (since && c.time_ms < *since)
      return false;
    if (!custom_id.empty() && !c.custom_id.starts_with(custom_id))
      return false;
    if (channel.empty())
      return true;
    const auto r = resolve(c);
    return r.channel != nullptr && r.channel->name == channel;
  });
  if (!page)
    return store_read_error(page.error(), "reading devices");
  const auto or_null = [](const std::string& s) {
    return s.empty() ? json::value(nullptr) : json::value(s);
  };
  json::array devices;
  for (const auto& c : page->devices) {
    const auto r = resolve(c);
    const auto* o = app.overrides.find(c.device_id);
    devices.push_back(json::object{
        {"device_id", c.device_id},
        {"last_checkin_ms", c.time_ms},
        {"last_action", c.action},
        {"release", c.version_name},
        {"native_version", c.version_build},
        {"platform", c.platform},
        {"plugin_version", or_null(c.plugin_version)},
        {"custom_id", or_null(c.custom_id)},
        {"default_channel", or_null(c.default_channel)},
        {"override", o != nullptr ? json::value(*o) : nullptr},
        {"channel", r.channel != nullptr ? json::value(r.channel->name) : json::value(nullptr)},
        {"channel_reason", control::to_string(r.reason)}});
  }
  return json_response(200, json::object{{"app_id", app.app_id},
                                         {"devices", std::move(devices)},
                                         {"next", page->next.empty() ? json::value(nullptr)
                                                                     : json::value(page->next)}});
}

Response ControlService::override_page(const control::AppState& app, std::string_view query) const {
  // Paged as device_index is (cursor, limit, "next"): a million overrides would be one
  // answer of tens of MB otherwise. The cursor is the last device id of the page before.
  std::string cursor;
  std::size_t limit = 100;
  for (const auto& [key, value] : parse_query(query)) {
    if (key == "cursor") {
      if (!value.empty() && !valid_device_id(value)) {
        return error_response(400, "invalid_query_parameters",
                              "cursor: not a cursor this node gave");
      }
      cursor = value;
    } else if (key == "limit") {
      std::uint64_t n = 0;
      if (!http::parse_u64(value, n) || n < 1 || n > 1000) {
        return error_response(400, "invalid_query_parameters",
                              "limit: expected 1..1000, got '" + value.substr(0, 64) + "'");
      }
      limit = static_cast<std::size_t>(n);
    } else {
      return error_response(
          400, "invalid_query_parameters",
          "unknown parameter '" + key.substr(0, 64) + "' (expected cursor, limit)");
    }
  }
  // One more than asked: whether there is a next page.
  auto page = store_.list_after(StateKind::kDevice, app.app_id, cursor, limit + 1);
  if (!page)
    return error_response(500, "store_error", "reading overrides: " + page.error().message());
  json::array devices;
  std::string last;
  for (std::size_t i = 0; i < page->size() && i < limit; ++i) {
    const auto& id = (*page)[i].first;
    last = id;
    // The published state, as every other read answers (a write committing right now
    // shows on the next read).
    if (const std::string* ch = app.overrides.find(id))
      devices.push_back(json::object{{"device_id", id}, {"channel", *ch}});
  }
  const bool more = page->size() > limit;
  return json_response(200,
                       json::object{{"app_id", app.app_id},
                                    {"devices", std::move(devices)},
                                    {"next", more ? json::value(last) : json::value(nullptr)}});
}

std::vector<ChannelVersion> ControlService::channel_history(const std::string& app_id,
                                                            const std::string& name,
                                                            std::size_t limit) const {
  // The store's per-channel history, not the changelog: device overrides and other
  // channels' writes cannot push a channel's versions out.
  std::vector<ChannelVersion> out;
  auto versions = store_.channel_history(app_id, name, limit);
  if (!versions) {
    spdlog::error("channel history of {} {}: {}", app_id, name, versions.error().message());
    return out;
  }
  for (auto& c : *versions)
    out.push_back(ChannelVersion{c.seq, c.deleted, std::move(c.value)});
  return out;
}

Response ControlService::channel_action(const control::AppState& app, const std::string& name,
                                        std::string_view action, bhttp::verb method,
                                        std::string_view body) {
  const bool get = method == bhttp::verb::get || method == bhttp::verb::head;
  if (action == "history") {
    if (!get)
      return method_not_allowed("GET");
    json::array entries;
    const auto versions = channel_history(app.app_id, name, 200);
    std::vector<std::uint64_t> seqs;
    for (const auto& v : versions)
      seqs.push_back(v.seq);
    const auto authors =
        access_ != nullptr ? access_->authors(seqs) : std::map<std::uint64_t, Access::Author>{};
    for (const auto& v : versions) {
      json::object e{{"seq", v.seq}, {"deleted", v.deleted}};
      // Who and when, from the audit log (null for changes older than it, or made in the
      // same write as another, such as a demotion).
      if (const auto a = authors.find(v.seq); a != authors.end()) {
        e["by"] = a->second.token;
        e["by_kind"] = a->second.actor_kind;
        e["time_ms"] = a->second.time_ms;
      } else {
        e["by"] = nullptr;
        e["by_kind"] = nullptr;
        e["time_ms"] = nullptr;
      }
      if (!v.deleted) {
        boost::system::error_code ec;
        json::value doc = json::parse(v.doc, ec);
        if (!ec && doc.is_object()) {
          const auto& o = doc.get_object();
          e["release"] = o.contains("release") ? o.at("release") : json::value(nullptr);
          e["rollout"] = o.contains("rollout") ? o.at("rollout") : json::value(nullptr);
          e["doc"] = std::move(doc);
        }
      }
      entries.push_back(std::move(e));
    }
    return json_response(
        200,
        json::object{{"app_id", app.app_id}, {"channel", name}, {"history", std::move(entries)}});
  }
  if (action != "rollback") {
    return error_response(404, "not_found",
                          "no channel action '" + std::string(action.substr(0, 64)) +
                              "' (expected history or rollback)");
  }
  if (method != bhttp::verb::post)
    return method_not_allowed("POST");
  if (!body.empty() && body.find_first_not_of(" \t\r\n{}") != std::string_view::npos) {
    return error_response(400, "invalid_json_body",
                          "rollback takes no fields: it restores the previous release");
  }
  const auto current = app.channels.find(name);
  if (current == app.channels.end())
    return error_response(404, "not_found", "no channel '" + name + "' in app " + app.app_id);
  // The newest earlier version of the channel that pointed at another release. The
  // rollout ends: a rollback is for a release that hurts, and a rollout restored with it
  // could still hand that release to some devices.
  const control::Channel& now = current->second;
  for (const auto& v : channel_history(app.app_id, name, 10'000)) {
    if (v.deleted)
      break;  // the channel did not exist before this: nothing older to go back to
    auto parsed = control::parse_channel(v.doc, control::Unknown::kIgnore);
    auto* prev = std::get_if<control::Channel>(&parsed);
    if (prev == nullptr)
      continue;
    if (prev->release == now.release)
      continue;
    control::Channel back = now;  // the channel's settings stay; where it points goes back
    back.release = prev->release;
    back.rollout.reset();
    std::string restored = control::to_json(back);
    Response r = put_channel(app, name, restored);
    if (r.status >= 400)
      return r;  // e.g. the previous release was deleted since (422 naming it)
    boost::system::error_code ec;
    json::value out = json::parse(r.body, ec);
    if (!ec && out.is_object()) {
      out.get_object()["rolled_back_from"] =
          now.release.empty() ? json::value("builtin") : json::value(now.release);
      out.get_object()["rolled_back_to"] =
          back.release.empty() ? json::value("builtin") : json::value(back.release);
      out.get_object()["restored_seq"] = v.seq;
      out.get_object()["seq"] = change_seq_of(r);
      r.body = json::serialize(out);
    }
    return r;
  }
  return error_response(409, "no_previous_release",
                        "channel '" + name + "' has pointed nowhere else in the retained history");
}

Response ControlService::put_device(const control::AppState& app, const std::string& device,
                                    std::string_view body) {
  auto p = control::parse_device(body);
  if (auto* e = std::get_if<control::FieldError>(&p))
    return field_error(*e);
  const auto& d = std::get<control::DeviceOverride>(p);
  if (!app.channels.contains(d.channel)) {
    return error_response(422, "unknown_channel",
                          "channel: '" + d.channel + "' is not a channel of app " + app.app_id);
  }
  const std::string text = control::to_json(d);
  store::StateStore::Batch b;
  b.put(StateKind::kDevice, app.app_id, device, text);
  return commit(b, app.overrides.contains(device) ? 200 : 201,
                json::serialize(named("device_id", device, text)));
}

Response ControlService::handle(const bhttp::request_header<>& req, std::string_view path,
                                std::string_view body) {
  // A write validated against a state another origin has since moved past is refused by the
  // shared log (kConflict, nothing written): follow the log and validate it again.
  for (int attempt = 0;; ++attempt) {
    t_conflict = false;
    Response r = handle_once(req, path, body);
    if (!t_conflict || attempt == kConflictRetries)
      return r;
    if (!catch_up())
      return error_response(503, "state_backend_unavailable",
                            "the state database cannot be read now; nothing was changed, retry");
  }
}

Response ControlService::handle_once(const bhttp::request_header<>& req, std::string_view path,
                                     std::string_view body) {
  std::vector<std::string> segs;
  for (std::string_view rest = path.substr(kPrefix.size()); !rest.empty();) {
    if (rest.front() == '/') {
      rest.remove_prefix(1);
      continue;
    }
    const auto slash = rest.find('/');
    segs.emplace_back(rest.substr(0, slash));
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  }
  const auto method = req.method();
  const bool get = method == bhttp::verb::get || method == bhttp::verb::head;
  const bool put = method == bhttp::verb::put;
  const bool del = method == bhttp::verb::delete_;
  if (!get && read_only_)
    return edge_refusal();
  // A release's native-floor warning reads device rows of the check-in store: before the
  // write lock, which overrides from /channel_self and other admin writes wait for.
  std::optional<std::string> floor_warning;
  if (put && segs.size() == 3 && segs[1] == "releases")
    floor_warning = native_floor_warning(segs[0], segs[2]);
  std::unique_lock lock(write_mutex_, std::defer_lock);
  if (!get)
    lock.lock();  // writes read-validate-commit under one lock
  const auto state = state_.load();

  if (segs.empty()) {
    if (!get)
      return method_not_allowed("GET");
    json::array apps;
    for (const auto& [id, app] : state->apps())
      apps.push_back(named("app_id", id, control::to_json(app->settings)));
    return json_response(200, json::object{{"apps", std::move(apps)}});
  }
  const std::string& app_id = segs[0];
  if (!valid_app_id(app_id)) {
    return error_response(
        400, "invalid_app_id",
        "app id must be reverse-domain like com.example.app, got '" + app_id.substr(0, 100) + "'");
  }
  const auto app = state->app(app_id);
  if (segs.size() == 1) {
    if (put)
      return put_app(app_id, body);
    if (!get)
      return method_not_allowed("GET, PUT");
    if (!app)
      return error_response(404, "not_found", "no app " + app_id);
    return json_response(200, named("app_id", app_id, control::to_json(app->settings)));
  }
  if (!app) {
    return error_response(404, "not_found",
                          "no app " + app_id + "; create it with PUT /v1/admin/apps/" + app_id);
  }
  const std::string& coll = segs[1];
  if (coll == "device_index" && segs.size() == 2) {
    if (!get)
      return method_not_allowed("GET");
    const std::string_view target(req.target().data(), req.target().size());
    const auto q = target.find('?');
    return device_index(*app,
                        q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  }
  if (coll == "stats" && segs.size() == 2) {
    if (!get)
      return method_not_allowed("GET");
    if (checkins_ == nullptr)
      return error_response(404, "not_found", "check-ins are not kept on this node");
    const std::string_view target(req.target().data(), req.target().size());
    const auto q = target.find('?');
    return analytics_response(
        *checkins_, *app, q == std::string_view::npos ? std::string_view() : target.substr(q + 1),
        wall_clock_ms());
  }
  if ((coll == "plugins" || coll == "reach") && segs.size() == 2) {
    // Both read the app's device index (bounded: kMaxReachScan rows).
    if (!get)
      return method_not_allowed("GET");
    if (checkins_ == nullptr)
      return error_response(404, "not_found", "check-ins are not kept on this node");
    return coll == "plugins" ? plugins_response(*checkins_, *app)
                             : reach_response(*checkins_, *app, wall_clock_ms());
  }
  if (coll == "channels" && segs.size() == 4)
    return channel_action(*app, segs[2], segs[3], method, body);
  if (coll == "releases" && segs.size() == 4 && segs[3] == "files") {
    if (!get)
      return method_not_allowed("GET");
    const std::string_view target(req.target().data(), req.target().size());
    const auto q = target.find('?');
    return release_files(*app, segs[2],
                         q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  }
  if (segs.size() > 3 || (coll != "releases" && coll != "channels" && coll != "devices")) {
    return error_response(404, "not_found",
                          "no admin route for " + std::string(path.substr(0, 200)));
  }
  if (segs.size() == 2) {
    if (!get)
      return method_not_allowed("GET");
    json::array items;
    if (coll == "releases") {
      for (const auto& [n, d] : app->releases)
        items.push_back(named("name", n, control::to_json(d)));
    } else if (coll == "channels") {
      for (const auto& [n, c] : app->channels)
        items.push_back(named("name", n, control::to_json(c)));
    } else {
      const std::string_view target(req.target().data(), req.target().size());
      const auto q = target.find('?');
      return override_page(*app,
                           q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
    }
    return json_response(200, json::object{{coll, std::move(items)}});
  }
  std::string key = segs[2];
  if (coll == "devices") {
    key = ascii_lower(key);
    if (!valid_device_id(key)) {
      return error_response(400, "invalid_device_id",
                            "device id must be a UUID, got '" + key.substr(0, 100) + "'");
    }
  } else if (!valid_name(key)) {
    return error_response(400, "invalid_name",
                          coll.substr(0, coll.size() - 1) +
                              " name must be 1-128 printable UTF-8 characters without '/' or '%'");
  }
  if (coll == "releases") {
    if (put)
      return put_release(*app, key, body, floor_warning);
    if (del)
      return delete_release(*app, key);
    if (!get)
      return method_not_allowed("GET, PUT, DELETE");
    const auto it = app->releases.find(key);
    if (it == app->releases.end())
      return error_response(404, "not_found", "no release '" + key + "' in app " + app_id);
    return json_response(200, named("name", key, control::to_json(it->second)));
  }
  if (coll == "channels") {
    if (put)
      return put_channel(*app, key, body);
    if (del) {
      if (!app->channels.contains(key))
        return error_response(404, "not_found", "no channel '" + key + "' in app " + app_id);
      store::StateStore::Batch b;
      b.erase(StateKind::kChannel, app_id, key);
      return commit(b, 200, json::serialize(json::object{{"name", key}, {"deleted", true}}));
    }
    if (!get)
      return method_not_allowed("GET, PUT, DELETE");
    const auto it = app->channels.find(key);
    if (it == app->channels.end())
      return error_response(404, "not_found", "no channel '" + key + "' in app " + app_id);
    return json_response(200, named("name", key, control::to_json(it->second)));
  }
  // devices
  if (put)
    return put_device(*app, key, body);
  if (del) {
    if (!app->overrides.contains(key))
      return error_response(404, "not_found", "no override for device " + key);
    store::StateStore::Batch b;
    b.erase(StateKind::kDevice, app_id, key);
    return commit(b, 200, json::serialize(json::object{{"device_id", key}, {"deleted", true}}));
  }
  if (!get)
    return method_not_allowed("GET, PUT, DELETE");
  const std::string* channel = app->overrides.find(key);
  json::object out{{"device_id", key},
                   {"channel", channel == nullptr ? json::value(nullptr) : json::value(*channel)},
                   {"last_checkin", nullptr}};
  if (checkins_ != nullptr) {
    const auto event = [](const store::Checkin& c) {
      return json::object{{"time_ms", c.time_ms},
                          {"platform", c.platform},
                          {"version_name", c.version_name},
                          {"version_build", c.version_build},
                          {"plugin_version", c.plugin_version},
                          {"custom_id", c.custom_id},
                          {"default_channel", c.default_channel},
                          {"action", c.action},
                          {"decision", c.decision}};
    };
    if (auto last = checkins_->last(app_id, key); last && *last)
      out["last_checkin"] = event(**last);
    // The device's timeline: its last events, newest first (checkins.timeline_events).
    json::array timeline;
    if (auto t = checkins_->timeline(app_id, key, SIZE_MAX)) {
      for (const auto& c : *t)
        timeline.push_back(event(c));
    } else {
      return store_read_error(t.error(), "reading the timeline");
    }
    out["timeline"] = std::move(timeline);
  }
  return json_response(200, out);
}

}  // namespace edge::api
