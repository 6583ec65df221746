#include "edge/api/auto_pause.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <boost/beast/http/message.hpp>

#include "edge/api/access.hpp"
#include "edge/api/control_service.hpp"
#include "edge/control/decision.hpp"
#include "edge/control/model.hpp"
#include "edge/control/state.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"
#include "edge/core/sha256.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::int64_t kLongestWindowMs = 1440LL * 60'000;
constexpr std::size_t kRebuildMaxRecords = 5'000'000;

// The release a check-in names: the part before ':' (a manifest download's failure names
// "<release>:<file>").
std::string_view release_of(std::string_view version_name) {
  return version_name.substr(0, version_name.find(':'));
}

}  // namespace

bool AutoPauser::is_attempt(std::string_view a) {
  return a == "download_0" || a == "download_zip_start" || a == "download_manifest_start" ||
         a == "set";
}

bool AutoPauser::is_failure(std::string_view a) {
  return a.ends_with("_fail") || a == "checksum_required" || a == "session_key_required";
}

AutoPauser::AutoPauser(ControlService& control, Access* access)
    : control_(control), access_(access) {}

AutoPauser::~AutoPauser() {
  stop();
}

void AutoPauser::observe(const store::Checkin& c) {
  auto state = control_.snapshot();
  std::lock_guard lock(mutex_);
  if (state != watched_state_)
    refresh_locked(std::move(state));  // a rule set a moment ago counts from the next event
  observe_locked(c);
}

void AutoPauser::observe_locked(const store::Checkin& c) {
  auto app = watches_.find(c.app_id);
  if (app == watches_.end())
    return;  // no watched rollout: nothing is kept (the common case)
  const bool update_check = c.action == "updates";
  const bool attempt = !update_check && is_attempt(c.action);
  const bool failure = !update_check && !attempt && is_failure(c.action);
  if (!update_check && !attempt && !failure)
    return;
  const std::string_view release = release_of(c.version_name);
  std::uint64_t key = 0;
  for (auto& w : app->second) {
    // An update check offers the rollout's release when it was answered with an update, or
    // comes from a device that already runs it; the other events must name the release.
    const bool offered = update_check && (c.decision == "update" || release == w.release);
    if (!offered && (update_check || release != w.release))
      continue;
    if (!control::rollout_selects(w.rollout_id, c.device_id, w.bps))
      continue;  // outside the rollout's population: a forged id, or another channel's device
    if (key == 0)
      key = xxh3_64(c.device_id.data(), c.device_id.size()) | 1;
    auto it = w.devices.find(key);
    if (it == w.devices.end()) {
      if (w.devices.size() >= kMaxDevicesPerRollout)
        continue;  // bounded: a rollout tried by more devices counts the first ones
      it = w.devices.emplace(key, Device{}).first;
    }
    Device& d = it->second;
    if (offered) {
      d.offered_ms = std::max(d.offered_ms, c.time_ms);
      continue;
    }
    // A failure is also a try: the device got far enough to fail with the release.
    d.tried_ms = std::max(d.tried_ms, c.time_ms);
    if (failure)
      d.failed_ms = std::max(d.failed_ms, c.time_ms);
  }
}

bool AutoPauser::counts(const store::Checkin& c) const {
  const bool update_check = c.action == "updates";
  if (!update_check && !is_attempt(c.action) && !is_failure(c.action))
    return false;
  const auto state = control_.snapshot();
  const auto app = state->app(c.app_id);
  if (app == nullptr)
    return false;
  const std::string_view release = release_of(c.version_name);
  // The same tests as refresh_locked's watch list and observe_locked's.
  for (const auto& [name, channel] : app->channels) {
    const auto& r = channel.rollout;
    if (!channel.auto_pause || !r || !r->enabled || r->release.empty() || r->bps == 0)
      continue;
    const bool offered = update_check && (c.decision == "update" || release == r->release);
    if (!offered && (update_check || release != r->release))
      continue;
    if (control::rollout_selects(r->id, c.device_id, r->bps))
      return true;
  }
  return false;
}

void AutoPauser::refresh_locked(std::shared_ptr<const control::ControlState> state) {
  std::map<std::string, std::vector<Watch>, std::less<>> next;
  for (const auto& [app_id, app] : state->apps()) {
    for (const auto& [name, channel] : app->channels) {
      const auto& r = channel.rollout;
      if (!channel.auto_pause || !r || !r->enabled || r->release.empty() || r->bps == 0)
        continue;
      Watch w{name, r->release, r->id, r->bps, {}};
      // The same rollout as before keeps its devices (a wider rollout selects a superset).
      if (auto old = watches_.find(app_id); old != watches_.end()) {
        for (auto& o : old->second) {
          if (o.channel == name && o.release == r->release && o.rollout_id == r->id) {
            w.devices = std::move(o.devices);
            break;
          }
        }
      }
      next[app_id].push_back(std::move(w));
    }
  }
  watches_ = std::move(next);
  watched_state_ = std::move(state);
}

