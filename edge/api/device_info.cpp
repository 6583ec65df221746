#include "edge/api/device_info.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

#include "edge/api/control_service.hpp"
#include "edge/control/json_parse.hpp"
#include "edge/core/sha256.hpp"
#include "edge/core/utf8.hpp"

namespace edge::api {
namespace {

namespace json = boost::json;
using E = DeviceEndpoint;

// Error messages quote at most this much of a device's value.
constexpr std::size_t kQuoted = 128;

enum class Need : std::uint8_t {
  kIgnored,   // not read on this endpoint (whatever it holds)
  kKept,      // not validated, but kept when of the type and within the limit (never an error)
  kOptional,  // may be absent; when present, of the type and rule
  kRequired,  // must be present; "" allowed for strings
  kNonEmpty,  // must be present and not ""
};

// A rule's type, and the type of a value a device sent (kOther: a number or null, never a
// rule's type).
enum class Type : std::uint8_t { kString, kBool, kObject, kArray, kOther };

// The rule beyond type and length.
enum class Check : std::uint8_t {
  kNone,
  kPlatform,  // ios | android | electron (stats: any string, §3.3)
  kUuid,      // 8-4-4-4-12 hex (§1.1)
  kAppId,     // reverse domain
  kPlugin,    // strict SemVer (stats: any string)
  kAction,    // the stats allow-list
  kMetadata,  // ≤30 keys of ≤64 characters, string values of ≤2048 characters
};

enum class Slot : std::uint8_t {
  kPlatform,
  kDeviceId,
  kAppId,
  kCustomId,
  kVersionBuild,
  kVersionCode,
  kVersionOs,
  kVersionName,
  kPluginVersion,
  kIsEmulator,
  kIsProd,
  kInstallSource,
  kDefaultChannel,
  kKeyId,
  kChannel,
  kAction,
  kOldVersionName,
  kStatsMode,
  kMetadata,
  kVersion,
  kManifest,
};

struct Rule {
  std::string_view name;
  Slot slot;
  Type type;
  std::uint16_t max;  // longest string in bytes; 0 = no limit
  Check check;
  // One per DeviceEndpoint, in its order:
  // updates, manifest_size, stats, channel POST, PUT, GET, DELETE.
  std::array<Need, kDeviceEndpoints> need;
};

constexpr Need O = Need::kOptional;
constexpr Need R = Need::kRequired;
constexpr Need N = Need::kNonEmpty;
constexpr Need I = Need::kIgnored;
constexpr Need K = Need::kKept;

// The table of the info object (capgo-protocol.md §1.1, §2.2, §3.3, §4, §9.5), in the
// order its schema errors are reported. A field the backend does not validate on an
// endpoint is ignored there (custom_id, version_os and version_code outside /stats).
constexpr Rule kRules[] = {
    //  name               slot                    type          max  check
    //                                    upd man sta set get lst del
    // listChannels needs no device: Capgo answers it from app_id and platform (§10 item 9).
    {"device_id", Slot::kDeviceId, Type::kString, 36, Check::kUuid, {N, N, N, N, N, O, N}},
    {"app_id", Slot::kAppId, Type::kString, 0, Check::kAppId, {N, N, N, N, N, N, N}},
    {"platform", Slot::kPlatform, Type::kString, 0, Check::kPlatform, {R, R, R, R, R, R, R}},
    {"plugin_version",
     Slot::kPluginVersion,
     Type::kString,
     0,
     Check::kPlugin,
     {N, N, O, O, O, O, O}},
    {"version_name", Slot::kVersionName, Type::kString, 0, Check::kNone, {N, N, R, R, R, O, O}},
    // Coerced before the schema pass (semver_error), see read_info.
    {"version_build", Slot::kVersionBuild, Type::kString, 0, Check::kNone, {N, N, O, R, R, I, O}},
    {"version_os", Slot::kVersionOs, Type::kString, 0, Check::kNone, {I, I, R, I, I, I, I}},
    {"version_code", Slot::kVersionCode, Type::kString, 0, Check::kNone, {I, I, O, I, I, I, I}},
    {"is_emulator", Slot::kIsEmulator, Type::kBool, 0, Check::kNone, {O, O, O, O, O, O, O}},
    {"is_prod", Slot::kIsProd, Type::kBool, 0, Check::kNone, {O, O, O, O, O, O, O}},
    // Kept on /updates for the device index (the backend does not validate it there).
    {"custom_id", Slot::kCustomId, Type::kString, 36, Check::kNone, {K, I, O, I, I, I, I}},
    {"install_source",
     Slot::kInstallSource,
     Type::kString,
     64,
     Check::kNone,
     {O, O, O, O, O, O, O}},
    {"defaultChannel",
     Slot::kDefaultChannel,
     Type::kString,
     0,
     Check::kNone,
     {O, O, O, O, O, O, O}},
    {"key_id", Slot::kKeyId, Type::kString, 20, Check::kNone, {O, O, O, O, O, O, O}},
    {"channel", Slot::kChannel, Type::kString, 0, Check::kNone, {I, I, O, O, O, I, I}},
    {"action", Slot::kAction, Type::kString, 0, Check::kAction, {I, I, R, I, I, I, I}},
    {"old_version_name",
     Slot::kOldVersionName,
     Type::kString,
     0,
     Check::kNone,
     {I, I, O, I, I, I, I}},
    {"stats_mode", Slot::kStatsMode, Type::kString, 64, Check::kNone, {I, I, O, I, I, I, I}},
    {"metadata", Slot::kMetadata, Type::kObject, 0, Check::kMetadata, {I, I, O, I, I, I, I}},
    {"version", Slot::kVersion, Type::kString, 0, Check::kNone, {I, O, I, I, I, I, I}},
    {"manifest", Slot::kManifest, Type::kArray, 0, Check::kNone, {I, R, I, I, I, I, I}},
};

// The row of the table that fills `slot`.
constexpr std::size_t rule_index(Slot slot) {
  for (std::size_t i = 0; i < std::size(kRules); ++i) {
    if (kRules[i].slot == slot)
      return i;
  }
  return std::size(kRules);  // not in the table: the static_asserts below refuse it
}
static_assert(rule_index(Slot::kDeviceId) < std::size(kRules));
static_assert(rule_index(Slot::kAppId) < std::size(kRules));
static_assert(rule_index(Slot::kVersionBuild) < std::size(kRules));

// The backend's allow-list of stats actions (§3.2), and what plugin 8.51.23 sends beyond it
// (§9.5: session_key_required, app_nav). Sorted, for binary search.
constexpr std::string_view kActions[] = {
    "InvalidIp",
    "NoChannelOrOverride",
    "app_anr",
    "app_crash",
    "app_crash_native",
    "app_initialization_failure",
    "app_killed_excessive_resource_usage",
    "app_killed_low_memory",
    "app_launch_ready",
    "app_launch_start",
    "app_launch_timeout",
    "app_memory_warning",
    "app_moved_to_background",
    "app_moved_to_foreground",
    "app_nav",
    "backend_refusal",
    "blocked_by_server_url",
    "cannotGetBundle",
    "cannotUpdateViaPrivateChannel",
    "canonical_path_fail",
    "channelMisconfigured",
    "checksum_fail",
    "checksum_required",
    "customIdBlocked",
    "decrypt_fail",
    "delete",
    "directory_path_fail",
    "disableAutoUpdate",
    "disableAutoUpdateMetadata",
    "disableAutoUpdateToMajor",
    "disableAutoUpdateToMinor",
    "disableAutoUpdateToPatch",
    "disableAutoUpdateUnderNative",
    "disableDevBuild",
    "disableDevice",
    "disableEmulator",
    "disablePlatformAndroid",
    "disablePlatformElectron",
    "disablePlatformIos",
    "disableProdBuild",
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
    "download_fail",
    "download_manifest_brotli_fail",
    "download_manifest_checksum_fail",
    "download_manifest_complete",
    "download_manifest_file_fail",
    "download_manifest_start",
    "download_zip_complete",
    "download_zip_start",
    "finish_download_fail",
    "get",
    "getChannel",
    "insufficient_disk_space",
    "keyMismatch",
    "low_mem_fail",
    "manifest_path_fail",
    "missingBundle",
    "native_app_version_changed",
    "needPlanUpgrade",
    "noNew",
    "os_version_changed",
    "ping",
    "rateLimited",
    "rate_limit_reached",
    "reset",
    "session_key_required",
    "set",
    "setChannel",
    "set_fail",
    "set_next",
    "uninstall",
    "unzip_fail",
    "update_fail",
    "webview_content_process_terminated",
    "webview_dom_content_loaded",
    "webview_javascript_error",
    "webview_page_loaded",
    "webview_render_process_gone",
    "webview_resource_error",
    "webview_security_policy_violation",
    "webview_unclean_restart",
    "webview_unhandled_rejection",
    "windows_path_fail",
};

InfoError schema(E endpoint, std::string_view field, std::string reason,
                 std::string_view value = {}) {
  std::string message = "Cannot parse body: " + std::string(field) + " " + reason;
  if (!value.empty())
    message += ", got " + utf8_quote(value, kQuoted);
  return InfoError{query_form(endpoint) ? "invalid_query_parameters" : "invalid_json_body",
                   std::move(message), field, std::move(reason)};
}

std::string_view type_reason(Type t) {
  switch (t) {
    case Type::kString: return "expected a string";
    case Type::kBool: return "expected true or false";
    case Type::kObject: return "expected an object";
    case Type::kArray: return "expected an array";
    case Type::kOther: break;
  }
  return "wrong type";
}

// One top-level field of the info object as the rules read it: from a JSON document
// (read_info), or straight from the parser's events (parse_info).
struct Field {
  bool present = false;
  Type type = Type::kOther;
  bool boolean = false;   // kBool
  std::string_view text;  // kString
  // The document's value, for the rules that read an object or array (metadata, manifest):
  // set by every read from a document; parse_info reads only the endpoints without such
  // rules (streams()).
  const json::value* dom = nullptr;
};

Field field_of(const json::value& v) {
  Field f;
  f.present = true;
  f.dom = &v;
  switch (v.kind()) {
    case json::kind::string:
      f.type = Type::kString;
      f.text = v.get_string();
      break;
    case json::kind::bool_:
      f.type = Type::kBool;
      f.boolean = v.get_bool();
      break;
    case json::kind::object: f.type = Type::kObject; break;
    case json::kind::array: f.type = Type::kArray; break;
    default: break;
  }
  return f;
}

// The row of the table named `key` that endpoint column `col` reads; -1 for any other key.
int rule_of(std::string_view key, std::size_t col) {
  for (std::size_t i = 0; i < std::size(kRules); ++i) {
    if (kRules[i].name.size() == key.size() && kRules[i].name == key)
      return kRules[i].need[col] == Need::kIgnored ? -1 : static_cast<int>(i);
  }
  return -1;
}

// The rule's check on a present value of the right type; the reason if it fails.
std::optional<std::string_view> check(const Rule& r, E endpoint, const Field& v, DeviceInfo& out) {
  const std::string_view s = v.text;
  switch (r.check) {
    case Check::kNone: return std::nullopt;
    case Check::kPlatform:
      out.platform = control::parse_platform(s);
      if (!out.platform && endpoint != E::kStats)
        return "must be ios, android or electron";
      return std::nullopt;
    case Check::kUuid:
      if (!valid_device_id(s))
        return "must be a UUID (8-4-4-4-12 hex digits)";
      return std::nullopt;
    case Check::kAppId:
      if (!valid_app_id(s))
        return "must be a reverse-domain app id";
      return std::nullopt;
    case Check::kPlugin:
      if (s.empty())
        return std::nullopt;
      if (auto p = SemVer::parse(s)) {
        out.plugin_version = *p;
      } else if (endpoint != E::kStats) {
        return "must be a SemVer like 8.51.23";
      }
      return std::nullopt;
    case Check::kAction:
      if (!allowed_stats_action(s))
        return "is not a known stats action";
      return std::nullopt;
    case Check::kMetadata: {
      const auto& m = v.dom->get_object();
      if (m.size() > 30)
        return "holds more than 30 keys";
      for (const auto& kv : m) {
        if (kv.key().size() > 64)
          return "has a key longer than 64 characters";
        if (!kv.value().is_string())
          return "has a value that is not a string";
        if (kv.value().get_string().size() > 2048)
          return "has a value longer than 2048 characters";
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void store(Slot slot, const Field& v, DeviceInfo& out) {
  const std::string_view s = v.text;
  switch (slot) {
    case Slot::kPlatform: out.platform_text = s; break;
    case Slot::kDeviceId: out.device_id = ascii_lower(s); break;
    case Slot::kAppId: out.app_id = s; break;
    case Slot::kCustomId: out.custom_id = s; break;
    case Slot::kVersionBuild: out.version_build_text = s; break;
    case Slot::kVersionCode: out.version_code = s; break;
    case Slot::kVersionOs: out.version_os = s; break;
    case Slot::kVersionName: out.version_name = s; break;
    case Slot::kPluginVersion: break;  // set by its check
    case Slot::kIsEmulator: out.is_emulator = v.boolean; break;
    case Slot::kIsProd: out.is_prod = v.boolean; break;
    case Slot::kInstallSource: out.install_source = s; break;
    case Slot::kDefaultChannel: out.default_channel = s; break;
    case Slot::kKeyId: out.key_id = s; break;
    case Slot::kChannel: out.channel = s; break;
    case Slot::kAction: out.action = s; break;
    case Slot::kOldVersionName: out.old_version_name = s; break;
    case Slot::kStatsMode: out.stats_mode = s; break;
    case Slot::kMetadata: out.metadata = &v.dom->get_object(); break;
    case Slot::kVersion: out.version = s; break;
    case Slot::kManifest: out.manifest = &v.dom->get_array(); break;
  }
}

// Absent or "" (the presence checks of §2.2 that come before the schema).
bool missing(const Field& v) {
  return !v.present || (v.type == Type::kString && v.text.empty());
}

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

// The rules of `endpoint` over its fields, in the order of §2.2: the presence of device_id
// and app_id, then the version_build coercion, then the schema in table order.
std::optional<InfoError> read_fields(E endpoint, const Field* values, DeviceInfo& out) {
  const auto col = static_cast<std::size_t>(endpoint);
  if (kRules[rule_index(Slot::kDeviceId)].need[col] == Need::kNonEmpty &&
      missing(values[rule_index(Slot::kDeviceId)]))
    return InfoError{"missing_device_id", "Cannot find device_id", "device_id", "required"};
  if (missing(values[rule_index(Slot::kAppId)]))
    return InfoError{"missing_app_id", "Cannot find app_id", "app_id", "required"};
  if (const Field& b = values[rule_index(Slot::kVersionBuild)];
      b.type == Type::kString && !b.text.empty()) {
    out.version_build = coerce_version_build(b.text);
    if (!out.version_build) {
      return InfoError{"semver_error",
                       "Native version (version_build) " + utf8_quote(b.text, kQuoted) +
                           " doesn't follow semver convention, please check "
                           "https://capgo.app/semver_tester/ to learn more about semver usage "
                           "in Capgo",
                       "version_build", "not SemVer"};
    }
  }
  for (std::size_t i = 0; i < std::size(kRules); ++i) {
    const Rule& r = kRules[i];
    const Need need = r.need[col];
    const Field& v = values[i];
    if (need == Need::kIgnored)
      continue;
    if (need == Need::kKept) {
      if (v.present && v.type == r.type &&
          (r.type != Type::kString || r.max == 0 || v.text.size() <= r.max))
        store(r.slot, v, out);
      continue;
    }
    if (!v.present) {
      if (need == Need::kRequired || need == Need::kNonEmpty)
        return schema(endpoint, r.name, "is required");
      continue;
    }
    if (need == Need::kOptional && r.check == Check::kUuid && v.type == Type::kString &&
        v.text.empty())
      continue;  // an optional device_id left empty (`device_id=` in a query) is absent
    if (v.type != r.type)
      return schema(endpoint, r.name, std::string(type_reason(r.type)));
    if (r.type == Type::kString) {
      if (need == Need::kNonEmpty && v.text.empty())
        return schema(endpoint, r.name, "must not be empty");
      if (r.max != 0 && v.text.size() > r.max)
        return schema(endpoint, r.name, "is longer than " + std::to_string(r.max) + " bytes",
                      v.text);
    }
    if (auto reason = check(r, endpoint, v, out))
      return schema(endpoint, r.name, std::string(*reason), v.text);
    store(r.slot, v, out);
  }
  return std::nullopt;
}

// Whether every field `endpoint` reads is a string or a boolean: parse_info can read its
// body without a JSON document (not /stats' metadata nor manifest_size's manifest).
constexpr bool streams(E endpoint) {
  for (const Rule& r : kRules) {
    if ((r.type == Type::kObject || r.type == Type::kArray) &&
        r.need[static_cast<std::size_t>(endpoint)] != Need::kIgnored)
      return false;
  }
  return true;
}
static_assert(streams(E::kUpdates) && streams(E::kChannelSet) && streams(E::kChannelGet));

// The parser's handler for parse_info: keeps the top-level fields the endpoint reads, builds
// nothing else. A string's view points into the body, or into `scratch` when the parser
// hands it over in parts (escapes): scratch is reserved to the body's size before its first
// byte, and an unescaped string is never longer than its source, so it never moves.
class FieldCollector {
 public:
  // The limits of the document parser (boost::json::parse), so both accept the same bodies.
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  FieldCollector(std::string_view body, std::string& scratch, std::size_t col, Field* values)
      : body_(body), scratch_(scratch), col_(col), values_(values) {}

  Type root() const { return root_; }
  std::size_t root_keys() const { return root_keys_; }

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_object_begin(boost::system::error_code&) {
    value(Type::kObject);
    ++depth_;
    return true;
  }
  bool on_object_end(std::size_t n, boost::system::error_code&) {
    if (--depth_ == 0)
      root_keys_ = n;  // pairs, repeated keys included: non-zero exactly when the object is
    return true;
  }
  bool on_array_begin(boost::system::error_code&) {
    value(Type::kArray);
    ++depth_;
    return true;
  }
  bool on_array_end(std::size_t, boost::system::error_code&) {
    --depth_;
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, boost::system::error_code& ec) {
    return depth_ != 1 || part(s, ec);
  }
  bool on_key(json::string_view s, std::size_t, boost::system::error_code& ec) {
    if (depth_ != 1)
      return true;
    std::string_view key;
    if (!whole(s, key, ec))
      return false;
    current_ = rule_of(key, col_);  // a repeated key keeps its last value, as in a document
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, boost::system::error_code& ec) {
    return !kept() || part(s, ec);
  }
  bool on_string(json::string_view s, std::size_t, boost::system::error_code& ec) {
    if (!kept()) {
      value(Type::kString);
      return true;
    }
    Field f;
    f.present = true;
    f.type = Type::kString;
    if (!whole(s, f.text, ec))
      return false;
    values_[current_] = f;
    return true;
  }
  bool on_number_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, boost::system::error_code&) {
    value(Type::kOther);
    return true;
  }
  bool on_uint64(std::uint64_t, json::string_view, boost::system::error_code&) {
    value(Type::kOther);
    return true;
  }
  bool on_double(double d, json::string_view, boost::system::error_code& ec) {
    if (!std::isfinite(d)) {  // as control::parse_finite refuses it
      ec = json::error::exponent_overflow;
      return false;
    }
    value(Type::kOther);
    return true;
  }
  bool on_bool(bool b, boost::system::error_code&) {
    value(Type::kBool, b);
    return true;
  }
  bool on_null(boost::system::error_code&) {
    value(Type::kOther);
    return true;
  }
  bool on_comment_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(json::string_view, boost::system::error_code&) { return true; }

 private:
  // A value at the top level of the object, for a field the endpoint reads.
  bool kept() const { return depth_ == 1 && current_ >= 0; }
  void value(Type t, bool b = false) {
    if (depth_ == 0) {
      root_ = t;
    } else if (kept()) {
      Field f;
      f.present = true;
      f.type = t;
      f.boolean = b;
      values_[current_] = f;
    }
  }
  bool part(std::string_view s, boost::system::error_code& ec) {
    if (!partial_) {
      partial_ = true;
      start_ = scratch_.size();
    }
    return append(s, ec);
  }
  bool whole(std::string_view s, std::string_view& out, boost::system::error_code& ec) {
    const auto at = reinterpret_cast<std::uintptr_t>(s.data());
    const auto begin = reinterpret_cast<std::uintptr_t>(body_.data());
    if (!partial_ && at >= begin && at + s.size() <= begin + body_.size()) {
      out = s;  // in the body as sent: no copy
      return true;
    }
    if (!partial_)
      start_ = scratch_.size();
    partial_ = false;
    if (!append(s, ec))
      return false;
    out = std::string_view(scratch_).substr(start_);
    return true;
  }
  bool append(std::string_view s, boost::system::error_code& ec) {
    if (scratch_.empty())
      scratch_.reserve(body_.size());
    if (scratch_.size() + s.size() > scratch_.capacity()) {
      ec = json::error::exception;  // cannot happen (see above); never a dangling view
      return false;
    }
    scratch_.append(s);
    return true;
  }

  std::string_view body_;
  std::string& scratch_;
  std::size_t col_;
  Field* values_;
  int depth_ = 0;
  int current_ = -1;  // the rule of the top-level key whose value comes next, or -1
  Type root_ = Type::kOther;
  std::size_t root_keys_ = 0;
  bool partial_ = false;
  std::size_t start_ = 0;  // where the string being assembled in parts starts in scratch
};

}  // namespace

static_assert(std::is_sorted(std::begin(kActions), std::end(kActions)));

bool allowed_stats_action(std::string_view action) {
  return std::binary_search(std::begin(kActions), std::end(kActions), action);
}

std::string DeviceInfo::running_version() const {
  if (version_name == "builtin" && version_build)
    return version_build->to_string();
  return std::string(version_name);
}

bool DeviceInfo::on_builtin() const {
  if (version_name == "builtin" || version_name == version_build_text)
    return true;
  return version_build && version_name == version_build->to_string();
}

std::optional<InfoError> read_info(DeviceEndpoint endpoint, const json::object& body,
                                   DeviceInfo& out) {
  const auto col = static_cast<std::size_t>(endpoint);
  // One pass over the body's fields (a dozen), each matched against the rule names, instead
  // of a hash lookup per rule.
  Field values[std::size(kRules)];
  for (const auto& kv : body) {
    if (const int i = rule_of(kv.key(), col); i >= 0)
      values[i] = field_of(kv.value());
  }
  return read_fields(endpoint, values, out);
}

std::optional<InfoError> parse_json_body(std::string_view body, json::value& out,
                                         bool allow_array) {
  boost::system::error_code ec;
  out = control::parse_finite(body, ec, out.storage());
  if (ec)
    return InfoError{"invalid_json_parse_body", "Invalid JSON body", "", "not JSON"};
  if (allow_array && out.is_array())
    return std::nullopt;
  if (!out.is_object() || out.get_object().empty())
    return InfoError{"invalid_json_body", "Cannot parse body", "", "not a non-empty object"};
  return std::nullopt;
}

std::optional<InfoError> parse_info(DeviceEndpoint endpoint, std::string_view body,
                                    std::string& scratch, DeviceInfo& out) {
  if (!streams(endpoint))
    return InfoError{"invalid_json_body", "Cannot parse body", "", "read with parse_json_body"};
  scratch.clear();
  Field values[std::size(kRules)];
  json::basic_parser<FieldCollector> parser(json::parse_options{}, body, scratch,
                                            static_cast<std::size_t>(endpoint), values);
  boost::system::error_code ec;
  const std::size_t n = parser.write_some(false, body.data(), body.size(), ec);
  if (ec || n < body.size())  // as boost::json::parse: not JSON, or more after it
    return InfoError{"invalid_json_parse_body", "Invalid JSON body", "", "not JSON"};
  if (parser.handler().root() != Type::kObject || parser.handler().root_keys() == 0)
    return InfoError{"invalid_json_body", "Cannot parse body", "", "not a non-empty object"};
  return read_fields(endpoint, values, out);
}

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

std::optional<InfoError> query_object(std::string_view query, json::object& out) {
  const auto params = parse_query(query);
  if (params.empty()) {
    return InfoError{"invalid_query_parameters", "Invalid query parameters", "", "no parameters"};
  }
  for (const auto& [k, v] : params)
    out[k] = v;
  for (const auto& [flag, absent] : {std::pair{"is_emulator", false}, {"is_prod", true}}) {
    const auto* v = out.if_contains(flag);
    out[flag] = v == nullptr ? absent : (v->is_string() && v->get_string() == "true");
  }
  return std::nullopt;
}

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

}  // namespace edge::api
