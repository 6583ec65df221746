// Issue #12's scale figures for the origin's device index and analytics: N devices (1M by
// default) checking in over 30 days, through the real CheckinStore and the real admin
// routes (ControlService::handle, JSON answers included), no HTTP.
//
//   checkin_scale_bench [--devices N] [--per-device K] [--days D]
//
// Prints: ingestion rate (the origin's own device path: record(), paced unsynced batches;
// and relayed batches of 500: record_batch(), synced), the device table's memory and the
// process RSS growth, device-page latency (no filter, and a filter that must scan), and
// 30-day stats latency by day and by hour. EDGE_BENCH_SMALL=1 (ctest): 20k devices.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <string>
#include <vector>

#include <boost/beast/http/message.hpp>

#include "edge/api/control_service.hpp"
#include "edge/core/clock.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"

#include <unistd.h>

namespace {

namespace store = edge::store;
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kDayMs = 86'400'000;
const char* const kApp = "com.example.scale";

std::uint64_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string device_id(std::uint64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-1111-4222-8333-%012llu",
                static_cast<unsigned long long>(n * 2654435761ULL % 4294967296ULL),
                static_cast<unsigned long long>(n));
  return buf;
}

struct Percentiles {
  double p50, p99, max;
};
Percentiles percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)], v.back()};
}

