#pragma once

// What a node needs from origin-sync, declared here so that edge/ (main.cpp included) never
// includes origin-sync/: origin-sync implements these and defines the factories; the
// dependency is a link-time one, pointing from origin-sync to edge (DESIGN §1).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/api/control_service.hpp"
#include "edge/api/fleet.hpp"
#include "edge/api/sync.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/state_store.hpp"

namespace edge::api {

/// The upstream side of an edge: fills, the changes follower and the check-in uploader.
class UpstreamClient {
 public:
  virtual ~UpstreamClient() = default;
  /// For Api::set_filler (blobs, recipes and chunks missing here).
  virtual Filler& filler() = 0;
  /// For SyncApi::set_push_sink (POST /v1/sync/changes).
  virtual PushSink& push_sink() = 0;
  /// Called once, from a sync thread, the first time the node is in sync with upstream.
  virtual void set_on_synced(std::function<void()> fn) = 0;
  virtual void start() = 0;
  /// Stops fills (a prefetch in progress ends at once), the follower, then gives the
  /// outbox up to `drain` to empty before the uploader stops. Idempotent.
  virtual void stop(std::chrono::milliseconds drain) = 0;
};

/// What an UpstreamClient works on; all must outlive it.
struct UpstreamDeps {
  ControlService& control;
  store::ChunkStore& chunks;
  store::BlobStore& blobs;
  store::CheckinStore& checkins;
  SyncMetrics& metrics;
  std::string node_id;  ///< this node's id in check-in batch keys
  /// This node's status for the fleet view (a JSON object with "node_id"); null: none.
  std::function<std::string()> status;
  const Fleet* children = nullptr;  ///< what the nodes below reported, relayed upstream
};

/// Defined in origin-sync.
std::unique_ptr<UpstreamClient> make_upstream_client(const UpstreamOptions& options,
                                                     UpstreamDeps deps);

/// Pushes new changes to configured edges (sync.push_to).
class ChangePusher {
 public:
  virtual ~ChangePusher() = default;
  virtual void start() = 0;
  /// A commit reached `seq`. Never blocks on the network.
  virtual void notify(std::uint64_t seq) = 0;
  virtual void stop() = 0;
};

/// Defined in origin-sync. `token`: the sync token pushes carry.
/// `ca_file`: PEM CA bundle for https:// targets (empty: the system store).
std::unique_ptr<ChangePusher> make_change_pusher(std::vector<std::string> targets,
                                                 std::string token, std::string ca_file,
                                                 std::uint32_t timeout_ms, store::StateStore& state,
                                                 SyncMetrics& metrics);

/// What one admin call to another node got back.
struct NodeReply {
  unsigned status = 0;
  std::string body;
};

/// Defined in origin-sync. One POST of `json` to `path` on the node at `base_url`
/// (http(s)://host:port, the system CA store for https) with `token` as the bearer, bounded
/// by `timeout_ms`: `bundle-edge backup` asking a running node to write its backup. nullopt
/// and `error` (in words) when no answer came; any HTTP status is an answer.
std::optional<NodeReply> post_to_node(const std::string& base_url, const std::string& token,
                                      std::string_view path, std::string_view json,
                                      std::uint32_t timeout_ms, std::string* error);

}  // namespace edge::api
