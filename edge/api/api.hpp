#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include <boost/beast/http/message.hpp>

#include "edge/api/access.hpp"
#include "edge/api/control_service.hpp"
#include "edge/api/device.hpp"
#include "edge/api/fleet.hpp"
#include "edge/api/metrics.hpp"
#include "edge/api/response.hpp"
#include "edge/api/sync.hpp"
#include "edge/store/blob_gate.hpp"
#include "edge/store/blob_store.hpp"

namespace edge::api {

using RequestHeader = boost::beast::http::request_header<>;

struct ApiOptions {
  std::string admin_token;                      ///< bearer token of the admin listener
  std::uint64_t max_upload_bytes = 2ULL << 30;  ///< admin.max_upload_bytes
  bool stale_is_unready = false;                ///< upstream.stale_is_unready
  unsigned max_fills_per_client = 16;  ///< upstream.max_fills_per_client: distinct ids (0: none)
  unsigned max_scans_per_token = 4;    ///< admin.max_scans_per_token: scans in flight per token
  unsigned max_queued_scans = 16;      ///< admin.max_queued_scans: scans in flight on the node
};

/// True if an admin request (its percent-decoded path) is a scan: a read whose cost grows
/// with the fleet or the history, not with the request. GET|HEAD of /v1/admin/fleet,
/// /v1/admin/audit, and below /v1/admin/apps/<app>/: device_index, stats, devices (the
/// override list) and channels/<name>/history. handle_admin answers these as a deferred
/// Response with `scan` set, which the server runs on its scan threads.
bool is_scan(boost::beast::http::verb method, std::string_view path);

/// The RFC 9112 framing rules of http::check_request_head applied to a parsed request
/// header: nullopt if it may be answered, else the message of the 400 after which the
/// server closes the connection.
std::optional<std::string> framing_error(const RequestHeader& req);

/// The blobs an edge may fill for devices: every blob a release of its state names (zips
/// and manifest files). Misses on other ids are answered 404 without asking upstream.
using FillableBlobs = std::unordered_set<Sha256, Sha256Hash>;

/// A streaming upload into the BlobStore (PUT /v1/admin/blobs). The server feeds body bytes
/// as they arrive and pauses reading while bytes_in_flight() is high; the body is never
/// buffered whole. Not thread-safe: one connection drives it.
/// Makes a blob stored here durable in the blob backend (S3), then calls `done` on any
/// thread: {} once it is, else the error (BlobBackend::mirror).
/// `refresh`: write the recipe object again even if it is there (an upload: the blob's grace
/// period against garbage collection starts again).
using BlobMirror = std::function<void(const Sha256& blob, bool refresh,
                                      std::function<void(boost::system::error_code)> done)>;

/// A writer's passage through the blob gates (store::BlobGate): entered when made, left
/// when the last holder drops it, naming the blobs it stored.
class GateTicket {
 public:
  GateTicket() = default;
  GateTicket(const GateTicket&) = delete;
  GateTicket& operator=(const GateTicket&) = delete;
  ~GateTicket();
  /// Enters every gate, in order; Errc::kUnavailable (and none entered) if one fails.
  static Result<std::shared_ptr<GateTicket>> enter(const std::vector<store::BlobGate*>& gates);
  void stored(const Sha256& id) {
    std::lock_guard lock(mutex_);
    stored_.push_back(id);
  }

