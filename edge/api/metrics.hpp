#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "edge/api/response.hpp"
#include "edge/api/sync.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/object_store.hpp"

namespace edge::api {

class AutoPauser;

/// Process-wide counters for GET /metrics (Prometheus text format 0.0.4). Updates are
/// relaxed atomics: any thread, no locks on the data plane.
class Metrics {
 public:
  /// Status codes with their own series; others are counted under "other".
  static constexpr std::array<unsigned, 20> kStatuses = {200, 201, 204, 206, 304, 400, 401,
                                                         403, 404, 405, 408, 409, 413, 416,
                                                         422, 431, 500, 502, 503, 504};
  /// Latency buckets, seconds (upper bounds; +Inf is implied).
  static constexpr std::array<double, 10> kBuckets = {0.0001, 0.0005, 0.001, 0.0025, 0.005,
                                                      0.01,   0.05,   0.1,   0.5,    1.0};

  void record(Route route, unsigned status, std::uint64_t body_bytes, double seconds);

  /// TLS events (DESIGN §9), each a counter of its own.
  enum class Tls : std::uint8_t {
    kHandshake,        ///< full handshakes completed
    kResumed,          ///< resumed handshakes (ticket or session id)
    kPlainHttp,        ///< plain HTTP sent to the TLS port: answered 400 and closed
    kFailed,           ///< handshakes that failed (garbage, no shared cipher, bad version...)
    kTimeout,          ///< handshakes that did not finish within server.header_timeout_ms
    kRenegotiation,    ///< client renegotiation attempts: refused, connection closed
    kKeyUpdate,        ///< KeyUpdate messages received
    kKeyUpdateClosed,  ///< connections closed because kTLS cannot rekey
    kKtls,             ///< connections whose send side the kernel took (SSL_sendfile)
    kUserspace,        ///< connections encrypting in userspace (pread + SSL_write)
    kReloaded,         ///< certificate reloads (SIGHUP) that took effect
    kReloadFailed,     ///< reloads refused (the old certificate stays)
    kCount
  };
  void tls(Tls event) { tls_[static_cast<std::size_t>(event)].fetch_add(1, relaxed); }
  /// Bytes handed to SSL_write / SSL_sendfile, by path.
  void tls_bytes(bool ktls, std::uint64_t n) { tls_bytes_[ktls ? 1 : 0].fetch_add(n, relaxed); }
  std::uint64_t tls_count(Tls event) const {
    return tls_[static_cast<std::size_t>(event)].load(relaxed);
  }
  void connection_opened() { connections_.fetch_add(1, std::memory_order_relaxed); }
  void connection_closed() { connections_.fetch_sub(1, std::memory_order_relaxed); }
  void connection_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
  void warmed() { warms_.fetch_add(1, std::memory_order_relaxed); }
  /// A blob request found its blob here (hit) or had to fill it from upstream (miss).
  void blob_lookup(bool hit) { (hit ? blob_hits_ : blob_misses_).fetch_add(1, relaxed); }
  std::uint64_t blob_hits() const { return blob_hits_.load(relaxed); }
  std::uint64_t blob_misses() const { return blob_misses_.load(relaxed); }
  /// Body bytes sent, every route.
  std::uint64_t body_bytes_total() const {
    std::uint64_t n = 0;
    for (const auto& b : bytes_)
      n += b.load(relaxed);
    return n;
  }
  std::int64_t connections() const { return connections_.load(std::memory_order_relaxed); }

  /// Adds the sync figures (edges, and nodes that push): `cursor` gives the applied seq,
  /// `outbox` the outbox depth (may be null). Call before serving.
  void set_sync(const SyncMetrics* sync, std::function<std::uint64_t()> cursor,
                const store::CheckinStore* outbox) {
    sync_ = sync;
    cursor_ = std::move(cursor);
    outbox_ = outbox;
  }

  /// The sync figures set by set_sync (null if none).
  const SyncMetrics* sync() const { return sync_; }
  /// When this node started (wall clock, ms).
  std::int64_t started_ms() const { return started_ms_; }

  /// Adds the free-space figures of the data directory (edge_storage_*). Call before serving.
  void set_storage(const store::Database* db) { db_ = db; }
  /// Adds the check-in store's device-table figures (edge_device_table_*). Call before
  /// serving.
  void set_checkins(const store::CheckinStore* checkins) { checkins_ = checkins; }
  /// Adds the auto-pause figures (edge_auto_pause_*; origins). Call before serving.
  void set_auto_pause(const AutoPauser* auto_pause) { auto_pause_ = auto_pause; }

  /// Adds exposition text of a backend (the state database, an object store): `fn` appends
  /// complete metric families to its argument. It must not block (read cached figures).
  void add_section(std::function<void(std::string&)> fn) { sections_.push_back(std::move(fn)); }
  /// Adds the S3 blob backend's figures (edge_s3_*; origins with [blobs] backend = "s3").
  /// Call before serving.
  void set_objects(const store::ObjectStoreStats* objects) { objects_ = objects; }
  const store::ObjectStoreStats* objects() const { return objects_; }

  /// The exposition text, store figures included.
  std::string render(const store::StoreStats& stats) const;

 private:
  void render_tls(std::string& out) const;
  void render_objects(
      std::string& out,
      const std::function<void(const char*, const char*, const char*, std::uint64_t)>& gauge) const;
  void render_sync(
      const std::function<void(const char*, const char*, const char*, std::uint64_t)>& gauge) const;
  /// edge_upstream_*: each configured upstream (edges), labelled by position and URL.
  void render_upstreams(std::string& out) const;

  const SyncMetrics* sync_ = nullptr;
  std::vector<std::function<void(std::string&)>> sections_;
  std::function<std::uint64_t()> cursor_;
  const store::CheckinStore* outbox_ = nullptr;
  const store::CheckinStore* checkins_ = nullptr;
  const AutoPauser* auto_pause_ = nullptr;
  const store::ObjectStoreStats* objects_ = nullptr;
  const store::Database* db_ = nullptr;
  std::int64_t started_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
  static constexpr std::size_t kRoutes = static_cast<std::size_t>(Route::kCount);
  static constexpr std::size_t kStatusSlots = kStatuses.size() + 1;
  std::array<std::atomic<std::uint64_t>, kRoutes * kStatusSlots> requests_{};
  std::array<std::atomic<std::uint64_t>, kRoutes> bytes_{};
  std::array<std::atomic<std::uint64_t>, kBuckets.size() + 1> latency_{};
  std::atomic<std::uint64_t> latency_sum_us_{0};
  std::atomic<std::int64_t> connections_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> warms_{0};
  static constexpr auto relaxed = std::memory_order_relaxed;
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Tls::kCount)> tls_{};
  std::array<std::atomic<std::uint64_t>, 2> tls_bytes_{};
  std::atomic<std::uint64_t> blob_hits_{0};
  std::atomic<std::uint64_t> blob_misses_{0};
};

}  // namespace edge::api
