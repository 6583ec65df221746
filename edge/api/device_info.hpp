#pragma once

// The plugin's info object (capgo-protocol.md §1.1), read once, by one table of field rules,
// for every device endpoint: /updates, /updates/manifest_size, /stats events and the four
// methods of /channel_self. Each endpoint has its own column of rules and the validation
// order and error codes of §2.2 / §3.3 / §4; the `builtin` rewrite and the version_build
// coercion live here and nowhere else. The fields come from a JSON document (read_info), or,
// on /updates and POST/PUT /channel_self, straight from the parser's events (parse_info):
// the same rules over either, and the tests and the fuzz target hold the two to one answer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/fwd.hpp>

#include "edge/control/decision.hpp"
#include "edge/core/semver.hpp"

namespace edge::api {

/// Which request an info object came with.
enum class DeviceEndpoint : std::uint8_t {
  kUpdates,       ///< POST /updates (§2.2)
  kManifestSize,  ///< POST /updates/manifest_size: info object + `version` + `manifest` (§2.8)
  kStats,         ///< one event of POST /stats (§3.3); app_id is checked by the caller first
  kChannelSet,    ///< POST /channel_self (§4.1)
  kChannelGet,    ///< PUT /channel_self (§4.2)
  kChannelList,   ///< GET /channel_self, info object in the query string (§4.3)
  kChannelUnset,  ///< DELETE /channel_self, info object in the query string (§4.4)
};
inline constexpr std::size_t kDeviceEndpoints = 7;

/// True for the endpoints whose info object comes in the query string: their schema errors
/// are `invalid_query_parameters` instead of `invalid_json_body`.
constexpr bool query_form(DeviceEndpoint e) {
  return e == DeviceEndpoint::kChannelList || e == DeviceEndpoint::kChannelUnset;
}

/// A refused info object: always a 400 with Capgo's code. `field` names the offending field
/// ("" for a whole-body error); `message` says what was wrong with it, quoting at most 128
/// bytes of the device's value.
struct InfoError {
  std::string_view code;  ///< invalid_json_parse_body, invalid_json_body, missing_device_id, ...
  std::string message;
  std::string_view field;
  std::string reason;  ///< "is required", "expected a string", "is longer than 36 bytes", ...
};

/// The validated, typed info object. The string_views point into the JSON object read (the
/// caller keeps it alive); absent optional strings are "".
struct DeviceInfo {
  std::string_view platform_text;
  /// ios | android | electron; nullopt only on /stats, which takes any platform string.
  std::optional<control::Platform> platform;
  std::string device_id;  ///< lower-cased; "" only on GET /channel_self (listChannels, §10.9)
  std::string_view app_id;
  std::string_view custom_id;
  std::string_view version_build_text;  ///< as sent
  std::optional<SemVer> version_build;  ///< coerced (§1.1); nullopt when absent or ""
  std::string_view version_code;
  std::string_view version_os;
  std::string_view version_name;         ///< as sent
  std::optional<SemVer> plugin_version;  ///< nullopt when absent, "", or (stats) unparsable
  bool is_emulator = false;
  bool is_prod = true;
  std::string_view install_source;
  std::string_view default_channel;
  std::string_view key_id;
  std::optional<std::string_view> channel;        ///< POST/PUT /channel_self, stats
  std::string_view action;                        ///< stats
  std::string_view old_version_name;              ///< stats
  std::string_view stats_mode;                    ///< stats (plugin 8.52 billingOnly, §9.5)
  const boost::json::object* metadata = nullptr;  ///< stats
  std::string_view version;                       ///< manifest_size
  const boost::json::array* manifest = nullptr;   ///< manifest_size (required there)

  /// version_name with "builtin" rewritten to the coerced version_build (§1.1): the bundle
  /// the device runs, as the decision compares it.
  std::string running_version() const;
  /// True when the device runs the bundle shipped in the app: version_name is "builtin" or
  /// equals version_build (as sent or coerced). Plugins report the native version as
  /// version_name while on builtin (§1.1).
  bool on_builtin() const;

  /// Field by field, the views by their text (the tests compare the two readers with it).
  bool operator==(const DeviceInfo&) const = default;
};

/// Reads `body` as the info object of `endpoint`, in the order of §2.2: device_id present
/// where the endpoint needs it (all but listChannels: missing_device_id), app_id present
/// (missing_app_id), version_build coercible
/// (semver_error), then every field's rule in table order (invalid_json_body, or
/// invalid_query_parameters for the query forms). Unknown fields are ignored, as the
/// backend does. Does not throw.
std::optional<InfoError> read_info(DeviceEndpoint endpoint, const boost::json::object& body,
                                   DeviceInfo& out);

/// Parses a JSON request body into `out` (the caller's storage, kept alive while the
/// DeviceInfo is used; parsed with `out`'s memory resource): invalid_json_parse_body if it is not
/// JSON; with `allow_array` (stats batches) an array is accepted; otherwise anything but a
/// non-empty object is invalid_json_body. Does not throw.
std::optional<InfoError> parse_json_body(std::string_view body, boost::json::value& out,
                                         bool allow_array = false);

/// parse_json_body and read_info in one pass over the bytes, without building a JSON
/// document: the same answers (codes, fields, messages) and the same DeviceInfo. For the
/// endpoints whose fields are all strings and booleans: /updates and POST/PUT /channel_self
/// (/stats and manifest_size read objects and arrays: any other endpoint is refused with
/// invalid_json_body). The DeviceInfo's views point into `body`, or into `scratch` for
/// strings the device sent with escapes: keep both alive, and unchanged, while it is used.
/// Does not throw (but for std::bad_alloc).
std::optional<InfoError> parse_info(DeviceEndpoint endpoint, std::string_view body,
                                    std::string& scratch, DeviceInfo& out);

/// Turns a query string into the object the rules read, as the backend converts it (§4.3):
/// every parameter a string, except `is_emulator` and `is_prod`, true exactly when the
/// parameter is "true" and defaulting to false and true. No parameters at all is
/// invalid_query_parameters. Does not throw.
std::optional<InfoError> query_object(std::string_view query, boost::json::object& out);

/// Decodes an application/x-www-form-urlencoded query into key/value pairs ('+' is a space).
std::vector<std::pair<std::string, std::string>> parse_query(std::string_view query);

/// Capgo's version_build coercion (§1.1): strict SemVer as is; "1" -> 1.0.0, "1.2" -> 1.2.0,
/// "builtin"/"unknown" -> 0.0.0; anything else is nullopt (-> 400 semver_error).
std::optional<SemVer> coerce_version_build(std::string_view text);

/// Whether the backend takes this stats action (capgo-protocol.md §3.2 plus the actions
/// plugin 8.51.23 sends that Capgo's list still lacks, §9.5).
bool allowed_stats_action(std::string_view action);

}  // namespace edge::api
