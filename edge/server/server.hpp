#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "edge/api/api.hpp"
#include "edge/server/tls.hpp"

namespace edge::server {

/// Listener, limit and timeout settings (the [server] and [admin] tables of the config).
struct ServerOptions {
  bool plain = true;  ///< the plain-HTTP public listener (false: TLS only, `server.listen = ""`)
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;  ///< 0: any free port (tests); see public_port()
  std::string admin_host = "127.0.0.1";
  std::uint16_t admin_port = 9090;
  unsigned threads = 1;                           ///< io_contexts, one per thread
  std::size_t max_connections = 10000;            ///< public listener; beyond: 503 and close
  std::size_t max_connections_per_ip = 256;       ///< per client address (public); 0: no limit
  std::size_t admin_max_connections = 64;         ///< admin listener, a budget of its own
  std::size_t header_limit_bytes = 16 * 1024;     ///< beyond: 431
  std::uint64_t json_body_limit_bytes = 1 << 20;  ///< request bodies other than uploads: 413
  std::uint32_t header_timeout_ms = 10'000;       ///< first byte to end of header: 408
  std::uint32_t idle_timeout_ms = 60'000;         ///< keep-alive wait for the next request
  std::uint32_t request_timeout_ms = 300'000;     ///< reading an upload body: 408
  std::uint32_t body_timeout_ms = 10'000;         ///< reading any other (JSON) body: 408
  std::uint32_t send_timeout_ms = 60'000;         ///< no write progress for this long: close
  std::uint32_t shutdown_grace_ms = 10'000;       ///< in-flight responses get this long
  bool use_sendfile = true;                       ///< false: pread + send copy path
  bool warm_cold_ranges = true;                   ///< io_uring read before sendfile if cold
  /// Tests and diagnostics: take the warm path for every piece, as if nothing were in the
  /// page cache (the cold-range path, made deterministic). Costs a read per piece.
  bool warm_always = false;
  bool access_log = false;
  /// admin.scan_threads: threads that run the admin API's scans (api::Response::scan), at a
  /// lower priority than the event loops; 0: scans run on the event loop that read them.
  unsigned admin_scan_threads = 1;
  TlsOptions tls;  ///< [tls]: the HTTPS listener (and optionally TLS on the admin one)
};

/// The HTTP/1.1 server (DESIGN §4): one io_context per thread, each with its own
/// SO_REUSEPORT listener, so there is no shared run queue; keep-alive and pipelining; file
/// bodies with non-blocking sendfile(2) (or the copy path); limits and timeouts answered
/// with 400/408/413/431/503 and a closed connection. The admin listener runs on thread 0;
/// the admin reads that scan (api::Response::scan) run on admin_scan_threads of their own,
/// and their answers are written back by the connection's thread.
///
/// With [tls] on, a second public listener speaks HTTPS (DESIGN §9): OpenSSL on the socket
/// itself, the handshake driven by readiness waits and bounded by header_timeout_ms; bodies
/// with SSL_sendfile when the kernel took the send side (kTLS), else pread + SSL_write.
/// SIGHUP reloads the certificate and key for new connections (reload_tls).
///
/// The constructor binds and loads the certificate (throws std::runtime_error naming the
/// address, or the key and file, on failure); run() serves until SIGINT/SIGTERM or stop(),
/// then drains in-flight responses.
class Server {
 public:
  Server(ServerOptions options, api::Api& api);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  std::uint16_t public_port() const;
  std::uint16_t admin_port() const;
  /// The HTTPS listener's port (0 when [tls] is off).
  std::uint16_t tls_port() const;

  /// Loads tls.cert_file and tls.key_file again into a new context for new connections;
  /// connections already open keep theirs. On failure the old context stays, and the
  /// returned message names the key and the reason (empty: reloaded). Thread-safe.
  std::string reload_tls();

  /// Serves on the calling thread plus threads-1 others; returns after a graceful stop.
  void run();
  /// Called once when a stop begins (signal or stop()), on the stopping thread. Set before
  /// run().
  void set_on_stop(std::function<void()> fn);
  /// Stops accepting, lets responses in flight finish (bounded by shutdown_grace_ms),
  /// closes idle keep-alive connections. Thread-safe; idempotent.
  void stop();

  struct Impl;

 private:
  void wait_signal();
  std::unique_ptr<Impl> impl_;
};

}  // namespace edge::server
