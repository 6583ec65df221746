// The /updates decision (capgo-protocol.md §5) in ns/op, over an app with 20 channels and a
// rollout, rotating device ids (BM_Decide: the pure engine), and the whole endpoint without
// HTTP (BM_UpdatesEndpoint: body parsing and validation, decision, answer), the body's two
// readers (BM_DeviceInfoFromDocument, BM_DeviceInfoFromBytes) and the check-in behind it
// (BM_CheckinRecord).
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <benchmark/benchmark.h>

#include "edge/api/control_service.hpp"
#include "edge/api/device.hpp"
#include "edge/api/device_info.hpp"
#include "edge/control/decision.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"

#include <unistd.h>

namespace {

using namespace edge::control;

// A fresh directory under the system temp dir for one benchmark's stores, removed after
// them (declare it before the stores).
struct BenchDir {
  std::filesystem::path path;
  explicit BenchDir(const std::string& prefix)
      : path(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
  }
  ~BenchDir() { std::filesystem::remove_all(path); }
  BenchDir(const BenchDir&) = delete;
  BenchDir& operator=(const BenchDir&) = delete;
};

struct App final : AppView {
  std::map<std::string, Channel, std::less<>> channel_map;
  std::map<std::string, Release, std::less<>> release_map;
  std::vector<const Channel*> ordered;
  const Channel* channel(std::string_view n) const override {
    auto it = channel_map.find(n);
    return it == channel_map.end() ? nullptr : &it->second;
  }
  std::vector<const Channel*> channels() const override { return ordered; }
  const Release* release(std::string_view n) const override {
    auto it = release_map.find(n);
    return it == release_map.end() ? nullptr : &it->second;
  }
  std::optional<std::string> device_override(std::string_view) const override {
    return std::nullopt;
  }
};

void BM_Decide(benchmark::State& state) {
  App app;
  for (int i = 0; i < 50; ++i) {
    Release r;
    r.name = "1.2." + std::to_string(i);
    r.has_zip = true;
    app.release_map[r.name] = r;
  }
  for (int i = 0; i < 20; ++i) {
    Channel c;
    c.name = "channel-" + std::to_string(i);
    c.release = "1.2." + std::to_string(i);
    c.allow_device_self_set = true;
    app.channel_map[c.name] = c;
  }
  Channel& prod = app.channel_map["production"];
  prod.name = "production";
  prod.release = "1.2.40";
  prod.is_public = true;
  prod.rollout = Rollout{"1.2.41", 2500, true, false, "rollout-1", {}};
  for (const auto& [n, c] : app.channel_map)
    app.ordered.push_back(&c);

  UpdateRequest req;
  req.platform = Platform::kAndroid;
  req.version_name = "1.2.3";
  req.version_build = *edge::SemVer::parse("1.2.0");
  req.plugin_version = *edge::SemVer::parse("8.51.23");
  std::vector<std::string> devices;
  for (int i = 0; i < 1024; ++i)
    devices.push_back("0a1b2c3d-1111-4222-8333-" + std::to_string(100000000000 + i));
  std::size_t i = 0;
  std::size_t updates = 0;
  for (auto _ : state) {
    req.device_id = devices[i++ & 1023];
    const Decision d = decide(req, app);
    updates += d.kind == Kind::kUpdate;
  }
  benchmark::DoNotOptimize(updates);
}
BENCHMARK(BM_Decide);

}  // namespace

namespace {

// The plugin's /updates body, over 1024 device ids.
std::vector<std::string> device_bodies() {
  std::vector<std::string> bodies;
  for (int i = 0; i < 1024; ++i) {
    bodies.push_back(R"({"platform":"android","device_id":"0a1b2c3d-1111-4222-8333-)" +
                     std::to_string(100000000000 + i) +
                     R"(","app_id":"com.example.app","custom_id":"","version_build":"1.2.0",)"
                     R"("version_code":"120","version_os":"14","version_name":"1.2.3",)"
                     R"("plugin_version":"8.51.23","is_emulator":false,"is_prod":true,)"
                     R"("install_source":"google_play","defaultChannel":""})");
  }
  return bodies;
}

