#pragma once

// The rows one check-in batch writes to PostgreSQL, aggregated in memory before any statement
// (pure: no libpq here, so the rules are unit-tested without a server). The counters follow
// HourStats' rules (edge/store/checkin_backend.hpp): the same names, the same caps and the
// same folding into "other".

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "edge/store/checkin_backend.hpp"

namespace edge::pg {

/// A counter of be_checkin_counts: `bucket` is an hour "YYYY-MM-DDTHH" for the kinds 'a'
/// (actions), 'p' (platforms), 'r' (running releases), 'i' (installs), 't' (targets: `name`
/// the release, `sub` the action); a day "YYYY-MM-DD" for 'D' (distinct devices, `name`
/// empty) and 'v' (distinct devices by release).
struct CountKey {
  std::string app_id;
  std::string bucket;
  char kind = 0;
  std::string name;
  std::string sub;
  auto operator<=>(const CountKey&) const = default;
};

/// A device's row after the batch: its newest event by time (the latest to arrive among
/// equal times). `version`: the version it runs then, nullopt when the newest event names a
/// target and the batch holds no earlier running version (the stored one is kept).
struct DeviceRow {
  const store::Checkin* last = nullptr;
  std::optional<std::string> version;
  /// The device's events that go to its timeline, in arrival order (the last
  /// timeline_events of them are kept).
  std::vector<const store::Checkin*> timeline;
  /// The hash of its last event in arrival order if that is an update check, else 0.
  std::uint64_t last_check = 0;
};

/// A (app, day, device, release) of a day still open: the device was seen that day (release
/// empty) or ran that release that day.
using SeenKey = std::tuple<std::string, std::string, std::string, std::string>;

/// What a batch writes, by table. Points into the batch's check-ins: they must outlive it.
struct BatchRows {
  std::map<CountKey, std::uint64_t> counts;  ///< hourly counters; names not yet capped
  std::map<std::pair<std::string, std::string>, DeviceRow> devices;  ///< by (app, device)
  std::set<SeenKey> seen;
};

/// Whether a release name is one of the app's (CheckinOptions::is_release); empty: all are.
using IsRelease = std::function<bool(std::string_view app_id, std::string_view release)>;

/// Days a day stays open for distinct-device counting: events dated in the open days
/// (today and the kOpenDays - 1 before, UTC) count their device once per day and release;
/// older days keep their counts only (their device sets are deleted by the retention sweep).
inline constexpr int kOpenDays = 3;

/// The first open day at `now_ms`, "YYYY-MM-DD".
std::string first_open_day(std::int64_t now_ms);

class RecentDevices;

/// Aggregates a batch (sanitized check-ins, in arrival order). `timeline_events` 0: no
/// timelines. An update check that repeats the device's previous event (the same fields but
/// the time: in the batch, else as `recent` last saw it) adds nothing to its timeline.
/// Devices `recent` knows were seen that day (and release) are left out of `seen`.
BatchRows aggregate(const std::vector<store::Checkin>& checkins, std::int64_t now_ms,
                    std::uint32_t timeline_events, const IsRelease& is_release,
                    const RecentDevices* recent = nullptr);

/// What an origin committed lately, to skip rows PostgreSQL already holds: the (app, day,
/// device, release) seen rows of its committed batches, and each device's last update check
/// (see aggregate). 64-bit hashes of the keys; past `max_entries` of either, it forgets all
/// of it (a cost, never a wrong count: a forgotten row is inserted again and found there).
/// Thread-safe.
class RecentDevices {
 public:
  explicit RecentDevices(std::size_t max_entries = 2'000'000) : max_(max_entries) {}
  bool seen(const SeenKey& key) const;
  /// The device's last update check's hash as last committed here, 0 if none or unknown.
  std::uint64_t last_check(std::string_view app_id, std::string_view device_id) const;
  /// After a batch's COMMIT: its seen rows now exist, and its devices' last events.
  void remember(const BatchRows& rows);

 private:
  const std::size_t max_;
  mutable std::mutex mutex_;
  std::unordered_set<std::uint64_t> seen_;
  std::unordered_map<std::uint64_t, std::uint64_t> checks_;
};

/// The names each counter map holds, to cap a map at kMaxAnalyticsNames names (a new name
/// beyond counts under kOtherName). A map is (app, bucket, kind) and, for targets, (app,
/// bucket, 't', release) for a release's actions. Loaded per (app, bucket) from the stored
/// counters; names a batch adds are added as it admits them.
class NameCaps {
 public:
  /// Whether (app, bucket)'s names are loaded.
  bool loaded(std::string_view app_id, std::string_view bucket) const;
  /// Forgets what is loaded of (app, bucket), then records one stored counter of it.
  void clear(std::string_view app_id, std::string_view bucket);
  void add_stored(std::string_view app_id, std::string_view bucket, char kind,
                  std::string_view name, std::string_view sub);
  /// Whether counting `key` would add a name to a map (a reason to reload its bucket).
  bool is_new(const CountKey& key) const;
  /// The key `key` counts under: itself while its maps hold its names or have room for
  /// them (then they are added), else with kOtherName in place of the name that does not fit.
  CountKey admit(const CountKey& key);
  /// Forgets everything (a bound on memory: called when it holds many buckets).
  void reset() {
    maps_.clear();
    loaded_.clear();
  }
  std::size_t buckets() const { return loaded_.size(); }

 private:
  static std::string map_key(std::string_view app_id, std::string_view bucket, char kind,
                             std::string_view release = {}, bool with_release = false);
  std::string_view admit_name(const std::string& map, std::string_view name);
  std::map<std::string, std::set<std::string, std::less<>>, std::less<>> maps_;
  std::set<std::string, std::less<>> loaded_;  ///< app \0 bucket
};

/// Caps the names of `counts` with `caps` (adds the admitted ones): the counters to write.
std::map<CountKey, std::uint64_t> cap_counts(const std::map<CountKey, std::uint64_t>& counts,
                                             NameCaps& caps);

/// The day counters of the (app, day, device, release) rows a batch newly inserted: 'D' per
/// device, 'v' per release (names not yet capped).
std::map<CountKey, std::uint64_t> day_counts(const std::vector<SeenKey>& inserted);

/// Rows passed as one PostgreSQL array literal per column (for `unnest($1::text[], ...)`):
/// a statement's text stays short and the same whatever the number of rows.
class Columns {
 public:
  explicit Columns(std::size_t n) : cols_(n, "{") {}
  void text(std::size_t col, std::string_view v);  ///< a quoted element (NUL-free text)
  void null(std::size_t col);
  void number(std::size_t col, std::int64_t v);
  /// The literals, "{...}" each; the columns must have had as many elements each.
  std::vector<std::optional<std::string>> params();

 private:
  void separate(std::string& col) {
    if (col.size() > 1)
      col += ',';
  }
  std::vector<std::string> cols_;
};

}  // namespace edge::pg
