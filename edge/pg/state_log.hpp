#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "edge/pg/connection.hpp"
#include "edge/store/control_log.hpp"

namespace edge::pg {

/// What /readyz and /metrics show of the state database.
struct StateHealth {
  bool up = false;                ///< the last statement reached a primary
  std::string server;             ///< host:port of the connection in use ("" when none)
  std::string error;              ///< the last error, in words, without credentials
  std::int64_t standbys = -1;     ///< streaming standbys the primary reports (-1: not visible)
  double replication_lag_s = -1;  ///< the largest replay lag among them (-1: not visible)
};

/// The control log shared by every origin of the tier, in PostgreSQL (DESIGN §12.2):
/// documents, the numbered changelog and the feed head, written in one transaction per
/// admin write, numbered by `UPDATE be_feed_head SET seq = seq + n` (the row lock
/// serialises writers, so commit order is sequence order and a follower reading
/// `seq > cursor` never misses a lower number committed later), with a NOTIFY that wakes the
/// other origins at commit. Each origin's local StateStore (`mirror`) follows it: a write is
/// applied there right after its commit, the others' writes by ControlService::catch_up.
///
/// Thread-safety: commit, follow and wait_change may be called from different threads
/// (each has its own connection).
class StateLog final : public store::ControlLog {
 public:
  StateLog(std::string url, store::StateStore& mirror);

  /// Connects and migrates the schema (see migrate_schema). `error` says what failed.
  Result<void> open(std::string* error);

  Result<std::uint64_t> commit(store::StateStore::Batch& batch, std::uint64_t based_on) override;
  bool shared() const override { return true; }
  Result<store::FollowStep> follow(std::uint64_t after, const std::string& epoch,
                                   std::size_t limit) override;
  bool wait_change(std::chrono::milliseconds timeout) override;
  void interrupt() override;

  /// Copies an embedded origin's state into an empty database: its documents, its retained
  /// changelog and its feed head (same sequence numbers and epoch, so edges go on without a
  /// snapshot). Errc::kInvalidArgument (and `error`) if the database already holds changes.
  Result<void> import(const store::StateStore::Snapshot& snap,
                      const std::vector<store::Change>& changelog, std::uint64_t log_start,
                      std::string* error);

  /// Keeps the newest `keep` changes of the shared changelog (sync.changelog_keep): deletes
  /// up to 10,000 older ones per call and moves log_start (followers behind it take a
  /// snapshot). Singleton work. Returns how many were deleted.
  Result<std::uint64_t> trim_changelog(std::uint64_t keep);

  /// Reads the health figures (one round trip on a connection of its own).
  StateHealth health();
  const std::string& where() const { return health_conn_.where(); }

 private:
  /// Inserts `changes` into the changelog and makes the documents what `documents` (in
  /// order) leave them.
  Result<void> write_changes(Connection& c, const std::vector<store::Change>& changes,
                             const std::vector<store::Change>& documents);

  store::StateStore& mirror_;
  std::mutex write_mutex_;
  Connection write_conn_;
  std::mutex follow_mutex_;
  Connection follow_conn_;
  Connection listen_conn_;  // wait_change's thread only
  std::mutex health_mutex_;
  Connection health_conn_;
  std::mutex wait_mutex_;
  std::condition_variable wait_cv_;
  bool interrupted_ = false;
};

}  // namespace edge::pg
