#pragma once

// A blob backend beyond this node (DESIGN §12.2): a bucket of immutable objects that several
// origins share. The store layer declares what it needs; edge/s3 implements it over the
// standard S3 object API. Nothing here knows how the objects travel.

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::store {

/// Figures of an object store for /metrics and /readyz. Written by the implementation (and,
/// for verify_failures, by whoever checks the bytes it returned); relaxed atomics.
struct ObjectStoreStats {
  enum class Op : std::uint8_t { kPut, kGet, kHead, kDelete, kList, kCount };
  enum class Outcome : std::uint8_t { kOk, kNotFound, kError, kCount };
  static constexpr std::size_t kOps = static_cast<std::size_t>(Op::kCount);
  static constexpr std::size_t kOutcomes = static_cast<std::size_t>(Outcome::kCount);

  std::array<std::atomic<std::uint64_t>, kOps * kOutcomes> requests{};
  std::atomic<std::uint64_t> bytes_sent{0};      ///< request bodies (PUT)
  std::atomic<std::uint64_t> bytes_received{0};  ///< response bodies (GET, List)
  /// Objects that did not hash to the id in their key (never served, never stored).
  std::atomic<std::uint64_t> verify_failures{0};
  /// 1 while the last request reached the store and got an answer it understood (any
  /// status but 5xx), 0 after a transport failure or a 5xx.
  std::atomic<std::uint32_t> reachable{1};

  void count(Op op, Outcome outcome) {
    requests[static_cast<std::size_t>(op) * kOutcomes + static_cast<std::size_t>(outcome)]
        .fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t requests_of(Op op, Outcome outcome) const {
    return requests[static_cast<std::size_t>(op) * kOutcomes + static_cast<std::size_t>(outcome)]
        .load(std::memory_order_relaxed);
  }
  /// Why the last failed request failed ("" once one succeeds). Never holds credentials.
  void set_error(std::string why) {
    std::lock_guard lock(mutex_);
    last_error_ = std::move(why);
  }
  std::string last_error() const {
    std::lock_guard lock(mutex_);
    return last_error_;
  }

 private:
  mutable std::mutex mutex_;
  std::string last_error_;  // guarded by mutex_
};

/// One page of a listing: keys in lexicographic order, and where the next page starts
/// (empty: this was the last).
struct ObjectListing {
  struct Entry {
    std::string key;
    std::uint64_t size = 0;
    /// LastModified, seconds since the epoch; -1 if the store did not say (or said
    /// something unreadable): a collector must then treat the object as new.
    std::int64_t modified_s = -1;
  };
  std::vector<Entry> objects;
  std::string next;  ///< continuation token for list()
};

/// A bucket of objects named by keys such as "chunks/<sha256 hex>". Blocking calls, safe
/// from any number of threads at once; each may take up to the implementation's timeout.
/// Errors: Errc::kNotFound (no such object), Errc::kTooLarge (an object above
/// `max_bytes`), Errc::kIo (the store could not be reached, or refused: the reason is in
/// stats().last_error()).
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  /// Stores `bytes` under `key` (replacing any object there). Durable once it returns.
  virtual Result<void> put(std::string_view key, std::span<const std::uint8_t> bytes) = 0;
  /// The object's bytes; Errc::kTooLarge past `max_bytes` (the rest is not read).
  virtual Result<std::vector<std::uint8_t>> get(std::string_view key, std::uint64_t max_bytes) = 0;
  /// Whether the object exists.
  virtual Result<bool> exists(std::string_view key) = 0;
  /// Removes the object (absent already: success).
  virtual Result<void> remove(std::string_view key) = 0;
  /// Up to 1000 keys that start with `prefix`, after the page `continuation` names ("" for
  /// the first page).
  virtual Result<ObjectListing> list(std::string_view prefix, std::string_view continuation) = 0;
  /// Where the objects live, for logs and /readyz ("s3 bucket b at https://host"); never
  /// credentials.
  virtual std::string describe() const = 0;
  virtual ObjectStoreStats& stats() = 0;
};

/// The keys of content-addressed objects: chunks and recipes (the encoded form of Recipe).
inline std::string chunk_key(std::string_view sha256_hex) {
  return "chunks/" + std::string(sha256_hex);
}
inline std::string recipe_key(std::string_view sha256_hex) {
  return "recipes/" + std::string(sha256_hex);
}

}  // namespace edge::store
