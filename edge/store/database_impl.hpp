#pragma once

// Private to edge/store: the only header that includes RocksDB.

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "edge/store/database.hpp"

namespace edge::store {

enum Cf : std::size_t {
  kCfDefault = 0,
  kCfMeta,
  kCfChunks,         // sha256 -> ChunkEntry (segment, offset, length)
  kCfSegmentChunks,  // be64(segment) be64(offset) -> sha256 + be32(length)
  kCfSegments,       // be64(segment) -> SegmentEntry
  kCfBlobs,          // sha256 -> encoded recipe
  kCfApps,           // app_id -> JSON          (StateStore)
  kCfReleases,       // app_id \0 name -> JSON
  kCfChannels,       // app_id \0 name -> JSON
  kCfDevices,        // app_id \0 device_id -> JSON
  kCfChangelog,      // be64(seq) -> encoded change
  // be64(seq) [be64(the device's previous timeline seq), for timeline events] -> encoded
  // check-in (CheckinStore)
  kCfCheckins,
  // app \0 device -> last check-in \0 "@" the timeline's head seq (rows written before the
  // chain end with \0 their ring's event count instead)
  kCfDeviceSeen,
  // app \0 hour|day \0 kind \0 name -> le64 count (CheckinStore: hourly a, p, r, i, t;
  // daily D, v) and "\x01" app \0 day \0 device -> 1 (a device's marker for the day)
  kCfDaily,
  kCfOutbox,  // be64(outbox seq) -> encoded check-in, waiting to go upstream (edges)
  // app \0 device \0 be32(slot) -> encoded check-in: the timeline rings of before the chain
  // (read, and deleted with their idle devices; no longer written)
  kCfTimeline,
  kCfCount
};

struct Database::Impl {
  std::filesystem::path path;
  DatabaseOptions options;
  std::atomic<bool> full{false};
  std::atomic<bool> db_stopped{false};  // RocksDB reported a write error: Resume() later
  std::atomic<std::uint64_t> free_bytes{0};
  mutable std::atomic<std::uint64_t> refused{0};
  std::mutex guard_mutex;
  std::condition_variable guard_cv;
  bool guard_stop = false;  // guarded by guard_mutex
  std::thread guard;
  /// When check_space() measures next (after host_space_checks()); guarded by guard_mutex.
  std::chrono::steady_clock::time_point next_check{};
  /// The periodic free-space check (the guard thread).
  void measure();
  /// Storage becomes full (logged once per transition, with `why`).
  void mark_full(const std::string& why);
  /// Counts one refused write (for the metric) and returns Errc::kStorageFull.
  boost::system::error_code refuse();
  /// A write failed with `ec`: ENOSPC becomes Errc::kStorageFull, and storage becomes full
  /// now rather than at the next check. Returns the (normalised) error.
  boost::system::error_code failed(boost::system::error_code ec);
  /// Every RocksDB write of the stores: refused while storage is full if it `adds` data
  /// (a delete-only batch goes through: it frees space), and its failure noted.
  boost::system::error_code write(rocksdb::WriteBatch& wb, bool sync, bool adds);
  std::unique_ptr<rocksdb::DB> db;
  std::array<rocksdb::ColumnFamilyHandle*, kCfCount> cf{};
  rocksdb::ColumnFamilyHandle* handle(Cf c) const { return cf[c]; }
  ~Impl();
};

/// The one place where a rocksdb::Status becomes an error code (STYLE.md, Errors).
inline boost::system::error_code to_error(const rocksdb::Status& s) {
  if (s.ok())
    return {};
  if (s.IsNoSpace())
    return make_error_code(Errc::kStorageFull);
  if (s.IsNotFound())
    return make_error_code(Errc::kNotFound);
  if (s.IsCorruption())
    return make_error_code(Errc::kCorrupt);
  if (s.IsIOError())
    return make_error_code(Errc::kIo);
  return make_error_code(Errc::kDatabase);
}

inline rocksdb::Slice as_slice(const void* p, std::size_t n) {
  return {static_cast<const char*>(p), n};
}

// Big-endian integers in keys keep RocksDB's bytewise order equal to numeric order.
inline void put_be64(char* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8)
    out[i] = static_cast<char>(v & 0xff);
}
inline std::uint64_t get_be64(const char* in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = v << 8 | static_cast<std::uint8_t>(in[i]);
  return v;
}
inline void put_le64(char* out, std::uint64_t v) {
  std::memcpy(out, &v, 8);
}
inline std::uint64_t get_le64(const char* in) {
  std::uint64_t v;
  std::memcpy(&v, in, 8);
  return v;
}
inline void put_le32(char* out, std::uint32_t v) {
  std::memcpy(out, &v, 4);
}
inline std::uint32_t get_le32(const char* in) {
  std::uint32_t v;
  std::memcpy(&v, in, 4);
  return v;
}

}  // namespace edge::store
