#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "edge/api/sync.hpp"
#include "origin-sync/http_client.hpp"

namespace edge::sync {

/// An edge's upstreams (upstream.url) in order of preference, with what is known of their
/// health, shared by everything that talks upstream: the feed follower, fills, the check-in
/// uploader and status reports. The rule: a request goes to the first healthy upstream in
/// list order. One that fails (no connection, a timeout, a 5xx) is marked failed and the
/// request moves on to the next; a failed upstream is probed (GET /readyz) after a backoff
/// that starts at a second and doubles up to upstream.backoff_max_ms, and the first 200
/// marks it healthy again, so requests go back to it if it comes earlier in the list. When
/// none is known healthy, requests still try every upstream in list order.
///
/// Each change of the upstream in use is logged and counted (SyncMetrics::upstream_switches);
/// SyncMetrics::upstreams() shows the list with its health and the one in use. Thread-safe.
class UpstreamSet {
 public:
  /// `metrics`: where the list and switches are shown (null: nowhere).
  UpstreamSet(const api::UpstreamOptions& options, api::SyncMetrics* metrics);
  ~UpstreamSet();
  UpstreamSet(const UpstreamSet&) = delete;
  UpstreamSet& operator=(const UpstreamSet&) = delete;

  std::size_t size() const { return urls_.size(); }
  const std::string& url(std::size_t i) const { return urls_[i]; }
  /// Where the next request goes, in turn: the healthy upstreams in list order, then the
  /// failed ones in list order.
  std::vector<std::size_t> order() const;
  /// The upstream requests go to first (the first healthy one; while none is, the last that
  /// was).
  std::size_t current() const;
  /// An answer from `i` that is not a 5xx: healthy, and its backoff starts over.
  void succeeded(std::size_t i);
  /// A failed request to `i` (`why` in words, for the log). Counted once per backoff: the
  /// many fill threads that see one outage do not stretch its backoff.
  void failed(std::size_t i, const std::string& why);

  /// Starts the probe thread (two upstreams or more; one has nothing to fail over to).
  void start();
  void stop();

  /// The probe backoff's first step (then doubled up to backoff_max_ms).
  static constexpr std::uint32_t kProbeBaseMs = 1000;

 private:
  struct Health {
    bool up = true;
    unsigned failures = 0;  ///< failed rounds since the last answer (the backoff's exponent)
    std::chrono::steady_clock::time_point retry_at{};  ///< when a probe may ask again
  };
  /// Recomputes the upstream in use; logs and counts a change. mutex_ held.
  void choose_locked(std::string_view why);
  void publish_locked();  ///< mutex_ held
  void probe_loop();

  std::vector<std::string> urls_;
  std::uint32_t backoff_max_ms_;
  api::SyncMetrics* metrics_;
  mutable std::mutex mutex_;
  std::vector<Health> health_;                       // guarded by mutex_
  std::size_t current_ = 0;                          // guarded by mutex_
  std::vector<std::unique_ptr<HttpClient>> probes_;  // one per upstream, the probe thread's
  std::uint32_t probe_timeout_ms_;
  Stopper stopper_;
  std::thread thread_;
};

/// HttpClient's request() over an UpstreamSet: one keep-alive connection per upstream
/// (its client made when first used), each request sent to the upstreams in the set's order until
/// one answers with something other than a 5xx. A request is sent again unchanged (method,
/// body, headers: a check-in batch keeps its Idempotency-Key), so a receiver that already
/// got it dedupes it. One thread drives one client; cancel() may come from any other.
class FailoverClient {
 public:
  FailoverClient(UpstreamSet& set, const api::UpstreamOptions& options);
  FailoverClient(const FailoverClient&) = delete;
  FailoverClient& operator=(const FailoverClient&) = delete;

  /// As HttpClient::request, each upstream tried with the whole `timeout_ms`. When every
  /// upstream failed: the last one's result (a 5xx reply, or Errc::kIo). Errc::kShutdown
  /// and Errc::kTooLarge end the request at once (neither is the upstream's health).
  Result<HttpReply> request(std::string_view method, std::string_view target,
                            std::string_view body = {},
                            const std::vector<std::pair<std::string, std::string>>& headers = {},
                            std::uint32_t timeout_ms = 0, std::uint64_t max_body_bytes = 0);
  /// As request(), with the target and the timeout chosen for each upstream tried:
  /// `shape(i)` gives them for the upstream at position i of the list (0: the first). The
  /// feed's long poll waits less on a fallback than on the first upstream.
  using Shape = std::function<std::pair<std::string, std::uint32_t>(std::size_t)>;
  Result<HttpReply> request_shaped(std::string_view method, const Shape& shape);
  /// Aborts the call in progress and every later one.
  void cancel();
  /// The upstream the last request went to last (its URL; before any request, the current
  /// one's).
  const std::string& base_url() const { return set_.url(last_); }
  /// Why the last request failed at the last upstream it tried, in words; empty after an
  /// answer. Same thread as request().
  const std::string& last_error() const { return last_error_; }

 private:
  UpstreamSet& set_;
  Result<HttpReply> send(std::string_view method, const Shape* shape, std::string_view target,
                         std::string_view body,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         std::uint32_t timeout_ms, std::uint64_t max_body_bytes);

  /// The connection to upstream `i`, made on first use.
  HttpClient& client(std::size_t i);

  std::string token_;
  std::string ca_file_;
  std::uint32_t timeout_ms_;
  std::mutex mutex_;  // guards the slots of clients_ (cancel() comes from other threads)
  std::vector<std::unique_ptr<HttpClient>> clients_;  // by position; null until first used
  bool cancelled_ = false;                            // guarded by mutex_
  std::size_t last_ = 0;
  std::string last_error_;
};

}  // namespace edge::sync
