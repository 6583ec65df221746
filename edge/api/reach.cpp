#include "edge/api/reach.hpp"

#include <algorithm>
#include <charconv>
#include <set>
#include <tuple>

#include <boost/json.hpp>

#include "edge/api/auto_pause.hpp"
#include "edge/control/decision.hpp"

namespace edge::api {
namespace {

namespace json = boost::json;

constexpr std::int64_t kDayMs = 86'400'000;
constexpr std::string_view kOther = "other";
constexpr std::string_view kUnknown = "unknown";
constexpr std::string_view kInvalid = "invalid";

bool session_keys(const SemVer& v) {
  return at_least(v, 4, 15, 0);
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v)
    a.emplace_back(s);
  return a;
}

// "8.52" -> (8, 52); the names that are not versions sort after every version.
std::tuple<bool, std::uint64_t, std::uint64_t> version_order(const std::string& key) {
  const auto dot = key.find('.');
  if (dot == std::string::npos)
    return {false, 0, 0};
  std::uint64_t major = 0, minor = 0;
  std::from_chars(key.data(), key.data() + dot, major);
  std::from_chars(key.data() + dot + 1, key.data() + key.size(), minor);
  return {true, major, minor};
}

// Calls `fn` with every device row of `app` (at most kMaxReachScan); false if more remain.
Result<bool> each_device(const store::CheckinQueries& checkins, const control::AppState& app,
                         const std::function<void(const store::Checkin&)>& fn) {
  auto page =
      checkins.devices(app.app_id, "", SIZE_MAX, kMaxReachScan, [&](const store::Checkin& c) {
        fn(c);
        return false;  // counted, not kept
      });
  if (!page)
    return page.error();
  return page->next.empty();
}

}  // namespace

std::vector<PluginRule> plugin_rules(const control::AppState& app) {
  PluginRule manifest{
      "manifest", "5.10.0 / 6.25.0 / 7.0.35 / 8.0.0 or later", {}, 0, &control::supports_manifest};
  PluginRule session{"session_key", "4.15.0 or later", {}, 0, &session_keys};
  const auto encrypted = [&](const std::string& release) {
    const auto it = app.releases.find(release);
    return it != app.releases.end() && !it->second.deleted && !it->second.session_key.empty();
  };
  for (const auto& [name, ch] : app.channels) {
    const auto needs = [&](PluginRule& r) {
      if (r.channels.size() < kRuleChannels)
        r.channels.push_back(name);
      ++r.channel_count;
    };
    if (ch.update_package == control::UpdatePackage::kDelta ||
        ch.update_package == control::UpdatePackage::kDeltaFromBuiltin)
      needs(manifest);
    if (encrypted(ch.release) ||
        (ch.rollout && ch.rollout->enabled && encrypted(ch.rollout->release)))
      needs(session);
  }
  std::vector<PluginRule> out;
  for (auto* r : {&manifest, &session}) {
    if (!r->channels.empty())
      out.push_back(std::move(*r));
  }
  return out;
}

void PluginTally::count(const std::string& key, const SemVer* v) {
  ++devices_;
  auto it = rows_.find(key);
  if (it == rows_.end()) {
    // Named versions are bounded; the three fixed names always have room.
    const bool fixed = key == kOther || key == kUnknown || key == kInvalid;
    const Row empty{0, std::vector<std::uint64_t>(rules_.size(), 0)};
    if (!fixed && rows_.size() >= kMaxPluginNames + 3)
      it = rows_.try_emplace(std::string(kOther), empty).first;
    else
      it = rows_.emplace(key, empty).first;
  }
  ++it->second.devices;
  if (v == nullptr)
    return;
  bool flagged = false;
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    if (!rules_[i].ok(*v)) {
      ++it->second.failing[i];
      flagged = true;
    }
  }
  it->second.flagged += flagged ? 1 : 0;
}

void PluginTally::add(std::string_view plugin_version) {
  if (plugin_version.empty())
    return count(std::string(kUnknown), nullptr);
  const auto v = SemVer::parse(plugin_version);
  if (!v)
    return count(std::string(kInvalid), nullptr);
  count(std::to_string(v->major) + "." + std::to_string(v->minor), &*v);
}

