#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "edge/api/sync.hpp"
#include "edge/store/blob_store.hpp"
#include "origin-sync/http_client.hpp"
#include "origin-sync/upstream_set.hpp"

namespace edge::sync {

/// The edge's Filler (DESIGN §6): fetches recipes (GET /v1/recipes/<blob>) and chunks
/// (GET /v1/chunks/<sha256>) from upstream on a pool of at most `fill_concurrency` threads,
/// each with its own keep-alive connection; retries with jittered backoff; checks every chunk's
/// SHA-256 before it is stored and the blob's SHA-256 before its recipe is stored.
/// Single flight: one fetch per blob and per chunk however many callers wait for it; a 404
/// from upstream is remembered for a few seconds (negative caching).
///
/// The pool's threads are made on demand: a job queued while no thread is free starts one
/// (up to fill_concurrency), and a thread that finds no work for kIdleLinger exits. An idle
/// edge keeps none; the connections stay (a new thread takes a free one, kept alive).
class Fetcher final : public api::Filler {
 public:
  /// Which queue a fetch waits in: device-facing fills go before prefetches.
  enum class Priority { kDevice = 0, kBackground = 1 };

  /// `upstreams`: where fetches go (each worker thread has a connection to each); must
  /// outlive the fetcher.
  Fetcher(const api::UpstreamOptions& options, UpstreamSet& upstreams, store::ChunkStore& chunks,
          store::BlobStore& blobs, api::SyncMetrics& metrics);
  ~Fetcher() override;  ///< stops the pool; waiting callers get Errc::kShutdown

  void fill_blob(const Sha256& id, Done done) override;
  void fill_chunk(const Sha256& id, Done done) override;
  void fill_recipe(const Sha256& id, RecipeDone done) override;
  void fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                   const std::vector<std::size_t>& indexes, RunDone done) override;

  /// Largest Range request of a run of chunks: bytes, and chunks (several runs of a blob
  /// then fetch in parallel).
  static constexpr std::uint64_t kRunBytes = 4ULL << 20;
  static constexpr std::size_t kRunChunks = 16;

  /// Fetches the blobs of `ids` that are not whole here and blocks until they are or
  /// `deadline` passes (prefetch before a channel flip). Concurrency is the pool's.
  struct Prefetched {
    std::size_t fetched = 0;  ///< blobs that were not whole here
    bool whole = true;        ///< all of them are now
  };
  Prefetched prefetch(const std::vector<Sha256>& ids,
                      std::chrono::steady_clock::time_point deadline);

  /// Recipe digests the control state pins (release.recipe_sha256): a recipe fetched for
  /// one of these blobs must hash to its pin (store::Recipe::digest) or it is refused
  /// (Errc::kChecksumMismatch, counted) before any chunk is fetched by it. Merged into
  /// what is already trusted (a blob's recipe never changes). Any thread.
  void trust_recipes(const std::vector<std::pair<Sha256, Sha256>>& pins);

  /// True if the blob's recipe and every chunk are stored here.
  bool present(const Sha256& blob) const;

  void stop();

  /// How long a pool thread waits for work before it exits.
  static constexpr std::chrono::seconds kIdleLinger{10};

  /// Pool threads alive now (tests, and the thread census of an idle edge).
  std::size_t threads() const;

