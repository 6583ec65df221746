#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::store {

/// Where admin access state is kept (DESIGN §11, §12.2): scoped tokens, the audit log of
/// admin writes and the refusal records. Two implementations: AccessStore (this node's
/// RocksDB, the embedded default) and edge::pg::AccessTable (shared by every origin of a
/// tier). edge/api/access.* talks to this interface only.
///
/// Errors: Errc::kUnavailable when a shared backend cannot be reached or cannot take writes
/// (the caller answers 503 state_backend_unavailable); other codes as the implementation
/// says.
///
/// Thread-safety: all methods may be called from any thread.
class AccessBackend {
 public:
  virtual ~AccessBackend() = default;

  /// Creates the token document of `name` (the caller builds the JSON: it holds the secret's
  /// hash, never the secret). The embedded store replaces an existing one (its caller checks
  /// first); a shared backend refuses a name that exists with Errc::kConflict (another node
  /// may have created it since the caller's check).
  virtual Result<void> put_token(std::string_view name, std::string_view doc) = 0;
  /// Deletes the token `name`; Errc::kNotFound if there is none.
  virtual Result<void> erase_token(std::string_view name) = 0;
  /// Every (name, document), ordered by name.
  virtual Result<std::vector<std::pair<std::string, std::string>>> tokens() const = 0;

  /// Appends one audit record (a JSON document with a top-level "time_ms"); returns its
  /// number. Numbers grow in commit order: a reader paging by number never misses a record
  /// committed later under a lower number.
  virtual Result<std::uint64_t> append_audit(std::string_view doc) = 0;
  /// Up to `limit` records numbered above `after`, oldest first.
  virtual Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_after(
      std::uint64_t after, std::size_t limit) const = 0;
  /// Up to `limit` records numbered below `before`, newest first.
  virtual Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_before(
      std::uint64_t before, std::size_t limit) const = 0;

  /// Creates or replaces the refusal record `key` (the caller coalesces repeated refusals
  /// into one record, with a top-level "last_ms", and chooses the key).
  virtual Result<void> put_refusal(std::string_view key, std::string_view doc) = 0;
  /// Deletes the refusal record `key` (absent: nothing happens).
  virtual Result<void> erase_refusal(std::string_view key) = 0;
  /// Every refusal record (key, document), ordered by key.
  virtual Result<std::vector<std::pair<std::string, std::string>>> refusals() const = 0;

  /// Deletes the audit records whose "time_ms" is below `before_ms`. Returns how many went.
  virtual Result<std::size_t> prune_audit(std::int64_t before_ms) = 0;

  /// True when other nodes read and write the same records (the tier): tokens change under
  /// the caller (it reloads them), and retention is one node's work (sweep_shared below),
  /// not every node's.
  virtual bool shared() const { return false; }
  /// Shared backends: deletes the refusal records last seen before `before_ms`, then the
  /// least recently seen beyond `keep` (0: no count bound). The embedded store's refusals
  /// are bounded by their one writer, in memory (returns 0).
  virtual Result<std::size_t> prune_refusals(std::int64_t /*before_ms*/, std::size_t /*keep*/) {
    return std::size_t{0};
  }
};

}  // namespace edge::store
