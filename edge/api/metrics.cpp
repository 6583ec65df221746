#include "edge/api/metrics.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <utility>

#include "edge/api/auto_pause.hpp"
#include "edge/core/clock.hpp"

namespace edge::api {

void Metrics::record(Route route, unsigned status, std::uint64_t body_bytes, double seconds) {
  const auto r = static_cast<std::size_t>(route);
  const auto it = std::find(kStatuses.begin(), kStatuses.end(), status);
  const auto s = static_cast<std::size_t>(it - kStatuses.begin());  // == size(): "other"
  requests_[r * kStatusSlots + s].fetch_add(1, std::memory_order_relaxed);
  bytes_[r].fetch_add(body_bytes, std::memory_order_relaxed);
  const auto b = static_cast<std::size_t>(
      std::lower_bound(kBuckets.begin(), kBuckets.end(), seconds) - kBuckets.begin());
  latency_[b].fetch_add(1, std::memory_order_relaxed);
  latency_sum_us_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Metrics::render_tls(std::string& out) const {
  char line[192];
  const auto series = [&](const char* name, const char* help,
                          std::initializer_list<std::pair<const char*, std::uint64_t>> rows) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += " counter\n";
    for (const auto& [labels, v] : rows) {
      std::snprintf(line, sizeof line, "%s{%s} %llu\n", name, labels,
                    static_cast<unsigned long long>(v));
      out += line;
    }
  };
  const auto c = [&](Tls e) { return tls_count(e); };
  series("edge_tls_handshakes_total", "TLS handshakes by outcome.",
         {{"result=\"full\"", c(Tls::kHandshake)},
          {"result=\"resumed\"", c(Tls::kResumed)},
          {"result=\"plain_http\"", c(Tls::kPlainHttp)},
          {"result=\"failed\"", c(Tls::kFailed)},
          {"result=\"timeout\"", c(Tls::kTimeout)}});
  series("edge_tls_connections_total",
         "TLS connections by send path: ktls (SSL_sendfile, encrypted in the kernel) or userspace "
         "(pread + SSL_write).",
         {{"path=\"ktls\"", c(Tls::kKtls)}, {"path=\"userspace\"", c(Tls::kUserspace)}});
  series("edge_tls_bytes_total", "Bytes sent over TLS (headers and bodies), by send path.",
         {{"path=\"ktls\"", tls_bytes_[1].load(relaxed)},
          {"path=\"userspace\"", tls_bytes_[0].load(relaxed)}});
  series("edge_tls_peer_events_total",
         "What clients did after the handshake: renegotiation (refused, closed), key_update, "
         "key_update_closed (kTLS cannot rekey).",
         {{"event=\"renegotiation\"", c(Tls::kRenegotiation)},
          {"event=\"key_update\"", c(Tls::kKeyUpdate)},
          {"event=\"key_update_closed\"", c(Tls::kKeyUpdateClosed)}});
  series("edge_tls_reloads_total", "Certificate reloads on SIGHUP.",
         {{"result=\"ok\"", c(Tls::kReloaded)}, {"result=\"failed\"", c(Tls::kReloadFailed)}});
}

void Metrics::render_objects(
    std::string& out,
    const std::function<void(const char*, const char*, const char*, std::uint64_t)>& gauge) const {
  using Op = store::ObjectStoreStats::Op;
  using Outcome = store::ObjectStoreStats::Outcome;
  static constexpr std::pair<Op, const char*> kOps[] = {{Op::kPut, "put"},
                                                        {Op::kGet, "get"},
                                                        {Op::kHead, "head"},
                                                        {Op::kDelete, "delete"},
                                                        {Op::kList, "list"}};
  static constexpr std::pair<Outcome, const char*> kOutcomes[] = {
      {Outcome::kOk, "ok"}, {Outcome::kNotFound, "not_found"}, {Outcome::kError, "error"}};
  out +=
      "# HELP edge_s3_requests_total Requests to the S3 blob backend by operation and result "
      "(error: no answer, or a status other than success and 404, after the retries).\n"
      "# TYPE edge_s3_requests_total counter\n";
  std::uint64_t errors = 0;
  for (const auto& [op, op_name] : kOps) {
    for (const auto& [outcome, outcome_name] : kOutcomes) {
      const auto v = objects_->requests_of(op, outcome);
      if (outcome == Outcome::kError)
        errors += v;
      out += "edge_s3_requests_total{op=\"" + std::string(op_name) + "\",result=\"" + outcome_name +
             "\"} " + std::to_string(v) + "\n";
    }
  }
  gauge("edge_s3_errors_total", "S3 requests that failed (every operation).", "counter", errors);
  out +=
      "# HELP edge_s3_bytes_total Object bytes sent to (PUT) and received from (GET, list) the "
      "S3 blob backend.\n# TYPE edge_s3_bytes_total counter\n";
  out += "edge_s3_bytes_total{direction=\"sent\"} " +
         std::to_string(objects_->bytes_sent.load(relaxed)) + "\n";
  out += "edge_s3_bytes_total{direction=\"received\"} " +
         std::to_string(objects_->bytes_received.load(relaxed)) + "\n";
  gauge("edge_s3_verify_failures_total",
        "Objects from S3 that did not match their SHA-256 (never stored, never served).", "counter",
        objects_->verify_failures.load(relaxed));
  gauge("edge_s3_up", "1 while the last S3 request got an answer (not a 5xx), else 0.", "gauge",
        objects_->reachable.load(relaxed));
}

std::string Metrics::render(const store::StoreStats& st) const {
  std::string out;
  out.reserve(4096);
  char line[256];
  out += "# HELP edge_http_requests_total HTTP responses by route and status.\n";
  out += "# TYPE edge_http_requests_total counter\n";
  for (std::size_t r = 0; r < kRoutes; ++r) {
    for (std::size_t s = 0; s < kStatusSlots; ++s) {
      const auto v = requests_[r * kStatusSlots + s].load(std::memory_order_relaxed);
      if (v == 0)
        continue;
      const std::string status = s < kStatuses.size() ? std::to_string(kStatuses[s]) : "other";
      std::snprintf(line, sizeof line,
                    "edge_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                    std::string(route_name(static_cast<Route>(r))).c_str(), status.c_str(),
                    static_cast<unsigned long long>(v));
      out += line;
    }
  }
  out += "# HELP edge_http_response_body_bytes_total Body bytes sent, by route.\n";
  out += "# TYPE edge_http_response_body_bytes_total counter\n";
  for (std::size_t r = 0; r < kRoutes; ++r) {
    std::snprintf(line, sizeof line, "edge_http_response_body_bytes_total{route=\"%s\"} %llu\n",
                  std::string(route_name(static_cast<Route>(r))).c_str(),
                  static_cast<unsigned long long>(bytes_[r].load(std::memory_order_relaxed)));
    out += line;
  }
  out +=
      "# HELP edge_http_request_duration_seconds Time from request header to last byte handed to "
      "the kernel.\n";
  out += "# TYPE edge_http_request_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b <= kBuckets.size(); ++b) {
    cumulative += latency_[b].load(std::memory_order_relaxed);
    if (b < kBuckets.size()) {
      std::snprintf(line, sizeof line,
                    "edge_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", kBuckets[b],
                    static_cast<unsigned long long>(cumulative));
    } else {
      std::snprintf(line, sizeof line,
                    "edge_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                    static_cast<unsigned long long>(cumulative));
    }
    out += line;
  }
  std::snprintf(line, sizeof line, "edge_http_request_duration_seconds_sum %.6f\n",
                static_cast<double>(latency_sum_us_.load(std::memory_order_relaxed)) / 1e6);
  out += line;
  std::snprintf(line, sizeof line, "edge_http_request_duration_seconds_count %llu\n",
                static_cast<unsigned long long>(cumulative));
  out += line;

  const std::function<void(const char*, const char*, const char*, std::uint64_t)> gauge =
      [&](const char* name, const char* help, const char* type, std::uint64_t v) {
        std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
                      type, name, static_cast<unsigned long long>(v));
        out += line;
      };
  gauge("edge_http_connections", "Open client connections.", "gauge",
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, connections_.load())));
  gauge("edge_http_connections_refused_total", "Connections refused at max_connections (503).",
        "counter", refused_.load());
  gauge("edge_serve_cold_warms_total",
        "Ranges read through io_uring before sendfile because they were not in the page cache.",
        "counter", warms_.load());
  render_tls(out);
  out +=
      "# HELP edge_blob_lookups_total Blob requests by whether the blob was here (hit) or "
      "filled from upstream first (miss).\n# TYPE edge_blob_lookups_total counter\n";
  out += "edge_blob_lookups_total{result=\"hit\"} " + std::to_string(blob_hits()) + "\n";
  out += "edge_blob_lookups_total{result=\"miss\"} " + std::to_string(blob_misses()) + "\n";
  gauge("edge_store_chunks", "Chunks indexed.", "gauge", st.chunks);
  gauge("edge_store_blobs", "Blob recipes stored.", "gauge", st.blobs);
  gauge("edge_store_bytes_live", "Bytes of indexed chunks.", "gauge", st.bytes_live);
  gauge("edge_store_bytes_on_disk", "Bytes of segment files.", "gauge", st.bytes_on_disk);
  gauge("edge_store_segments", "Segment files.", "gauge", st.segments);
  gauge("edge_store_evicted_segments_total", "Segments evicted.", "counter", st.evicted_segments);
  gauge("edge_store_evicted_chunks_total", "Chunks evicted.", "counter", st.evicted_chunks);
  gauge("edge_store_relocated_chunks_total", "Pinned chunks copied forward by eviction.", "counter",
        st.relocated_chunks);
  if (db_ != nullptr) {
    const auto d = db_->storage_status();
    gauge("edge_storage_full",
          "1 while the data directory is below store.min_free and writes are refused.", "gauge",
          d.full ? 1 : 0);
    gauge("edge_storage_free_bytes", "Free bytes in the data directory's file system.", "gauge",
          d.free_bytes);
    gauge("edge_storage_writes_refused_total", "Writes refused because storage was full.",
          "counter", d.refused);
  }
  if (sync_ != nullptr) {
    render_sync(gauge);
    render_upstreams(out);
  }
  for (const auto& section : sections_)
    section(out);
  if (objects_ != nullptr)
    render_objects(out, gauge);
  return out;
}

