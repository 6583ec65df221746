#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "edge/core/errc.hpp"
#include "edge/store/database.hpp"

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
};

/// Per-day figures of one app.
struct DayStats {
  std::uint64_t devices = 0;                      ///< distinct devices seen that day
  std::map<std::string, std::uint64_t> releases;  ///< check-ins by version_name
  std::map<std::string, std::uint64_t> actions;   ///< check-ins by action
};

/// The origin's check-in log and aggregates. record() never blocks on the disk: records are
/// queued and group-committed (one synced RocksDB batch per drain of the queue) by a writer
/// thread, which also maintains the aggregates (last check-in per device; per day: devices
/// seen, counts per release and per action) in the same batch.
///
/// Durability: a check-in is durable once the batch that holds it is committed (flush()
/// waits for that); a crash can lose the check-ins still queued, at most one batch.
/// (An edge's outbox must be durable before the device's answer: issue #5.)
class CheckinStore {
 public:
  explicit CheckinStore(Database& db);
  ~CheckinStore();  ///< commits what is queued, then stops
  CheckinStore(const CheckinStore&) = delete;
  CheckinStore& operator=(const CheckinStore&) = delete;

  void record(Checkin checkin);
  /// Blocks until everything recorded before the call is committed.
  void flush();

  /// Per-day stats of an app, oldest day first (UTC days, "YYYY-MM-DD").
  Result<std::map<std::string, DayStats>> stats(const std::string& app_id) const;
  /// The last check-in of a device, or nullopt.
  Result<std::optional<Checkin>> last(const std::string& app_id,
                                      const std::string& device_id) const;
  std::uint64_t committed() const;

 private:
  void run();
  void commit(std::deque<Checkin>& batch);

  Database& db_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable flushed_;
  std::deque<Checkin> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t committed_ = 0;
  std::uint64_t next_seq_ = 1;  // writer thread only
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace edge::store
