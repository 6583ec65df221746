#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include <boost/system/error_code.hpp>

#include "edge/core/errc.hpp"

namespace edge::store {

/// Thrown by the control-plane calls of the store (open, recovery) with a message that
/// names the path and the bad value. The data plane returns Result/error_code instead.
class StoreError : public std::runtime_error {
 public:
  StoreError(Errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

/// The on-disk schema version this build reads and writes (meta key "schema_version").
inline constexpr std::uint32_t kSchemaVersion = 1;

struct DatabaseOptions {
  std::uint64_t block_cache_bytes = 64ULL << 20;  ///< RocksDB block cache shared by all CFs
  /// Below this much free space in the data directory's file system every write is refused
  /// (Errc::kStorageFull) before RocksDB or a segment file is touched, so RocksDB never
  /// meets ENOSPC (Debian's build aborts on it). Writes resume at 1.25x this. 0: no check
  /// (the library default; the node's config defaults to 256 MiB).
  std::uint64_t min_free_bytes = 0;
  /// A file of this size (`<dir>/../reserve`) kept while space is plentiful and deleted
  /// when a start finds the disk full, so the index can be opened (and read) anyway. 0: none
  /// (the node's config defaults to 64 MiB).
  std::uint64_t reserve_bytes = 0;
  /// RocksDB memtable size per column family: the most a family buffers before a flush,
  /// and the size its memtable bloom filter is allocated for (2% of it, for the families
  /// read by key). 64 MiB suits an origin; a small edge takes 4 MiB (conf/small-edge.toml).
  std::uint64_t write_buffer_bytes = 64ULL << 20;
  /// How often the free space is measured.
  std::uint32_t check_interval_ms = 500;
};

/// Free-space figures for /metrics and logs.
struct StorageStatus {
  bool full = false;             ///< writes are refused
  std::uint64_t free_bytes = 0;  ///< at the last measurement
  std::uint64_t min_free_bytes = 0;
  std::uint64_t refused = 0;  ///< writes refused since start
};

/// The node's RocksDB instance with every column family of DESIGN §3 (chunks, blobs,
/// segments, segment_chunks, meta; the state families are added by later modules).
/// Opaque on purpose: only edge/store includes RocksDB headers.
///
/// Thread-safety: all methods may be called from any thread.
class Database {
 public:
  /// Opens or creates `<dir>`. A database written by another schema version is refused
  /// with StoreError(kUnsupportedVersion) naming both versions; nothing is changed then.
  static std::unique_ptr<Database> open(const std::filesystem::path& dir,
                                        const DatabaseOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::filesystem::path& path() const noexcept;

  /// False while the data directory is below min_free_bytes (or after a write failed for
  /// lack of space, until space returns): stores refuse writes with Errc::kStorageFull
  /// (Impl::write; deletes still go through, they free space). Reads are unaffected. The state is
  /// re-measured every check_interval_ms on a thread of this object (or of the store that
  /// hosts the check: host_space_checks); when space returns, writes
  /// resume by themselves (and RocksDB is told to resume if it had stopped). Any thread.
  bool writable() const noexcept;
  /// Measures now whether `bytes` more can be written and still leave min_free_bytes;
  /// if not, storage becomes full (as at a periodic check) and this returns false. For
  /// writers of large amounts (segment appends), whose bursts outrun the periodic check.
  bool room_for(std::uint64_t bytes) const noexcept;
  StorageStatus storage_status() const noexcept;

  /// Hands the periodic free-space check (writable()) to a thread of the caller's: the
  /// database's own thread ("disk-guard") ends, and the caller calls check_space() at least
  /// every check_interval_ms from then on (CheckinStore's writer does). Returns that
  /// interval; 0 when there is nothing to check (min_free_bytes 0: no thread either).
  std::chrono::milliseconds host_space_checks();
  /// The periodic check, if check_interval_ms has passed since the last one; returns when
  /// the next is due. Any thread (checks are serialised).
  std::chrono::steady_clock::time_point check_space();
  /// A consistent copy of the database in `dir` (which must not exist): memtables flushed,
  /// then hard links to the immutable files (copies across file systems). Any thread.
  Result<void> checkpoint(const std::filesystem::path& dir);

  struct Impl;  ///< defined in database_impl.hpp, visible to edge/store sources only
  Impl& impl() noexcept { return *impl_; }
  const Impl& impl() const noexcept { return *impl_; }

 private:
  explicit Database(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edge::store