void Metrics::render_upstreams(std::string& out) const {
  const auto list = sync_->upstreams();
  if (list.empty())
    return;  // not an edge
  const auto labels = [](std::size_t i, const std::string& url) {
    std::string l = "{position=\"" + std::to_string(i + 1) + "\",url=\"";
    for (const char ch : url) {
      if (ch == '\\' || ch == '"')
        l += '\\';
      if (ch == '\n') {
        l += "\\n";
        continue;
      }
      l += ch;
    }
    return l + "\"}";
  };
  out +=
      "# HELP edge_upstream_current 1 for the upstream requests go to first (upstream.url, in "
      "order of preference), 0 for the others.\n# TYPE edge_upstream_current gauge\n";
  for (std::size_t i = 0; i < list.size(); ++i)
    out += "edge_upstream_current" + labels(i, list[i].url) + (list[i].current ? " 1\n" : " 0\n");
  out +=
      "# HELP edge_upstream_up 0 while an upstream is marked failed (no connection, timeout or "
      "5xx) until a probe finds it healthy, else 1.\n# TYPE edge_upstream_up gauge\n";
  for (std::size_t i = 0; i < list.size(); ++i)
    out += "edge_upstream_up" + labels(i, list[i].url) + (list[i].up ? " 1\n" : " 0\n");
  out +=
      "# HELP edge_upstream_switches_total Times the upstream in use changed (a failover, or "
      "back to a preferred one).\n# TYPE edge_upstream_switches_total counter\n";
  out += "edge_upstream_switches_total " + std::to_string(sync_->upstream_switches.load()) + "\n";
}

