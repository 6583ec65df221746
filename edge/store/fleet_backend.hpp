#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::store {

/// The latest status report of one node below an origin (the fleet view, DESIGN §11).
struct FleetRow {
  std::string node_id;
  std::string doc;  ///< the status object as received (flat JSON)
  std::int64_t received_ms = 0;
  std::string via;  ///< the node that relayed it ("" when it reported itself)
  std::uint64_t lag_seq = 0;
  std::uint64_t outbox_depth = 0;
  std::uint64_t outbox_bytes = 0;
};

/// Figures over every row received at or after a time.
struct FleetTotals {
  std::size_t nodes = 0;
  std::size_t stale = 0;  ///< received before the stale bound
  std::uint64_t max_lag_seq = 0;
  std::string max_lag_node;  ///< "" when no node lags
  std::uint64_t outbox_depth = 0;
  std::uint64_t outbox_bytes = 0;
};

/// Fleet reports kept where every origin of a tier sees them (edge::pg::FleetTable). The
/// embedded origin keeps them in memory (edge::api::Fleet) and needs none.
///
/// Thread-safety: all methods may be called from any thread.
class FleetBackend {
 public:
  virtual ~FleetBackend() = default;
  /// Upserts the rows: each replaces the node's earlier row unless that one is newer.
  virtual Result<void> upsert(const std::vector<FleetRow>& rows) = 0;
  /// Up to `limit` rows with node_id above `after` ("" for the first page) received after
  /// `min_received_ms` (exclusive), by node_id.
  virtual Result<std::vector<FleetRow>> page(std::string_view after, std::size_t limit,
                                             std::int64_t min_received_ms) const = 0;
  /// Totals over the rows received after `min_received_ms`; `stale_before_ms`: rows
  /// received before it count as stale.
  virtual Result<FleetTotals> totals(std::int64_t min_received_ms,
                                     std::int64_t stale_before_ms) const = 0;
  /// Deletes the rows received at or before `min_received_ms`, then the oldest beyond
  /// `max_nodes`. Singleton work. Returns how many went.
  virtual Result<std::size_t> expire(std::int64_t min_received_ms, std::size_t max_nodes) = 0;
};

}  // namespace edge::store
