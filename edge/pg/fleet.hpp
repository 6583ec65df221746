#pragma once

#include <mutex>
#include <string>

#include "edge/pg/connection.hpp"
#include "edge/store/fleet_backend.hpp"

namespace edge::pg {

/// The fleet view shared by the origins of a tier (DESIGN §11, §12.2): the latest status of
/// every node below any origin, one row per node in be_fleet (created by a step of
/// migrate_schema), upserted as reports arrive, so GET /v1/admin/fleet on any origin shows
/// every edge whichever origin it reports to. Reads are pages by node id and one aggregate;
/// expiry (sync.fleet_expire_ms) and the node bound are expire(), singleton work, and reads
/// skip expired rows meanwhile.
///
/// Thread-safety: all methods may be called from any thread (one connection, one lock).
class FleetTable final : public store::FleetBackend {
 public:
  explicit FleetTable(std::string url);

  Result<void> upsert(const std::vector<store::FleetRow>& rows) override;
  Result<std::vector<store::FleetRow>> page(std::string_view after, std::size_t limit,
                                            std::int64_t min_received_ms) const override;
  Result<store::FleetTotals> totals(std::int64_t min_received_ms,
                                    std::int64_t stale_before_ms) const override;
  Result<std::size_t> expire(std::int64_t min_received_ms, std::size_t max_nodes) override;

 private:
  mutable std::mutex mutex_;
  mutable Connection conn_;  // guarded by mutex_
};

}  // namespace edge::pg
