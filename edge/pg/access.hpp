#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/pg/connection.hpp"
#include "edge/store/access_backend.hpp"

namespace edge::pg {

/// Admin access state shared by the origins of a tier (DESIGN §11, §12.2): tokens, the audit
/// log and the refusal records in PostgreSQL (tables be_tokens, be_audit, be_refusals and
/// the one-row counter be_access_head, created by a step of migrate_schema).
///
/// Audit numbering: one transaction per record takes `UPDATE be_access_head SET audit_seq =
/// audit_seq + 1 RETURNING audit_seq`; the row lock serialises appenders until COMMIT, so
/// numbers grow in commit order and a reader paging by number (GET /v1/admin/audit?after=)
/// never misses a record committed later under a lower number. The count bound
/// (admin.audit_keep) is kept in the same transaction; the age bound is prune_audit,
/// singleton work.
///
/// Refusal keys may hold any byte (the caller separates fields with '\0'): they are stored
/// hex-encoded.
///
/// Thread-safety: all methods may be called from any thread. Token reads (reload, every
/// second) have a connection of their own, so a slow read never holds up an admin write.
class AccessTable final : public store::AccessBackend {
 public:
  /// `audit_keep`: the newest audit records kept (0: no count bound).
  explicit AccessTable(std::string url, std::uint64_t audit_keep = 100'000);

  Result<void> put_token(std::string_view name, std::string_view doc) override;
  Result<void> erase_token(std::string_view name) override;
  Result<std::vector<std::pair<std::string, std::string>>> tokens() const override;

  Result<std::uint64_t> append_audit(std::string_view doc) override;
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_after(
      std::uint64_t after, std::size_t limit) const override;
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_before(
      std::uint64_t before, std::size_t limit) const override;

  Result<void> put_refusal(std::string_view key, std::string_view doc) override;
  Result<void> erase_refusal(std::string_view key) override;
  Result<std::vector<std::pair<std::string, std::string>>> refusals() const override;

  Result<std::size_t> prune_audit(std::int64_t before_ms) override;
  bool shared() const override { return true; }
  Result<std::size_t> prune_refusals(std::int64_t before_ms, std::size_t keep) override;

 private:
  std::uint64_t audit_keep_;
  mutable std::mutex mutex_;
  mutable Connection conn_;  // guarded by mutex_
  mutable std::mutex read_mutex_;
  mutable Connection read_conn_;  // tokens(); guarded by read_mutex_
};

/// Lower-case hex of any bytes, and back (refusal keys); unhex_key is false on anything
/// hex_key cannot have written.
std::string hex_key(std::string_view key);
bool unhex_key(std::string_view hex, std::string& out);

}  // namespace edge::pg