// The whole /updates endpoint without HTTP: the plugin's JSON body parsed and validated,
// the decision over a loaded ControlService snapshot, the answer serialised (no check-in).
// The device id rotates over 1024 bodies, as real traffic does.
void BM_UpdatesEndpoint(benchmark::State& state) {
  namespace store = edge::store;
  const BenchDir tmp("updates-bench-");
  const auto& dir = tmp.path;
  {
    auto db = store::Database::open(dir / "db");
    store::StateStore states(*db);
    const std::string app = "com.example.app";
    const std::string zip(64, 'a');
    (void)states.put(store::StateKind::kApp, app, "", "{}");
    for (int i = 0; i < 50; ++i) {
      (void)states.put(store::StateKind::kRelease, app, "1.2." + std::to_string(i),
                       R"({"zip":")" + zip + R"(","checksum":")" + zip + R"("})");
    }
    for (int i = 0; i < 20; ++i) {
      (void)states.put(
          store::StateKind::kChannel, app, "channel-" + std::to_string(i),
          R"({"release":"1.2.)" + std::to_string(i) + R"(","allow_device_self_set":true})");
    }
    (void)states.put(store::StateKind::kChannel, app, "production",
                     R"({"release":"1.2.40","public":true,"rollout":{"release":"1.2.41",)"
                     R"("bps":2500,"enabled":true,"id":"rollout-1"}})");
    auto chunks = store::ChunkStore::open(*db, dir / "segments");
    store::BlobStore blobs(*chunks);
    edge::api::ControlService control(states, blobs);
    const edge::api::DeviceApi api(control, "http://127.0.0.1:8080");
    const std::vector<std::string> bodies = device_bodies();
    std::size_t i = 0;
    std::size_t bytes = 0;
    for (auto _ : state) {
      const edge::api::Response r = api.updates(true, bodies[i++ & 1023]);
      bytes += r.body.size();
    }
    benchmark::DoNotOptimize(bytes);
    control.drain();
  }
}
BENCHMARK(BM_UpdatesEndpoint);

}  // namespace

// The plugin's /updates body read two ways: a JSON document and the rules over it (what
// /stats and manifest_size still do), and parse_info straight from the bytes (what /updates
// and POST/PUT /channel_self do). The device id rotates over 1024 bodies.
namespace {

void BM_DeviceInfoFromDocument(benchmark::State& state) {
  const auto bodies = device_bodies();
  std::size_t i = 0;
  for (auto _ : state) {
    unsigned char buffer[2048];
    boost::json::monotonic_resource resource(buffer, sizeof buffer);
    boost::json::value doc = boost::json::value(boost::json::storage_ptr(&resource));
    edge::api::DeviceInfo info;
    if (edge::api::parse_json_body(bodies[i++ & 1023], doc) ||
        edge::api::read_info(edge::api::DeviceEndpoint::kUpdates, doc.get_object(), info))
      state.SkipWithError("refused");
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_DeviceInfoFromDocument);

void BM_DeviceInfoFromBytes(benchmark::State& state) {
  const auto bodies = device_bodies();
  std::size_t i = 0;
  for (auto _ : state) {
    std::string scratch;
    edge::api::DeviceInfo info;
    if (edge::api::parse_info(edge::api::DeviceEndpoint::kUpdates, bodies[i++ & 1023], scratch,
                              info))
      state.SkipWithError("refused");
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_DeviceInfoFromBytes);

}  // namespace

// The check-in behind every /updates answer, as the device path records it on an origin
// (record() without a durable callback: group-committed by the writer thread): a new device
// per check-in, one app, one day, as bench/load/updates.lua sends them. Real time per
// check-in, the queue drained at the end: the writer's cost (the RocksDB batch with the raw
// log, the device's last check-in, its timeline and the day's counters).
namespace {

void BM_CheckinRecord(benchmark::State& state) {
  namespace store = edge::store;
  const BenchDir tmp("checkin-bench-");
  const auto& dir = tmp.path;
  {
    auto db = store::Database::open(dir / "db");
    store::CheckinStore checkins(*db);
    const std::int64_t now = 1'780'000'000'000;
    constexpr std::uint64_t kCheckins = 200'000;
    std::uint64_t n = 0;
    for (auto _ : state) {
      for (std::uint64_t i = 0; i < kCheckins; ++i, ++n) {
        store::Checkin c;
        c.app_id = "com.bench.app";
        c.device_id = "0a1b2c3d-1111-4222-8333-" + std::to_string(100000000000 + n);
        c.platform = "android";
        c.version_name = "builtin";
        c.version_build = "1.0.0";
        c.action = "updates";
        c.decision = "update";
        c.plugin_version = "8.51.23";
        c.time_ms = now + static_cast<std::int64_t>(n / 64);
        checkins.record(std::move(c));
      }
      checkins.flush();  // the writer's work is the figure
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(n));
  }
}
BENCHMARK(BM_CheckinRecord)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
