#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/state_store.hpp"

namespace edge::store {

/// What a follower of a control log gets next: the changes after its cursor, or (when its
/// cursor is older than the retained log, or its epoch is not the log's) a whole snapshot
/// to replace its state with.
struct FollowStep {
  std::vector<Change> changes;
  std::optional<StateStore::Snapshot> snapshot;
};

/// Where a node's control writes are decided: the authority that numbers them. The node's
/// own StateStore reads (snapshots for the sync feed, channel history) always come from its
/// local StateStore; this is only the write side and, for a log shared by several origins,
/// the way to follow the others' writes into that local store.
///
/// Two implementations: the embedded StateStore (the log is the local store, nobody else
/// writes it) and the PostgreSQL tier (edge/pg), where every origin commits to one shared
/// log and follows it into its local store.
class ControlLog {
 public:
  virtual ~ControlLog() = default;

  /// Commits `batch` as the changes right after sequence number `based_on`, the last change
  /// the caller validated the batch against, and makes them part of the local StateStore
  /// before returning the sequence number of the last one (each change of the batch gets
  /// its number). Errc::kConflict: the log has changes after `based_on` (another origin
  /// wrote): nothing was written; follow the log and validate again. Errc::kUnavailable:
  /// the shared backend cannot take writes now (down, read-only during a failover).
  /// Errc::kStorageFull as the local store reports it.
  virtual Result<std::uint64_t> commit(StateStore::Batch& batch, std::uint64_t based_on) = 0;

  /// Whether other writers share this log (so the node must follow it).
  virtual bool shared() const = 0;

  /// Up to `limit` changes after `after` for a follower whose state has epoch `epoch`, or a
  /// snapshot when those changes are no longer kept or the epoch differs. A log nobody else
  /// writes returns nothing.
  virtual Result<FollowStep> follow(std::uint64_t after, const std::string& epoch,
                                    std::size_t limit) = 0;

  /// Waits up to `timeout` for a sign that the log moved (another origin committed). False
  /// on timeout; a log nobody else writes just waits.
  virtual bool wait_change(std::chrono::milliseconds timeout) = 0;

  /// Wakes wait_change() at once (shutdown).
  virtual void interrupt() = 0;
};

}  // namespace edge::store

namespace edge::store {

/// The embedded origin's log: its own StateStore, which nobody else writes.
class LocalControlLog final : public ControlLog {
 public:
  explicit LocalControlLog(StateStore& state) : state_(state) {}
  Result<std::uint64_t> commit(StateStore::Batch& batch, std::uint64_t based_on) override {
    if (based_on != state_.last_seq())
      return Errc::kConflict;
    return state_.commit(batch);
  }
  bool shared() const override { return false; }
  Result<FollowStep> follow(std::uint64_t, const std::string&, std::size_t) override {
    return FollowStep{};
  }
  bool wait_change(std::chrono::milliseconds timeout) override;
  void interrupt() override;

 private:
  StateStore& state_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool interrupted_ = false;
};

}  // namespace edge::store
