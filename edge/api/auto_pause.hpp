#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "edge/store/checkin_store.hpp"

namespace edge::control {
class ControlState;
}

namespace edge::api {

class Access;
class ControlService;

/// Rollout auto-pause (DESIGN §11), on the origin. It watches only the rollouts that can be
/// paused: enabled, with a release and an `auto_pause` rule. For each, every committed
/// check-in (a device's own, or relayed by edges) of a device that the rollout's sticky hash
/// selects is remembered per device: when it was offered the rollout's release (an update
/// check answered "update", or one from a device already running it), when it last tried
/// the release (a download start, a set) and when it last failed with it (the plugin's
/// *_fail actions, checksum_required, session_key_required). Once a second, each watched
/// rollout is checked: when at least `min_attempts` devices that were offered the release
/// tried it within `window_minutes` and the share of them that failed reaches
/// `failure_rate_bps`, the rollout is paused in one numbered write with its reason (so every
/// edge stops it within one sync), audited as the internal actor "auto-pause".
///
/// Devices are unauthenticated, so forging failures is made dear: an id counts only if the
/// rollout selects it and it was offered the release, and the reason says how many distinct
/// devices the pause rests on. Counting devices, not events, keeps repeated events of one
/// device from moving the rate. Memory is bounded: nothing is kept for any other name a
/// device sends, a rollout's devices are forgotten when it ends or restarts, and each
/// rollout holds at most kMaxDevicesPerRollout devices (8-byte hashes of their ids). The
/// windows are rebuilt from the stored check-ins at start, so a restart mid-window keeps its
/// counts.
class AutoPauser {
 public:
  /// Devices remembered per watched rollout; past it, new devices are not counted.
  static constexpr std::size_t kMaxDevicesPerRollout = 1'000'000;

  AutoPauser(ControlService& control, Access* access);
  ~AutoPauser();
  AutoPauser(const AutoPauser&) = delete;
  AutoPauser& operator=(const AutoPauser&) = delete;

  /// Feeds one committed check-in (CheckinStore's observer; any thread).
  void observe(const store::Checkin& c);
  /// Takes the watched rollouts from the control state, rebuilds the last 24 h (the longest
  /// window) from `checkins`, then checks every second on a thread of its own until stop().
  void start(const store::CheckinStore& checkins);
  void stop();
  /// One check of every watched rollout now (the watch list is refreshed from the control
  /// state first); returns how many rollouts it paused.
  std::size_t check_now();

  /// Watched rollouts, and devices remembered across them (the `edge_auto_pause_*` gauges).
  std::size_t watched_rollouts() const;
  std::size_t remembered_devices() const;

  /// True for a check-in that observe() would count now: an update check offering, a try or
  /// a failure of a watched rollout's release by a device the rollout selects. The origins
  /// of a tier keep only these for the one that evaluates auto-pause (edge/pg/
  /// pause_events.hpp). Thread-safe, reads the control state only.
  bool counts(const store::Checkin& c) const;

  /// True for the actions that count as trying a release, and as failing with it.
  static bool is_attempt(std::string_view action);
  static bool is_failure(std::string_view action);

 private:
  struct Device {
    std::int64_t offered_ms = 0;
    std::int64_t tried_ms = 0;
    std::int64_t failed_ms = 0;
  };
  /// One watched rollout of one channel.
  struct Watch {
    std::string channel;
    std::string release;
    std::string rollout_id;
    std::uint32_t bps = 0;
    std::unordered_map<std::uint64_t, Device> devices;  // by XXH3 of the device id
  };

  /// Re-reads the watch list from `state` (mutex_ held): new rollouts are added, ended,
  /// restarted or re-targeted ones dropped with their devices.
  void refresh_locked(std::shared_ptr<const control::ControlState> state);
  void observe_locked(const store::Checkin& c);

  ControlService& control_;
  Access* access_;
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<Watch>, std::less<>> watches_;  // by app; guarded by mutex_
  std::shared_ptr<const control::ControlState> watched_state_;      // guarded by mutex_
  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mutex_
  std::thread thread_;
};

}  // namespace edge::api
