#include "edge/api/analytics.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "edge/api/auto_pause.hpp"
#include "edge/api/device_info.hpp"
#include "edge/http/http.hpp"

namespace edge::api {
namespace {

namespace json = boost::json;

constexpr std::int64_t kHourMs = 3'600'000;
constexpr std::int64_t kDayMs = 24 * kHourMs;
constexpr std::int64_t kMaxDays = 400;
constexpr std::int64_t kMaxHours = 93 * 24;

bool digits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

int number(std::string_view s) {
  int n = 0;
  std::from_chars(s.data(), s.data() + s.size(), n);
  return n;
}

std::int64_t floor_to(std::int64_t t, std::int64_t unit) {
  return (t >= 0 ? t / unit : (t + 1) / unit - 1) * unit;
}

json::object counts(const std::map<std::string, std::uint64_t>& m) {
  json::object o;
  for (const auto& [k, v] : m)
    o[k] = v;
  return o;
}

void add_into(std::map<std::string, std::uint64_t>& to,
              const std::map<std::string, std::uint64_t>& from) {
  for (const auto& [k, v] : from)
    to[k] += v;
}

void add_into(store::HourStats& to, const store::HourStats& from) {
  add_into(to.actions, from.actions);
  add_into(to.platforms, from.platforms);
  add_into(to.releases, from.releases);
  add_into(to.installs, from.installs);
  for (const auto& [r, by_action] : from.targets)
    add_into(to.targets[r], by_action);
}

// `m` cut to its store::kMaxAnalyticsNames largest names (ties: the first by name), the rest
// added to store::kOtherName: buckets summed over hours or days (each capped in the store)
// are capped again, so an answer stays bounded whatever names devices sent.
template <typename V>
void keep_top(std::map<std::string, V>& m, std::uint64_t (*weight)(const V&),
              void (*merge)(V&, const V&)) {
  const std::string other(store::kOtherName);
  if (m.size() <= store::kMaxAnalyticsNames + (m.contains(other) ? 1 : 0))
    return;
  std::vector<std::pair<std::uint64_t, const std::string*>> order;
  order.reserve(m.size());
  for (const auto& [k, v] : m) {
    if (k != other)
      order.emplace_back(weight(v), &k);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::set<std::string> drop;
  for (std::size_t i = store::kMaxAnalyticsNames; i < order.size(); ++i)
    drop.insert(*order[i].second);
  V folded{};
  for (const auto& k : drop) {
    merge(folded, m[k]);
    m.erase(k);
  }
  merge(m[other], folded);
}

void keep_top(std::map<std::string, std::uint64_t>& m) {
  keep_top<std::uint64_t>(
      m, [](const std::uint64_t& n) { return n; },
      [](std::uint64_t& to, const std::uint64_t& from) { to += from; });
}

void keep_top(store::HourStats& s) {
  keep_top(s.actions);
  keep_top(s.platforms);
  keep_top(s.releases);
  keep_top(s.installs);
  using Actions = std::map<std::string, std::uint64_t>;
  keep_top<Actions>(
      s.targets,
      [](const Actions& by_action) {
        std::uint64_t n = 0;
        for (const auto& [a, k] : by_action)
          n += k;
        return n;
      },
      [](Actions& to, const Actions& from) { add_into(to, from); });
  for (auto& [r, by_action] : s.targets)
    keep_top(by_action);
}

// A bucket's counters as JSON fields of `o`.
void put_counters(json::object& o, store::HourStats s) {
  keep_top(s);
  std::uint64_t total = 0;
  for (const auto& [a, n] : s.actions)
    total += n;
  o["checkins"] = total;
  o["actions"] = counts(s.actions);
  o["platforms"] = counts(s.platforms);
  o["releases"] = counts(s.releases);
  o["installs"] = counts(s.installs);
  json::object targets;
  for (const auto& [r, by_action] : s.targets)
    targets[r] = counts(by_action);
  o["targets"] = std::move(targets);
}

}  // namespace

std::optional<std::int64_t> parse_query_time(std::string_view t, bool end) {
  if (digits(t)) {
    std::uint64_t ms = 0;
    if (!http::parse_u64(t, ms) || ms > (std::uint64_t{1} << 50))
      return std::nullopt;
    return static_cast<std::int64_t>(ms);
  }
  // YYYY-MM-DD or YYYY-MM-DDTHH.
  if ((t.size() != 10 && t.size() != 13) || t[4] != '-' || t[7] != '-' || !digits(t.substr(0, 4)) ||
      !digits(t.substr(5, 2)) || !digits(t.substr(8, 2)))
    return std::nullopt;
  const bool hour = t.size() == 13;
  if (hour && (t[10] != 'T' || !digits(t.substr(11, 2))))
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = number(t.substr(0, 4)) - 1900;
  tm.tm_mon = number(t.substr(5, 2)) - 1;
  tm.tm_mday = number(t.substr(8, 2));
  tm.tm_hour = hour ? number(t.substr(11, 2)) : 0;
  if (tm.tm_year < 70 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_hour > 23)
    return std::nullopt;
  const int mday = tm.tm_mday;
  const std::time_t secs = timegm(&tm);
  if (tm.tm_mday != mday)  // 2026-02-30 rolled over into March
    return std::nullopt;
  const std::int64_t start = static_cast<std::int64_t>(secs) * 1000;
  return end ? start + (hour ? kHourMs : kDayMs) - 1 : start;
}

Response analytics_response(const store::CheckinQueries& checkins, const control::AppState& app,
                            std::string_view query, std::int64_t now_ms) {
  std::optional<std::int64_t> from, to;
  bool hourly = false;
  for (const auto& param : parse_query(query)) {
    const std::string& key = param.first;
    const std::string& value = param.second;
    if (key == "from" || key == "to") {
      const auto t = parse_query_time(value, key == "to");
      if (!t) {
        return error_response(400, "invalid_query_parameters",
                              key +
                                  ": expected milliseconds since 1970, YYYY-MM-DD or "
                                  "YYYY-MM-DDTHH (UTC), got '" +
                                  value.substr(0, 64) + "'");
      }
      (key == "from" ? from : to) = *t;
    } else if (key == "resolution") {
      if (value != "hour" && value != "day") {
        return error_response(
            400, "invalid_query_parameters",
            "resolution: expected hour or day, got '" + value.substr(0, 64) + "'");
      }
      hourly = value == "hour";
    } else {
      return error_response(
          400, "invalid_query_parameters",
          "unknown parameter '" + key.substr(0, 64) + "' (expected from, to, resolution)");
    }
  }
  const std::int64_t unit = hourly ? kHourMs : kDayMs;
  const std::int64_t end = to.value_or(now_ms);
  const std::int64_t start = from.value_or(floor_to(end, unit) - (hourly ? 23 : 29) * unit);
  if (start > end) {
    return error_response(
        400, "invalid_query_parameters",
        "from: after to (" + std::to_string(start) + " > " + std::to_string(end) + ")");
  }
  const std::int64_t buckets = (floor_to(end, unit) - floor_to(start, unit)) / unit + 1;
  if (buckets > (hourly ? kMaxHours : kMaxDays)) {
    return error_response(400, "invalid_query_parameters",
                          "from: the range holds " + std::to_string(buckets) + " " +
                              (hourly ? "hours" : "days") + ", at most " +
                              std::to_string(hourly ? kMaxHours : kMaxDays) + " per query");
  }
  auto a = checkins.analytics(app.app_id, start, end);
  if (!a)
    return store_read_error(a.error(), "reading stats");

  // The range's totals per release: installs, failures by action, downloads started.
  store::HourStats total;
  for (const auto& [h, s] : a->hours)
    add_into(total, s);
  keep_top(total);
  json::array releases;
  std::set<std::string> names;
  for (const auto& [r, n] : total.installs)
    names.insert(r);
  for (const auto& [r, by_action] : total.targets)
    names.insert(r);
  for (const auto& r : names) {
    std::uint64_t failures = 0, downloads = 0;
    std::map<std::string, std::uint64_t> failed;
    if (const auto it = total.targets.find(r); it != total.targets.end()) {
      for (const auto& [action, n] : it->second) {
        if (AutoPauser::is_failure(action)) {
          failures += n;
          failed[action] = n;
        } else if (AutoPauser::is_attempt(action)) {
          downloads += n;
        }
      }
    }
    const auto ins = total.installs.find(r);
    const std::uint64_t installs = ins == total.installs.end() ? 0 : ins->second;
    const std::uint64_t outcomes = installs + failures;
    releases.push_back(json::object{
        {"release", r},
        {"installs", installs},
        {"downloads_started", downloads},
        {"failures", failures},
        {"failures_by_action", counts(failed)},
        {"failure_rate_bps",
         outcomes == 0 ? json::value(nullptr) : json::value(failures * 10'000 / outcomes)}});
  }

  json::array days;
  json::array hours;
  if (hourly) {
    for (const auto& [h, s] : a->hours) {
      json::object o{{"hour", h}};
      put_counters(o, s);
      hours.push_back(std::move(o));
    }
    for (const auto& [d, dev] : a->days) {
      days.push_back(json::object{
          {"day", d}, {"devices", dev.devices}, {"devices_by_release", counts(dev.by_release)}});
    }
  } else {
    std::map<std::string, store::HourStats> by_day;
    for (const auto& [h, s] : a->hours)
      add_into(by_day[h.substr(0, 10)], s);
    for (const auto& [d, dev] : a->days)
      by_day[d];  // a day with devices but no counters in range still shows
    for (const auto& [d, s] : by_day) {
      const auto dev = a->days.find(d);
      json::object o{{"day", d},
                     {"devices", dev == a->days.end() ? 0 : dev->second.devices},
                     {"devices_by_release",
                      dev == a->days.end() ? json::object() : counts(dev->second.by_release)}};
      put_counters(o, s);
      days.push_back(std::move(o));
    }
  }

  // Rollout progress: per day, devices on the rollout's release and on the channel's.
  json::array rollouts;
  for (const auto& [name, ch] : app.channels) {
    if (!ch.rollout || !ch.rollout->enabled || ch.rollout->release.empty())
      continue;
    const auto& r = *ch.rollout;
    json::array series;
    for (const auto& day : a->days) {
      // Named, not a structured binding: clang 14 cannot capture those.
      const store::DayDevices& dev = day.second;
      const std::string& d = day.first;
      const auto on = [&dev](const std::string& release) -> std::uint64_t {
        const auto it = dev.by_release.find(release);
        return it == dev.by_release.end() ? 0 : it->second;
      };
      series.push_back(json::object{{"day", d},
                                    {"rollout_release_devices", on(r.release)},
                                    {"channel_release_devices", on(ch.release)}});
    }
    rollouts.push_back(json::object{{"channel", name},
                                    {"release", r.release},
                                    {"channel_release", ch.release},
                                    {"percent", r.bps / 100.0},
                                    {"paused", r.paused},
                                    {"pause_reason", r.pause_reason},
                                    {"days", std::move(series)}});
  }

  json::object out{{"app_id", app.app_id},
                   {"resolution", hourly ? "hour" : "day"},
                   {"from_ms", start},
                   {"to_ms", end},
                   {"days", std::move(days)},
                   {"releases", std::move(releases)},
                   {"rollouts", std::move(rollouts)}};
  if (hourly)
    out["hours"] = std::move(hours);
  return make_json_response(200, json::serialize(out));
}

}  // namespace edge::api
