#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "edge/core/errc.hpp"
#include "edge/core/sha256.hpp"
#include "edge/core/shared_bytes.hpp"
#include "edge/store/database.hpp"
#include "edge/store/lru_cache.hpp"

namespace edge::store {

class IoRing;
class DirectAppender;
struct BatchState;
class SegmentFile;

namespace detail {
// The commit thread's view of one segment (persisted in the `segments` column family).
struct SegmentMeta {
  bool sealed = false;
  std::uint64_t bytes = 0;       // committed size of the file
  std::uint64_t live_bytes = 0;  // bodies still indexed
  std::uint64_t live_chunks = 0;
  std::shared_ptr<SegmentFile> file;
};
// Persisted counters (meta key "chunk_counters").
struct Counters {
  std::uint64_t chunks = 0, blobs = 0, bytes_live = 0, evicted_segments = 0, evicted_chunks = 0,
                relocated_chunks = 0;
};
}  // namespace detail

/// An open segment file. The descriptor stays open as long as anyone holds the object,
/// so a reader (or an in-flight sendfile) finishes normally after the segment is evicted
/// and unlinked (DESIGN §3).
class SegmentFile {
 public:
  SegmentFile(std::uint64_t id, int fd, std::filesystem::path path)
      : id_(id), fd_(fd), path_(std::move(path)) {}
  ~SegmentFile();
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;

  std::uint64_t id() const noexcept { return id_; }
  int fd() const noexcept { return fd_; }
  const std::filesystem::path& path() const noexcept { return path_; }

  /// True if every page of bytes [offset, offset + length) is in the page cache, so that a
  /// sendfile of them does not wait for the disk (DESIGN §4). One cachestat(2) call, whatever
  /// the length; on kernels before 6.5 (ENOSYS) only the first page is probed, with a
  /// one-byte preadv2(RWF_NOWAIT). Never blocks on the disk; any thread.
  bool cached(std::uint64_t offset, std::uint64_t length) const noexcept;

 private:
  std::uint64_t id_;
  int fd_;
  std::filesystem::path path_;
};

/// Where a chunk's bytes are: `length` bytes at `offset` of `segment->fd()`, ready for
/// pread or sendfile. Holding it keeps the descriptor open.
struct ChunkLocation {
  std::shared_ptr<const SegmentFile> segment;
  std::uint64_t offset = 0;  ///< of the body (the record header precedes it)
  std::uint32_t length = 0;
};

/// The index entry of a chunk: the record starts at `record_offset` of segment `segment`.
struct IndexEntry {
  std::uint64_t segment = 0;
  std::uint64_t record_offset = 0;
  std::uint32_t length = 0;
  friend bool operator==(const IndexEntry&, const IndexEntry&) = default;
};

/// Says which chunks must survive eviction (DESIGN §3: chunks of releases that a channel
/// or rollout points at). Called from the store's commit thread; must be thread-safe.
class PinSet {
 public:
  virtual ~PinSet() = default;
  virtual bool pinned(const Sha256& id) const = 0;
};

/// A PinSet over a fixed set of ids.
class HashPinSet final : public PinSet {
 public:
  explicit HashPinSet(std::unordered_set<Sha256, Sha256Hash> ids) : ids_(std::move(ids)) {}
  bool pinned(const Sha256& id) const override { return ids_.contains(id); }