// One admin GET through the real route, timed; the answer must be a 200.
double admin_get(edge::api::ControlService& control, const std::string& path,
                 const std::string& query, std::size_t* bytes = nullptr) {
  bhttp::request_header<> req;
  req.method(bhttp::verb::get);
  req.target(path + (query.empty() ? "" : "?" + query));
  const auto t0 = Clock::now();
  const auto r = control.handle(req, path, {});
  const double ms = ms_since(t0);
  if (r.status != 200) {
    std::fprintf(stderr, "GET %s?%s: %u %s\n", path.c_str(), query.c_str(), r.status,
                 r.body.substr(0, 300).c_str());
    std::exit(1);
  }
  if (bytes != nullptr)
    *bytes = r.body.size();
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t devices = std::getenv("EDGE_BENCH_SMALL") != nullptr ? 20'000 : 1'000'000;
  std::uint64_t per_device = 3;
  std::int64_t days = 30;
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--devices")
      devices = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--per-device")
      per_device = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--days")
      days = std::strtoll(argv[++i], nullptr, 10);
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("checkin-scale-bench-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  int rc = 0;
  {
    auto db = store::Database::open(dir / "db");
    store::StateStore states(*db);
    (void)states.put(store::StateKind::kApp, kApp, "", "{}");
    for (int r = 0; r < 10; ++r) {
      (void)states.put(store::StateKind::kRelease, kApp, "1.0." + std::to_string(r),
                       R"({"zip":")" + std::string(64, 'a') + R"("})");
    }
    (void)states.put(store::StateKind::kChannel, kApp, "production",
                     R"({"release":"1.0.8","public":true,"rollout":{"release":"1.0.9",)"
                     R"("bps":1000,"enabled":true,"id":"r1"}})");
    auto chunks = store::ChunkStore::open(*db, dir / "segments");
    store::BlobStore blobs(*chunks);
    edge::api::ControlService control(states, blobs);
    store::CheckinOptions options;
    options.retention_days = 0;  // the bench's days are in the past
    store::CheckinStore checkins(*db, options);
    control.set_checkins(&checkins);

    // Ingestion: every device checks in `per_device` times, spread over `days` (time order),
    // with a realistic mix of actions over 10 releases and two platforms.
    const std::uint64_t total = devices * per_device;
    const std::int64_t end_ms = edge::wall_clock_ms();
    const std::int64_t start_ms = end_ms - days * kDayMs;
    const char* const actions[] = {"updates",
                                   "updates",
                                   "updates",
                                   "get",
                                   "set",
                                   "download_0",
                                   "app_moved_to_foreground",
                                   "updates",
                                   "download_fail",
                                   "updates"};
    const auto make = [&](std::uint64_t k) {
      const std::uint64_t n = k % devices;
      store::Checkin c;
      c.app_id = kApp;
      c.device_id = device_id(n);
      c.platform = n % 2 ? "android" : "ios";
      c.version_name = "1.0." + std::to_string(n % 10);
      c.version_build = "1.0.0";
      c.action = actions[k % 10];
      c.time_ms = start_ms + static_cast<std::int64_t>(k * (days * kDayMs) / total);
      c.plugin_version = "8.51.23";
      c.custom_id = "user-" + std::to_string(n);
      return c;
    };
    const std::uint64_t rss0 = rss_bytes();
    auto t0 = Clock::now();
    std::uint64_t last_report = 0;
    for (std::uint64_t k = 0; k < total; ++k) {
      checkins.record(make(k));
      // A producer faster than the writer would only grow the queue: wait for the writer
      // every 50k check-ins, so the figure is what the writer sustains.
      if (k % 50'000 == 49'999)
        checkins.flush();
      if (k - last_report >= total / 10) {
        last_report = k;
        std::fprintf(stderr, "  ingest: %llu / %llu check-ins\n",
                     static_cast<unsigned long long>(k), static_cast<unsigned long long>(total));
      }
    }
    checkins.flush();
    const double ingest_ms = ms_since(t0);
    const std::uint64_t rss1 = rss_bytes();
    // Relayed batches (an edge's outbox): 500 a batch, each synced and applied once.
    const std::uint64_t relayed = std::min<std::uint64_t>(total, 200'000);
    t0 = Clock::now();
    for (std::uint64_t k = 0; k < relayed; k += 500) {
      std::vector<store::Checkin> batch;
      for (std::uint64_t j = k; j < std::min(relayed, k + 500); ++j)
        batch.push_back(make(j));
      std::promise<bool> done;
      checkins.record_batch("edge-1", "g1", k / 500 + 1, std::move(batch),
                            [&done](bool ok, bool) { done.set_value(ok); });
      if (!done.get_future().get()) {
        std::fprintf(stderr, "a relayed batch failed\n");
        return 1;
      }
    }
    const double relayed_ms = ms_since(t0);

    std::printf("checkin_scale_bench: %llu devices, %llu check-ins over %lld days\n",
                static_cast<unsigned long long>(devices), static_cast<unsigned long long>(total),
                static_cast<long long>(days));
    std::printf("  ingest, device path (record, paced batches): %.0f check-ins/s (%.1f s)\n",
                total / (ingest_ms / 1000), ingest_ms / 1000);
    std::printf("  ingest, relayed batches of 500 (synced):     %.0f check-ins/s\n",
                relayed / (relayed_ms / 1000));
    std::printf("  device table: %llu devices, %.1f MiB (%.1f bytes/device)\n",
                static_cast<unsigned long long>(checkins.table_devices()),
                checkins.table_bytes() / 1048576.0,
                static_cast<double>(checkins.table_bytes()) / checkins.table_devices());
    std::printf(
        "  process RSS growth during ingest: %.1f MiB (RocksDB memtables and cache "
        "included)\n",
        (rss1 > rss0 ? rss1 - rss0 : 0) / 1048576.0);

    // Device pages through the admin route: from random cursors, no filter and filtered.
    const std::string base = std::string("/v1/admin/apps/") + kApp;
    std::mt19937_64 rng(42);
    std::vector<double> plain, filtered, custom;
    std::size_t page_bytes = 0;
    for (int i = 0; i < 100; ++i) {
      const std::string cursor = device_id(rng() % devices);
      plain.push_back(
          admin_get(control, base + "/device_index", "limit=100&cursor=" + cursor, &page_bytes));
      filtered.push_back(admin_get(control, base + "/device_index",
                                   "limit=100&platform=ios&release=1.0.4&cursor=" + cursor));
      custom.push_back(admin_get(control, base + "/device_index",
                                 "limit=100&custom_id=user-1&cursor=" + cursor));
    }
    const auto p = percentiles(plain);
    const auto f = percentiles(filtered);
    const auto c = percentiles(custom);
    std::printf("  device page (100 devices, %zu bytes): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                page_bytes, p.p50, p.p99, p.max);
    std::printf(
        "  device page filtered (platform+release, 1 in 10 match): p50 %.2f ms, p99 %.2f "
        "ms\n",
        f.p50, f.p99);
    std::printf(
        "  device page filtered (custom_id prefix, 1 in ~9 match): p50 %.2f ms, p99 %.2f "
        "ms\n",
        c.p50, c.p99);
    std::vector<double> by_day, by_hour;
    std::size_t day_bytes = 0, hour_bytes = 0;
    for (int i = 0; i < 20; ++i) {
      by_day.push_back(admin_get(control, base + "/stats", "", &day_bytes));
      by_hour.push_back(admin_get(control, base + "/stats",
                                  "resolution=hour&from=" + std::to_string(end_ms - 30 * kDayMs),
                                  &hour_bytes));
    }
    const auto d = percentiles(by_day);
    const auto h = percentiles(by_hour);
    std::printf("  stats, 30 days by day (%zu bytes): p50 %.1f ms, p99 %.1f ms\n", day_bytes, d.p50,
                d.p99);
    std::printf("  stats, 30 days by hour (%zu bytes): p50 %.1f ms, p99 %.1f ms\n", hour_bytes,
                h.p50, h.p99);
    std::vector<double> timeline;
    for (int i = 0; i < 100; ++i)
      timeline.push_back(admin_get(control, base + "/devices/" + device_id(rng() % devices), ""));
    const auto t = percentiles(timeline);
    std::printf("  device with its timeline: p50 %.2f ms, p99 %.2f ms\n", t.p50, t.p99);
    control.drain();
  }
  std::filesystem::remove_all(dir);
  return rc;
}
