#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/database.hpp"

namespace edge::store {

/// This node's admin access state (DESIGN §11): scoped tokens and the audit log. Local to
/// the node, never in the changelog (an edge's tokens are its own, and a secret's hash
/// must not travel). Stored in the meta column family; every write is synced.
///
/// Thread-safety: all methods may be called from any thread.
class AccessStore {
 public:
  /// `audit_keep`: the newest audit records kept (older ones are deleted as new ones come).
  explicit AccessStore(Database& db, std::uint64_t audit_keep = 100'000);

  /// Creates or replaces the token document of `name` (the caller builds the JSON: it
  /// holds the secret's hash, never the secret).
  Result<void> put_token(std::string_view name, std::string_view doc);
  /// Deletes the token `name`; Errc::kNotFound if there is none.
  Result<void> erase_token(std::string_view name);
  /// Every (name, document), ordered by name.
  Result<std::vector<std::pair<std::string, std::string>>> tokens() const;

  /// Appends one audit record (a JSON document); returns its number (1, 2, ...).
  Result<std::uint64_t> append_audit(std::string_view doc);
  /// Up to `limit` records numbered above `after`, oldest first.
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_after(std::uint64_t after,
                                                                         std::size_t limit) const;

 private:
  Database& db_;
  std::uint64_t audit_keep_;
  std::mutex audit_mutex_;
  std::uint64_t next_audit_ = 1;  // guarded by audit_mutex_
};

}  // namespace edge::store