 private:
  std::vector<std::pair<store::BlobGate*, std::uint64_t>> held_;
  std::mutex mutex_;
  std::vector<Sha256> stored_;  // guarded by mutex_
};

class Upload {
 public:
  Upload(std::unique_ptr<store::BlobWriter> writer, std::optional<Sha256> expected,
         std::uint64_t max_bytes, BlobMirror mirror = {},
         const store::ObjectStoreStats* mirror_stats = nullptr,
         std::shared_ptr<GateTicket> ticket = nullptr)
      : writer_(std::move(writer)),
        expected_(expected),
        max_bytes_(max_bytes),
        mirror_(std::move(mirror)),
        mirror_stats_(mirror_stats),
        ticket_(std::move(ticket)) {}
  /// Feeds bytes; false once the total passes the limit (answer 413 then).
  bool write(std::span<const std::uint8_t> bytes);
  std::uint64_t bytes_in_flight() const { return writer_->bytes_in_flight(); }
  void async_wait_below(std::uint64_t limit, const store::ChunkStore::Executor& ex,
                        std::function<void()> fn) {
    writer_->async_wait_in_flight_below(limit, ex, std::move(fn));
  }
  /// Ends the upload; `done` gets 201/200 with {"sha256","size","chunks"}, or 400 when the
  /// body does not hash to X-Content-Sha256 (no recipe is stored then), or 500. With a blob
  /// backend, the answer waits until the blob is durable there: 503
  /// `blob_backend_unavailable` (not acknowledged; retry) if the backend failed.
  void finish(const store::ChunkStore::Executor& ex, std::function<void(Response)> done);
  /// Called with the final status once the upload is answered (the audit log).
  std::function<void(unsigned status)> on_answered;

 private:
  std::unique_ptr<store::BlobWriter> writer_;
  std::optional<Sha256> expected_;
  std::uint64_t max_bytes_;
  BlobMirror mirror_;
  const store::ObjectStoreStats* mirror_stats_ = nullptr;
  std::shared_ptr<GateTicket> ticket_;  ///< held until the upload is answered
  std::uint64_t received_ = 0;
};

/// Request -> response for the blob routes, health, metrics and the admin API. No sockets:
/// edge/server parses, calls these, and writes what they return. Every method may be called
/// from any event-loop thread at once; none blocks on the disk (index lookups are cached).
class Api {
 public:
  Api(store::ChunkStore& chunks, store::BlobStore& blobs, Metrics& metrics, ApiOptions options);

  /// Routes of the public listener: GET|HEAD /v1/blobs/<sha256>[/<name>], /v1/chunks/<sha256>,
  /// /v1/recipes/<sha256> (node to node: behind the sync token), /healthz, /readyz.
  /// `client`: the peer's address, for per-client bounds (fills).
  Response handle_public(const RequestHeader& req, std::string_view body = {},
                         std::string_view client = {}) const;

  /// Routes of the admin listener except uploads: /metrics, /healthz, /readyz, and the
  /// control API under /v1/admin/apps when a ControlService is attached (401/404 otherwise).
  /// Each path segment is percent-decoded once before routing (400 bad_path when it cannot
  /// be: http::decode_path). /favicon.ico answers 204 without a token. API answers carry
  /// `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.
  ///
  /// A scan (is_scan) of an identified caller is answered deferred with Response::scan set:
  /// the work runs when the server calls `later`, on a thread of its own. Past
  /// max_scans_per_token scans in flight for the caller's token the answer is 429
  /// `too_many_scans`, past max_queued_scans on the node 503 `scans_busy`, both with
  /// `Retry-After: 1`; a scan counts from this call until its answer is produced.
  Response handle_admin(const RequestHeader& req, std::string_view body = {}) const;

