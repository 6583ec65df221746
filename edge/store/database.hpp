#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

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

  struct Impl;  ///< defined in database_impl.hpp, visible to edge/store sources only
  Impl& impl() noexcept { return *impl_; }
  const Impl& impl() const noexcept { return *impl_; }

 private:
  explicit Database(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edge::store
