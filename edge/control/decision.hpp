#pragma once

// The Capgo update decision (capgo-protocol.md §5) as a pure function: (request, app state)
// -> decision. No I/O, no clocks, no randomness: every edge decides the same way.
//
// Status: the engine and its tests only. The state store, the admin API and the /updates
// endpoint that feed and use it are issue #4's remaining work.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/semver.hpp"

namespace edge::control {

enum class Platform { kIos, kAndroid, kElectron };
/// "ios" | "android" | "electron"; anything else is nullopt (-> 400 in the endpoint).
std::optional<Platform> parse_platform(std::string_view text);

/// Capgo's `disable_auto_update` column (default `major`).
enum class AutoUpdatePolicy { kMajor, kMinor, kPatch, kVersionNumber, kNone };

/// A channel's download format, Capgo's `update_package` (capgo-protocol.md §9.4):
/// `all` (default: the zip url and the manifest), `zip` (no manifest), `delta` (the manifest;
/// the url is a placeholder), `zip_from_builtin` / `delta_from_builtin` (that format for
/// devices on builtin, `all` for the others).
enum class UpdatePackage { kAll, kZip, kDelta, kZipFromBuiltin, kDeltaFromBuiltin };
std::string_view update_package_name(UpdatePackage p);
std::optional<UpdatePackage> parse_update_package(std::string_view text);

/// Whether a plugin takes a `manifest` in the update answer: >= 5.10.0 / 6.25.0 / 7.0.35 /
/// any 8.x and later (capgo-protocol.md §2.3 a).
bool supports_manifest(const SemVer& plugin);

/// A release (Capgo "version") as the decision sees it.
struct Release {
  std::string name;
  bool deleted = false;
  bool has_zip = false;              ///< a zip blob to download (the update `url`)
  std::size_t manifest_entries = 0;  ///< delta files
  std::string key_id;                ///< "" = not encrypted
  std::string min_update_version;    ///< "" = NULL (policy version_number needs it)
};

/// A rollout on a channel: `bps` basis points (0..10000) of devices get `release`.
struct Rollout {
  std::string release;
  std::uint32_t bps = 0;
  bool enabled = false;
  bool paused = false;
  std::string id;            ///< changes when the rollout is restarted; part of the stickiness key
  std::string pause_reason;  ///< why it was paused ("" when paused by hand or running)
};

/// Pause a channel's rollout when too many of the devices trying its release fail
/// (DESIGN §11): evaluated on the origin as check-ins arrive. The decision ignores it.
struct AutoPause {
  std::uint32_t failure_rate_bps = 0;  ///< 1..10000: failing / trying devices, basis points
  std::uint32_t window_minutes = 0;    ///< 1..1440: how far back devices count
  std::uint32_t min_attempts = 0;      ///< devices trying before the rate counts (>= 1)
};

/// A channel with Capgo's column defaults (capgo-protocol.md §5, table `channels`).
struct Channel {
  std::string name;
  std::string release;  ///< "" = NULL: the pseudo-release "builtin"
  bool is_public = false;
  bool ios = true;
  bool android = true;
  bool electron = true;
  bool allow_device_self_set = false;
  bool allow_emulator = true;
  bool allow_device = true;
  bool allow_dev = true;
  bool allow_prod = true;
  AutoUpdatePolicy disable_auto_update = AutoUpdatePolicy::kMajor;
  bool disable_auto_update_under_native = true;
  UpdatePackage update_package = UpdatePackage::kAll;
  std::optional<Rollout> rollout;
  std::optional<AutoPause> auto_pause;
};

/// The channel's ios / android / electron flag for `platform`.
bool platform_enabled(const Channel& channel, Platform platform);

/// What the decision reads of one app's state. The state store implements it; so do tests.
/// Pointers returned stay valid for the duration of decide().
class AppView {
 public:
  virtual ~AppView() = default;
  virtual const Channel* channel(std::string_view name) const = 0;
  /// Every channel of the app, ordered by name (the public-channel lookup takes the first).
  virtual std::vector<const Channel*> channels() const = 0;
  virtual const Release* release(std::string_view name) const = 0;
  /// The channel name a device is pinned to, if any.
  virtual std::optional<std::string> device_override(std::string_view device_id) const = 0;
};

/// A validated /updates body (the endpoint parses and coerces; see capgo-protocol.md §2.2).
struct UpdateRequest {
  std::string device_id;  ///< lower-case UUID
  Platform platform = Platform::kAndroid;
  std::string version_name;  ///< current bundle; "builtin" already rewritten to version_build
  SemVer version_build;      ///< native version, coerced to X.Y.Z
  SemVer plugin_version;
  bool is_emulator = false;
  bool is_prod = true;
  std::string default_channel;  ///< "" when the plugin sent none
  std::string key_id;           ///< "" when the plugin sent none
  /// The device runs the bundle shipped in the app (version_name was "builtin" or equals
  /// version_build): decides builtin reverts and the *_from_builtin formats.
  bool on_builtin = false;
};

/// kRevertToBuiltin: the channel points at builtin and the device runs an OTA bundle; the
/// answer is `{"version":"builtin"}` with no error and no kind (capgo-protocol.md §9.1).
enum class Kind { kUpdate, kUpToDate, kBlocked, kFailed, kRevertToBuiltin };
/// The `kind` field of a 200 error body: "up_to_date", "blocked", "failed" ("" for kUpdate
/// and kRevertToBuiltin, which carry none).
std::string_view kind_name(Kind kind);

/// The outcome: an update to `release` (kind kUpdate), or a Capgo business error with its
/// code, message and extra fields (capgo-protocol.md §2.3 b).
struct Decision {
  Kind kind = Kind::kFailed;
  std::string error;  ///< e.g. "no_new_version_available"; empty for kUpdate
  std::string message;
  std::optional<std::string> version;        ///< extra field `version`
  std::optional<std::string> old;            ///< extra field `old`
  bool major = false;                        ///< extra field `major:true`
  std::string device_key_id, bundle_key_id;  ///< key_id_mismatch extras
  const Channel* channel = nullptr;          ///< the effective channel, when one was found
  const Release* release = nullptr;          ///< the target release (nullptr for builtin)
  bool via_override = false;
  bool via_rollout = false;
  /// kUpdate: what the answer carries, by the channel's update_package, the release's
  /// files and the plugin's manifest support. Without send_zip the url is a placeholder.
  bool send_zip = false;
  bool send_manifest = false;
};

/// Sticky rollout selection: true iff the device falls in the first `bps` of 10000 buckets
/// given by SHA-256(rollout_id ":" device_id). Deterministic, so every edge agrees without
/// shared state; raising bps only adds devices, lowering it only removes some.
bool rollout_selects(std::string_view rollout_id, std::string_view device_id, std::uint32_t bps);

/// How a device's channel was chosen (capgo-protocol.md §5 step 3).
enum class ChannelReason : std::uint8_t { kOverride, kDefaultChannel, kPublic, kNone };
std::string_view to_string(ChannelReason reason);

/// The channel a device resolves to: its override (if the channel exists and is usable),
/// else its defaultChannel (if that channel qualifies: no fallback to a public one when it
/// does not), else the first public channel for its platform. nullptr with kNone: none.
struct ResolvedChannel {
  const Channel* channel = nullptr;
  ChannelReason reason = ChannelReason::kNone;
};
ResolvedChannel resolve_channel(std::string_view device_id, Platform platform,
                                std::string_view default_channel, const AppView& app);

/// capgo-protocol.md §5 steps 2-10 (step 1, the unknown-app 429, is the endpoint's).
Decision decide(const UpdateRequest& request, const AppView& app);

}  // namespace edge::control
