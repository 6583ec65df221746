#pragma once

// What the API layer knows of check-ins: their types, the ingest side (devices' check-ins and
// child nodes' batches go in) and the query side (the admin API's aggregates, device index
// and timelines). Two implementations: CheckinStore (RocksDB, one node) and, on an origin of
// the tier, edge/pg's PgCheckins (PostgreSQL, shared by every origin). The API layer talks to
// these interfaces only and does not know which backend answers.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::store {

/// One device contact (DESIGN §5): every /updates and /stats call produces one.
struct Checkin {
  std::string app_id;
  std::string device_id;
  std::string platform;
  std::string version_name;
  std::string version_build;
  std::string action;    ///< the stats action, or "updates" for an update check
  std::string decision;  ///< the update decision's error code, "update", or "" for stats
  std::int64_t time_ms = 0;
  std::string plugin_version{};   ///< the plugin's version, as the device sent it (may be empty)
  std::string custom_id{};        ///< the app's own id for the device (may be empty)
  std::string default_channel{};  ///< the device's defaultChannel (may be empty)
};

/// Longest stored field of a check-in, in bytes. When recorded, a longer field is cut at a
/// UTF-8 character boundary, bytes that are not valid UTF-8 and NUL bytes become '?': every
/// stored check-in is valid UTF-8 and so can travel upstream and be accepted there.
inline constexpr std::size_t kMaxCheckinField = 1024;
void sanitize(Checkin& c);

/// Distinct device-reported names one counter map of a bucket keeps (an hour's actions,
/// platforms, releases, installs, targets and each target's actions; a day's devices by
/// release). Once a map holds this many, a new name counts under kOtherName: the stored
/// counters, and so the analytics answers, stay bounded whatever devices send. Above the 93
/// stats actions Capgo defines, so a map of real actions never overflows.
inline constexpr std::size_t kMaxAnalyticsNames = 128;
/// The name that gathers what a counter map does not keep by its own name: platforms other
/// than ios/android/electron, targets that are not releases of the app, and the names
/// beyond kMaxAnalyticsNames.
inline constexpr std::string_view kOtherName = "other";

/// The platform a check-in counts under: "ios", "android", "electron", else kOtherName
/// ("" for an empty one, which is not counted).
std::string_view analytics_platform(std::string_view platform);
/// The release a version name counts under: the part before the first ':' (the plugin names
/// a failing file of a manifest as "<release>:<file>").
std::string_view analytics_release(std::string_view version_name);
/// The name per-release usage (running releases, installs, devices per release a day) counts
/// a running `version` under: its release (analytics_release) when `is_release(release)`,
/// "builtin" as sent, or "builtin" for the native version (`version_build`) that a device on
/// builtin reports as its version_name; "" for any other name (a deleted bundle, a name no
/// release has), which per-release usage skips.
template <class IsRelease>
std::string_view usage_name(std::string_view version, std::string_view version_build,
                            IsRelease&& is_release) {
  const std::string_view r = analytics_release(version);
  if (r.empty() || r == "builtin" || is_release(r))
    return r;
  return r == version_build ? std::string_view("builtin") : std::string_view();
}

/// The counters of one hour of one app ("YYYY-MM-DDTHH", UTC), from the check-ins whose
/// event time falls in it. Each map holds at most kMaxAnalyticsNames names and kOtherName;
/// names of releases are analytics_release's, platforms analytics_platform's.
struct HourStats {
  std::map<std::string, std::uint64_t> actions;    ///< check-ins by action
  std::map<std::string, std::uint64_t> platforms;  ///< check-ins by platform
  /// Check-ins by the version the device runs (target-naming events excluded).
  std::map<std::string, std::uint64_t> releases;
  std::map<std::string, std::uint64_t> installs;  ///< "set" events by the release set
  /// Target-naming events by the release they name, then by action: downloads, installs
  /// queued, and the failures (checksum_required, *_fail, ...) that show a bad release.
  std::map<std::string, std::map<std::string, std::uint64_t>> targets;
};

/// The distinct-device figures of one UTC day ("YYYY-MM-DD").
struct DayDevices {
  std::uint64_t devices = 0;  ///< distinct devices seen that day
  /// Distinct devices that ran each release that day (a device counts once per release it
  /// ran; one that went A -> B -> A the same day counts twice for A). Capped like HourStats.
  std::map<std::string, std::uint64_t> by_release;
};

/// An app's figures over a time range.
struct Analytics {
  std::map<std::string, HourStats> hours;  ///< by hour, oldest first; empty hours absent
  std::map<std::string, DayDevices> days;  ///< by day, oldest first; empty days absent
};

