#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/store/fleet_backend.hpp"

namespace edge::api {

/// One node's status as it reports it upstream (DESIGN §11): a flat JSON object with at
/// least "node_id"; the fields the edges send are listed in README ("Operating").
struct NodeStatus {
  std::string node_id;
  std::string doc;  ///< the object as received (validated, at most kMaxStatusBytes)
  std::int64_t received_ms = 0;
  std::string via;  ///< the node that relayed it ("" when it reported itself)
  // Read from `doc` by parse_status_report for the fleet summary (0 when absent or not a
  // non-negative integer).
  std::uint64_t lag_seq = 0;
  std::uint64_t outbox_depth = 0;
  std::uint64_t outbox_bytes = 0;
};

inline constexpr std::size_t kMaxStatusBytes = 4096;
/// What one POST /v1/sync/status may carry: parse_status_report refuses more nodes, and
/// the receiver's server.json_body_limit (1 MiB unless configured) more bytes (413).
inline constexpr std::size_t kMaxReportNodes = 1000;
inline constexpr std::size_t kMaxReportBytes = std::size_t{1} << 20;
/// The fleet table's bound: past it, the node heard from longest ago makes room.
inline constexpr std::size_t kMaxFleetNodes = 10'000;
/// A node not heard from for this long leaves the fleet table (5 x the default
/// upstream.status_interval_ms); sync.fleet_expire_ms sets it.
inline constexpr std::int64_t kDefaultFleetExpireMs = 50'000;
/// GET /v1/admin/fleet's page: `limit` 1..kMaxFleetPage, kDefaultFleetPage when absent.
inline constexpr std::size_t kDefaultFleetPage = 100;
inline constexpr std::size_t kMaxFleetPage = 1000;

/// What a node reports of itself (GET /v1/admin/fleet's "self", and upstream).
struct NodeFigures {
  std::string node_id;
  std::string role;
  std::string version;
  std::string upstream;  ///< "" on the origin
  std::uint64_t cursor_seq = 0;
  std::uint64_t upstream_seq = 0;
  std::uint64_t outbox_depth = 0;
  std::uint64_t outbox_bytes = 0;
  std::uint64_t cache_bytes = 0;
  std::uint64_t blob_hits = 0;
  std::uint64_t blob_misses = 0;
  std::uint64_t bytes_served = 0;
  std::int64_t last_contact_ms = 0;  ///< 0: never
  std::int64_t now_ms = 0;
};
/// The status object: the figures plus lag_seq, hit_ratio (1 before any lookup),
/// seconds_since_contact (null if never) and reported_ms.
std::string encode_node_status(const NodeFigures& f);

/// POST /v1/sync/status bodies: {"nodes":[{"node_id":"...", ...}, ...]}. Every node object
/// must be flat (strings, numbers, booleans, null), at most kMaxStatusBytes serialised,
/// with a valid node id (1-64 of [A-Za-z0-9._-]); at most kMaxReportNodes nodes. nullopt
/// and `error` naming the problem otherwise.
std::optional<std::vector<NodeStatus>> parse_status_report(std::string_view json,
                                                           std::string* error);
/// One body: `own` status first, then the children's as they were last received.
std::string encode_status_report(const std::string& own, const std::vector<NodeStatus>& relayed);
/// The bodies a node sends for one round: every one starts with `own` (the receiver takes
/// the first node as the sender, the relay of the others), then as many of `relayed`, in
/// order, as fit in `max_bytes` and `max_nodes` (own included). At least one body; one
/// relayed status per body when even that does not fit (the receiver then refuses it
/// alone, the others still arrive).
std::vector<std::string> encode_status_reports(const std::string& own,
                                               const std::vector<NodeStatus>& relayed,
                                               std::size_t max_bytes = kMaxReportBytes,
                                               std::size_t max_nodes = kMaxReportNodes);

/// GET /v1/admin/fleet?limit=&cursor=: `limit` 1..kMaxFleetPage (kDefaultFleetPage),
/// `cursor` the `next` of the previous page (a node id: the page starts after it).
struct FleetQuery {
  std::size_t limit = kDefaultFleetPage;
  std::string cursor;
};
/// Parses the query string (without '?'); nullopt and `error` naming the parameter on an
/// unknown parameter or a bad value. Does not throw (but for std::bad_alloc).
std::optional<FleetQuery> parse_fleet_query(std::string_view query, std::string* error);

/// The bounds of a fleet table.
struct FleetOptions {
  std::int64_t expire_after_ms = kDefaultFleetExpireMs;  ///< not heard from: dropped
  std::size_t max_nodes = kMaxFleetNodes;                ///< full: the stalest makes room
};

/// Figures over the whole table (not just one page).
struct FleetSummary {
  std::size_t nodes = 0;
  std::size_t stale = 0;  ///< not heard from for more than half of expire_after_ms
  std::uint64_t max_lag_seq = 0;
  std::string max_lag_node;  ///< "" when no node lags
  std::uint64_t outbox_depth = 0;
  std::uint64_t outbox_bytes = 0;
};

/// The latest status of every node below this one (its children, and theirs through them),
/// bounded: a node not heard from for expire_after_ms is dropped (reads do not see it and
/// the next call forgets it), and when max_nodes are kept a new node evicts the one heard
/// from longest ago. Thread-safe: every call takes one lock; page() and render() copy one
/// page, summary() walks the table without copying it.
class Fleet {
 public:
  explicit Fleet(FleetOptions options = {});

