#include "edge/control/model.hpp"

#include <algorithm>
#include <tuple>

#include <boost/json.hpp>

#include "edge/control/json_parse.hpp"

namespace edge::control {
namespace {

namespace json = boost::json;

// Reads the fields of one JSON object, remembering which were consumed so that leftovers
// can be reported as unknown.
class Fields {
 public:
  Fields(const json::object& obj, std::string prefix, Unknown unknown)
      : obj_(obj), prefix_(std::move(prefix)), allow_unknown_(unknown == Unknown::kIgnore) {}

  const json::value* take(std::string_view name) {
    seen_.emplace_back(name);
    const auto it = obj_.find(name);
    return it == obj_.end() ? nullptr : &it->value();
  }
  std::optional<FieldError> boolean(std::string_view name, bool& out) {
    if (const auto* v = take(name)) {
      if (!v->is_bool())
        return error(name, "expected true or false");
      out = v->get_bool();
    }
    return std::nullopt;
  }
  // A string, or null (-> "") when nullable.
  std::optional<FieldError> string(std::string_view name, std::string& out, bool nullable) {
    if (const auto* v = take(name)) {
      if (v->is_null() && nullable) {
        out.clear();
      } else if (!v->is_string()) {
        return error(name, nullable ? "expected a string or null" : "expected a string");
      } else {
        out = std::string(v->get_string());
      }
    }
    return std::nullopt;
  }
  std::optional<FieldError> unknown() const {
    if (allow_unknown_)
      return std::nullopt;
    for (const auto& kv : obj_) {
      const std::string_view key = kv.key();
      bool known = false;
      for (const auto& s : seen_)
        known = known || s == key;
      if (!known)
        return FieldError{prefix_ + std::string(key), "unknown field"};
    }
    return std::nullopt;
  }
  FieldError error(std::string_view name, std::string message) const {
    return {prefix_ + std::string(name), std::move(message)};
  }

 private:
  const json::object& obj_;
  std::string prefix_;
  bool allow_unknown_;
  std::vector<std::string> seen_;
};

template <class T>
Parsed<T> parse_object(std::string_view text, json::object& storage) {
  boost::system::error_code ec;
  json::value v = parse_finite(text, ec);
  if (ec)
    return FieldError{"", "body is not valid JSON: " + ec.message()};
  if (!v.is_object())
    return FieldError{"", "body must be a JSON object"};
  storage = std::move(v.get_object());
  return T{};
}

std::optional<FieldError> sha_field(Fields& f, std::string_view name, std::optional<Sha256>& out,
                                    bool nullable) {
  if (const auto* v = f.take(name)) {
    if (v->is_null() && nullable) {
      out.reset();
      return std::nullopt;
    }
    if (!v->is_string())
      return f.error(name, "expected a blob id (64 hex characters)");
    auto id = Sha256::parse(v->get_string());
    if (!id) {
      return f.error(name, "expected a blob id (64 hex characters), got '" +
                               std::string(v->get_string().subview().substr(0, 80)) + "'");
    }
    out = *id;
  }
  return std::nullopt;
}

}  // namespace

std::string_view policy_name(AutoUpdatePolicy p) {
  switch (p) {
    case AutoUpdatePolicy::kMajor: return "major";
    case AutoUpdatePolicy::kMinor: return "minor";
    case AutoUpdatePolicy::kPatch: return "patch";
    case AutoUpdatePolicy::kVersionNumber: return "version_number";
    case AutoUpdatePolicy::kNone: return "none";
  }
  return "major";
}

std::optional<AutoUpdatePolicy> parse_policy(std::string_view t) {
  if (t == "major")
    return AutoUpdatePolicy::kMajor;
  if (t == "minor")
    return AutoUpdatePolicy::kMinor;
  if (t == "patch")
    return AutoUpdatePolicy::kPatch;
  if (t == "version_number")
    return AutoUpdatePolicy::kVersionNumber;
  if (t == "none")
    return AutoUpdatePolicy::kNone;
  return std::nullopt;
}

Parsed<AppSettings> parse_app(std::string_view text, Unknown unknown) {
  json::object obj;
  if (auto p = parse_object<AppSettings>(text, obj); std::holds_alternative<FieldError>(p))
    return p;
  AppSettings a;
  Fields f(obj, "", unknown);
  if (auto e = f.boolean("expose_metadata", a.expose_metadata))
    return *e;
  if (auto e = f.boolean("allow_device_custom_id", a.allow_device_custom_id))
    return *e;
  if (const auto* m = f.take("stats_mode"); m != nullptr) {
    const auto mode = m->is_string() ? parse_stats_mode(m->get_string()) : std::nullopt;
    if (!mode)
      return f.error("stats_mode", "expected \"all\", \"updatesOnly\" or \"billingOnly\"");
    a.stats_mode = *mode;
  }
  if (const auto* d = f.take("device_data_collection"); d != nullptr && !d->is_null()) {
    if (!d->is_object())
      return f.error("device_data_collection", "expected an object of booleans");
    Fields df(d->get_object(), "device_data_collection.", unknown);
    auto& c = a.collect;
    for (auto [name, field] : {std::pair{"platform", &c.platform},
                               {"os_version", &c.os_version},
                               {"plugin_version", &c.plugin_version},
                               {"version_build", &c.version_build},
                               {"is_emulator", &c.is_emulator},
                               {"is_prod", &c.is_prod},
                               {"install_source", &c.install_source},
                               {"custom_id", &c.custom_id}}) {
      if (auto e = df.boolean(name, *field))
        return *e;
    }
    if (auto e = df.unknown())
      return *e;
  }
  if (auto e = f.string("key_id", a.key_id, true))
    return *e;
  const bool base64 = std::all_of(a.key_id.begin(), a.key_id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
  });
  if (a.key_id.size() > 20 || !base64) {
    return f.error("key_id",
                   "expected the first 20 characters of the public key's base64 body (what "
                   "`bundle-edge-ctl key create` prints), got '" +
                       a.key_id.substr(0, 80) + "'");
  }
  if (auto e = f.unknown())
    return *e;
  return a;
}

