// Check-ins carry device-supplied strings upstream: whatever bytes a device sent, a recorded
// (sanitised) check-in must encode to a batch the receiver's parser accepts, and decode to
// the same fields (issue #9 item 1: a field cut inside a UTF-8 character wedged an edge's
// outbox for good). And whatever names devices send, the analytics counters stay bounded:
// every counter map of a bucket holds at most kMaxAnalyticsNames names and "other", and no
// check-in goes uncounted.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <string_view>

#include "edge/api/sync.hpp"
#include "edge/core/utf8.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/database.hpp"

namespace {

// One store for the whole run (in a temporary directory removed at exit): the buckets fill
// up across inputs, so the cap is reached and then held.
struct Analytics {
  std::filesystem::path dir;
  std::unique_ptr<edge::store::Database> db;
  std::unique_ptr<edge::store::CheckinStore> store;
  std::uint64_t seq = 0;
  std::uint64_t recorded = 0;
  Analytics() {
    std::string templ = (std::filesystem::temp_directory_path() / "checkin_fuzz.XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr)
      std::abort();
    dir = templ;
    db = edge::store::Database::open(dir / "db");
    edge::store::CheckinOptions o;
    o.retention_days = 0;
    // Half the names are releases: both the kept and the folded targets are exercised.
    o.is_release = [](std::string_view, std::string_view r) { return r.size() % 2 == 0; };
    store = std::make_unique<edge::store::CheckinStore>(*db, o);
  }
  ~Analytics() {
    store.reset();
    db.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

void check_bounds(std::string_view platform, std::string_view version, std::string_view action) {
  static Analytics a;
  constexpr std::int64_t kHour = 1764115200000;  // 2025-11-26T00
  constexpr std::size_t kMax = edge::store::kMaxAnalyticsNames;
  // More names than a map keeps, from one input.
  std::vector<edge::store::Checkin> list;
  for (std::size_t k = 0; k < kMax + 8; ++k) {
    const std::string n = std::to_string(k);
    edge::store::Checkin c{"com.example.app",
                           "d" + n,
                           std::string(platform) + (k % 4 == 0 ? "" : n),
                           std::string(version) + n,
                           "1.0.0",
                           std::string(action) + n,
                           "",
                           kHour + static_cast<std::int64_t>(k)};
    if (k % 2 == 1)
      c.action += "_fail";  // names its target release
    if (k % 3 == 0)
      c.version_name += ":" + n;
    edge::store::sanitize(c);
    if (c.action.empty())
      continue;  // refused by the receiver's parser before recording
    list.push_back(std::move(c));
  }
  a.recorded += list.size();
  std::promise<bool> done;
  a.store->record_batch("edge", "g", ++a.seq, std::move(list),
                        [&done](bool ok, bool) { done.set_value(ok); });
  if (!done.get_future().get())
    __builtin_trap();
  auto got = a.store->analytics("com.example.app", kHour, kHour + 3'599'999);
  if (!got || got->hours.size() != 1 || got->days.size() != 1)
    __builtin_trap();
  const auto& h = got->hours.begin()->second;
  std::uint64_t actions = 0;
  for (const auto& [name, n] : h.actions)
    actions += n;
  if (actions != a.recorded)
    __builtin_trap();  // every check-in is counted once, under its name or other
  if (h.actions.size() > kMax + 1 || h.platforms.size() > 4 || h.releases.size() > kMax + 1 ||
      h.installs.size() > kMax + 1 || h.targets.size() > kMax + 1 ||
      got->days.begin()->second.by_release.size() > kMax + 1)
    __builtin_trap();
  for (const auto& [release, by_action] : h.targets) {
    if (by_action.size() > kMax + 1 || release.find(':') != std::string::npos)
      __builtin_trap();
  }
  for (const auto& [platform_name, n] : h.platforms) {
    if (platform_name != "ios" && platform_name != "android" && platform_name != "electron" &&
        platform_name != "other")
      __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  edge::store::Checkin c;
  c.app_id = "com.example.app";
  c.device_id = "d";
  c.action = "updates";
  c.time_ms = 1;
  // The input is split at 0xff bytes into the free-text fields.
  std::string* fields[] = {&c.platform, &c.version_name, &c.version_build, &c.decision,
                           &c.device_id};
  for (std::string* f : fields) {
    const auto cut = text.find('\xff');
    f->assign(text.substr(0, cut));
    text = cut == std::string_view::npos ? std::string_view() : text.substr(cut + 1);
  }
  if (c.device_id.empty())
    c.device_id = "d";
  edge::store::sanitize(c);
  if (c.device_id.empty())
    return 0;  // the device endpoints refuse an empty device id before recording
  for (const std::string* f : fields) {
    if (f->size() > edge::store::kMaxCheckinField || !edge::valid_utf8(*f) ||
        f->find('\0') != std::string::npos)
      __builtin_trap();
  }
  const std::string wire = edge::api::encode_checkins({c});
  if (wire.size() != edge::api::encoded_checkin_size(c) + 15)  // {"checkins":[ ... ]}
    __builtin_trap();
  std::string error;
  auto back = edge::api::parse_checkins(wire, &error);
  if (!back || back->size() != 1)
    __builtin_trap();
  const auto& b = back->front();
  if (b.platform != c.platform || b.version_name != c.version_name ||
      b.version_build != c.version_build || b.decision != c.decision ||
      b.device_id != c.device_id || b.time_ms != c.time_ms)
    __builtin_trap();
  check_bounds(c.platform, c.version_name, c.version_build);
  return 0;
}
