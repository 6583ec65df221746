#pragma once

// The node-to-node side of DESIGN §6 that every node serves (the origin and, for tiering,
// every edge): the changes feed with long poll, snapshots, pushed changes and check-in
// batches from child nodes; plus the interfaces that origin-sync implements (edge/ never
// includes origin-sync/).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/system/error_code.hpp>

#include "edge/api/control_service.hpp"
#include "edge/api/fleet.hpp"
#include "edge/api/response.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/state_store.hpp"

namespace edge::api {

/// How an edge talks to its upstream (the [upstream] table of the config).
struct UpstreamOptions {
  /// http:// or https://host:port of the upstreams' public listeners, in order of preference
  /// (upstream.url: one URL, a comma-separated list, or an array). Every request goes to the
  /// first healthy one; one that fails (no connection, timeout, 5xx) is skipped until a probe
  /// finds it healthy again (origin-sync's UpstreamSet).
  std::vector<std::string> urls;
  /// PEM CA bundle an https:// upstream's chain is verified against (empty: the system
  /// store). The host name in `url` is checked against the certificate either way.
  std::string ca_file;
  std::string token;                            ///< the upstream's sync token
  std::uint32_t timeout_ms = 10'000;            ///< per request (connect, send, first byte, body)
  unsigned retries = 3;                         ///< extra attempts of a failed fill fetch
  unsigned fill_concurrency = 8;                ///< chunk fetches in flight (fills and prefetch)
  std::uint32_t poll_wait_ms = 25'000;          ///< long-poll wait of the changes feed
  std::uint32_t backoff_max_ms = 30'000;        ///< cap of the jittered exponential backoff
  std::uint32_t prefetch_deadline_ms = 60'000;  ///< a channel flip waits at most this long
  std::size_t checkin_batch = 500;              ///< check-ins per POST /v1/checkins
  std::uint32_t status_interval_ms = 10'000;    ///< status reports upstream (0: none)
  /// No answer from upstream for this long: /readyz says "degraded" (and edge_sync_stale
  /// is 1). 0: 2 x (poll_wait_ms + timeout_ms).
  std::uint32_t stale_after_ms = 0;
  bool stale_is_unready = false;       ///< true: /readyz answers 503 while stale
  unsigned max_fills_per_client = 16;  ///< device fills in flight per client address (0: any)
  /// The stale threshold in force.
  std::uint32_t stale_threshold_ms() const {
    return stale_after_ms != 0 ? stale_after_ms : 2 * (poll_wait_ms + timeout_ms);
  }
};

/// Where an edge gets bytes it lacks: its upstream (origin-sync's Fetcher).
class Filler {
 public:
  using Done = std::function<void(boost::system::error_code)>;
  virtual ~Filler() = default;
  /// Makes blob `id` whole on this node: its recipe and every chunk, fetched from upstream,
  /// each chunk checked against its SHA-256 and the blob against its own before the recipe
  /// is stored (a recipe that matches its release's recipe_sha256 vouches for the blob's
  /// SHA-256 instead: BlobStore::put_recipe). Single flight: concurrent calls for one blob or chunk
  /// share one fetch. `done` runs once, on any thread: {} once stored; Errc::kNotFound if upstream
  /// has no such blob; Errc::kChecksumMismatch if bytes failed verification (never stored);
  /// Errc::kIo if upstream could not be reached within the configured retries.
  virtual void fill_blob(const Sha256& id, Done done) = 0;
  /// The same for one chunk (GET /v1/chunks on a mid-tier edge).
  virtual void fill_chunk(const Sha256& id, Done done) = 0;
  /// `bytes`: the chunk's verified bytes when they are not stored yet, else null.
  using RunDone =
      std::function<void(std::size_t index, boost::system::error_code, SharedBytes bytes)>;
  /// Chunks `indexes` (ascending) of `recipe`: the ones no fill fetches already are asked
  /// of the upstream as Range requests on the blob, a run of adjacent chunks per request
  /// (DESIGN §10: fewer, larger transfers; at most 16 chunks and 4 MiB a run), each chunk
  /// verified and stored on its own. `done(i, ec, bytes)` runs once per index i, on any
  /// thread, with fill_chunk's errors, as soon as the chunk can be sent: with its bytes
  /// once they matched its SHA-256 (the store writes them meanwhile), or with null bytes
  /// once it is stored (it was already, or another fill brought it).
  virtual void fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                           const std::vector<std::size_t>& indexes, RunDone done) = 0;
  using RecipeDone =
      std::function<void(boost::system::error_code, std::shared_ptr<const store::Recipe>)>;
  /// A recipe of blob `id` that can be trusted before its chunks are: the stored one, or
  /// one fetched from upstream (single flight) that hashes to the recipe_sha256 its release
  /// pins (Errc::kChecksumMismatch if not). A fetched recipe is not stored: that waits
  /// until the whole blob verified. A blob no release pins (published before pins existed)
  /// is filled whole first (fill_blob), and its stored recipe is the answer. Errors as
  /// fill_blob.
  virtual void fill_recipe(const Sha256& id, RecipeDone done) = 0;
};

