#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/access_backend.hpp"
#include "edge/store/database.hpp"

namespace edge::store {

/// This node's admin access state (DESIGN §11): scoped tokens, the audit log of admin
/// writes, and the refusals (writes answered 4xx), kept apart. Local to the node, never in
/// the changelog (an edge's tokens are its own, and a secret's hash must not travel).
/// Stored in the meta column family; token and audit writes are synced.
///
/// The two logs are separate key ranges with separate bounds, so however many refusals a
/// token collects (a viewer hammering a write route), they never push an admin's record
/// out of the audit log.
///
/// The embedded implementation of AccessBackend.
///
/// Thread-safety: all methods may be called from any thread.
class AccessStore final : public AccessBackend {
 public:
  /// `audit_keep`: the newest audit records kept (older ones are deleted as new ones come;
  /// 0: no count bound). Age bounds: see prune().
  explicit AccessStore(Database& db, std::uint64_t audit_keep = 100'000);

  /// Creates or replaces the token document of `name` (the caller builds the JSON: it
  /// holds the secret's hash, never the secret).
  Result<void> put_token(std::string_view name, std::string_view doc) override;
  /// Deletes the token `name`; Errc::kNotFound if there is none.
  Result<void> erase_token(std::string_view name) override;
  /// Every (name, document), ordered by name.
  Result<std::vector<std::pair<std::string, std::string>>> tokens() const override;

  /// Appends one audit record (a JSON document); returns its number (1, 2, ...).
  Result<std::uint64_t> append_audit(std::string_view doc) override;
  /// Up to `limit` records numbered above `after`, oldest first.
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_after(
      std::uint64_t after, std::size_t limit) const override;
  /// Up to `limit` records numbered below `before`, newest first.
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_before(
      std::uint64_t before, std::size_t limit) const override;

  /// Creates or replaces the refusal record `key` (the caller coalesces repeated refusals
  /// into one record and chooses the key). Not synced: a crash may lose the last counts,
  /// never an audit record.
  Result<void> put_refusal(std::string_view key, std::string_view doc) override;
  /// Deletes the refusal record `key` (absent: nothing happens).
  Result<void> erase_refusal(std::string_view key) override;
  /// Every refusal record (key, document), ordered by key.
  Result<std::vector<std::pair<std::string, std::string>>> refusals() const override;

  /// Deletes the audit records whose "time_ms" (a top-level field of the document, which
  /// the caller writes) is below `before_ms`, oldest first, stopping at the first newer
  /// one (records are appended in time order). Returns how many went.
  Result<std::size_t> prune_audit(std::int64_t before_ms) override;

 private:
  Database& db_;
  std::uint64_t audit_keep_;
  std::mutex audit_mutex_;
  std::uint64_t next_audit_ = 1;  // guarded by audit_mutex_
};

}  // namespace edge::store