 private:
  std::unordered_set<Sha256, Sha256Hash> ids_;
};

struct ChunkStoreOptions {
  std::uint64_t segment_bytes = 256ULL << 20;  ///< a segment is sealed past this size
  std::uint64_t max_bytes = 0;          ///< budget for segment files; 0 = never evict (origin role)
  std::size_t cache_entries = 1 << 18;  ///< hot index entries kept in memory
  std::size_t max_batch_bytes = 16ULL << 20;  ///< group commit: bytes per fdatasync
  std::size_t max_batch_jobs = 4096;          ///< group commit: operations per fdatasync
  /// Edge durability as a cache (DESIGN §10): chunk records and their index entries are
  /// written without waiting for the disk, and synced in the background once
  /// `sync_every_bytes` are pending or `sync_every_ms` passed; each sync records a durable
  /// watermark (segment, offset). open() re-verifies every record past the watermark
  /// (XXH3 and SHA-256) and drops what fails before anything is served. kill -9 loses
  /// nothing (the page cache survives it); power loss loses only unsynced cache. False:
  /// every batch is synced before it is acknowledged (the origin).
  bool sync_in_background = false;
  /// Background sync: chunk records go to the disk with O_DIRECT (where the filesystem takes
  /// it), not through the page cache. A growing cache then does not pay for new page-cache
  /// pages while it fills (on a VM with free page reporting, a host fault each), but the
  /// first read of what was just filled comes from the disk.
  bool direct_writes = true;
  std::uint64_t sync_every_bytes = 64ULL << 20;
  std::uint32_t sync_every_ms = 1000;
};

/// Figures for /metrics and tests.
struct StoreStats {
  std::uint64_t chunks = 0;         ///< chunks in the index
  std::uint64_t blobs = 0;          ///< recipes
  std::uint64_t bytes_live = 0;     ///< sum of indexed chunk lengths
  std::uint64_t bytes_on_disk = 0;  ///< sum of segment file sizes
  std::uint64_t segments = 0;
  std::uint64_t evicted_segments = 0;
  std::uint64_t evicted_chunks = 0;
  std::uint64_t relocated_chunks = 0;  ///< pinned chunks copied forward by eviction
  /// Appends of chunk data written with O_DIRECT (background sync on a filesystem that
  /// takes it: DESIGN §10); 0 when the page cache takes them.
  std::uint64_t direct_writes = 0;
};

/// What a collection step removed (ChunkStore::erase_garbage, compact_segment).
struct GarbageReport {
  std::uint64_t blobs = 0;      ///< recipes removed
  std::uint64_t chunks = 0;     ///< chunks removed from the index (damaged ones too)
  std::uint64_t bytes = 0;      ///< erase: chunk bytes unindexed; compact: bytes freed on disk
  std::uint64_t relocated = 0;  ///< compact: live chunks copied forward
  std::uint64_t segments = 0;   ///< compact: segment files removed
};

/// One segment's use, for choosing what to compact.
struct SegmentUse {
  std::uint64_t id = 0;
  bool sealed = false;  ///< takes no more appends
  std::uint64_t bytes = 0;
  std::uint64_t live_bytes = 0;
  std::int64_t written_s = 0;  ///< the file's last write (mtime), seconds since the epoch
};

/// What open() found and mended. `problems` has one human-readable line per damaged
/// segment (missing file, bad magic, truncation) naming the segment and what was dropped.
struct RecoveryReport {
  std::uint64_t segments_scanned = 0;
  std::uint64_t records_reindexed = 0;  ///< durable records found past the committed offset
  std::uint64_t bytes_truncated = 0;    ///< torn tails cut off open segments
  std::uint64_t entries_dropped = 0;    ///< index entries that pointed at lost bytes
  std::uint64_t bytes_reverified = 0;   ///< committed bytes past the sync watermark checked
  std::vector<std::string> problems;
};

struct ScrubReport {
  std::uint64_t segments = 0;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::vector<Sha256> erased;  ///< chunks whose bytes failed verification (now unindexed)
};

/// Content-addressed chunk storage (DESIGN §3): append-only segment files hold the bytes,
/// RocksDB holds the index. Writes are group-committed on one commit thread: records are
/// appended and fdatasync()ed through io_uring, then the index batch that points at them
/// is committed (sync), then completions are posted. So the index never points at bytes
/// that are not durable, and an acknowledged put survives kill -9.
///
/// Thread-safety: every public method may be called from any thread, except that the
/// blocking forms must not be called from a completion handler that runs on the store's
/// own thread (an empty executor). Index lookups (find) are synchronous and cheap (LRU in
/// front of RocksDB); everything that touches the disk is asynchronous or blocking-by-name.
class ChunkStore {
 public:
  /// `inserted` is false when the chunk (or recipe) was already present.
  using PutHandler = std::function<void(boost::system::error_code ec, bool inserted)>;
  using ReadHandler = std::function<void(boost::system::error_code ec, std::vector<std::uint8_t>)>;
  using Executor = boost::asio::any_io_executor;

  /// Opens the store whose segments live in `dir` and whose index lives in `db`; runs
  /// recovery (see RecoveryReport). Throws StoreError on errors that stop start-up (an
  /// unusable directory, io_uring refused, a database error).
  static std::unique_ptr<ChunkStore> open(Database& db, const std::filesystem::path& dir,
                                          const ChunkStoreOptions& options = {});
  ~ChunkStore();  ///< finishes queued work, then stops
  /// False while storage is full (Database::writable): puts fail with Errc::kStorageFull.
  bool writable() const noexcept { return db_.writable(); }
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  /// Stores `bytes` as chunk `id`. The SHA-256 is verified on the calling thread first
  /// (Errc::kChecksumMismatch: nothing is written); bodies above 1 MiB are Errc::kTooLarge.
  /// The handler runs on `ex` (or on the store's thread if `ex` is empty) once the chunk
  /// is durable and indexed.
  void async_put(const Sha256& id, std::vector<std::uint8_t> bytes, const Executor& ex,
                 PutHandler handler);
  /// async_put for bytes whose SHA-256 the caller has already checked against `id` (a fill
  /// hashes each chunk once, then streams and stores it): no second hash. The bytes are
  /// shared, never modified, and may be sent by others while they are stored. A caller
  /// that has not verified them must use async_put.
  void async_put_verified(const Sha256& id, SharedBytes bytes, const Executor& ex,
                          PutHandler handler);
  /// Blocking form of async_put; returns whether the chunk was inserted.
  Result<bool> put(const Sha256& id, std::span<const std::uint8_t> bytes);