/// A caller waiting for a chunk a Filler is fetching (one fetch per chunk in flight): `early`
/// ones (a response streaming the chunk) are told as soon as its bytes verified, with them;
/// the others once it is stored.
struct ChunkWaiter {
  std::function<void(boost::system::error_code, SharedBytes)> done;
  bool early = false;
};

/// Takes out of `waiters` (chunk id -> its waiters; the caller holds the map's lock) the
/// waiters of chunk `id` to tell now. With `verified` bytes (checked, not stored yet): the
/// early ones, and the entry stays for the rest (the fetch is still in flight for them)
/// until the store completes; without: all of them, and the entry goes.
template <class Map>
std::vector<ChunkWaiter> take_chunk_waiters(Map& waiters, const Sha256& id, bool verified) {
  std::vector<ChunkWaiter> list;
  const auto it = waiters.find(id);
  if (it == waiters.end())
    return list;
  if (verified) {
    auto& all = it->second;
    const auto split = std::stable_partition(all.begin(), all.end(),
                                             [](const ChunkWaiter& w) { return !w.early; });
    std::move(split, all.end(), std::back_inserter(list));
    all.erase(split, all.end());
  } else {
    list.swap(it->second);
    waiters.erase(it);
  }
  return list;
}

/// Stores chunks whose bytes matched their ids for a filler, asynchronously: the store
/// group-commits (one fdatasync for many chunks) while the filler's thread fetches the next
/// chunk. At most `budget` bytes are in flight; put() blocks its caller while over.
class VerifiedChunkPuts {
 public:
  VerifiedChunkPuts(store::ChunkStore& chunks, std::uint64_t budget)
      : chunks_(chunks), budget_(budget) {}
  /// Puts chunk `id` (its bytes already checked against it); `stored(ec)` runs once the put
  /// completed, on the store's thread, before the bytes leave the budget.
  void put(const Sha256& id, SharedBytes bytes,
           std::function<void(boost::system::error_code)> stored) {
    const std::uint64_t n = bytes.size;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return in_flight_ < budget_; });
      in_flight_ += n;
    }
    chunks_.async_put_verified(
        id, std::move(bytes), {},
        [this, n, stored = std::move(stored)](boost::system::error_code ec, bool) {
          stored(ec);
          // Notified under the lock: the owner may be destroyed as
          // soon as wait_idle() sees nothing in flight.
          std::lock_guard lock(mutex_);
          in_flight_ -= n;
          cv_.notify_all();
        });
  }
  /// Waits until no put is in flight (the owner's stop(): the callbacks call into it).
  void wait_idle() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
  }

 private:
  store::ChunkStore& chunks_;
  const std::uint64_t budget_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t in_flight_ = 0;  // guarded by mutex_
};