  /// Attaches the control API (releases, channels, devices). Call before serving.
  void set_control(ControlService* control) { control_ = control; }
  /// Attaches the device endpoints (/updates). Call before serving.
  void set_device(DeviceApi* device) { device_ = device; }
  /// Attaches the node-to-node routes (/v1/sync/*, /v1/checkins). Call before serving.
  void set_sync(SyncApi* sync) { sync_ = sync; }
  /// Scoped admin tokens and the audit log (DESIGN §11). Without it only the bootstrap
  /// token (ApiOptions::admin_token) opens the admin listener. Call before serving.
  void set_access(Access* access) { access_ = access; }
  /// POST /v1/admin/backup {"to": "/absolute/path"} (admin tokens): `backup(to, reply)`
  /// starts a backup off the event loops and calls `reply` once with the answer.
  using BackupFn = std::function<void(std::string to, std::function<void(Response)> reply)>;
  void set_backup(BackupFn backup) { backup_ = std::move(backup); }
  /// POST /v1/admin/gc (admin tokens): runs a garbage collection now; `done` gets the
  /// answer (any thread).
  using GcFn = std::function<void(bool dry_run, std::function<void(Response)> done)>;
  void set_gc(GcFn gc) { gc_ = std::move(gc); }
  /// Origins: uploads and release writes pass these gates (GateTicket), so that garbage
  /// collection never removes a blob or chunk one of them relies on. Call before serving.
  void set_blob_gates(std::vector<store::BlobGate*> gates) { gates_ = std::move(gates); }
  /// GET /v1/admin/fleet?limit=&cursor=: this node's status (`self`), a summary of what the
  /// nodes below reported and one page of them (400 invalid_query_parameters on a bad query).
  void set_fleet(const Fleet* fleet, std::function<std::string()> self) {
    fleet_ = fleet;
    self_status_ = std::move(self);
  }
  /// Edges: a blob, recipe or chunk missing here is filled from upstream through `filler`
  /// and then served (502 if upstream fails or the bytes fail verification, 404 if upstream
  /// does not have it either); uploads answer 409. Call before serving.
  void set_filler(Filler* filler) { filler_ = filler; }
  /// Origins with [blobs] backend = "s3" (DESIGN §12.2): a miss fills from the bucket
  /// through `filler` as an edge's does from upstream (any id: the bucket is shared with
  /// other origins, whose uploads this node's state may not name), and an upload is
  /// answered once `mirror` made it durable there. `stats`: the bucket's figures, for
  /// /readyz. Uploads stay open (unlike set_filler's edges). Call before serving.
  void set_blob_backend(Filler* filler, BlobMirror mirror, const store::ObjectStoreStats* stats) {
    filler_ = filler;
    mirror_ = std::move(mirror);
    backend_stats_ = stats;
  }
  /// Edges: the blobs a device miss may be filled for (see FillableBlobs); replaced after
  /// every applied change. Until the first call, every miss may fill. Any thread.
  void set_fillable(std::shared_ptr<const FillableBlobs> blobs) {
    fillable_.store(std::move(blobs));
  }

  /// True if `req` is PUT /v1/admin/blobs on the admin listener.
  static bool is_upload(const RequestHeader& req);

  /// Starts an upload after checking the token, X-Content-Sha256 and the declared length:
  /// an error Response (401, 400, 413) or the Upload to feed.
  std::variant<Response, std::unique_ptr<Upload>> begin_upload(
      const RequestHeader& req, std::optional<std::uint64_t> content_length) const;

  /// Warms a cold file range through io_uring (see ChunkStore::async_warm).
  void warm(const store::Piece& piece, const store::ChunkStore::Executor& ex,
            std::function<void(boost::system::error_code)> done) const;

  void set_ready(bool ready) { ready_.store(ready, std::memory_order_relaxed); }
  /// Adds a check to /readyz: `fn` returns why the node is degraded (a backend it writes to
  /// is unreachable), or "" when it is not. Answers stay 200 (devices are still served from
  /// the node's state); the reason is shown. Must not block (read cached figures).
  void add_degraded_check(std::function<std::string()> fn) { degraded_.push_back(std::move(fn)); }
  Metrics& metrics() const { return metrics_; }

