#include "edge/api/auto_pause.hpp"

#include <chrono>
#include <cstdio>

#include <boost/beast/http/message.hpp>

#include "edge/api/access.hpp"
#include "edge/api/control_service.hpp"
#include "edge/control/model.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::int64_t kLongestWindowMs = 1440LL * 60'000;
constexpr std::size_t kRebuildMaxRecords = 5'000'000;
constexpr std::size_t kMaxDevicesPerRelease = 1'000'000;

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
  const bool attempt = is_attempt(c.action);
  const bool failure = !attempt && is_failure(c.action);
  if ((!attempt && !failure) || c.version_name.empty())
    return;
  std::lock_guard lock(mutex_);
  auto& devices = seen_[{c.app_id, c.version_name}];
  auto it = devices.find(c.device_id);
  if (it == devices.end()) {
    if (devices.size() >= kMaxDevicesPerRelease)
      return;  // bounded: a release tried by more devices than this counts the first ones
    it = devices.emplace(c.device_id, Device{}).first;
  }
  // A failure is also a try: the device got far enough to fail with the release.
  it->second.tried_ms = std::max(it->second.tried_ms, c.time_ms);
  if (failure)
    it->second.failed_ms = std::max(it->second.failed_ms, c.time_ms);
}

void AutoPauser::start(const store::CheckinStore& checkins) {
  const auto t0 = std::chrono::steady_clock::now();
  auto read = checkins.scan_back(wall_clock_ms() - kLongestWindowMs, kRebuildMaxRecords,
                                 [this](const store::Checkin& c) { observe(c); });
  if (!read) {
    spdlog::error("auto-pause: cannot read the stored check-ins: {}", read.error().message());
  } else if (*read > 0) {
    spdlog::info(
        "auto-pause: windows rebuilt from {} stored check-ins in {} ms", *read,
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

std::size_t AutoPauser::check_now() {
  const auto state = control_.snapshot();
  const std::int64_t now = wall_clock_ms();
  std::size_t paused = 0;
  for (const auto& [app_id, app] : state->apps()) {
    for (const auto& [name, channel] : app->channels) {
      if (!channel.auto_pause || !channel.rollout || !channel.rollout->enabled ||
          channel.rollout->paused) {
        continue;
      }
      const auto& rule = *channel.auto_pause;
      const std::int64_t since = now - std::int64_t{rule.window_minutes} * 60'000;
      std::uint64_t tried = 0;
      std::uint64_t failed = 0;
      {
        std::lock_guard lock(mutex_);
        auto it = seen_.find({app_id, channel.rollout->release});
        if (it == seen_.end())
          continue;
        for (auto d = it->second.begin(); d != it->second.end();) {
          if (d->second.tried_ms < now - kLongestWindowMs) {
            d = it->second.erase(d);  // older than any window: forgotten
            continue;
          }
          tried += d->second.tried_ms >= since ? 1 : 0;
          failed += d->second.failed_ms >= since ? 1 : 0;
          ++d;
        }
      }
      if (tried < rule.min_attempts ||
          failed * 10'000 < std::uint64_t{rule.failure_rate_bps} * tried)
        continue;
      char reason[256];
      std::snprintf(reason, sizeof reason,
                    "auto-pause: %llu of %llu devices trying %s failed in the last %u min "
                    "(%.2f%%, threshold %.2f%%)",
                    static_cast<unsigned long long>(failed), static_cast<unsigned long long>(tried),
                    channel.rollout->release.c_str(), rule.window_minutes,
                    100.0 * static_cast<double>(failed) / static_cast<double>(tried),
                    rule.failure_rate_bps / 100.0);
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