/// For a filler: the recipe digests releases pin (control::pinned_recipes), and the pinned
/// recipes it fetched, kept for streams until their blob is whole here (at most kKept; a
/// recipe not pinned is trusted only once its blob verified whole, and is not kept). Any
/// thread.
class RecipePins {
 public:
  static constexpr std::size_t kKept = 1024;
  /// Merges `pins` (blob -> recipe digest) into what is trusted already.
  void trust(const std::vector<std::pair<Sha256, Sha256>>& pins) {
    std::lock_guard lock(mutex_);
    for (const auto& [blob, digest] : pins)
      pins_[blob] = digest;
  }
  /// A fetched recipe of `id`, if one is kept; else the digest its release pins, if any.
  struct Lookup {
    std::shared_ptr<const store::Recipe> fetched;
    std::optional<Sha256> pin;
  };
  Lookup lookup(const Sha256& id) const {
    std::lock_guard lock(mutex_);
    Lookup out;
    if (const auto it = kept_.find(id); it != kept_.end())
      out.fetched = it->second;
    if (const auto it = pins_.find(id); it != pins_.end())
      out.pin = it->second;
    return out;
  }
  /// Keeps a fetched recipe that matched its pin.
  void keep(const Sha256& id, std::shared_ptr<const store::Recipe> recipe) {
    std::lock_guard lock(mutex_);
    if (kept_.size() >= kKept)
      kept_.clear();
    kept_[id] = std::move(recipe);
  }
  void forget(const Sha256& id) {
    std::lock_guard lock(mutex_);
    kept_.erase(id);
  }
  /// Whether `recipe` is the one its release pins (BlobStore::put_recipe's `pinned`).
  bool matches(const Sha256& id, const store::Recipe& recipe) const {
    std::lock_guard lock(mutex_);
    const auto it = pins_.find(id);
    return it != pins_.end() && it->second == recipe.digest();
  }
  /// After a fill of `id` succeeded: the kept recipe, else the one now stored in `blobs`
  /// (Errc::kIo if neither is there).
  Result<std::shared_ptr<const store::Recipe>> after_fill(const store::BlobStore& blobs,
                                                          const Sha256& id) const {
    if (auto kept = lookup(id).fetched)
      return kept;
    if (auto local = blobs.recipe(id))
      return *local;
    return make_error_code(Errc::kIo);
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<Sha256, Sha256, Sha256Hash> pins_;                                // mutex_
  std::unordered_map<Sha256, std::shared_ptr<const store::Recipe>, Sha256Hash> kept_;  // mutex_
};

/// Receives changes the upstream pushes (POST /v1/sync/changes): origin-sync's follower.
class PushSink {
 public:
  virtual ~PushSink() = default;
  /// Queues a pushed batch; the follower applies it if it follows its cursor, else pulls.
  /// Never blocks.
  virtual void offer(std::vector<store::Change> changes, std::uint64_t upstream_seq) = 0;
};

/// Figures of the sync machinery for /metrics, written by origin-sync (relaxed atomics).
struct SyncMetrics {
  std::atomic<std::uint64_t> upstream_seq{0};    ///< newest seq the upstream reported
  std::atomic<std::int64_t> last_contact_ms{0};  ///< wall clock of the last upstream answer
  std::atomic<std::uint64_t> changes_applied{0};
  std::atomic<std::uint64_t> snapshots_applied{0};
  std::atomic<std::uint64_t> pushes_received{0};
  std::atomic<std::uint64_t> fills{0};  ///< chunks and recipes fetched
  std::atomic<std::uint64_t> fill_bytes{0};
  std::atomic<std::uint64_t> fill_errors{0};      ///< upstream unreachable, 5xx, timeouts
  std::atomic<std::uint64_t> verify_failures{0};  ///< bytes that did not hash to their id
  /// Fetched recipes that did not hash to the recipe_sha256 their release pins (also
  /// counted in verify_failures).
  std::atomic<std::uint64_t> recipe_mismatches{0};
  std::atomic<std::uint64_t> prefetch_blobs_pending{0};
  std::atomic<std::uint64_t> prefetch_blobs_done{0};
  std::atomic<std::uint64_t> prefetch_timeouts{0};  ///< flips applied at the deadline
  std::atomic<std::uint64_t> checkins_sent{0};
  std::atomic<std::uint64_t> checkin_batches_sent{0};
  std::atomic<std::uint64_t> pushes_sent{0};
  std::atomic<std::uint64_t> push_errors{0};
  std::atomic<std::uint64_t> upstream_behind{0};  ///< 1: upstream's feed is behind our cursor
  std::atomic<std::uint64_t> epoch_changes{0};    ///< upstream numbering restarts followed
  std::atomic<std::uint32_t> stale_after_ms{0};   ///< set by the node (0: no staleness check)
  /// Times the upstream in use changed (a failover, or back to a preferred one).
  std::atomic<std::uint64_t> upstream_switches{0};
  /// One configured upstream as /metrics and the fleet report show it.
  struct Upstream {
    std::string url;
    bool up = true;        ///< false while marked failed (until a probe finds it healthy)
    bool current = false;  ///< the one requests go to first
  };
  /// The configured upstreams, in order of preference (origin-sync keeps them current).
  void set_upstreams(std::vector<Upstream> list) {
    std::lock_guard lock(error_mutex_);
    upstreams_ = std::move(list);
  }
  std::vector<Upstream> upstreams() const {
    std::lock_guard lock(error_mutex_);
    return upstreams_;
  }
  /// The URL of the upstream in use ("" on a node without one).
  std::string current_upstream() const {
    std::lock_guard lock(error_mutex_);
    for (const auto& u : upstreams_) {
      if (u.current)
        return u.url;
    }
    return {};
  }
  /// Why the last pull from the upstream failed ("" once one succeeds): /readyz shows it,
  /// so that a wrong certificate upstream is visible without reading the log.
  void set_upstream_error(std::string why) {
    std::lock_guard lock(error_mutex_);
    upstream_error_ = std::move(why);
  }
  std::string upstream_error() const {
    std::lock_guard lock(error_mutex_);
    return upstream_error_;
  }
  /// Milliseconds since the last upstream answer if past stale_after_ms, else 0. An edge
  /// that never reached its upstream counts from `since_ms` (its start).
  std::int64_t stale_for_ms(std::int64_t now_ms, std::int64_t since_ms) const {
    const std::uint32_t limit = stale_after_ms.load(std::memory_order_relaxed);
    if (limit == 0)
      return 0;
    std::int64_t contact = last_contact_ms.load(std::memory_order_relaxed);
    if (contact == 0)
      contact = since_ms;
    return now_ms - contact > limit ? now_ms - contact : 0;
  }