  /// Where chunk `id` is. Errc::kNotFound if it is not indexed (or its segment is gone).
  Result<ChunkLocation> find(const Sha256& id) const;
  /// The index entry of `id` (segment id and record offset).
  Result<IndexEntry> find_entry(const Sha256& id) const;
  bool contains(const Sha256& id) const { return find_entry(id).has_value(); }

  /// Reads chunk `id` through io_uring and checks its record (XXH3): Errc::kCorrupt if
  /// the bytes at rest are damaged, never the damaged bytes.
  void async_read(const Sha256& id, const Executor& ex, ReadHandler handler) const;
  Result<std::vector<std::uint8_t>> read(const Sha256& id) const;

  /// Reads bytes [offset, offset + length) of `file` through io_uring and drops them, so
  /// they are in the page cache before a sendfile that would otherwise block the event loop
  /// on the disk (DESIGN §4). At most 2 MiB are read; the handler runs on `ex`.
  void async_warm(std::shared_ptr<const SegmentFile> file, std::uint64_t offset,
                  std::uint64_t length, const Executor& ex,
                  std::function<void(boost::system::error_code)> handler) const;

  /// Removes `id` from the index (its bytes become garbage in their segment).
  Result<void> erase(const Sha256& id);

  /// Commits the recipe of blob `id` (used by BlobStore): fails with Errc::kNotFound if any
  /// chunk of `needs` is not indexed at commit time. Group-committed like chunks.
  void async_put_blob(const Sha256& id, std::string encoded_recipe, std::vector<Sha256> needs,
                      const Executor& ex, PutHandler handler);
  /// The encoded recipe of blob `id`, or Errc::kNotFound.
  Result<std::string> get_blob(const Sha256& id) const;

  /// Replaces the pin set consulted by eviction (nullptr: nothing pinned).
  void set_pin_set(std::shared_ptr<const PinSet> pins);
  /// Runs eviction now (it also runs after every commit while over budget). Blocking.
  Result<void> evict_now();

  /// Garbage collection (origin role, DESIGN §12.2). Removes the recipes `blobs`, then the
  /// chunks `chunks`, from the index in one commit; ids already absent are skipped. The
  /// caller decides what is garbage: a recipe left must never name a removed chunk. The
  /// bytes stay in their segments until compact_segment. Blocking.
  Result<GarbageReport> erase_garbage(std::vector<Sha256> blobs, std::vector<Sha256> chunks);
  /// Copies the indexed chunks of sealed segment `id` into the open segment (verified as
  /// they are read: a damaged record is dropped, logged) and removes the segment file.
  /// Errc::kNotFound if `id` is not a sealed segment. Blocking; runs on the commit thread
  /// between batches.
  Result<GarbageReport> compact_segment(std::uint64_t id);
  std::vector<SegmentUse> segment_use() const;
  /// Keeps compaction from moving chunks and removing segment files while held (a backup of
  /// the running node copies the index, then the segments it names). Waits for a compaction
  /// that runs; compact_segment answers Errc::kConflict meanwhile.
  std::unique_lock<std::mutex> hold_segment_files() {
    return std::unique_lock<std::mutex>(files_mutex_);
  }
  /// Every stored recipe, f(blob id, encoded recipe), from one RocksDB iterator. Blocking.
  Result<void> for_each_blob(const std::function<void(const Sha256&, std::string_view)>& f) const;
  /// Every indexed chunk, f(id, entry). Blocking.
  Result<void> for_each_chunk(const std::function<void(const Sha256&, const IndexEntry&)>& f) const;

  /// Re-verifies every record of sealed segment `id` (header CRC, id, XXH3), erasing
  /// damaged chunks from the index. Blocking; reads go through io_uring.
  Result<ScrubReport> scrub_segment(std::uint64_t id);
  /// Scrubs every sealed segment, at most `bytes_per_second` (0 = unlimited).
  Result<ScrubReport> scrub(std::uint64_t bytes_per_second = 0);

  /// Reads and SHA-256-verifies every indexed chunk; returns the ids that failed. For
  /// tests and `fsck`-style tools: it reads the whole store.
  Result<std::vector<Sha256>> verify_index() const;

