#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edge/pg/checkin_rows.hpp"
#include "edge/pg/connection.hpp"
#include "edge/store/checkin_backend.hpp"

namespace edge::pg {

/// Options of PgCheckins.
struct PgCheckinsOptions {
  /// This origin's node id: with a generation random per writer and start, and a counter,
  /// it keys the batches of the origin's own device check-ins.
  std::string node_id;
  std::uint32_t timeline_events = 50;  ///< checkins.timeline_events (0: no timelines)
  std::uint32_t retention_days = 90;   ///< checkins.retention_days (0: keep everything)
  IsRelease is_release{};              ///< as CheckinOptions::is_release
  /// Writer threads, each with its connection: batches of different senders are applied
  /// side by side, so one batch's commit (its WAL flush) does not hold the others back
  /// (bench/load/tier-checkins.py: 2 writers ~28k check-ins/s, 4 ~36k on 2 cores).
  std::size_t writers = 4;
  /// The origin's own check-ins waiting for PostgreSQL (while it is down) are kept up to this
  /// many; past it the oldest are dropped and counted.
  std::size_t max_pending = 200'000;
  /// The check-ins rollout auto-pause counts (AutoPauser::counts): appended to
  /// be_pause_events in their batch's transaction, for the origin doing the tier's auto-pause
  /// (edge/pg/pause_events.hpp). Unset: none are.
  std::function<bool(const store::Checkin&)> pause_event{};
};

/// PgCheckins' figures for /metrics.
struct PgCheckinsStats {
  std::uint64_t batches_applied = 0;
  std::uint64_t batches_duplicate = 0;
  std::uint64_t batches_failed = 0;  ///< transactions refused or cut (retried or answered 503)
  std::uint64_t checkins_applied = 0;
  std::uint64_t pending = 0;  ///< own check-ins not yet committed
  std::uint64_t dropped = 0;  ///< own check-ins dropped while PostgreSQL was down
};

/// The check-ins of the origin tier, in PostgreSQL shared by every origin (DESIGN §12.2):
/// each batch, a child's (POST /v1/checkins) or a gathered one of the origin's own devices,
/// is ONE transaction that first advances its sender's high-water mark with a conditional
/// upsert (no row back: a batch at or below it, a duplicate, and nothing else is written),
/// then writes the device rows, timelines, the devices seen per open day and the counters.
/// Callbacks run after COMMIT. A batch retried on another origin is applied once.
///
/// PostgreSQL down or read-only: a child's batch is refused (done(false): 503, the child keeps
/// it); the origin's own check-ins wait in memory (bounded) and are retried with the same key,
/// so a commit whose acknowledgement was lost is never applied twice.
class PgCheckins final : public store::CheckinIngest, public store::CheckinQueries {
 public:
  PgCheckins(std::string url, PgCheckinsOptions options);
  ~PgCheckins() override;  ///< commits what is queued (one attempt), then stops
  PgCheckins(const PgCheckins&) = delete;
  PgCheckins& operator=(const PgCheckins&) = delete;

  void record(store::Checkin checkin, Durable durable = {}) override;
  void record_batch(std::string node, std::string generation, std::uint64_t batch_seq,
                    std::vector<store::Checkin> checkins, BatchDone done) override;
  /// Waits until everything recorded before is committed, or PostgreSQL is found down.
  void flush() override;
  bool writable() const override { return true; }
  Refusal refusal() const override {
    return {"state_backend_unavailable",
            "the state database is unreachable or read-only: the check-ins were not stored; "
            "retry"};
  }

  Result<store::Analytics> analytics(const std::string& app_id, std::int64_t from_ms,
                                     std::int64_t to_ms) const override;
  Result<std::vector<store::TimelineEntry>> timeline(const std::string& app_id,
                                                     const std::string& device_id,
                                                     std::size_t limit) const override;
  Result<store::DevicePage> devices(
      const std::string& app_id, const std::string& after, std::size_t limit, std::size_t max_scan,
      const std::function<bool(const store::Checkin&)>& keep) const override;
  Result<std::optional<store::Checkin>> last(const std::string& app_id,
                                             const std::string& device_id) const override;
  Result<std::map<std::string, std::uint64_t>> native_builds(
      const std::string& app_id, std::size_t max_devices) const override;

  /// Deletes what is older than `now_ms` - retention_days (counters, timeline events, idle
  /// senders' marks) and the device sets of closed days. For whoever holds the singleton
  /// work; safe to run on several origins at once.
  Result<void> sweep_retention(std::int64_t now_ms);

  /// Called on a writer thread with every committed check-in (duplicates excepted). Must be
  /// cheap and thread-safe. Set before the first record.
  void set_observer(std::function<void(const store::Checkin&)> fn) { observer_ = std::move(fn); }

  PgCheckinsStats stats() const;
  /// Appends the metric families (edge_checkins_pg_*).
  void render(std::string& out) const;

 private:
  struct Item {
    store::Checkin checkin;
    Durable durable;
  };
  struct Batch {
    std::string node;
    std::string generation;
    std::uint64_t batch_seq = 0;
    std::vector<store::Checkin> checkins;
    BatchDone done;
  };
  struct Writer;
  void run(Writer& w);
  /// Applies one batch in one transaction, retrying a transaction cut by a lost connection
  /// or a deadlock (safe: the key makes it idempotent). Duplicate: *duplicate = true.
  Result<void> apply(Writer& w, const std::string& node, const std::string& generation,
                     std::uint64_t batch_seq, const std::vector<store::Checkin>& checkins,
                     bool* duplicate);
  Result<void> apply_once(Writer& w, const std::string& node, const std::string& generation,
                          std::uint64_t batch_seq, const std::vector<store::Checkin>& checkins,
                          bool* duplicate);
  void settle(std::uint64_t n);
  /// One statement on the read connection (a connection found broken is opened again once).
  Result<Rows> read(std::string_view sql, const std::vector<Param>& params) const;

  std::string url_;
  PgCheckinsOptions options_;
  std::function<void(const store::Checkin&)> observer_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable settled_cv_;
  std::deque<Batch> batches_;     ///< children's, first come first served
  std::deque<Item> own_;          ///< the origin's own devices'
  std::uint64_t enqueued_ = 0;    ///< items (own check-ins and batches) ever queued
  std::uint64_t settled_ = 0;     ///< of them committed, refused or dropped
  std::size_t down_writers_ = 0;  ///< writers whose last attempt found PostgreSQL down
  bool urgent_ = false;
  bool stop_ = false;
  std::atomic<std::uint64_t> applied_{0}, duplicate_{0}, failed_{0}, applied_checkins_{0},
      dropped_{0}, retrying_{0};
  /// Seen rows and update checks committed lately: writes PostgreSQL would find done.
  RecentDevices recent_;
  std::atomic<bool> schema_ready_{false};
  std::mutex schema_mutex_;
  mutable std::mutex read_mutex_;
  mutable Connection read_conn_;
  std::mutex sweep_mutex_;
  Connection sweep_conn_;
  std::vector<std::unique_ptr<Writer>> writers_;
  /// Own check-ins gather for up to this long or kOwnBatch of them before their transaction.
  static constexpr std::chrono::milliseconds kOwnWait{5};
  static constexpr std::size_t kOwnBatch = 1024;
};

}  // namespace edge::pg
