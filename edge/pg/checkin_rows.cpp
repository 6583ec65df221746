#include "edge/pg/checkin_rows.hpp"

#include <xxhash.h>

namespace edge::pg {
namespace {

constexpr std::int64_t kDayMs = 86'400'000;
constexpr std::int64_t kHourMs = 3'600'000;

std::int64_t floor_div(std::int64_t t, std::int64_t unit) {
  return t >= 0 ? t / unit : (t + 1) / unit - 1;
}

// The fields of an update check but its time, hashed: equal for a repeated check (never 0).
std::uint64_t check_hash(const store::Checkin& c) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const std::string* f : {&c.platform, &c.version_name, &c.version_build, &c.decision,
                               &c.plugin_version, &c.custom_id, &c.default_channel}) {
    XXH3_64bits_update(st, f->data(), f->size());
    XXH3_64bits_update(st, "", 1);
  }
  const std::uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h | 1;
}

}  // namespace

std::string first_open_day(std::int64_t now_ms) {
  return store::utc_day(now_ms - std::int64_t{kOpenDays - 1} * kDayMs);
}

BatchRows aggregate(const std::vector<store::Checkin>& checkins, std::int64_t now_ms,
                    std::uint32_t timeline_events, const IsRelease& is_release,
                    const RecentDevices* recent) {
  BatchRows out;
  const std::string open = first_open_day(now_ms);
  // Per device, as the batch goes: the version it runs (set by an event that is not
  // target-naming) and the hash of its previous event if that was an update check.
  struct Running {
    std::optional<std::string> version;
    std::uint64_t last_check = 0;
  };
  std::map<std::pair<std::string, std::string>, Running> running;
  std::string memo_app, memo_release;
  bool memo_known = false;
  const auto known = [&](std::string_view app, std::string_view release) {
    if (!is_release)
      return true;
    if (release != memo_release || app != memo_app) {
      memo_known = is_release(app, release);
      memo_app = std::string(app);
      memo_release = std::string(release);
    }
    return memo_known;
  };
  const auto usage = [&](const store::Checkin& c, std::string_view version) {
    return store::usage_name(version, c.version_build,
                             [&](std::string_view r) { return known(c.app_id, r); });
  };
  const auto bump = [&](const store::Checkin& c, const std::string& bucket, char kind,
                        std::string_view name, std::string_view sub = {}) {
    if (name.empty())
      name = store::kOtherName;
    ++out.counts[CountKey{c.app_id, bucket, kind, std::string(name), std::string(sub)}];
  };
  std::int64_t hour_number = INT64_MIN;
  std::string hour, day;
  for (const store::Checkin& c : checkins) {
    const std::int64_t h = floor_div(c.time_ms, kHourMs);
    if (h != hour_number) {
      hour_number = h;
      hour = store::utc_hour(c.time_ms);
      day = hour.substr(0, 10);
    }
    const bool target = store::names_target_release(c.action);
    std::pair<std::string, std::string> key{c.app_id, c.device_id};
    const auto [at, first] = running.try_emplace(key);
    Running& run = at->second;
    if (first && recent != nullptr)
      run.last_check = recent->last_check(c.app_id, c.device_id);
    DeviceRow& dev = out.devices[std::move(key)];
    const std::uint64_t check = c.action == "updates" ? check_hash(c) : 0;
    const bool repeat = check != 0 && check == run.last_check;
    run.last_check = check;
    dev.last_check = check;
    if (timeline_events > 0 && !repeat)
      dev.timeline.push_back(&c);
    if (!target)
      run.version = c.version_name;
    if (dev.last == nullptr || c.time_ms >= dev.last->time_ms) {
      dev.last = &c;
      dev.version = target ? run.version : std::optional<std::string>(c.version_name);
    }
    if (!c.version_name.empty()) {
      const std::string_view release = store::analytics_release(c.version_name);
      if (target) {
        const bool named =
            release == "builtin" || !is_release || (!release.empty() && known(c.app_id, release));
        bump(c, hour, 't', named ? release : store::kOtherName, c.action);
      } else if (const std::string_view name = usage(c, c.version_name); !name.empty()) {
        bump(c, hour, 'r', name);
        if (c.action == "set")
          bump(c, hour, 'i', name);
      }
    }
    bump(c, hour, 'a', c.action);
    if (!c.platform.empty())
      bump(c, hour, 'p', store::analytics_platform(c.platform));
    if (day >= open) {
      const auto see = [&](std::string release) {
        SeenKey k{c.app_id, day, c.device_id, std::move(release)};
        if (recent == nullptr || !recent->seen(k))
          out.seen.insert(std::move(k));
      };
      see(std::string());
      // The release it runs (a target-naming event's is the one before it, when known).
      const std::string version = target ? run.version.value_or("") : c.version_name;
      if (!version.empty()) {
        if (const std::string_view name = usage(c, version); !name.empty())
          see(std::string(name));
      }
    }
  }
  return out;
}

namespace {

std::uint64_t hash_parts(std::initializer_list<std::string_view> parts) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const auto p : parts) {
    XXH3_64bits_update(st, p.data(), p.size());
    XXH3_64bits_update(st, "", 1);
  }
  const std::uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

std::uint64_t seen_hash(const SeenKey& k) {
  return hash_parts({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k)});
}

}  // namespace

bool RecentDevices::seen(const SeenKey& key) const {
  const std::uint64_t h = seen_hash(key);
  std::lock_guard lock(mutex_);
  return seen_.contains(h);
}

