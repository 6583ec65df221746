#pragma once

// An origin whose blobs live in an object store shared by several origins (DESIGN §12.2,
// [blobs] backend = "s3"). The local segment store becomes a verified cache of the bucket:
// a miss fills from it through the Filler interface an edge uses for its upstream, and an
// upload is acknowledged once its chunks and then its recipe are objects in the bucket.

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
  void fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                   const std::vector<std::size_t>& indexes, RunDone done) override;
  /// The stored recipe, or (not stored here) the blob filled whole first, then its recipe.
  void fill_recipe(const Sha256& id, RecipeDone done) override;

  /// Makes blob `id`, stored here, durable in the bucket: each of its chunks the bucket
  /// lacks is written, then the recipe (so a recipe object never names a missing chunk).
  /// `done({})` once all are written; Errc::kIo if the bucket failed (the reason is in
  /// ObjectStoreStats::last_error), Errc::kNotFound if the blob is not stored here,
  /// Errc::kShutdown when stopping.
  void mirror(const Sha256& id, Done done);

  /// Stops the pool: queued work is dropped and its callers get Errc::kShutdown.
  void stop();

  store::ObjectStore& objects() { return objects_; }

 private:
  using Job = std::function<void()>;
  struct Batch;
  void submit(Job job);
  void worker();
  /// Fetches chunk `id` (at most `size` bytes; 0: 1 MiB), verifies and stores it.
  Result<void> fetch_chunk(const Sha256& id, std::uint32_t size);
  void fill_chunk_sized(const Sha256& id, std::uint32_t size, Done done);
  void fetch_blob(const Sha256& id);
  Result<std::shared_ptr<const store::Recipe>> fetch_recipe(const Sha256& id);
  void run_mirror(const Sha256& id, const Done& done);
  /// Adds `done` to the waiters of `id`; true if the caller must start the work. A refusal
  /// (stopping, a recent miss) calls `done` at once and returns false.
  bool enlist(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting, const Sha256& id,
              Done& done);
  void complete(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                const Sha256& id, boost::system::error_code ec);

  store::ObjectStore& objects_;
  store::ChunkStore& chunks_;
  store::BlobStore& blobs_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> queue_;                                                    // guarded by mutex_
  bool stopping_ = false;                                                    // guarded by mutex_
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> blob_waiters_;   // mutex_
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> chunk_waiters_;  // mutex_
  static constexpr std::chrono::seconds kMissingTtl{5};
  static constexpr std::size_t kMissingEntries = 65536;
  std::unordered_map<Sha256, std::chrono::steady_clock::time_point, Sha256Hash>
      missing_;  // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace edge::api