 private:
  mutable std::mutex error_mutex_;
  std::string upstream_error_;       // guarded by error_mutex_
  std::vector<Upstream> upstreams_;  // guarded by error_mutex_
};

/// A page of the changes feed, pulled or pushed: at most this many changes and about this
/// many bytes of them, so that a large state never travels (or is applied) as one body.
inline constexpr std::size_t kFeedPageChanges = 1000;
inline constexpr std::size_t kFeedPageBytes = 1 << 20;

// --- wire format (JSON); every parser here has a fuzz target ------------------------------

/// One page of the changes feed: {"last_seq":N,"changes":[...]}, or a snapshot instruction
/// {"last_seq":N,"snapshot":true} when the cursor is older than the retained log.
struct ChangesPage {
  std::uint64_t last_seq = 0;  ///< the sender's newest seq
  std::string epoch;           ///< the sender's feed epoch ("epoch"; empty from older nodes)
  bool snapshot = false;
  std::vector<store::Change> changes;
};
std::string encode_changes(const ChangesPage& page);
/// nullopt with `error` naming the bad field.
std::optional<ChangesPage> parse_changes(std::string_view json, std::string* error);

/// {"last_seq":N,"epoch":"...","docs":[{"kind","app_id","key","doc"}...]}
std::string encode_snapshot(const store::StateStore::Snapshot& snap);
std::optional<store::StateStore::Snapshot> parse_snapshot(std::string_view json,
                                                          std::string* error);

/// How far ahead of its receipt time a relayed check-in may be dated (a child's clock skew):
/// later times are clamped to receipt + this.
inline constexpr std::int64_t kMaxChildClockSkewMs = 60'000;

/// {"checkins":[{"app_id","device_id","platform","version_name","version_build","action",
/// "decision","time_ms"}...]}
std::string encode_checkins(const std::vector<store::Checkin>& checkins);
std::optional<std::vector<store::Checkin>> parse_checkins(std::string_view json,
                                                          std::string* error);

/// A recipe as GET /v1/recipes answers it: {"sha256","size","chunks":[{"sha256","size"}]}.
/// Checked: the id is `expected`, chunk sizes are 1 byte..1 MiB and add up to size.
std::optional<store::Recipe> parse_recipe(std::string_view json, const Sha256& expected,
                                          std::string* error);

/// A check-in batch's key: `<node-id>:<generation>:<batch-seq>` (node ids: 1-64 of
/// [A-Za-z0-9._-]; generation: 1-32 of [0-9a-f], random per start of the sender's store;
/// seq > 0), or the older `<node-id>:<batch-seq>` (empty generation).
struct IdempotencyKey {
  std::string node;
  std::string generation;
  std::uint64_t batch_seq = 0;
  bool operator==(const IdempotencyKey&) const = default;
};
std::optional<IdempotencyKey> parse_idempotency_key(std::string_view key);
/// The key a sender puts on a batch (generation as 16 hex digits).
std::string format_idempotency_key(std::string_view node, std::uint64_t generation,
                                   std::uint64_t batch_seq);

/// The size of `c` in encode_checkins' output (its object, escapes included).
std::size_t encoded_checkin_size(const store::Checkin& c);

/// The token of "Authorization: Bearer <token>" (scheme case-insensitive), or empty.
std::string_view bearer_token(const boost::beast::http::request_header<>& req);
/// Constant-time check of "Authorization: Bearer <token>"; false if `token` is empty.
bool bearer_matches(const boost::beast::http::request_header<>& req, std::string_view token);

/// The node-to-node routes, on the public listener, behind the sync token:
///   GET  /v1/sync/changes?after=<seq>&wait_ms=<n>   long poll (wait_ms <= 60000)
///   GET  /v1/sync/snapshot
///   POST /v1/sync/changes                           a push from upstream (edges only)
///   POST /v1/checkins   (Idempotency-Key)           a child's batch of check-ins
class SyncApi {
 public:
  SyncApi(store::StateStore& state, store::CheckinStore& checkins, std::string sync_token);
  ~SyncApi();
  SyncApi(const SyncApi&) = delete;
  SyncApi& operator=(const SyncApi&) = delete;

