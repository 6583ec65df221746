// The /updates decision (capgo-protocol.md §5) in ns/op, over an app with 20 channels and a
// rollout, rotating device ids. Only the pure engine: the endpoint (issue #4) adds parsing.
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "edge/control/decision.hpp"

namespace {

using namespace edge::control;

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
  prod.rollout = Rollout{"1.2.41", 2500, true, false, "rollout-1"};
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