json::object PluginTally::to_json(std::size_t top) const {
  // The `top` named versions with the most devices (ties: the newer), the rest folded.
  std::vector<const std::pair<const std::string, Row>*> named;
  Row other{0, std::vector<std::uint64_t>(rules_.size(), 0)};
  const auto fold = [&](const Row& r) {
    other.devices += r.devices;
    other.flagged += r.flagged;
    for (std::size_t i = 0; i < rules_.size(); ++i)
      other.failing[i] += r.failing[i];
  };
  for (const auto& kv : rows_) {
    if (std::get<0>(version_order(kv.first)))
      named.push_back(&kv);
    else if (kv.first == kOther)
      fold(kv.second);
  }
  std::sort(named.begin(), named.end(), [](const auto* a, const auto* b) {
    if (a->second.devices != b->second.devices)
      return a->second.devices > b->second.devices;
    return version_order(a->first) > version_order(b->first);
  });
  for (std::size_t i = top; i < named.size(); ++i)
    fold(named[i]->second);
  if (named.size() > top)
    named.resize(top);
  std::sort(named.begin(), named.end(), [](const auto* a, const auto* b) {
    return version_order(a->first) > version_order(b->first);
  });
  json::array versions;
  const auto row = [&](std::string_view name, const Row& r) {
    json::array flags;
    for (std::size_t i = 0; i < rules_.size(); ++i) {
      if (r.failing[i] == 0)
        continue;
      flags.push_back(json::object{{"rule", rules_[i].rule},
                                   {"needs", rules_[i].needs},
                                   {"channels", strings(rules_[i].channels)},
                                   {"channel_count", rules_[i].channel_count},
                                   {"devices", r.failing[i]}});
    }
    versions.push_back(json::object{{"version", name},
                                    {"devices", r.devices},
                                    {"flagged", r.flagged},
                                    {"flags", std::move(flags)}});
  };
  for (const auto* kv : named)
    row(kv->first, kv->second);
  if (other.devices > 0)
    row(kOther, other);
  for (const auto name : {kInvalid, kUnknown}) {
    if (const auto it = rows_.find(std::string(name)); it != rows_.end())
      row(name, it->second);
  }
  json::array rules;
  for (const auto& r : rules_) {
    rules.push_back(json::object{{"rule", r.rule},
                                 {"needs", r.needs},
                                 {"channels", strings(r.channels)},
                                 {"channel_count", r.channel_count}});
  }
  return json::object{{"versions", std::move(versions)}, {"rules", std::move(rules)}};
}

void ReachTally::add(const store::Checkin& device, const control::Channel* channel) {
  ++devices_;
  const std::string_view release = device.version_name;
  if (channel != nullptr) {
    auto& p = channels_[channel->name];
    ++p.devices;
    // On builtin, a device reports its native version (the /updates rewrite) or "builtin".
    if (channel->release.empty() ? release == "builtin" || release == device.version_build
                                 : release == channel->release)
      ++p.on_release;
    if (channel->rollout && channel->rollout->enabled && !channel->rollout->release.empty() &&
        release == channel->rollout->release)
      ++p.on_rollout;
  }
  // Named as per-release usage names it (store): a release of the app or builtin (as sent,
  // or the native version a device on builtin reports); any other name under "other".
  if (release.empty())
    return;
  std::string_view name = store::usage_name(
      release, device.version_build, [&](std::string_view r) { return app_.releases.contains(r); });
  if (name.empty())
    name = kOther;
  auto it = running_.find(name);
  if (it == running_.end())
    it = running_.try_emplace(std::string(name)).first;
  ++it->second;
}

