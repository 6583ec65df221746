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
#include <string_view>
#include <thread>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/checkin_backend.hpp"
#include "edge/store/database.hpp"

namespace edge::store {

/// Options of a CheckinStore.
struct CheckinOptions {
  /// Edges: every check-in also enters the outbox, to be sent upstream (DESIGN §6).
  bool outbox = false;
  /// Past this many bytes of queued check-ins the oldest are dropped (and counted).
  std::uint64_t outbox_max_bytes = 1ULL << 30;
  /// Each device's timeline shows its last this many events (0: no timelines). A timeline is
  /// a chain through the raw log, so it holds events the retention sweep has not deleted.
  std::uint32_t timeline_events = 50;
  /// Hourly buckets and the raw log older than this many days (with them the timelines'
  /// older events), and the old rings of devices not seen for as long, are deleted (an
  /// hourly sweep). 0: keep everything.
  std::uint32_t retention_days = 90;
  /// Whether `release` is a release of `app_id`. Target-naming events whose release
  /// (analytics_release) is neither one nor "builtin" count under kOtherName, so random
  /// names cannot crowd the real releases out of a bucket. Called on the writer thread (for
  /// relayed check-ins too), so it must be thread-safe and cheap. Empty: every name counts.
  std::function<bool(std::string_view app_id, std::string_view release)> is_release{};
};

/// A batch of the outbox on its way upstream: `batch_seq` is the number in its
/// Idempotency-Key. The same batch (same seq, same check-ins) is returned until it is
/// acknowledged, across restarts, so the receiver can apply each key once.
struct OutboxBatch {
  /// The generation the batch was numbered in (random, new at every start of the store):
  /// with the seq it makes the key unique even when numbering restarts (a wiped or
  /// restored data directory), so a receiver never takes a new batch for a duplicate.
  std::uint64_t generation = 0;
  std::uint64_t batch_seq = 0;
  std::uint64_t first = 0;  ///< outbox seqs covered, inclusive
  std::uint64_t last = 0;
  std::vector<Checkin> checkins;
};

/// A batch the upstream refused for good (a non-retryable 4xx): kept aside, out of the
/// queue, for the operator to read (GET /v1/admin/outbox/dead-letters).
struct DeadLetter {
  std::uint64_t batch_seq = 0;
  std::int64_t time_ms = 0;  ///< when it was set aside
  std::string reason;        ///< the upstream's status and message
  std::vector<Checkin> checkins;
};

/// Outbox figures for /metrics.
struct OutboxStats {
  std::uint64_t depth = 0;          ///< check-ins waiting
  std::uint64_t bytes = 0;          ///< their encoded size
  std::uint64_t dropped = 0;        ///< dropped (oldest first) because the outbox was full
  std::int64_t oldest_ms = 0;       ///< time of the oldest waiting check-in (0: none)
  std::uint64_t dead_batches = 0;   ///< batches set aside as dead letters (kept on disk)
  std::uint64_t dead_checkins = 0;  ///< check-ins in them
};

/// The check-in log and aggregates, and on an edge the outbox. Records are queued and
/// group-committed (one synced RocksDB batch per drain of the queue) by a writer thread,
/// which also maintains the aggregates (last check-in per device; per day: devices seen,
/// counts per release and per action) and the outbox entries in the same batch.
///
/// Durability: a check-in is durable once the batch that holds it is committed; the
/// `durable` callback of record() runs then (on the writer thread), so an edge answers a
/// device only after its check-in is on disk. flush() waits for everything queued.
class CheckinStore final : public CheckinIngest, public CheckinQueries {
 public:
  using DevicePage = store::DevicePage;

  explicit CheckinStore(Database& db, CheckinOptions options = {});
  ~CheckinStore();  ///< commits what is queued, then stops
  CheckinStore(const CheckinStore&) = delete;
  CheckinStore& operator=(const CheckinStore&) = delete;

