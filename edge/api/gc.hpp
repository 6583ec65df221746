#pragma once

// Garbage collection of blobs no release references (DESIGN §12.2), for an origin's own
// store and for the bucket a tier of origins shares. A blob (its recipe) is garbage when no
// release that is not deleted names it and it was stored longer ago than the grace period; a
// chunk when no recipe that stays names it and it was written longer ago than the grace
// period. Removal runs in rounds through a BlobGate, so it never races an upload that reuses
// stored chunks or a release write that checked its blobs.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edge/core/sha256.hpp"
#include "edge/store/blob_gate.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/object_store.hpp"

namespace edge::api {

struct GcOptions {
  std::chrono::seconds grace{3600};
  /// Sealed segments whose live bytes are below this share of their size are compacted.
  double compact_below = 0.5;
  /// Ids removed per gated round (writers wait for at most one round).
  std::size_t round = 1000;
};

/// What one pass saw and did. In a dry run the *_removed figures are what it would remove.
struct GcReport {
  std::string where;  ///< "store" or "bucket"
  bool dry_run = false;
  bool complete = false;  ///< every step ran; else `note` says where it stopped
  std::string note;
  std::uint64_t blobs = 0, blobs_referenced = 0, blobs_young = 0, blobs_removed = 0;
  std::uint64_t chunks = 0, chunks_live = 0, chunks_young = 0, chunks_removed = 0;
  std::uint64_t bytes_removed = 0;  ///< chunk bytes removed (S3: object sizes)
  std::uint64_t segments_compacted = 0, chunks_relocated = 0, bytes_freed = 0;
  double seconds = 0;
  std::string to_json() const;
};

/// The blobs the control state names, as of now (after catching up with a shared log).
using ReferencedBlobs = std::function<Result<std::vector<Sha256>>()>;

/// Collection in this node's segment store: the embedded origin's, or the cache of an
/// origin on a bucket. Recipes carry no time: their age is when a writer last stored them
/// (the gate remembers since this process started), so nothing unreferenced is removed
/// before the process has been up for the grace period. A chunk's age is its segment's
/// last write.
class StoreCollector {
 public:
  StoreCollector(store::BlobStore& blobs, store::LocalBlobGate& gate, GcOptions options)
      : blobs_(blobs), gate_(gate), options_(options) {}
  GcReport run(const ReferencedBlobs& referenced, bool dry_run);

 private:
  store::BlobStore& blobs_;
  store::LocalBlobGate& gate_;
  GcOptions options_;
};

/// Collection in the shared bucket (objects chunks/<sha256> and recipes/<sha256>), by one
/// origin at a time (the singleton holder). Ages are the objects' LastModified: an upload
/// always writes its recipe object again, so a blob re-uploaded starts a new grace period.
/// A recipe this node has not cached is read from the bucket to learn its chunks.
class BucketCollector {
 public:
  BucketCollector(store::ObjectStore& objects, store::BlobStore& local, store::BlobGate& gate,
                  GcOptions options)
      : objects_(objects), local_(local), gate_(gate), options_(options) {}
  GcReport run(const ReferencedBlobs& referenced, bool dry_run);

 private:
  store::ObjectStore& objects_;
  store::BlobStore& local_;
  store::BlobGate& gate_;
  GcOptions options_;
};

/// Runs the collectors: every `interval` (0: only when asked) and on run_now(), one pass at
/// a time, on a thread of its own. The bucket's collector runs only where `bucket_here()`
/// (the tier's singleton holder). Figures for /metrics.
class GcRunner {
 public:
  GcRunner(StoreCollector* store, BucketCollector* bucket, ReferencedBlobs referenced,
           std::function<bool()> bucket_here, std::chrono::seconds interval);
  ~GcRunner();  ///< stop()
  GcRunner(const GcRunner&) = delete;
  GcRunner& operator=(const GcRunner&) = delete;
  void start();
  /// Ends the thread after the pass that runs (queued requests get a "stopping" answer).
  void stop();
  /// Queues a pass; `done` gets {"store":{...},"bucket":{...}|null,"bucket_note":...} as
  /// JSON on the runner's thread. False if 8 requests already wait (nothing queued).
  bool run_now(bool dry_run, std::function<void(std::string json)> done);
  /// edge_gc_* metrics.
  void render(std::string& out) const;

 private:
  struct Request {
    bool dry_run = false;
    std::function<void(std::string)> done;
  };
  std::string pass(bool dry_run);
  void loop();

  StoreCollector* store_;
  BucketCollector* bucket_;
  ReferencedBlobs referenced_;
  std::function<bool()> bucket_here_;
  std::chrono::seconds interval_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Request> requests_;  // guarded by mutex_
  bool stop_ = false;             // guarded by mutex_
  // Figures, guarded by mutex_: [0] store, [1] bucket.
  struct Totals {
    std::uint64_t passes = 0, incomplete = 0, blobs = 0, chunks = 0, bytes = 0, freed = 0;
    double last_complete_s = 0;
  } totals_[2];
  std::thread thread_;
};

}  // namespace edge::api
