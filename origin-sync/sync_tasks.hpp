#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "edge/api/control_service.hpp"
#include "edge/api/sync.hpp"
#include "edge/api/upstream.hpp"
#include "origin-sync/fetcher.hpp"
#include "origin-sync/http_client.hpp"
#include "origin-sync/upstream_set.hpp"

namespace edge::sync {

/// Follows the upstream's changes feed (DESIGN §6): long polls GET /v1/sync/changes from
/// the cursor, takes a snapshot when the upstream says the cursor is too old, and accepts
/// pushed batches (applied only if they follow the cursor). Before a batch that points a
/// channel or rollout at blobs not whole here is applied, those blobs are prefetched
/// (fetch-then-flip), up to prefetch_deadline_ms. The cursor is the StateStore's last seq,
/// written in the same batch as the changes. Reconnects back off exponentially with jitter.
///
/// Threads: the long poll has one ("sync-pull"); pushed batches are applied on a thread
/// made when a push arrives, which exits once the queue of pushed batches is empty (pushes
/// are rare: one per change at the upstream).
class Follower final : public api::PushSink {
 public:
  Follower(const api::UpstreamOptions& options, UpstreamSet& upstreams,
           api::ControlService& control, Fetcher& fetcher, api::SyncMetrics& metrics);
  /// The long poll's wait while the feed comes from another upstream than the first listed:
  /// a preferred one that is healthy again is taken back within about this long.
  static constexpr std::uint32_t kFallbackPollMs = 5000;
  ~Follower() override;

  void start();
  void stop();
  void offer(std::vector<store::Change> changes, std::uint64_t upstream_seq) override;
  /// Called once, from the follower's thread, the first time it is in sync with upstream
  /// (set before start()).
  void set_on_synced(std::function<void()> fn) { on_synced_ = std::move(fn); }

 private:
  void pull_loop();
  void push_loop();
  enum class Applied { kOk, kGap, kFailed };
  /// Applies a contiguous batch after prefetching what its flips need.
  Applied apply(const std::vector<store::Change>& changes, const char* source);
  /// Acts on one page of the feed: epoch checks (a new epoch -> snapshot; behind in the
  /// same epoch -> not followed), snapshot instructions, gaps (-> snapshot). True if in
  /// step with the upstream afterwards.
  bool follow(const api::ChangesPage& page, std::uint64_t cursor);
  bool take_snapshot();
  void prefetch_for(const control::ControlState& next);

  api::UpstreamOptions options_;
  api::ControlService& control_;
  Fetcher& fetcher_;
  api::SyncMetrics& metrics_;
  FailoverClient client_;
  std::mutex apply_mutex_;  // one batch at a time, pulled or pushed
  Stopper stopper_;
  std::mutex mutex_;
  std::deque<std::vector<store::Change>> pushed_;  // guarded by mutex_
  bool pushing_ = false;  // the push thread runs (or is about to); guarded by mutex_
  std::atomic<bool> synced_{false};
  std::function<void()> on_synced_;
  std::thread pull_;
  std::thread push_;  // the last push thread (joined before the next starts); mutex_
};

class StatusReporter;

/// Sends the outbox upstream (DESIGN §6): batches of check-ins as POST /v1/checkins with
/// `Idempotency-Key: <node-id>:<generation>:<batch-seq>`; a batch leaves the outbox only
/// after a 2xx, and the same batch is resent (same key) until one comes, except that a batch
/// the upstream refuses for good (400, 413, 415, 422) is set aside as a dead letter so the
/// rest flows. Batches are bounded by their encoded size (256 KiB).
///
/// Its thread ("upstream-post") also runs the rounds of a StatusReporter (set_status): both
/// are periodic blocking POSTs upstream. Neither starves the other: a status round that is
/// due runs before the next batch is sent, so it is late by at most one check-in POST (at
/// most upstream.timeout_ms for each upstream tried), and a batch waits for at most one
/// status round (its posts, each at most upstream.timeout_ms; an unreachable upstream ends
/// the round at its first post). Idle and backoff waits end when a round is due.
class Uploader {
 public:
  Uploader(const api::UpstreamOptions& options, UpstreamSet& upstreams, std::string node_id,
           store::CheckinStore& checkins, api::SyncMetrics& metrics);
  ~Uploader();
  /// The reporter whose rounds this uploader's thread runs (before start(); it must outlive
  /// this uploader's thread).
  void set_status(StatusReporter* reporter) { status_ = reporter; }
  void start();
  /// Gives the outbox up to `within` to empty (SIGTERM, DESIGN §7); true if it did. What
  /// stays is on disk and goes at the next start.
  bool drain(std::chrono::milliseconds within);
  void stop();