void Metrics::render_sync(
    const std::function<void(const char*, const char*, const char*, std::uint64_t)>& gauge) const {
  const SyncMetrics& m = *sync_;
  const auto now_ms = wall_clock_ms();
  const std::uint64_t cursor = cursor_ ? cursor_() : 0;
  const std::uint64_t upstream = m.upstream_seq.load();
  gauge("edge_sync_cursor_seq", "Sequence number of the newest applied change.", "gauge", cursor);
  gauge("edge_sync_upstream_seq", "Newest sequence number the upstream reported.", "gauge",
        upstream);
  gauge("edge_sync_lag_seq", "Changes the upstream has that this node has not applied.", "gauge",
        upstream > cursor ? upstream - cursor : 0);
  const std::int64_t contact = m.last_contact_ms.load();
  gauge(
      "edge_sync_seconds_since_contact",
      "Seconds since the upstream last answered (0: never contacted).", "gauge",
      contact > 0 && now_ms > contact ? static_cast<std::uint64_t>((now_ms - contact) / 1000) : 0);
  gauge("edge_sync_stale",
        "1 while the upstream has not answered for upstream.stale_after_ms (/readyz: degraded).",
        "gauge", m.stale_for_ms(now_ms, started_ms_) > 0 ? 1 : 0);
  gauge("edge_sync_upstream_behind",
        "1 while the upstream's feed (same epoch) is behind this node's cursor: not followed.",
        "gauge", m.upstream_behind.load());
  gauge("edge_sync_epoch_changes_total",
        "Times the upstream's feed epoch changed (numbering restarted) and a snapshot was taken.",
        "counter", m.epoch_changes.load());
  gauge("edge_sync_changes_applied_total", "Changes applied from upstream.", "counter",
        m.changes_applied.load());
  gauge("edge_sync_snapshots_applied_total", "Snapshots applied from upstream.", "counter",
        m.snapshots_applied.load());
  gauge("edge_sync_pushes_received_total", "Pushed change batches received.", "counter",
        m.pushes_received.load());
  gauge("edge_sync_pushes_sent_total", "Change batches pushed to edges.", "counter",
        m.pushes_sent.load());
  gauge("edge_sync_push_errors_total", "Pushes that failed (the edge pulls instead).", "counter",
        m.push_errors.load());
  gauge("edge_fill_fetches_total", "Chunks and recipes fetched from upstream.", "counter",
        m.fills.load());
  gauge("edge_fill_bytes_total", "Bytes fetched from upstream.", "counter", m.fill_bytes.load());
  gauge("edge_fill_errors_total", "Upstream fetches that failed (unreachable, 5xx, timeout).",
        "counter", m.fill_errors.load());
  gauge("edge_fill_verification_failures_total",
        "Chunks or blobs from upstream that did not hash to their id (never stored).", "counter",
        m.verify_failures.load());
  gauge("edge_fill_recipe_mismatches_total",
        "Recipes from upstream that did not hash to the recipe_sha256 their release pins "
        "(refused before any chunk was fetched by them).",
        "counter", m.recipe_mismatches.load());
  gauge("edge_prefetch_blobs_pending", "Blobs being prefetched before a channel flip.", "gauge",
        m.prefetch_blobs_pending.load());
  gauge("edge_prefetch_blobs_done_total", "Blobs prefetched.", "counter",
        m.prefetch_blobs_done.load());
  gauge("edge_prefetch_deadline_flips_total",
        "Channel changes applied at the prefetch deadline with chunks still missing.", "counter",
        m.prefetch_timeouts.load());
  gauge("edge_checkins_sent_total", "Check-ins acknowledged by the upstream.", "counter",
        m.checkins_sent.load());
  gauge("edge_checkin_batches_sent_total", "Check-in batches acknowledged by the upstream.",
        "counter", m.checkin_batches_sent.load());
  if (checkins_ != nullptr) {
    gauge("edge_device_table_devices",
          "Devices in the check-in store's in-memory table (distinct-device counting, "
          "timelines).",
          "gauge", checkins_->table_devices());
    gauge("edge_device_table_bytes", "Memory the device table holds.", "gauge",
          checkins_->table_bytes());
  }
  if (auto_pause_ != nullptr) {
    gauge("edge_auto_pause_rollouts",
          "Rollouts watched for auto-pause (enabled, with a release and a rule).", "gauge",
          auto_pause_->watched_rollouts());
    gauge("edge_auto_pause_devices",
          "Devices remembered across the watched rollouts (selected by a rollout and seen with "
          "its release).",
          "gauge", auto_pause_->remembered_devices());
  }
  if (outbox_ != nullptr) {
    const auto o = outbox_->outbox_stats();
    gauge("edge_outbox_depth", "Check-ins waiting to go upstream.", "gauge", o.depth);
    gauge("edge_outbox_bytes", "Bytes of check-ins waiting to go upstream.", "gauge", o.bytes);
    gauge("edge_outbox_oldest_age_seconds", "Age of the oldest waiting check-in.", "gauge",
          o.oldest_ms > 0 && now_ms > o.oldest_ms
              ? static_cast<std::uint64_t>((now_ms - o.oldest_ms) / 1000)
              : 0);
    gauge("edge_outbox_dropped_total", "Check-ins dropped because the outbox was full.", "counter",
          o.dropped);
    gauge("edge_outbox_dead_letter_batches",
          "Batches the upstream refused for good, kept aside (GET /v1/admin/outbox/dead-letters).",
          "gauge", o.dead_batches);
    gauge("edge_outbox_dead_letter_checkins", "Check-ins in the dead-letter batches.", "gauge",
          o.dead_checkins);
  }
}

}  // namespace edge::api