/// One entry of a device's timeline (CheckinQueries::timeline).
using TimelineEntry = Checkin;

/// True for the stats actions whose version_name names the bundle being fetched or
/// installed rather than the one running (capgo-protocol.md §9.5): download_*, set_next,
/// delete, checksum_required, session_key_required, insufficient_disk_space and every
/// *_fail. They do not move a device's current version.
bool names_target_release(std::string_view action);

/// UTC day "YYYY-MM-DD" and hour "YYYY-MM-DDTHH" of a millisecond time.
std::string utc_day(std::int64_t time_ms);
std::string utc_hour(std::int64_t time_ms);

/// Adds `n` to `name` in `m`, or to kOtherName once `m` holds kMaxAnalyticsNames other
/// names (the cap of a counter map, applied again when counters are read back).
void add_capped(std::map<std::string, std::uint64_t>& m, std::string_view name, std::uint64_t n);

/// One page of an app's device index (every device's last check-in, by device id).
struct DevicePage {
  std::vector<Checkin> devices;
  std::string next;  ///< the cursor of the next page; empty at the end
};

/// Where check-ins go in: a node's own devices' (record) and its child nodes' batches
/// (record_batch). Callbacks run on the backend's writer thread once the outcome is known.
class CheckinIngest {
 public:
  /// Called once the record is committed (ok) or the write failed.
  using Durable = std::function<void(bool ok)>;
  /// For record_batch: committed (ok), and whether the key had been applied before.
  using BatchDone = std::function<void(bool ok, bool duplicate)>;

  /// The 503 a refused write answers (writable() aside, which is a full disk).
  struct Refusal {
    std::string_view code;     ///< the error code of the JSON answer
    std::string_view message;  ///< what happened, in words
  };

  virtual ~CheckinIngest() = default;

  /// Queues a check-in. With `durable`, it runs once the check-in is committed (or refused);
  /// without it, the check-in joins a batch that gathers for a few milliseconds.
  virtual void record(Checkin checkin, Durable durable = {}) = 0;
  /// A batch a child node sent (POST /v1/checkins, key `<node>:<generation>:<batch_seq>`),
  /// applied once: a batch_seq at or below the highest applied from (node, generation) is a
  /// duplicate and changes nothing (`done(true, true)`). `generation` is empty for keys of
  /// the older `<node>:<batch_seq>` form.
  virtual void record_batch(std::string node, std::string generation, std::uint64_t batch_seq,
                            std::vector<Checkin> checkins, BatchDone done) = 0;
  /// Blocks until everything recorded before the call is committed (or given up).
  virtual void flush() = 0;
  /// False while local storage is full: record() calls fail then (a 503 storage_full).
  virtual bool writable() const = 0;
  /// What a refused write (done(false)) answers when writable() is true.
  virtual Refusal refusal() const = 0;
};

/// What the admin API reads of check-ins.
class CheckinQueries {
 public:
  virtual ~CheckinQueries() = default;

  /// An app's hourly counters and daily distinct devices for the hours from `from_ms` to
  /// `to_ms` (both included, event time), read from the stored aggregates.
  virtual Result<Analytics> analytics(const std::string& app_id, std::int64_t from_ms,
                                      std::int64_t to_ms) const = 0;
  /// A device's last events (at most checkins.timeline_events, within the retention), the
  /// newest event time first, at most `limit` of them. Target-naming events keep the
  /// version they name.
  virtual Result<std::vector<TimelineEntry>> timeline(const std::string& app_id,
                                                      const std::string& device_id,
                                                      std::size_t limit) const = 0;
  /// Devices of `app_id` with an id above `after`, in id order (bytewise), that `keep`
  /// accepts: at most `limit`, and no more than `max_scan` rows read (a page may then come
  /// back short with a cursor: paging stays exact).
  virtual Result<DevicePage> devices(const std::string& app_id, const std::string& after,
                                     std::size_t limit, std::size_t max_scan,
                                     const std::function<bool(const Checkin&)>& keep) const = 0;
  /// The last check-in of a device, or nullopt. Its version_name is the version the device
  /// runs: a target-naming event (names_target_release) keeps the one before it.
  virtual Result<std::optional<Checkin>> last(const std::string& app_id,
                                              const std::string& device_id) const = 0;
  /// How many of an app's devices last reported each native version_build, from at most
  /// `max_devices` devices (a bound on the work of one call).
  virtual Result<std::map<std::string, std::uint64_t>> native_builds(
      const std::string& app_id, std::size_t max_devices) const = 0;
};

}  // namespace edge::store