json::object ReachTally::to_json(const store::Analytics& analytics,
                                 const std::string& today) const {
  json::array channels;
  std::vector<std::string> names;  // releases shown, channels' first
  std::set<std::string, std::less<>> shown;
  const auto show = [&](const std::string& r) {
    if (shown.insert(r).second)
      names.push_back(r);
  };
  for (const auto& [name, ch] : app_.channels) {
    const auto it = channels_.find(name);
    const Population p = it == channels_.end() ? Population{} : it->second;
    const std::string release = ch.release.empty() ? "builtin" : ch.release;
    json::object o{{"channel", name},
                   {"release", release},
                   {"devices", p.devices},
                   {"on_release", p.on_release}};
    show(release);
    if (ch.rollout && ch.rollout->enabled && !ch.rollout->release.empty()) {
      o["rollout_release"] = ch.rollout->release;
      o["on_rollout_release"] = p.on_rollout;
      show(ch.rollout->release);
    }
    channels.push_back(std::move(o));
  }
  // Events per release over the range.
  struct Events {
    std::uint64_t downloads = 0, installs = 0, failures = 0;
  };
  std::map<std::string, Events, std::less<>> events;
  for (const auto& [hour, s] : analytics.hours) {
    for (const auto& [r, n] : s.installs)
      events[r].installs += n;
    for (const auto& [r, by_action] : s.targets) {
      for (const auto& [action, n] : by_action) {
        if (action == "download_complete")
          events[r].downloads += n;
        else if (AutoPauser::is_failure(action))
          events[r].failures += n;
      }
    }
  }
  // Then the releases devices run, most devices first, then those with events.
  std::vector<std::pair<std::uint64_t, const std::string*>> by_devices;
  for (const auto& [r, n] : running_)
    by_devices.emplace_back(n, &r);
  std::stable_sort(by_devices.begin(), by_devices.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [n, r] : by_devices)
    show(*r);
  std::vector<std::pair<std::uint64_t, const std::string*>> by_events;
  for (const auto& [r, e] : events)
    by_events.emplace_back(e.downloads + e.installs + e.failures, &r);
  std::stable_sort(by_events.begin(), by_events.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [n, r] : by_events)
    show(*r);
  if (names.size() > kReachReleases)
    names.resize(kReachReleases);

  const auto day = analytics.days.find(today);
  json::array releases;
  for (const auto& r : names) {
    const auto run = running_.find(r);
    const auto ev = events.find(r);
    const Events e = ev == events.end() ? Events{} : ev->second;
    std::uint64_t today_devices = 0;
    if (day != analytics.days.end()) {
      if (const auto it = day->second.by_release.find(r); it != day->second.by_release.end())
        today_devices = it->second;
    }
    releases.push_back(json::object{{"release", r},
                                    {"running", run == running_.end() ? 0 : run->second},
                                    {"checked_in_today", today_devices},
                                    {"downloads", e.downloads},
                                    {"installs", e.installs},
                                    {"failures", e.failures}});
  }
  return json::object{{"channels", std::move(channels)}, {"releases", std::move(releases)}};
}

Response plugins_response(const store::CheckinQueries& checkins, const control::AppState& app) {
  PluginTally tally(plugin_rules(app));
  const auto complete =
      each_device(checkins, app, [&](const store::Checkin& c) { tally.add(c.plugin_version); });
  if (!complete)
    return store_read_error(complete.error(), "reading devices");
  json::object out{{"app_id", app.app_id}, {"devices", tally.devices()}, {"complete", *complete}};
  for (auto& [k, v] : tally.to_json())
    out[k] = std::move(v);
  return make_json_response(200, json::serialize(out));
}

Response reach_response(const store::CheckinQueries& checkins, const control::AppState& app,
                        std::int64_t now_ms) {
  const control::AppStateView view(app);
  ReachTally tally(app);
  const auto complete = each_device(checkins, app, [&](const store::Checkin& c) {
    const auto p = control::parse_platform(c.platform);
    const control::Channel* ch =
        p ? control::resolve_channel(c.device_id, *p, c.default_channel, view).channel : nullptr;
    tally.add(c, ch);
  });
  if (!complete)
    return store_read_error(complete.error(), "reading devices");
  // The last 30 UTC days, today included (the /stats default).
  const std::int64_t from = (now_ms / kDayMs - 29) * kDayMs;
  auto a = checkins.analytics(app.app_id, from, now_ms);
  if (!a)
    return store_read_error(a.error(), "reading stats");
  json::object out{{"app_id", app.app_id},
                   {"devices", tally.devices()},
                   {"complete", *complete},
                   {"from_ms", from},
                   {"to_ms", now_ms}};
  for (auto& [k, v] : tally.to_json(*a, store::utc_day(now_ms)))
    out[k] = std::move(v);
  return make_json_response(200, json::serialize(out));
}

}  // namespace edge::api