  /// Queues a check-in for the writer thread's next group commit. With `durable`, the
  /// commit starts at once and is synced before `durable(true)` runs. Without it (nobody is
  /// told it is kept: an origin's own device check-ins), it joins a batch that gathers for up
  /// to 2 ms or 1024 check-ins and is written unsynced unless something else in the batch
  /// needs the sync (a process crash keeps it; a power loss may lose the last batches).
  void record(Checkin checkin, Durable durable = {}) override;
  /// A batch a child node sent (POST /v1/checkins, key `<node>:<generation>:<batch_seq>`).
  /// Applied once: a batch_seq at or below the highest already applied from `node` in the
  /// same `generation` is a duplicate and changes nothing (a child sends its batches in
  /// order, one at a time). A generation never seen before starts afresh, so a child whose
  /// numbering restarted (wiped or restored data) is never mistaken for a duplicate.
  /// `generation` is empty for keys of the older `<node>:<batch_seq>` form.
  void record_batch(std::string node, std::string generation, std::uint64_t batch_seq,
                    std::vector<Checkin> checkins, BatchDone done) override;
  /// Blocks until everything recorded before the call is committed.
  void flush() override;

  /// An app's hourly counters and daily distinct devices for the hours from `from_ms` to
  /// `to_ms` (both included, event time), read from the stored aggregates: the cost grows
  /// with the number of hours and of distinct names in them, not with the check-ins.
  Result<Analytics> analytics(const std::string& app_id, std::int64_t from_ms,
                              std::int64_t to_ms) const override;
  /// A device's last events as they arrived (at most CheckinOptions::timeline_events, and
  /// within the retention), the newest event time first, at most `limit` of them.
  /// Target-naming events keep the version they name. Reads one raw log record per event.
  Result<std::vector<TimelineEntry>> timeline(const std::string& app_id,
                                              const std::string& device_id,
                                              std::size_t limit) const override;
  /// Runs the retention sweep now (the writer runs it hourly by itself) and waits for it:
  /// for tests and tools. Deletes what is older than `now_ms` - retention_days.
  void sweep_retention(std::int64_t now_ms);
  /// Devices in the in-memory device table, and the bytes it holds (for /metrics and the
  /// scale benchmark).
  std::uint64_t table_devices() const;
  std::uint64_t table_bytes() const;

  /// Called on the writer thread with every check-in once it is committed (received
  /// duplicates excepted), in order. Must be cheap. Set before the first record.
  void set_observer(std::function<void(const Checkin&)> fn) { observer_ = std::move(fn); }
  /// The stored check-ins not older than `since_ms`, newest first in arrival order, reading
  /// back from the newest until one is 10 minutes older than that (relayed check-ins arrive
  /// late) or `max_records` were read (rebuilding windows of recent events at a start).
  /// Returns how many were read.
  Result<std::size_t> scan_back(std::int64_t since_ms, std::size_t max_records,
                                const std::function<void(const Checkin&)>& fn) const;
  /// Devices of `app_id` with an id above `after`, in id order, that `keep` accepts: at
  /// most `limit`, and no more than `max_scan` rows read (a page may then come back short
  /// with a cursor: paging stays exact).
  Result<DevicePage> devices(const std::string& app_id, const std::string& after, std::size_t limit,
                             std::size_t max_scan,
                             const std::function<bool(const Checkin&)>& keep) const override;
  /// The last check-in of a device, or nullopt. Its version_name is the version the device
  /// runs: a target-naming event (names_target_release) keeps the one before it.
  Result<std::optional<Checkin>> last(const std::string& app_id,
                                      const std::string& device_id) const override;
  /// How many of an app's devices last reported each native version_build, from at most
  /// `max_devices` devices (a bound on the work of one call).
  Result<std::map<std::string, std::uint64_t>> native_builds(
      const std::string& app_id, std::size_t max_devices) const override;
  std::uint64_t committed() const;
  /// False while storage is full (Database::writable): record() calls fail then.
  bool writable() const override { return db_.writable(); }
  Refusal refusal() const override { return {"store_error", "check-ins were not stored; retry"}; }