 private:
  using Job = std::function<void(FailoverClient&)>;
  struct BlobFill;
  void submit(Priority priority, Job job);
  /// Queues `job` and starts a pool thread if every live one is busy (up to
  /// fill_concurrency); the caller holds mutex_ and notifies cv_ after.
  void enqueue_locked(Priority priority, Job job);
  void fill_blob_at(const Sha256& id, Priority priority, Done done);
  /// `size`: the chunk's length from its recipe (0: unknown, then bounded by 1 MiB): an
  /// upstream body longer than that is refused unread.
  void fill_chunk_at(const Sha256& id, Priority priority, Done done, std::uint32_t size = 0);
  /// A pool thread: takes a free connection (or makes one), runs jobs until it is idle for
  /// kIdleLinger or the fetcher stops, then gives the connection back.
  void worker();
  void fetch_blob(FailoverClient& client, const Sha256& id, Priority priority);
  /// The stored recipe, a recently fetched one, or GET /v1/recipes checked against its pin.
  Result<std::shared_ptr<const store::Recipe>> get_recipe(FailoverClient& client, const Sha256& id);
  void finish_blob(const Sha256& id, std::shared_ptr<const store::Recipe> recipe,
                   boost::system::error_code ec);
  void fetch_chunk(FailoverClient& client, const Sha256& id, std::uint32_t size);
  /// Chunks [a, b] of `recipe` with one Range request on its blob; per chunk on failure.
  void fetch_run(FailoverClient& client, const std::shared_ptr<const store::Recipe>& recipe,
                 std::size_t a, std::size_t b);
  /// Verifies a fetched chunk, hands its bytes to the waiters that stream them, then
  /// stores it (asynchronously, within kPutBudget) and completes the others.
  void store_chunk(const Sha256& id, SharedBytes bytes, const std::string& from);
  /// Registers `done` for each chunk of `indexes` and starts Range fetches for the runs
  /// this call must fetch (fill_chunks, and a blob fill's chunks).
  /// `early`: `done` runs once the chunk is verified (with its bytes), not once stored.
  void fill_runs_at(const std::shared_ptr<const store::Recipe>& recipe,
                    const std::vector<std::size_t>& indexes, Priority priority, const RunDone& done,
                    bool early);
  using ChunkWaiter = api::ChunkWaiter;
  /// The chunk-waiter forms of wait_for and complete (one fetch per chunk in flight);
  /// `bytes` set: the verified bytes, for the early waiters only (the entry stays).
  bool wait_for_chunk(const Sha256& id, ChunkWaiter waiter);
  void complete_chunk(const Sha256& id, boost::system::error_code ec,
                      const SharedBytes& verified = {});
  /// A 404 for `id` goes into the negative cache (kMissingTtl); mutex_ held.
  void remember_locked(const Sha256& id, boost::system::error_code ec);
  /// Why a fetch of `id` is refused now (a recent 404, or stopping), or nullopt; mutex_ held.
  std::optional<Errc> refusal_locked(const Sha256& id) const;
  /// Adds `waiter` to the waiters of `id` (`fresh`: the first, who starts the fetch), or
  /// says why not (the waiter is left to the caller).
  template <class Waiter>
  std::optional<Errc> enlist(std::unordered_map<Sha256, std::vector<Waiter>, Sha256Hash>& waiting,
                             const Sha256& id, Waiter& waiter, bool& fresh);
  /// GET with retries: the reply, or kNotFound (404), kIo (unreachable or 5xx at the end),
  /// kChecksumMismatch (a body over `max_body`: an upstream that lies about sizes).
  Result<HttpReply> get(FailoverClient& client, const std::string& target, std::uint64_t max_body,
                        const std::vector<std::pair<std::string, std::string>>& headers = {},
                        unsigned expect = 200);
  /// Adds `done` to the waiters of `id`; true if the caller must start the fetch.
  bool wait_for(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                const Sha256& id, Done& done);
  void complete(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                const Sha256& id, boost::system::error_code ec);

  api::UpstreamOptions options_;
  store::ChunkStore& chunks_;
  store::BlobStore& blobs_;
  api::SyncMetrics& metrics_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::array<std::deque<Job>, 2> queues_;  // by Priority; guarded by mutex_
  bool stopping_ = false;
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> blob_waiters_;
  std::unordered_map<Sha256, std::vector<ChunkWaiter>, Sha256Hash> chunk_waiters_;
  static constexpr std::uint64_t kPutBudget = 64ULL << 20;  ///< chunk bytes being stored
  /// Negative cache: an id upstream answered 404 for is not asked for again for this long
  /// (devices asking for unknown ids must not become upstream load), except by a prefetch.
  static constexpr std::chrono::seconds kMissingTtl{5};
  static constexpr std::size_t kMissingEntries = 65536;
  std::unordered_map<Sha256, std::chrono::steady_clock::time_point, Sha256Hash>
      missing_;                                                            // guarded by mutex_
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> recipe_done_;  // fill_recipe
  api::RecipePins pins_;  ///< what releases pin, and pinned recipes fetched for streams
  std::vector<std::unique_ptr<FailoverClient>> clients_;  // every one made; guarded by mutex_
  std::vector<FailoverClient*> free_clients_;             // not held by a thread; mutex_
  std::vector<std::thread> threads_;                      // live pool threads; mutex_
  std::vector<std::thread> exited_;  // threads that left for idleness, to join; mutex_
  std::size_t idle_ = 0;             // pool threads waiting for work; mutex_
  UpstreamSet& upstreams_;
  api::VerifiedChunkPuts puts_{chunks_, kPutBudget};  ///< after chunks_, which it uses
};

}  // namespace edge::sync
