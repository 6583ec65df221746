#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "edge/store/checkin_store.hpp"

namespace edge::api {

class Access;
class ControlService;

/// Rollout auto-pause (DESIGN §11), on the origin. Every committed check-in (a device's
/// own, or relayed by edges) that names a release is remembered per (app, release, device):
/// when the device last tried it (a download start, a set) and when it last failed with it
/// (the plugin's *_fail actions, checksum_required, session_key_required). Once a second,
/// each channel with `auto_pause` and a running rollout is checked: when at least
/// `min_attempts` devices tried the rollout's release within `window_minutes` and the share
/// of them that failed reaches `failure_rate_bps`, the rollout is paused in one numbered
/// write with its reason (so every edge stops it within one sync), audited as "auto-pause".
///
/// Counting devices, not events, keeps repeated events of one device from moving the rate.
/// The window is rebuilt from the stored check-ins at start, so a restart mid-window keeps
/// its counts.
class AutoPauser {
 public:
  AutoPauser(ControlService& control, Access* access);
  ~AutoPauser();
  AutoPauser(const AutoPauser&) = delete;
  AutoPauser& operator=(const AutoPauser&) = delete;

  /// Feeds one committed check-in (CheckinStore's observer; any thread).
  void observe(const store::Checkin& c);
  /// Rebuilds the last 24 h (the longest window) from `checkins`, then checks every
  /// second on a thread of its own until stop().
  void start(const store::CheckinStore& checkins);
  void stop();
  /// One check of every channel now; returns how many rollouts it paused.
  std::size_t check_now();

  /// True for the actions that count as trying a release, and as failing with it.
  static bool is_attempt(std::string_view action);
  static bool is_failure(std::string_view action);

 private:
  struct Device {
    std::int64_t tried_ms = 0;
    std::int64_t failed_ms = 0;
  };
  using Devices = std::unordered_map<std::string, Device>;

  ControlService& control_;
  Access* access_;
  std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, Devices> seen_;  // guarded by mutex_
  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mutex_
  std::thread thread_;
};

}  // namespace edge::api