 private:
  void loop();
  /// Sleeps until `until` or until a status round is due, whichever comes first; false if
  /// stopped.
  bool pause_until(std::chrono::steady_clock::time_point until);

  api::UpstreamOptions options_;
  std::string node_id_;
  store::CheckinStore& checkins_;
  api::SyncMetrics& metrics_;
  FailoverClient client_;
  StatusReporter* status_ = nullptr;
  Stopper stopper_;
  std::thread thread_;
};

/// Reports this node's status upstream every upstream.status_interval_ms (POST
/// /v1/sync/status, sync token): its own, then the latest of each node below it heard from
/// within sync.fleet_expire_ms, so the origin sees the whole tree (DESIGN §11). A large
/// subtree goes in several posts, each under the receiver's limits (kMaxReportNodes nodes,
/// kMaxReportBytes, halved after a 413) and each starting with this node's own status. An
/// upstream without the route (older) is asked again once a minute.
///
/// No thread of its own: the Uploader's thread runs its rounds (Uploader::set_status).
class StatusReporter {
 public:
  /// The least a post is cut to after 413s: this node's status and one relayed status.
  static constexpr std::size_t kMinReportBytes = 2 * api::kMaxStatusBytes + 64;

  StatusReporter(const api::UpstreamOptions& options, UpstreamSet& upstreams,
                 std::function<std::string()> status, const api::Fleet* children);
  ~StatusReporter();
  /// The first round is due at once (nothing if there is no status or the interval is 0).
  void start();
  /// No round starts after this returns; one in progress is cut short and waited for.
  void stop();

  /// When the next round is due; time_point::max() if none will be (not started, stopped).
  std::chrono::steady_clock::time_point due() const;
  /// Runs a round if one is due (the hosting thread's call).
  void run_due();

 private:
  /// One round of posts; returns how long until the next.
  std::chrono::milliseconds round();

  api::UpstreamOptions options_;
  std::function<std::string()> status_;
  const api::Fleet* children_;
  FailoverClient client_;
  std::atomic<bool> stopped_{false};
  /// When the next round is due, in steady_clock ticks (max: never).
  std::atomic<std::chrono::steady_clock::rep> due_{
      std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
  std::mutex round_mutex_;  // held for a round (stop() waits for it)
  bool warned_ = false;     // guarded by round_mutex_
  /// The receiver's body limit (server.json_body_limit) may be below kMaxReportBytes: a 413
  /// halves what this node puts in one post, down to kMinReportBytes (one status fits).
  std::size_t max_bytes_ = api::kMaxReportBytes;  // guarded by round_mutex_
};

/// Pushes new changes to the edges in sync.push_to (POST /v1/sync/changes, sync token), one
/// thread per edge. A failed push is counted and skipped: the edge pulls what it missed.
class Pusher final : public api::ChangePusher {
 public:
  Pusher(std::vector<std::string> targets, std::string token, std::string ca_file,
         std::uint32_t timeout_ms, store::StateStore& state, api::SyncMetrics& metrics);
  ~Pusher() override;
  void start() override;
  void stop() override;
  /// A commit reached `seq` (ControlService's on_commit). Never blocks on the network.
  void notify(std::uint64_t seq) override;

 private:
  struct Target;
  void loop(Target& t);

  std::vector<std::unique_ptr<Target>> targets_;
  store::StateStore& state_;
  api::SyncMetrics& metrics_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t seq_ = 0;  // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
};

}  // namespace edge::sync