 private:
  // `may_fill`: a miss may go to the filler (false on the retry after a fill).
  Response serve_blob(const RequestHeader& req, std::string_view rest, bool may_fill,
                      std::string_view client = {}) const;
  Response serve_chunk(const RequestHeader& req, std::string_view rest, bool may_fill) const;
  Response serve_recipe(std::string_view rest, bool may_fill) const;
  enum class FillKind { kBlob, kChunk, kRecipe };
  /// Fills `id` from upstream (the whole blob, one chunk, or a blob's trusted recipe), then
  /// answers `again(recipe)` (the recipe for kRecipe, else null), within the per-client
  /// bound on distinct fills in flight.
  Response fill_then(Route route, const Sha256& id, FillKind kind, std::string_view client,
                     std::function<Response(std::shared_ptr<const store::Recipe>)> again) const;
  /// handle_admin; `may_fill`: false once fill_release_blobs ran for this request.
  Response admin_answer(const RequestHeader& req, std::string_view body, bool may_fill) const;
  /// Origins on a shared bucket: a release PUT naming blobs answers deferred, once each is
  /// both in the bucket (mirrored if only here) and here (filled if only there); then the
  /// request runs, and is audited, as handle_admin again; 503 blob_backend_unavailable if
  /// the bucket did not answer. nullopt for any other request.
  std::optional<Response> fill_release_blobs(const Caller& caller, const RequestHeader& req,
                                             std::string_view path, std::string_view body) const;
  /// GET|HEAD of blob `rest` by `recipe` (stored, or trusted and filling: `may_fill`).
  Response blob_answer(const RequestHeader& req, std::string_view rest,
                       std::shared_ptr<const store::Recipe> recipe, bool may_fill,
                       std::string_view client) const;
  Response health(bool ready_check) const;
  /// GET /v1/admin/whoami: the caller's token name, role and apps, the apps it may read
  /// (`visible_apps`), the node's role and what the caller may do here (can_write,
  /// can_delete, can_manage_tokens): what the console offers.
  Response whoami(const Caller& caller) const;
  /// The authenticated admin routes of `path` (percent-decoded) for `caller`.
  Response admin_route(const Caller& caller, const RequestHeader& req, std::string_view path,
                       std::string_view body) const;
  /// A scan for `caller`: the 429/503 refusal, or the deferred answer (Response::scan).
  Response backup_route(const Caller& caller, const RequestHeader& req,
                        std::string_view body) const;
  Response start_scan(const Caller& caller, const RequestHeader& req, std::string_view path,
                      std::string_view body) const;
  /// Gives back the scan slot of token `name` (a scan was answered or dropped).
  void end_scan(const std::string& name) const;
  /// The caller of an admin request, or the 401/403 answer (null caller) with the request
  /// audited when it was a refused write.
  std::optional<Caller> admin_caller(const RequestHeader& req, std::string_view path,
                                     Response& refusal) const;

  store::ChunkStore& chunks_;
  store::BlobStore& blobs_;
  Metrics& metrics_;
  ApiOptions options_;
  Access* access_ = nullptr;
  const Fleet* fleet_ = nullptr;
  std::function<std::string()> self_status_;
  BackupFn backup_;
  GcFn gc_;
  std::vector<store::BlobGate*> gates_;
  Response gc_route(const Caller& caller, const RequestHeader& req, std::string_view body) const;
  std::atomic<bool> ready_{false};
  std::vector<std::function<std::string()>> degraded_;
  ControlService* control_ = nullptr;
  DeviceApi* device_ = nullptr;
  SyncApi* sync_ = nullptr;
  Filler* filler_ = nullptr;
  BlobMirror mirror_;  // set: an origin whose filler_ is its blob backend, not an upstream
  const store::ObjectStoreStats* backend_stats_ = nullptr;
  /// True on an edge (its filler is an upstream), false on an origin.
  bool is_edge() const { return filler_ != nullptr && !mirror_; }
  std::atomic<std::shared_ptr<const FillableBlobs>> fillable_;
  mutable std::mutex scans_mutex_;
  // token name -> its scans in flight, and their sum; guarded by scans_mutex_
  mutable std::unordered_map<std::string, unsigned> scans_by_token_;
  mutable unsigned scans_ = 0;
  mutable std::mutex fills_mutex_;
  // client address -> ids it waits for -> how many of its requests wait; guarded by fills_mutex_
  mutable std::unordered_map<std::string, std::unordered_map<Sha256, unsigned, Sha256Hash>>
      fills_by_client_;
};

}  // namespace edge::api