std::uint64_t RecentDevices::last_check(std::string_view app_id, std::string_view device_id) const {
  const std::uint64_t h = hash_parts({app_id, device_id});
  std::lock_guard lock(mutex_);
  const auto it = checks_.find(h);
  return it == checks_.end() ? 0 : it->second;
}

void RecentDevices::remember(const BatchRows& rows) {
  std::vector<std::uint64_t> seen;
  seen.reserve(rows.seen.size());
  for (const auto& k : rows.seen)
    seen.push_back(seen_hash(k));
  std::vector<std::pair<std::uint64_t, std::uint64_t>> checks;
  checks.reserve(rows.devices.size());
  for (const auto& [key, dev] : rows.devices)
    checks.emplace_back(hash_parts({key.first, key.second}), dev.last_check);
  std::lock_guard lock(mutex_);
  if (seen_.size() + seen.size() > max_)
    seen_.clear();
  if (checks_.size() + checks.size() > max_)
    checks_.clear();
  seen_.insert(seen.begin(), seen.end());
  for (const auto& [device, check] : checks)
    checks_[device] = check;
}

std::string NameCaps::map_key(std::string_view app_id, std::string_view bucket, char kind,
                              std::string_view release, bool with_release) {
  std::string k;
  k.reserve(app_id.size() + bucket.size() + release.size() + 5);
  k.append(app_id);
  k += '\0';
  k.append(bucket);
  k += '\0';
  k += kind;
  if (with_release) {
    k += '\0';
    k.append(release);
  }
  return k;
}

bool NameCaps::loaded(std::string_view app_id, std::string_view bucket) const {
  std::string k(app_id);
  k += '\0';
  k.append(bucket);
  return loaded_.contains(k);
}

void NameCaps::clear(std::string_view app_id, std::string_view bucket) {
  std::string k(app_id);
  k += '\0';
  k.append(bucket);
  k += '\0';
  // Every map of the bucket: keys app \0 bucket \0 kind ...
  auto it = maps_.lower_bound(k);
  while (it != maps_.end() && std::string_view(it->first).starts_with(k))
    it = maps_.erase(it);
  k.pop_back();
  loaded_.insert(std::move(k));
}

void NameCaps::add_stored(std::string_view app_id, std::string_view bucket, char kind,
                          std::string_view name, std::string_view sub) {
  if (kind == 'D' || name == store::kOtherName)
    return;
  maps_[map_key(app_id, bucket, kind)].emplace(name);
  if (kind == 't' && sub != store::kOtherName)
    maps_[map_key(app_id, bucket, kind, name, true)].emplace(sub);
}

bool NameCaps::is_new(const CountKey& key) const {
  if (key.kind == 'D')
    return false;
  const auto lacks = [&](const std::string& map, std::string_view name) {
    if (name == store::kOtherName)
      return false;
    const auto it = maps_.find(map);
    return it == maps_.end() || !it->second.contains(name);
  };
  if (lacks(map_key(key.app_id, key.bucket, key.kind), key.name))
    return true;
  return key.kind == 't' && lacks(map_key(key.app_id, key.bucket, 't', key.name, true), key.sub);
}

std::string_view NameCaps::admit_name(const std::string& map, std::string_view name) {
  if (name == store::kOtherName)
    return name;
  auto& names = maps_[map];
  if (names.contains(name))
    return name;
  if (names.size() >= store::kMaxAnalyticsNames)
    return store::kOtherName;
  names.emplace(name);
  return name;
}

CountKey NameCaps::admit(const CountKey& key) {
  if (key.kind == 'D')
    return key;
  CountKey out = key;
  out.name = std::string(admit_name(map_key(key.app_id, key.bucket, key.kind), key.name));
  if (key.kind == 't')
    out.sub =
        std::string(admit_name(map_key(key.app_id, key.bucket, 't', out.name, true), key.sub));
  return out;
}

std::map<CountKey, std::uint64_t> cap_counts(const std::map<CountKey, std::uint64_t>& counts,
                                             NameCaps& caps) {
  std::map<CountKey, std::uint64_t> out;
  for (const auto& [key, n] : counts)
    out[caps.admit(key)] += n;
  return out;
}

std::map<CountKey, std::uint64_t> day_counts(const std::vector<SeenKey>& inserted) {
  std::map<CountKey, std::uint64_t> out;
  for (const auto& [app, day, device, release] : inserted) {
    if (release.empty())
      ++out[CountKey{app, day, 'D', "", ""}];
    else
      ++out[CountKey{app, day, 'v', release, ""}];
  }
  return out;
}

void Columns::text(std::size_t col, std::string_view v) {
  std::string& out = cols_[col];
  separate(out);
  out += '"';
  for (const char ch : v) {
    if (ch == '"' || ch == '\\')
      out += '\\';
    out += ch;
  }
  out += '"';
}

void Columns::null(std::size_t col) {
  separate(cols_[col]);
  cols_[col] += "NULL";
}

void Columns::number(std::size_t col, std::int64_t v) {
  separate(cols_[col]);
  cols_[col] += std::to_string(v);
}

std::vector<std::optional<std::string>> Columns::params() {
  std::vector<std::optional<std::string>> out;
  out.reserve(cols_.size());
  for (auto& c : cols_)
    out.emplace_back(std::move(c) + "}");
  cols_.assign(cols_.size(), "{");
  return out;
}

}  // namespace edge::pg
