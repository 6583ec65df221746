#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "edge/api/response.hpp"
#include "edge/control/state.hpp"
#include "edge/core/semver.hpp"
#include "edge/store/checkin_backend.hpp"

namespace edge::api {

/// Device rows the plugins and reach answers read from an app's device index per request: a
/// bound on the work of one call, which runs on the admin listener's thread (thread 0, which
/// also serves devices): 200,000 rows took 0.5-1.5 s here, this many a quarter of that. An
/// app with more devices is answered from its first this many by device id (random UUIDs:
/// a fair sample) with "complete": false.
inline constexpr std::size_t kMaxReachScan = 50'000;
/// Distinct plugin versions (major.minor) a tally keeps by name, the first seen; beyond it a
/// version counts under "other" (plugin_version is text a device sends). Far above the
/// versions a real fleet runs, so they are never crowded out; a few KiB at most.
inline constexpr std::size_t kMaxPluginNames = 1024;
/// Rows of the plugins answer: the versions with the most devices, the rest under "other".
inline constexpr std::size_t kPluginTop = 20;
/// Releases of the reach answer (channel releases first, then by devices running them).
inline constexpr std::size_t kReachReleases = 64;

/// Channels a rule names (an app may have many); channel_count says how many need it.
inline constexpr std::size_t kRuleChannels = 10;

/// A requirement the app's channels put on the plugin, and the channels that put it.
struct PluginRule {
  std::string rule;                   ///< "manifest" or "session_key"
  std::string needs;                  ///< the plugin versions that meet it, for people
  std::vector<std::string> channels;  ///< the first kRuleChannels by name
  std::size_t channel_count = 0;      ///< all of them
  bool (*ok)(const SemVer&) = nullptr;
};

/// The rules `app`'s channels need (capgo-protocol.md §9.3-4):
/// * "manifest": a channel whose update_package is delta or delta_from_builtin sends a
///   manifest only (the zip url is a placeholder); plugins without manifest support
///   (control::supports_manifest: 5.10.0 / 6.25.0 / 7.0.35 / 8+) are stranded.
/// * "session_key": a channel pointing (or rolling out) to an encrypted release needs a
///   plugin that decrypts session keys (4.15.0 and later).
/// A rule no channel needs is absent.
std::vector<PluginRule> plugin_rules(const control::AppState& app);

/// Devices per plugin version (major.minor), and per version how many fail each rule.
/// A pure aggregation: fed one device at a time, bounded whatever the devices sent.
class PluginTally {
 public:
  explicit PluginTally(std::vector<PluginRule> rules) : rules_(std::move(rules)) {}
  /// Counts one device by the plugin_version it last sent: "" counts as "unknown", text
  /// that is not a SemVer as "invalid" (neither is flagged: nothing is known of it).
  void add(std::string_view plugin_version);
  std::uint64_t devices() const { return devices_; }
  /// {"versions":[{"version":"8.52","devices":N,"flagged":F,"flags":[{"rule","needs",
  /// "channels","channel_count","devices"}]}], "rules":[...]} (F: devices failing at least one
  /// rule): the `top` versions with the most devices, newest first, then "other", "invalid" and
  /// "unknown" when they count any; a flag per rule that devices of the row fail, with how many do.
  boost::json::object to_json(std::size_t top = kPluginTop) const;

 private:
  struct Row {
    std::uint64_t devices = 0;
    std::vector<std::uint64_t> failing;  ///< per rule
    std::uint64_t flagged = 0;           ///< failing at least one rule
  };
  void count(const std::string& key, const SemVer* v);
  std::vector<PluginRule> rules_;
  std::map<std::string, Row> rows_;
  std::uint64_t devices_ = 0;
};

/// Where an app's devices are, from its device index: per channel its population (devices
/// the decision resolves to it) and how many run its release, and devices per release run.
class ReachTally {
 public:
  explicit ReachTally(const control::AppState& app) : app_(app) {}
  /// Counts one device by its last check-in; `channel` is the channel it resolves to
  /// (nullptr: none). A device runs builtin when it reports "builtin" or its native version
  /// as its version; a version that is no release of the app counts under "other" (as
  /// per-release usage counts it in the store: nowhere), so the tally stays bounded.
  void add(const store::Checkin& device, const control::Channel* channel);
  std::uint64_t devices() const { return devices_; }
  /// {"channels":[{"channel","release","devices","on_release"[,"rollout_release",
  /// "on_rollout_release"]}], "releases":[{"release","running","checked_in_today",
  /// "downloads","installs","failures"}]}: downloads (download_complete), installs (set) and
  /// failures (AutoPauser::is_failure) are events over `analytics`' range, checked_in_today
  /// distinct devices that ran the release on `today` ("YYYY-MM-DD"). At most kReachReleases
  /// releases: the channels' first, then by devices running them.
  boost::json::object to_json(const store::Analytics& analytics, const std::string& today) const;

 private:
  struct Population {
    std::uint64_t devices = 0;
    std::uint64_t on_release = 0;
    std::uint64_t on_rollout = 0;
  };
  const control::AppState& app_;
  std::map<std::string, Population, std::less<>> channels_;
  std::map<std::string, std::uint64_t, std::less<>> running_;
  std::uint64_t devices_ = 0;
};

/// GET /v1/admin/apps/<app>/plugins: PluginTally over the app's device index (at most
/// kMaxReachScan rows), plus "devices" (rows read) and "complete".
Response plugins_response(const store::CheckinQueries& checkins, const control::AppState& app);

/// GET /v1/admin/apps/<app>/reach: ReachTally over the device index (at most kMaxReachScan
/// rows) and the analytics of the last 30 UTC days up to `now_ms`, plus "devices", "complete",
/// "from_ms", "to_ms".
Response reach_response(const store::CheckinQueries& checkins, const control::AppState& app,
                        std::int64_t now_ms);

}  // namespace edge::api