std::string_view to_string(StatsMode mode) {
  switch (mode) {
    case StatsMode::kUpdatesOnly: return "updatesOnly";
    case StatsMode::kBillingOnly: return "billingOnly";
    case StatsMode::kAll: break;
  }
  return "all";
}

std::optional<StatsMode> parse_stats_mode(std::string_view text) {
  if (text == "all")
    return StatsMode::kAll;
  if (text == "updatesOnly")
    return StatsMode::kUpdatesOnly;
  if (text == "billingOnly")
    return StatsMode::kBillingOnly;
  return std::nullopt;
}

Parsed<ReleaseDoc> parse_release(std::string_view text, Unknown unknown) {
  json::object obj;
  if (auto p = parse_object<ReleaseDoc>(text, obj); std::holds_alternative<FieldError>(p))
    return p;
  ReleaseDoc r;
  Fields f(obj, "", unknown);
  if (auto e = sha_field(f, "zip", r.zip, true))
    return *e;
  for (auto [name, out] : {std::pair{"checksum", &r.checksum},
                           {"session_key", &r.session_key},
                           {"key_id", &r.key_id},
                           {"min_update_version", &r.min_update_version},
                           {"link", &r.link},
                           {"comment", &r.comment}}) {
    if (auto e = f.string(name, *out, true))
      return *e;
  }
  if (r.key_id.size() > 20)
    return f.error("key_id", "at most 20 characters (the plugin sends 20)");
  if (!r.min_update_version.empty() && !SemVer::parse(r.min_update_version)) {
    return f.error("min_update_version",
                   "expected a SemVer like 1.2.0, got '" + r.min_update_version + "'");
  }
  if (auto e = f.boolean("deleted", r.deleted))
    return *e;
  if (const auto* m = f.take("manifest")) {
    if (!m->is_array() && !m->is_null())
      return f.error("manifest", "expected an array");
    if (m->is_array()) {
      std::size_t i = 0;
      for (const auto& item : m->get_array()) {
        const std::string prefix = "manifest[" + std::to_string(i++) + "].";
        if (!item.is_object())
          return FieldError{prefix.substr(0, prefix.size() - 1), "expected an object"};
        Fields mf(item.get_object(), prefix, unknown);
        ManifestEntry entry;
        if (auto e = mf.string("file_name", entry.file_name, false))
          return *e;
        if (auto e = mf.string("file_hash", entry.file_hash, false))
          return *e;
        std::optional<Sha256> blob;
        if (auto e = sha_field(mf, "blob", blob, false))
          return *e;
        if (entry.file_name.empty())
          return mf.error("file_name", "required, non-empty");
        if (entry.file_hash.empty())
          return mf.error("file_hash", "required, non-empty");
        if (!blob)
          return mf.error("blob", "required");
        if (auto e = mf.unknown())
          return *e;
        entry.blob = *blob;
        r.manifest.push_back(std::move(entry));
      }
    }
  }
  if (const auto* m = f.take("recipe_sha256"); m != nullptr && !m->is_null()) {
    if (!m->is_object())
      return f.error("recipe_sha256", "expected an object {blob: sha256 of its recipe}");
    for (const auto& [k, v] : m->get_object()) {
      auto blob = Sha256::parse(std::string_view(k.data(), k.size()));
      auto digest = v.is_string() ? Sha256::parse(v.get_string()) : Errc::kInvalidArgument;
      if (!blob || !digest) {
        return f.error("recipe_sha256",
                       "expected 64 lower-case hex digits for each blob and its recipe's SHA-256");
      }
      const bool named = (r.zip && *r.zip == *blob) ||
                         std::any_of(r.manifest.begin(), r.manifest.end(),
                                     [&](const ManifestEntry& e) { return e.blob == *blob; });
      if (!named) {
        return f.error("recipe_sha256", "names blob " + blob->hex() +
                                            ", which is neither the zip nor a manifest file");
      }
      r.recipe_sha256.emplace(*blob, *digest);
    }
  }
  if (auto e = f.unknown())
    return *e;
  return r;
}