  StoreStats stats() const;
  const RecoveryReport& recovery() const noexcept { return recovery_; }
  /// Ids of sealed segments, oldest first.
  std::vector<std::uint64_t> sealed_segments() const;
  std::filesystem::path segment_path(std::uint64_t id) const;

  /// Blocks until everything queued before the call has been committed.
  void flush();

 private:
  struct Job;

  ChunkStore(Database& db, std::filesystem::path dir, const ChunkStoreOptions& options);
  void recover();
  void enqueue(Job job);
  void commit_loop();
  BatchState begin_batch() const;  // a staged copy of the published state (commit thread)
  void run_batch(std::vector<Job>& jobs);
  std::vector<std::uint8_t> write_buffer_;  // commit thread only: reused by every batch
  // Background sync (ChunkStoreOptions::sync_in_background); commit thread only.
  std::uint64_t unsynced_bytes_ = 0;
  std::chrono::steady_clock::time_point last_sync_{};
  /// Chunk data to the disk with O_DIRECT (the page cache when the filesystem refuses it).
  std::unique_ptr<DirectAppender> direct_;
  bool direct_refused_ = false;
  std::atomic<std::uint64_t> direct_writes_{0};
  /// Writes bytes of the open segment without waiting for the disk (background sync).
  Result<void> write_unsynced(const SegmentFile& file, const std::uint8_t* bytes, std::size_t len,
                              std::uint64_t offset);
  /// The open segment's file and committed end (null: none yet); commit thread.
  std::pair<std::shared_ptr<SegmentFile>, std::uint64_t> open_segment_end() const;
  /// Cuts the O_DIRECT padding off a segment that takes no more appends.
  void finish_segment(const SegmentFile& file, std::uint64_t end);
  /// Hands the open segment's committed end to the syncer thread (commit thread only).
  void sync_watermark();
  /// Queues a sync of `file` up to `end`; the syncer fdatasync()s it, then records the
  /// durable watermark (seg, end). Requests run in order, so the watermark only grows.
  void request_sync(std::shared_ptr<SegmentFile> file, std::uint64_t seg, std::uint64_t end);
  /// The syncer thread: fdatasync off the commit thread. Made by request_sync when none
  /// runs; it exits once no request came for kSyncLinger (an idle store keeps none).
  void sync_loop();
  static constexpr std::chrono::seconds kSyncLinger{10};
  struct SyncRequest {
    std::shared_ptr<SegmentFile> file;
    std::uint64_t seg = 0;
    std::uint64_t end = 0;
  };
  std::mutex sync_mutex_;
  std::condition_variable sync_cv_;
  std::deque<SyncRequest> sync_queue_;  // guarded by sync_mutex_
  bool sync_stop_ = false;              // guarded by sync_mutex_
  bool syncing_ = false;                // the syncer thread runs (or is about to); sync_mutex_
  std::thread syncer_;  // the last syncer thread (joined before the next); sync_mutex_
  void evict_over_budget();
  Result<GarbageReport> compact_segment_now(std::uint64_t id);  // commit thread
  Result<GarbageReport> run_collection_job(Job job);  // enqueues it and waits for its report
  Result<std::optional<IndexEntry>> staged_lookup(BatchState& b, const Sha256& id) const;
  Result<IndexEntry> stage_append(BatchState& b, const Sha256& id,
                                  std::span<const std::uint8_t> body);
  Result<void> stage_roll(BatchState& b);
  void stage_erase(BatchState& b, const Sha256& id, const IndexEntry& entry);
  Result<void> flush_pending(BatchState& b);
  Result<void> commit(BatchState& b);
  Result<std::vector<std::uint8_t>> read_record(const SegmentFile& file, const IndexEntry& e,
                                                const Sha256& id) const;
  std::shared_ptr<SegmentFile> segment_file(std::uint64_t id) const;

  Database& db_;
  std::filesystem::path dir_;
  ChunkStoreOptions options_;
  std::unique_ptr<IoRing> ring_;
  mutable LruCache<Sha256, IndexEntry, Sha256Hash> cache_;
  RecoveryReport recovery_;

  // Published state: written by the commit thread after each commit, read by anyone.
  mutable std::shared_mutex state_mutex_;
  std::map<std::uint64_t, detail::SegmentMeta> segments_;
  detail::Counters counters_;
  std::shared_ptr<const PinSet> pins_;

  // Commit-thread state.
  std::uint64_t next_segment_id_ = 1;
  std::uint64_t open_segment_ = 0;  // 0: none yet; created on the first append

  std::mutex files_mutex_;  // held by a compaction (try_lock) and by hold_segment_files()
  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  std::thread committer_;
};

}  // namespace edge::store