  /// Where child nodes' check-in batches go (POST /v1/checkins) when not into `checkins`
  /// (an origin of the tier: the shared state database). Set before serving.
  void set_ingest(store::CheckinIngest* ingest) { ingest_ = ingest; }
  /// Edges: where pushed changes go (null on the origin: 409).
  void set_push_sink(PushSink* sink) { push_ = sink; }
  /// Where POST /v1/sync/status reports from child nodes go (null: 404).
  void set_fleet(Fleet* fleet) { fleet_ = fleet; }

  static bool handles(std::string_view path);
  /// The answer to a node-to-node request without the sync token: 403 if this node has
  /// none, 401 if the request's is missing or wrong; nullopt if it may proceed.
  std::optional<Response> refuse_unauthorized(const boost::beast::http::request_header<>& req,
                                              Route route) const;
  Response handle(const boost::beast::http::request_header<>& req, std::string_view path,
                  std::string_view query, std::string_view body);

  /// GET /v1/admin/outbox/dead-letters (admin listener): the batches the upstream refused
  /// for good, oldest first, at most 100: {"dead_letters":[{"batch_seq","time_ms","reason",
  /// "checkins":[...]}]}.
  Response dead_letters() const;

  /// Wakes the long polls waiting for a seq below `seq`. Any thread.
  void notify(std::uint64_t seq);
  /// Answers every long poll now (shutdown).
  void stop();

 private:
  Fleet* fleet_ = nullptr;
  struct Waiter;
  Response changes_now(std::uint64_t after) const;
  Response long_poll(std::uint64_t after, std::uint32_t wait_ms);

  store::StateStore& state_;
  store::CheckinStore& checkins_;  ///< this node's own: the outbox's dead letters
  store::CheckinIngest* ingest_;   ///< where batches go (checkins_ unless set_ingest)
  std::string token_;
  PushSink* push_ = nullptr;
  std::mutex mutex_;
  std::vector<std::shared_ptr<Waiter>> waiters_;  // guarded by mutex_
  bool stopped_ = false;                          // guarded by mutex_
};

}  // namespace edge::api