Parsed<Channel> parse_channel(std::string_view text, Unknown unknown) {
  json::object obj;
  if (auto p = parse_object<Channel>(text, obj); std::holds_alternative<FieldError>(p))
    return p;
  Channel c;
  Fields f(obj, "", unknown);
  if (auto e = f.string("release", c.release, true))
    return *e;
  for (auto [name, out] :
       {std::pair{"public", &c.is_public},
        {"ios", &c.ios},
        {"android", &c.android},
        {"electron", &c.electron},
        {"allow_device_self_set", &c.allow_device_self_set},
        {"allow_emulator", &c.allow_emulator},
        {"allow_device", &c.allow_device},
        {"allow_dev", &c.allow_dev},
        {"allow_prod", &c.allow_prod},
        {"disable_auto_update_under_native", &c.disable_auto_update_under_native}}) {
    if (auto e = f.boolean(name, *out))
      return *e;
  }
  std::string policy = "major";
  if (auto e = f.string("disable_auto_update", policy, false))
    return *e;
  const auto p = parse_policy(policy);
  if (!p) {
    return f.error("disable_auto_update",
                   "expected major, minor, patch, version_number or none, got '" + policy + "'");
  }
  c.disable_auto_update = *p;
  std::string package = "all";
  if (auto e = f.string("update_package", package, false))
    return *e;
  const auto up = parse_update_package(package);
  if (!up) {
    return f.error("update_package",
                   "expected all, zip, delta, zip_from_builtin or delta_from_builtin, got '" +
                       package.substr(0, 80) + "'");
  }
  c.update_package = *up;
  if (const auto* r = f.take("rollout"); r != nullptr && !r->is_null()) {
    if (!r->is_object())
      return f.error("rollout", "expected an object or null");
    Fields rf(r->get_object(), "rollout.", unknown);
    Rollout ro;
    if (auto e = rf.string("release", ro.release, false))
      return *e;
    if (ro.release.empty())
      return rf.error("release", "required, non-empty");
    if (const auto* bps = rf.take("bps")) {
      if (!bps->is_int64() || bps->get_int64() < 0 || bps->get_int64() > 10000) {
        return rf.error("bps", "expected an integer 0..10000 (basis points)");
      }
      ro.bps = static_cast<std::uint32_t>(bps->get_int64());
    }
    if (auto e = rf.boolean("enabled", ro.enabled))
      return *e;
    if (auto e = rf.boolean("paused", ro.paused))
      return *e;
    if (auto e = rf.string("id", ro.id, false))
      return *e;
    if (auto e = rf.string("pause_reason", ro.pause_reason, false))
      return *e;
    if (ro.pause_reason.size() > 512)
      return rf.error("pause_reason", "at most 512 bytes");
    if (auto e = rf.unknown())
      return *e;
    c.rollout = ro;
  }
  if (const auto* a = f.take("auto_pause"); a != nullptr && !a->is_null()) {
    if (!a->is_object())
      return f.error("auto_pause", "expected an object or null");
    Fields af(a->get_object(), "auto_pause.", unknown);
    AutoPause ap;
    for (auto [name, out, lo, hi] : {std::tuple{"failure_rate_bps", &ap.failure_rate_bps, 1, 10000},
                                     {"window_minutes", &ap.window_minutes, 1, 1440},
                                     {"min_attempts", &ap.min_attempts, 1, 1'000'000'000}}) {
      const auto* v = af.take(name);
      if (v == nullptr || !v->is_int64() || v->get_int64() < lo || v->get_int64() > hi) {
        return af.error(name,
                        "required, an integer " + std::to_string(lo) + ".." + std::to_string(hi));
      }
      *out = static_cast<std::uint32_t>(v->get_int64());
    }
    if (auto e = af.unknown())
      return *e;
    c.auto_pause = ap;
  }
  if (auto e = f.unknown())
    return *e;
  return c;
}

Parsed<DeviceOverride> parse_device(std::string_view text, Unknown unknown) {
  json::object obj;
  if (auto p = parse_object<DeviceOverride>(text, obj); std::holds_alternative<FieldError>(p))
    return p;
  DeviceOverride d;
  Fields f(obj, "", unknown);
  if (auto e = f.string("channel", d.channel, false))
    return *e;
  if (d.channel.empty())
    return f.error("channel", "required, non-empty");
  if (auto e = f.unknown())
    return *e;
  return d;
}

namespace {
json::value nullable(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(s);
}
}  // namespace

std::string to_json(const AppSettings& a) {
  // Settings at their defaults are left out: an app's document stays as older nodes wrote it.
  json::object o{{"expose_metadata", a.expose_metadata},
                 {"allow_device_custom_id", a.allow_device_custom_id}};
  if (a.stats_mode != StatsMode::kAll)
    o["stats_mode"] = to_string(a.stats_mode);
  if (const auto& c = a.collect; c != DeviceDataCollection{}) {
    o["device_data_collection"] = json::object{{"platform", c.platform},
                                               {"os_version", c.os_version},
                                               {"plugin_version", c.plugin_version},
                                               {"version_build", c.version_build},
                                               {"is_emulator", c.is_emulator},
                                               {"is_prod", c.is_prod},
                                               {"install_source", c.install_source},
                                               {"custom_id", c.custom_id}};
  }
  if (!a.key_id.empty())  // absent, not "", in apps without a key
    o["key_id"] = a.key_id;
  return json::serialize(o);
}

std::string to_json(const ReleaseDoc& r) {
  json::array manifest;
  for (const auto& m : r.manifest) {
    manifest.push_back(json::object{
        {"file_name", m.file_name}, {"file_hash", m.file_hash}, {"blob", m.blob.hex()}});
  }
  json::object o{{"zip", r.zip ? json::value(r.zip->hex()) : json::value(nullptr)},
                 {"checksum", r.checksum},
                 {"session_key", r.session_key},
                 {"key_id", r.key_id},
                 {"manifest", std::move(manifest)},
                 {"min_update_version", nullable(r.min_update_version)},
                 {"link", nullable(r.link)},
                 {"comment", nullable(r.comment)},
                 {"deleted", r.deleted}};
  if (!r.recipe_sha256.empty()) {  // absent, not {}, in releases written before it existed
    json::object recipes;
    for (const auto& [blob, digest] : r.recipe_sha256)
      recipes[blob.hex()] = digest.hex();
    o["recipe_sha256"] = std::move(recipes);
  }
  return json::serialize(o);
}

std::string to_json(const Channel& c) {
  json::object o{{"release", nullable(c.release)},
                 {"public", c.is_public},
                 {"ios", c.ios},
                 {"android", c.android},
                 {"electron", c.electron},
                 {"allow_device_self_set", c.allow_device_self_set},
                 {"allow_emulator", c.allow_emulator},
                 {"allow_device", c.allow_device},
                 {"allow_dev", c.allow_dev},
                 {"allow_prod", c.allow_prod},
                 {"disable_auto_update", policy_name(c.disable_auto_update)},
                 {"disable_auto_update_under_native", c.disable_auto_update_under_native},
                 {"update_package", update_package_name(c.update_package)}};
  if (c.rollout) {
    o["rollout"] = json::object{{"release", c.rollout->release},
                                {"bps", c.rollout->bps},
                                {"enabled", c.rollout->enabled},
                                {"paused", c.rollout->paused},
                                {"id", c.rollout->id}};
    if (!c.rollout->pause_reason.empty())
      o["rollout"].get_object()["pause_reason"] = c.rollout->pause_reason;
  } else {
    o["rollout"] = nullptr;
  }
  if (c.auto_pause) {
    o["auto_pause"] = json::object{{"failure_rate_bps", c.auto_pause->failure_rate_bps},
                                   {"window_minutes", c.auto_pause->window_minutes},
                                   {"min_attempts", c.auto_pause->min_attempts}};
  }
  return json::serialize(o);
}

std::string to_json(const DeviceOverride& d) {
  return json::serialize(json::object{{"channel", d.channel}});
}

Release to_release(std::string name, const ReleaseDoc& doc) {
  Release r;
  r.name = std::move(name);
  r.deleted = doc.deleted;
  r.has_zip = doc.zip.has_value();
  r.manifest_entries = doc.manifest.size();
  r.key_id = doc.key_id;
  r.min_update_version = doc.min_update_version;
  return r;
}

}  // namespace edge::control