  /// Keeps the statuses of one report (the first node is the sender's own status, the
  /// others it relays) as received at `now_ms`. A node of this report never evicts
  /// another of the same report.
  void accept(std::vector<NodeStatus> report, std::int64_t now_ms);
  /// Every node heard from within expire_after_ms of `now_ms`, by id (what an edge relays).
  std::vector<NodeStatus> nodes(std::int64_t now_ms) const;
  /// Up to `q.limit` nodes after `q.cursor`, by id; `next` set to the cursor of the next
  /// page, "" at the end.
  std::vector<NodeStatus> page(const FleetQuery& q, std::int64_t now_ms, std::string* next) const;
  FleetSummary summary(std::int64_t now_ms) const;
  /// GET /v1/admin/fleet: {"self":{...},"summary":{...},"nodes":[{...,"received_ms",
  /// "age_s","stale","via"}],"next":"<cursor>"|null}, one page of nodes.
  std::string render(const std::string& self, const FleetQuery& q, std::int64_t now_ms) const;

  const FleetOptions& options() const { return options_; }

  /// The origins of a tier: reports are also upserted into `backend`, shared by every
  /// origin, and render() shows its rows (this node's table when it cannot be read), so the
  /// fleet view on any origin shows every edge whichever origin it reports to. Set before
  /// use; null: this node's table only.
  void set_backend(store::FleetBackend* backend) { backend_ = backend; }
  /// The shared table's expiry and node bound (the rules of this table), singleton work.
  void sweep_shared(std::int64_t now_ms);

 private:
  using AgeKey = std::pair<std::int64_t, std::string>;  // (received_ms, node_id)
  void expire_locked(std::int64_t now_ms) const;
  std::vector<NodeStatus> page_locked(const FleetQuery& q, std::string* next) const;
  FleetSummary summary_locked(std::int64_t now_ms) const;
  bool stale(const NodeStatus& n, std::int64_t now_ms) const;

  std::string render_page(const std::string& self, const std::vector<NodeStatus>& page,
                          const FleetSummary& s, const std::string& next,
                          std::int64_t now_ms) const;
  /// render() from the shared backend; nullopt if it cannot be read.
  std::optional<std::string> render_shared(const std::string& self, const FleetQuery& q,
                                           std::int64_t now_ms) const;

  FleetOptions options_;
  store::FleetBackend* backend_ = nullptr;
  mutable std::mutex mutex_;
  // Expiry is lazy: any call first drops what expired, hence mutable. Both guarded by mutex_.
  mutable std::map<std::string, NodeStatus> nodes_;
  mutable std::set<AgeKey> by_age_;  // oldest first: expiry and eviction take from the front
};

}  // namespace edge::api
