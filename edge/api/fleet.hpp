#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edge::api {

/// One node's status as it reports it upstream (DESIGN §11): a flat JSON object with at
/// least "node_id"; the fields the edges send are listed in README ("Operating").
struct NodeStatus {
  std::string node_id;
  std::string doc;  ///< the object as received (validated, at most kMaxStatusBytes)
  std::int64_t received_ms = 0;
  std::string via;  ///< the node that relayed it ("" when it reported itself)
};

inline constexpr std::size_t kMaxStatusBytes = 4096;
inline constexpr std::size_t kMaxFleetNodes = 10'000;

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
/// with a valid node id (1-64 of [A-Za-z0-9._-]); at most 1000 nodes. nullopt and `error`
/// naming the problem otherwise.
std::optional<std::vector<NodeStatus>> parse_status_report(std::string_view json,
                                                           std::string* error);
/// The body a node sends: its own status first, then its children's as it last got them.
std::string encode_status_report(const std::string& own, const std::vector<NodeStatus>& relayed);

/// The latest status of every node below this one (its children, and theirs through them).
/// Thread-safe.
class Fleet {
 public:
  /// Keeps the statuses of one report (`sender`: the node that sent it; the first node is
  /// its own status, the others it relays).
  void accept(std::vector<NodeStatus> report, std::int64_t now_ms);
  /// Every node, by id.
  std::vector<NodeStatus> nodes() const;
  /// GET /v1/admin/fleet: {"self":{...},"nodes":[{...,"received_ms","age_s","via"}]}.
  std::string render(const std::string& self, std::int64_t now_ms) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, NodeStatus> nodes_;  // guarded by mutex_
};

}  // namespace edge::api
