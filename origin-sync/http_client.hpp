#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/core/shared_bytes.hpp"

namespace edge::sync {

/// What an upstream answered.
struct HttpReply {
  unsigned status = 0;
  /// Bytes as received, in one buffer that is never zero-filled: chunks are hashed, sent
  /// and stored from slices of it.
  SharedBytes body;
  std::string_view text() const { return {reinterpret_cast<const char*>(body.data), body.size}; }
};

/// A blocking HTTP/1.1 client for node-to-node calls: one keep-alive connection to one
/// upstream (`http://host:port` or `https://host:port`), reconnected when it drops. Every
/// call is bounded by its timeout (connect, handshake, send, whole reply). One thread drives
/// one client; cancel() may be called from any other thread to abort the call in progress.
///
/// HTTPS (DESIGN §9): the chain is verified against `ca_file` (PEM, empty: the system
/// store) and the certificate must name the URL's host (DNS name or IP address); a failure
/// is an error of the call (last_error() says why), never a fall back to plain HTTP. TLS
/// sessions are resumed across reconnects.
class HttpClient {
 public:
  /// `base_url`: http(s)://host:port. `token`: sent as "Authorization: Bearer" when
  /// non-empty.
  HttpClient(std::string base_url, std::string token, std::uint32_t timeout_ms,
             std::string ca_file = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// One request, bounded as a whole by `timeout_ms` (0: the client's timeout): connect,
  /// send and the complete reply. Errc::kIo: not connected, timed out, reset or a malformed
  /// reply; Errc::kTooLarge: the body passed `max_body_bytes` (0: 1 GiB), read no further;
  /// Errc::kShutdown after cancel(). Any HTTP status is a successful call.
  Result<HttpReply> request(std::string_view method, std::string_view target,
                            std::string_view body = {},
                            const std::vector<std::pair<std::string, std::string>>& headers = {},
                            std::uint32_t timeout_ms = 0, std::uint64_t max_body_bytes = 0);
  /// Aborts the call in progress and every later one.
  void cancel();
  const std::string& base_url() const { return base_url_; }
  /// Why the last failed call failed, in words ("TLS: certificate verify failed: ..."),
  /// for logs and /readyz; empty after a call that got an answer. Same thread as request().
  const std::string& last_error() const;

 private:
  struct Impl;
  std::string base_url_;
  std::unique_ptr<Impl> impl_;
};

/// The stop request of a background loop: its sleeps (backoff) end as soon as a stop, or a
/// wake, comes. Thread-safe.
class Stopper {
 public:
  void stop();  ///< sets the flag and ends every sleep
  void wake();  ///< ends the current (or next) sleep early without stopping
  bool stopped() const;
  /// Sleeps up to `d`, less if woken; false if a stop was requested.
  bool sleep_for(std::chrono::milliseconds d);

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;   // guarded by mutex_
  bool woken_ = false;  // guarded by mutex_
};

/// Sleeps a jittered exponential backoff: attempt 0 -> ~base, doubling up to `cap_ms`
/// (full jitter in [d/2, d]). Returns the delay chosen, in ms.
std::uint32_t backoff_ms(unsigned attempt, std::uint32_t base_ms, std::uint32_t cap_ms);

}  // namespace edge::sync
