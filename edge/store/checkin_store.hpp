#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

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

/// Longest stored field of a check-in; longer ones are cut, and NUL bytes become '?', when
/// recorded (so every stored check-in can travel upstream and be accepted there).
inline constexpr std::size_t kMaxCheckinField = 1024;
void sanitize(Checkin& c);

/// Per-day figures of one app.
struct DayStats {
  std::uint64_t devices = 0;                      ///< distinct devices seen that day
  std::map<std::string, std::uint64_t> releases;  ///< check-ins by version_name
  std::map<std::string, std::uint64_t> actions;   ///< check-ins by action
};

/// Options of a CheckinStore.
struct CheckinOptions {
  /// Edges: every check-in also enters the outbox, to be sent upstream (DESIGN §6).
  bool outbox = false;
  /// Past this many bytes of queued check-ins the oldest are dropped (and counted).
  std::uint64_t outbox_max_bytes = 1ULL << 30;
};

/// A batch of the outbox on its way upstream: `batch_seq` is the number in its
/// Idempotency-Key. The same batch (same seq, same check-ins) is returned until it is
/// acknowledged, across restarts, so the receiver can apply each key once.
struct OutboxBatch {
  std::uint64_t batch_seq = 0;
  std::uint64_t first = 0;  ///< outbox seqs covered, inclusive
  std::uint64_t last = 0;
  std::vector<Checkin> checkins;
};

/// Outbox figures for /metrics.
struct OutboxStats {
  std::uint64_t depth = 0;     ///< check-ins waiting
  std::uint64_t bytes = 0;     ///< their encoded size
  std::uint64_t dropped = 0;   ///< dropped (oldest first) because the outbox was full
  std::int64_t oldest_ms = 0;  ///< time of the oldest waiting check-in (0: none)
};

/// The check-in log and aggregates, and on an edge the outbox. Records are queued and
/// group-committed (one synced RocksDB batch per drain of the queue) by a writer thread,
/// which also maintains the aggregates (last check-in per device; per day: devices seen,
/// counts per release and per action) and the outbox entries in the same batch.
///
/// Durability: a check-in is durable once the batch that holds it is committed; the
/// `durable` callback of record() runs then (on the writer thread), so an edge answers a
/// device only after its check-in is on disk. flush() waits for everything queued.
class CheckinStore {
 public:
  /// Called on the writer thread once the record is committed (ok) or the write failed.
  using Durable = std::function<void(bool ok)>;
  /// For record_batch: committed (ok), and whether the key had been applied before.
  using BatchDone = std::function<void(bool ok, bool duplicate)>;

  explicit CheckinStore(Database& db, CheckinOptions options = {});
  ~CheckinStore();  ///< commits what is queued, then stops
  CheckinStore(const CheckinStore&) = delete;
  CheckinStore& operator=(const CheckinStore&) = delete;

  void record(Checkin checkin, Durable durable = {});
  /// A batch a child node sent (POST /v1/checkins, key `<node>:<batch_seq>`). Applied once:
  /// a batch_seq at or below the highest already applied from `node` is a duplicate and
  /// changes nothing (children send their batches in order, one at a time).
  void record_batch(std::string node, std::uint64_t batch_seq, std::vector<Checkin> checkins,
                    BatchDone done);
  /// Blocks until everything recorded before the call is committed.
  void flush();

  /// Per-day stats of an app, oldest day first (UTC days, "YYYY-MM-DD").
  Result<std::map<std::string, DayStats>> stats(const std::string& app_id) const;
  /// The last check-in of a device, or nullopt.
  Result<std::optional<Checkin>> last(const std::string& app_id,
                                      const std::string& device_id) const;
  std::uint64_t committed() const;

  /// The next batch to send upstream: at most `max` check-ins and about `max_bytes` of
  /// them (a receiver bounds request bodies; JSON adds ~100 bytes per check-in to the
  /// stored size). None waiting: empty `checkins`.
  Result<OutboxBatch> outbox_next(std::size_t max, std::size_t max_bytes = 256 << 10);
  /// Deletes an acknowledged batch from the outbox.
  Result<void> outbox_ack(const OutboxBatch& batch);
  /// Waits up to `timeout` for the outbox to hold something; true if it does.
  bool outbox_wait(std::chrono::milliseconds timeout);
  OutboxStats outbox_stats() const;

 private:
  struct Item {
    std::vector<Checkin> checkins;
    BatchDone done;
    std::string node;  ///< non-empty: a child's batch
    std::uint64_t batch_seq = 0;
  };
  void run();
  void commit(std::deque<Item>& batch);
  void trim_outbox();

  Database& db_;
  CheckinOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable flushed_;
  std::condition_variable outbox_cv_;
  std::deque<Item> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t committed_ = 0;
  std::uint64_t next_seq_ = 1;           // writer thread only
  std::uint64_t next_outbox_ = 1;        // writer thread only
  std::uint64_t outbox_depth_ = 0;       // guarded by mutex_
  std::uint64_t outbox_bytes_ = 0;       // guarded by mutex_
  std::uint64_t outbox_dropped_ = 0;     // guarded by mutex_
  std::optional<OutboxBatch> inflight_;  // guarded by outbox_mutex_
  mutable std::mutex outbox_mutex_;      // outbox_next/ack/trim: one at a time
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace edge::store
