#pragma once

// An origin whose blobs live in an object store shared by several origins (DESIGN §12.2,
// [blobs] backend = "s3"). The local segment store becomes a verified cache of the bucket:
// a miss fills from it through the Filler interface an edge uses for its upstream, and an
// upload is acknowledged once its chunks and then its recipe are objects in the bucket.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "edge/api/sync.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/object_store.hpp"

namespace edge::api {

/// Fills this node from, and mirrors uploads to, an ObjectStore with the keys
/// store::chunk_key and store::recipe_key (the recipe's encoded form). Every chunk read
/// from the bucket is checked against its SHA-256 before it is stored or handed out (a
/// mismatch is logged and counted in ObjectStoreStats::verify_failures, and the fill fails
/// with Errc::kChecksumMismatch); a filled blob's recipe is stored only after the blob
/// hashed whole to its id (BlobStore::put_recipe). Blocking object calls run on a pool of
/// `threads`; single flight per blob and per chunk; a recipe or chunk the bucket does not
/// have is remembered for a few seconds (a flood of unknown ids costs one request each per
/// period). All methods may be called from any thread; callbacks run on pool threads.
class BlobBackend final : public Filler {
 public:
  BlobBackend(store::ObjectStore& objects, store::ChunkStore& chunks, store::BlobStore& blobs,
              unsigned threads = 8);
  ~BlobBackend() override;  ///< stop()
  BlobBackend(const BlobBackend&) = delete;
  BlobBackend& operator=(const BlobBackend&) = delete;

  void fill_blob(const Sha256& id, Done done) override;
  void fill_chunk(const Sha256& id, Done done) override;
  /// Each chunk's `done` runs with its bytes as soon as they matched its SHA-256 (the
  /// store writes them meanwhile), or with null bytes once stored.
  void fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                   const std::vector<std::size_t>& indexes, RunDone done) override;
  /// The stored recipe; else, for a blob a release pins (trust_recipes), the recipe object
  /// if it hashes to the pin (Errc::kChecksumMismatch if not), so that the answer streams
  /// while the chunks fill (DESIGN §10); else the blob filled whole first, then its recipe.
  void fill_recipe(const Sha256& id, RecipeDone done) override;

  /// Recipe digests the control state pins (release.recipe_sha256; control::pinned_recipes):
  /// merged into what is trusted already. Any thread.
  void trust_recipes(const std::vector<std::pair<Sha256, Sha256>>& pins);

  /// Makes blob `id`, stored here, durable in the bucket: each of its chunks the bucket
  /// lacks is written, then the recipe (so a recipe object never names a missing chunk).
  /// `refresh`: the recipe object is written again when it is there already, so that its
  /// LastModified (the blob's age for garbage collection) is now: an upload does this.
  /// `done({})` once all are written; Errc::kIo if the bucket failed (the reason is in
  /// ObjectStoreStats::last_error; logged), Errc::kNotFound if the blob is not stored
  /// here, Errc::kShutdown when stopping.
  void mirror(const Sha256& id, Done done, bool refresh = false);

  /// Asks the bucket whether it answers (a HEAD of one key) every `every` while nothing
  /// else did, so that ObjectStoreStats::reachable (/readyz, edge_s3_up) follows the
  /// bucket when the node is idle too. Call once; stop() ends it.
  void start_probe(std::chrono::milliseconds every);

  /// Stops the pool and the probe: queued work is dropped and its callers get
  /// Errc::kShutdown.
  void stop();

  store::ObjectStore& objects() { return objects_; }

 private:
  using Job = std::function<void()>;
  struct Batch;
  void submit(Job job);
  void worker();
  /// Fetches chunk `id` (at most `size` bytes; 0: 1 MiB), verifies it, hands it to the
  /// early waiters and stores it asynchronously (within kPutBudget); completes its waiters.
  void fetch_chunk(const Sha256& id, std::uint32_t size);
  void fill_chunk_sized(const Sha256& id, std::uint32_t size, ChunkWaiter waiter);
  /// `verified` set: the bytes, for the early waiters only (the others wait for the store).
  void complete_chunk(const Sha256& id, boost::system::error_code ec,
                      const SharedBytes& verified = {});
  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }
  void fetch_blob(const Sha256& id);
  Result<std::shared_ptr<const store::Recipe>> fetch_recipe(const Sha256& id);
  void run_mirror(const Sha256& id, const Done& done, bool refresh);
  /// Adds `waiter` to the waiters of `id`; true if the caller must start the work. A
  /// refusal (stopping, a recent miss) calls the waiter at once and returns false.
  template <class Waiter>
  bool enlist(std::unordered_map<Sha256, std::vector<Waiter>, Sha256Hash>& waiting,
              const Sha256& id, Waiter& waiter);
  void complete(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                const Sha256& id, boost::system::error_code ec);

  store::ObjectStore& objects_;
  store::ChunkStore& chunks_;
  store::BlobStore& blobs_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> queue_;                                                   // guarded by mutex_
  bool stopping_ = false;                                                   // guarded by mutex_
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> blob_waiters_;  // mutex_
  std::unordered_map<Sha256, std::vector<ChunkWaiter>, Sha256Hash> chunk_waiters_;  // mutex_
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> recipe_waiters_;        // mutex_
  RecipePins pins_;  ///< what releases pin, and pinned recipes fetched for streams
  /// Chunk bytes handed to the store and not yet durable: a fill does not wait for each
  /// chunk's write, but memory stays bounded.
  static constexpr std::uint64_t kPutBudget = 64ULL << 20;
  static constexpr std::chrono::seconds kMissingTtl{5};
  static constexpr std::size_t kMissingEntries = 65536;
  std::unordered_map<Sha256, std::chrono::steady_clock::time_point, Sha256Hash>
      missing_;  // guarded by mutex_
  std::vector<std::thread> threads_;
  std::thread probe_;
  std::condition_variable probe_cv_;
  /// Bucket requests made by fills and mirrors (the probe skips a period that had some).
  std::atomic<std::uint64_t> requests_{0};
  VerifiedChunkPuts puts_{chunks_, kPutBudget};  ///< after chunks_, which it uses
};

}  // namespace edge::api