void AutoPauser::start(const store::CheckinStore& checkins) {
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    refresh_locked(control_.snapshot());
  }
  auto read = checkins.scan_back(wall_clock_ms() - kLongestWindowMs, kRebuildMaxRecords,
                                 [this](const store::Checkin& c) { observe(c); });
  if (!read) {
    spdlog::error("auto-pause: cannot read the stored check-ins: {}", read.error().message());
  } else if (*read > 0) {
    spdlog::info(
        "auto-pause: windows of {} watched rollouts rebuilt from {} stored check-ins in {} ms",
        watched_rollouts(), *read,
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
  }
  thread_ = named_thread("auto-pause", [this] {
    std::unique_lock lock(stop_mutex_);
    while (!stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; })) {
      lock.unlock();
      check_now();
      lock.lock();
    }
  });
}

void AutoPauser::stop() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

std::size_t AutoPauser::watched_rollouts() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [app, list] : watches_)
    n += list.size();
  return n;
}

std::size_t AutoPauser::remembered_devices() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [app, list] : watches_) {
    for (const auto& w : list)
      n += w.devices.size();
  }
  return n;
}

std::size_t AutoPauser::check_now() {
  const auto state = control_.snapshot();
  const std::int64_t now = wall_clock_ms();
  std::size_t paused = 0;
  {
    std::lock_guard lock(mutex_);
    if (state != watched_state_)
      refresh_locked(state);
  }
  for (const auto& [app_id, app] : state->apps()) {
    for (const auto& [name, channel] : app->channels) {
      if (!channel.auto_pause || !channel.rollout || !channel.rollout->enabled ||
          channel.rollout->paused) {
        continue;
      }
      const auto& rule = *channel.auto_pause;
      const std::int64_t since = now - std::int64_t{rule.window_minutes} * 60'000;
      std::uint64_t offered = 0;
      std::uint64_t tried = 0;
      std::uint64_t failed = 0;
      {
        std::lock_guard lock(mutex_);
        auto it = watches_.find(app_id);
        if (it == watches_.end())
          continue;
        auto w = std::find_if(it->second.begin(), it->second.end(),
                              [&](const Watch& x) { return x.channel == name; });
        if (w == it->second.end())
          continue;
        for (auto d = w->devices.begin(); d != w->devices.end();) {
          const Device& dev = d->second;
          if (std::max(dev.offered_ms, dev.tried_ms) < now - kLongestWindowMs) {
            d = w->devices.erase(d);  // older than any window: forgotten
            continue;
          }
          ++d;
          if (dev.offered_ms == 0)
            continue;  // tried or failed without being offered the release: not counted
          ++offered;
          tried += dev.tried_ms >= since ? 1 : 0;
          failed += dev.failed_ms >= since ? 1 : 0;
        }
      }
      if (tried < rule.min_attempts ||
          failed * 10'000 < std::uint64_t{rule.failure_rate_bps} * tried)
        continue;
      char reason[320];
      std::snprintf(reason, sizeof reason,
                    "auto-pause: %llu of %llu devices trying %s failed in the last %u min "
                    "(%.2f%%, threshold %.2f%%); rests on %llu distinct failing devices, of "
                    "%llu the rollout offered the release to",
                    static_cast<unsigned long long>(failed), static_cast<unsigned long long>(tried),
                    channel.rollout->release.c_str(), rule.window_minutes,
                    100.0 * static_cast<double>(failed) / static_cast<double>(tried),
                    rule.failure_rate_bps / 100.0, static_cast<unsigned long long>(failed),
                    static_cast<unsigned long long>(offered));
      control::Channel next = channel;
      next.rollout->paused = true;
      next.rollout->pause_reason = reason;
      const std::string path = "/v1/admin/apps/" + app_id + "/channels/" + name;
      bhttp::request_header<> req;
      req.method(bhttp::verb::put);
      req.target(path);
      Response r = control_.handle(req, path, control::to_json(next));
      if (access_ != nullptr)
        access_->audit(Caller{"auto-pause", Role::kAdmin, {}}, bhttp::verb::put, path, r.status,
                       change_seq_of(r));
      if (r.status >= 300) {
        spdlog::error("auto-pause of {} channel {} failed: HTTP {} {}", app_id, name, r.status,
                      r.body.substr(0, 200));
        continue;
      }
      spdlog::warn("{} channel {}: {}", app_id, name, reason);
      ++paused;
    }
  }
  return paused;
}

}  // namespace edge::api
