#pragma once

// The JSON documents of the control state (DESIGN §5): what the admin API accepts, what the
// StateStore keeps and what the changelog carries. Parsing is strict (unknown fields and
// wrong types are errors naming the field) because these come from publishers' requests.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "edge/control/decision.hpp"
#include "edge/core/sha256.hpp"

namespace edge::control {

/// What was wrong with a document: the field (dotted path) and why.
struct FieldError {
  std::string field;
  std::string message;
};

template <class T>
using Parsed = std::variant<T, FieldError>;

/// What an app's devices' events are kept for (`stats_mode`, Capgo's names). Applied where a
/// check-in is first recorded; /updates decisions never change.
enum class StatsMode {
  kAll,          ///< "all": every event
  kUpdatesOnly,  ///< "updatesOnly": no app_*, webview_* or ping events (app health, navigation)
  kBillingOnly,  ///< "billingOnly": set, download_complete, set_fail, update_fail, download_fail
                 ///< and update checks, without custom_id and defaultChannel
};
std::string_view to_string(StatsMode mode);
std::optional<StatsMode> parse_stats_mode(std::string_view text);

/// Which device fields an app's check-ins keep (`device_data_collection`): all by default.
/// A field not collected is stored empty. os_version, is_emulator, is_prod and
/// install_source are never stored by this node; they are accepted for Capgo parity.
struct DeviceDataCollection {
  bool platform = true;
  bool os_version = true;
  bool plugin_version = true;
  bool version_build = true;
  bool is_emulator = true;
  bool is_prod = true;
  bool install_source = true;
  bool custom_id = true;
  bool operator==(const DeviceDataCollection&) const = default;
};

struct AppSettings {
  bool expose_metadata = false;
  bool allow_device_custom_id = false;
  StatsMode stats_mode = StatsMode::kAll;
  DeviceDataCollection collect;
  /// The key id (Capgo's: the first 20 characters of the PKCS#1 public key's base64 body) of
  /// the public key the app ships in `CapacitorUpdater.publicKey`; "" = none registered. Only
  /// the id is kept: the node never holds a key. Encrypted releases under another id are
  /// refused (every device with this key would refuse them).
  std::string key_id;
};

struct ManifestEntry {
  std::string file_name;
  std::string file_hash;
  Sha256 blob;
};

/// A release as stored. `checksum` defaults to the zip blob's SHA-256 (the admin API fills it).
struct ReleaseDoc {
  std::optional<Sha256> zip;
  std::string checksum;
  std::string session_key;
  std::string key_id;
  std::vector<ManifestEntry> manifest;
  std::string min_update_version;  ///< "" = null
  std::string link;
  std::string comment;
  bool deleted = false;
  /// Per blob the release names (zip and manifest files): the SHA-256 of its recipe's
  /// canonical binary form (store::Recipe::encode). Set by the origin when the release is
  /// written and carried by the feed, so an edge can trust a recipe it fetches before it
  /// streams a byte by it (DESIGN §10). Empty in releases written before it existed.
  std::map<Sha256, Sha256> recipe_sha256;
};

/// A device override: the channel a device is pinned to.
struct DeviceOverride {
  std::string channel;
};

/// What a parser does with a field it does not know. Admin writes refuse it (a typo must
/// not pass silently); documents from upstream ignore it (forward compatibility: an origin
/// upgraded before its edges may add fields; the edge keeps the document as it came, so
/// its own children get them too, and applies what it understands).
enum class Unknown { kRefuse, kIgnore };

Parsed<AppSettings> parse_app(std::string_view json, Unknown unknown = Unknown::kRefuse);
Parsed<ReleaseDoc> parse_release(std::string_view json, Unknown unknown = Unknown::kRefuse);
/// A channel document; fields left out take Capgo's defaults. `name` is set by the caller.
Parsed<Channel> parse_channel(std::string_view json, Unknown unknown = Unknown::kRefuse);
Parsed<DeviceOverride> parse_device(std::string_view json, Unknown unknown = Unknown::kRefuse);

std::string to_json(const AppSettings& app);
std::string to_json(const ReleaseDoc& release);
std::string to_json(const Channel& channel);  ///< without the name (it is the key)
std::string to_json(const DeviceOverride& device);

/// The decision's view of a stored release.
Release to_release(std::string name, const ReleaseDoc& doc);

std::string_view policy_name(AutoUpdatePolicy policy);
std::optional<AutoUpdatePolicy> parse_policy(std::string_view text);

}  // namespace edge::control