  /// What a check-in costs in a request body (the sender's encoding, escapes included).
  using Cost = std::function<std::size_t(const Checkin&)>;
  /// The next batch to send upstream: at most `max` check-ins whose `cost` adds up to at
  /// most `max_bytes` (a receiver bounds request bodies; a single check-in always fits, its
  /// fields being bounded). Default cost: the stored size + 256. None waiting: empty
  /// `checkins`. The batch is numbered and written down before it is returned.
  Result<OutboxBatch> outbox_next(std::size_t max, std::size_t max_bytes = 256 << 10,
                                  const Cost& cost = {});
  /// Deletes an acknowledged batch from the outbox.
  Result<void> outbox_ack(const OutboxBatch& batch);
  /// Moves the in-flight batch out of the outbox into the dead letters, with `reason`, in
  /// one synced write: the check-ins behind it flow again, and nothing is lost.
  Result<void> outbox_dead_letter(const OutboxBatch& batch, std::string_view reason);
  /// The dead letters, oldest first, at most `limit`.
  Result<std::vector<DeadLetter>> dead_letters(std::size_t limit = 100) const;
  /// This store's generation (see OutboxBatch::generation).
  std::uint64_t generation() const { return generation_; }
  /// Waits up to `timeout` for the outbox to hold something; true if it does.
  bool outbox_wait(std::chrono::milliseconds timeout);
  OutboxStats outbox_stats() const;

 private:
  struct DeviceTable;
  struct Item {
    std::function<void()> task;  ///< set: run on the writer thread instead of a commit
    std::vector<Checkin> checkins;
    BatchDone done;
    std::string node;  ///< non-empty: a child's batch
    std::string generation;
    std::uint64_t batch_seq = 0;
  };
  void run();
  void commit(std::deque<Item>& batch);
  /// The retention sweep's steps (writer thread): buckets and the raw log at once, the old
  /// timeline rings a slice of the devices per call (from timeline_cursor_).
  void retention_pass(std::int64_t now_ms, std::size_t max_devices);
  /// Runs `fn` on the writer thread and waits for it.
  void run_on_writer(std::function<void()> fn);
  void trim_outbox();
  /// Deletes `batch` from the outbox; with `dead` (its header), keeps it as a dead letter.
  Result<void> outbox_remove(const OutboxBatch& batch, std::string* dead);

  Database& db_;
  CheckinOptions options_;
  std::function<void(const Checkin&)> observer_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable flushed_;
  std::condition_variable outbox_cv_;
  std::deque<Item> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t committed_ = 0;
  std::uint64_t next_seq_ = 1;        // writer thread only
  std::uint64_t next_outbox_ = 1;     // writer thread only
  std::uint64_t outbox_depth_ = 0;    // guarded by mutex_
  std::uint64_t outbox_bytes_ = 0;    // guarded by mutex_
  std::uint64_t outbox_dropped_ = 0;  // guarded by mutex_
  std::uint64_t dead_batches_ = 0;    // guarded by mutex_
  std::uint64_t dead_checkins_ = 0;   // guarded by mutex_
  std::uint64_t generation_ = 0;
  /// Per device (a 64-bit hash of app and id): the last day counted, the version counted
  /// that day and the head of its timeline chain. Writer thread only,
  /// after the constructor; its size is read under mutex_ (table_size_).
  std::unique_ptr<DeviceTable> table_;
  std::uint64_t table_size_ = 0;         // guarded by mutex_
  std::uint64_t table_capacity_ = 0;     // guarded by mutex_
  std::int64_t last_sweep_ms_ = 0;       // writer thread only
  std::string timeline_cursor_;          // writer thread only: where the timeline sweep goes on
  std::optional<OutboxBatch> inflight_;  // guarded by outbox_mutex_
  mutable std::mutex outbox_mutex_;      // outbox_next/ack/trim: one at a time
  bool stop_ = false;
  bool urgent_ = false;  ///< guarded by mutex_: a queued item (or flush) waits for its commit
  /// Check-ins nobody waits for are committed in batches of up to this many, or after
  /// kPacedWait, whichever comes first. 2 ms, not 1: a batch's fixed cost (the counters
  /// read, the WAL write, waking the writer on the server's core) is spread over twice the
  /// check-ins. Not longer: the writer runs a batch in one go on a core it may share with
  /// the server, so a longer wait is a longer stall of the answers behind it (5 ms gave
  /// p90/p99 ~0.3/1-2 ms more with no CPU gain beyond noise, bench/load/updates-threads.sh).
  static constexpr std::size_t kPacedBatch = 512;
  static constexpr std::chrono::milliseconds kPacedWait{2};
  /// Devices whose old timeline ring the hourly sweep checks per pass, while there are any
  /// (a full cycle over a million devices takes 50 passes).
  static constexpr std::size_t kSweepDevices = 20'000;
  bool space_checks_ = false;  ///< the writer runs the database's free-space checks
  std::thread writer_;
};

}  // namespace edge::store
