#include "edge/api/metrics.hpp"

#include <algorithm>
#include <cstdio>

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

  const auto gauge = [&](const char* name, const char* help, const char* type, std::uint64_t v) {
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
  gauge("edge_store_chunks", "Chunks indexed.", "gauge", st.chunks);
  gauge("edge_store_blobs", "Blob recipes stored.", "gauge", st.blobs);
  gauge("edge_store_bytes_live", "Bytes of indexed chunks.", "gauge", st.bytes_live);
  gauge("edge_store_bytes_on_disk", "Bytes of segment files.", "gauge", st.bytes_on_disk);
  gauge("edge_store_segments", "Segment files.", "gauge", st.segments);
  gauge("edge_store_evicted_segments_total", "Segments evicted.", "counter", st.evicted_segments);
  gauge("edge_store_evicted_chunks_total", "Chunks evicted.", "counter", st.evicted_chunks);
  gauge("edge_store_relocated_chunks_total", "Pinned chunks copied forward by eviction.", "counter",
        st.relocated_chunks);
  return out;
}

}  // namespace edge::api
