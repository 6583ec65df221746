#include "edge/pg/checkins.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"
#include "edge/pg/schema.hpp"

#include <spdlog/spdlog.h>

namespace edge::pg {
namespace {

constexpr std::int64_t kDayMs = 86'400'000;
/// Attempts of one batch's transaction: a deadlock or serialization failure is retried, a
/// connection lost midway once (the batch is idempotent by its key).
constexpr int kAttempts = 3;
constexpr std::chrono::milliseconds kRetryFirst{100};
constexpr std::chrono::milliseconds kRetryMax{2000};

std::string random_hex() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

// The fields a device row and a timeline entry share, after their keys and time.
constexpr std::string_view kEventColumns =
    "platform, version_name, version_build, action, decision, plugin_version, custom_id, "
    "default_channel";

void add_event(Columns& cols, std::size_t first, const store::Checkin& c,
               std::optional<std::string_view> version) {
  cols.number(first, c.time_ms);
  cols.text(first + 1, c.platform);
  if (version)
    cols.text(first + 2, *version);
  else
    cols.null(first + 2);
  cols.text(first + 3, c.version_build);
  cols.text(first + 4, c.action);
  cols.text(first + 5, c.decision);
  cols.text(first + 6, c.plugin_version);
  cols.text(first + 7, c.custom_id);
  cols.text(first + 8, c.default_channel);
}

// A row of `rows` whose columns from `col` are time_ms then kEventColumns.
store::Checkin event_of(const Rows& rows, int row, int col, std::string app_id,
                        std::string device_id) {
  store::Checkin c;
  c.app_id = std::move(app_id);
  c.device_id = std::move(device_id);
  c.time_ms = rows.i64(row, col);
  c.platform = rows.text(row, col + 1);
  c.version_name = rows.text(row, col + 2);
  c.version_build = rows.text(row, col + 3);
  c.action = rows.text(row, col + 4);
  c.decision = rows.text(row, col + 5);
  c.plugin_version = rows.text(row, col + 6);
  c.custom_id = rows.text(row, col + 7);
  c.default_channel = rows.text(row, col + 8);
  return c;
}

}  // namespace

struct PgCheckins::Writer {
  explicit Writer(const std::string& url) : conn(url, "bundle-edge-checkins") {}
  Connection conn;
  NameCaps caps;
  /// The sender generation of this writer's own batches (new at every start).
  std::string generation = random_hex();
  std::uint64_t next_seq = 0;
  /// An own batch not yet committed: retried with the same key and check-ins.
  std::vector<store::Checkin> retry;
  std::vector<Durable> retry_durable;
  std::uint64_t retry_seq = 0;
  std::chrono::steady_clock::time_point retry_at{};
  std::chrono::milliseconds backoff = kRetryFirst;
  bool down = false;  ///< the last attempt found PostgreSQL down (guarded by mutex_)
  std::thread thread;
};

PgCheckins::PgCheckins(std::string url, PgCheckinsOptions options)
    : url_(std::move(url)),
      options_(std::move(options)),
      read_conn_(url_, "bundle-edge-checkins-read"),
      sweep_conn_(url_, "bundle-edge-checkins-sweep") {
  const std::size_t n = std::max<std::size_t>(1, options_.writers);
  for (std::size_t i = 0; i < n; ++i)
    writers_.push_back(std::make_unique<Writer>(url_));
  for (auto& w : writers_)
    w->thread = named_thread("checkin-pg", [this, w = w.get()] { run(*w); });
}

PgCheckins::~PgCheckins() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& w : writers_)
    w->thread.join();
}

void PgCheckins::record(store::Checkin checkin, Durable durable) {
  store::sanitize(checkin);
  std::optional<Item> dropped;
  const bool urgent = static_cast<bool>(durable);
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (own_.size() >= options_.max_pending) {
      dropped = std::move(own_.front());
      own_.pop_front();
    }
    own_.push_back({std::move(checkin), std::move(durable)});
    ++enqueued_;
    urgent_ = urgent_ || urgent;
    wake = urgent || own_.size() == 1 || own_.size() >= kOwnBatch;
  }
  if (dropped) {
    ++dropped_;
    if (dropped->durable)
      dropped->durable(false);
    settle(1);
  }
  if (wake)
    cv_.notify_one();
}

void PgCheckins::record_batch(std::string node, std::string generation, std::uint64_t batch_seq,
                              std::vector<store::Checkin> checkins, BatchDone done) {
  for (auto& c : checkins)
    store::sanitize(c);
  {
    std::lock_guard lock(mutex_);
    batches_.push_back(
        {std::move(node), std::move(generation), batch_seq, std::move(checkins), std::move(done)});
    ++enqueued_;
  }
  cv_.notify_one();
}

void PgCheckins::settle(std::uint64_t n) {
  {
    std::lock_guard lock(mutex_);
    settled_ += n;
  }
  settled_cv_.notify_all();
}

void PgCheckins::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = enqueued_;
  urgent_ = true;
  cv_.notify_all();
  settled_cv_.wait(lock, [&] { return settled_ >= target || down_writers_ > 0; });
}

void PgCheckins::run(Writer& w) {
  while (true) {
    std::optional<Batch> batch;
    std::vector<Item> own;
    bool retry_now = false;
    {
      std::unique_lock lock(mutex_);
      const auto ready = [&] {
        return stop_ || !batches_.empty() || (w.retry.empty() && !own_.empty()) ||
               (!w.retry.empty() && std::chrono::steady_clock::now() >= w.retry_at);
      };
      if (w.retry.empty())
        cv_.wait(lock, ready);
      else
        cv_.wait_until(lock, w.retry_at, ready);
      if (!batches_.empty()) {
        batch = std::move(batches_.front());
        batches_.pop_front();
      } else if (w.retry.empty() && !own_.empty()) {
        // Nobody waits for these (the devices were answered): let a batch gather.
        cv_.wait_for(lock, kOwnWait, [&] {
          return stop_ || urgent_ || own_.size() >= kOwnBatch || !batches_.empty();
        });
        const std::size_t n = std::min(own_.size(), kOwnBatch);
        own.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
          own.push_back(std::move(own_.front()));
          own_.pop_front();
        }
        if (own_.empty())
          urgent_ = false;
        retrying_ += n;
      } else if (!w.retry.empty()) {
        retry_now = stop_ || std::chrono::steady_clock::now() >= w.retry_at;
      } else if (stop_) {
        return;
      }
    }
    const auto mark_down = [&](bool down) {
      std::lock_guard lock(mutex_);
      if (down != w.down) {
        w.down = down;
        down ? ++down_writers_ : --down_writers_;
      }
      if (down)
        settled_cv_.notify_all();
    };
    if (batch) {
      bool duplicate = false;
      const auto r =
          apply(w, batch->node, batch->generation, batch->batch_seq, batch->checkins, &duplicate);
      mark_down(!r && r.error() == Errc::kUnavailable);
      if (r && !duplicate && observer_) {
        for (const auto& c : batch->checkins)
          observer_(c);
      }
      if (batch->done)
        batch->done(static_cast<bool>(r), duplicate);
      settle(1);
      continue;
    }
    if (!own.empty()) {
      w.retry.clear();
      w.retry_durable.clear();
      for (auto& item : own) {
        w.retry.push_back(std::move(item.checkin));
        w.retry_durable.push_back(std::move(item.durable));
      }
      w.retry_seq = ++w.next_seq;
      retry_now = true;
    }
    if (!retry_now || w.retry.empty())
      continue;
    bool duplicate = false;
    const auto r = apply(w, options_.node_id, w.generation, w.retry_seq, w.retry, &duplicate);
    mark_down(!r && r.error() == Errc::kUnavailable);
    const std::size_t n = w.retry.size();
    if (r) {
      // A duplicate here is this batch's own earlier attempt, committed without its answer.
      if (observer_ && !duplicate) {
        for (const auto& c : w.retry)
          observer_(c);
      }
      for (auto& d : w.retry_durable) {
        if (d)
          d(true);
      }
      w.retry.clear();
      w.retry_durable.clear();
      w.backoff = kRetryFirst;
      retrying_ -= n;
      settle(n);
      continue;
    }
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      stopping = stop_;
    }
    // Those told of the outcome are answered now and leave the batch; the others wait for
    // the next attempt, with the same key (or are dropped at shutdown).
    std::vector<store::Checkin> keep;
    std::vector<Durable> keep_durable;
    std::size_t answered = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (w.retry_durable[i] || stopping) {
        if (w.retry_durable[i])
          w.retry_durable[i](false);
        ++answered;
      } else {
        keep.push_back(std::move(w.retry[i]));
        keep_durable.emplace_back();
      }
    }
    if (stopping) {
      // One attempt at shutdown: what still waits is dropped with it, not tried batch by
      // batch against a database that does not answer.
      std::deque<Item> rest;
      {
        std::lock_guard lock(mutex_);
        rest.swap(own_);
      }
      for (auto& item : rest) {
        if (item.durable)
          item.durable(false);
      }
      dropped_ += rest.size();
      answered += rest.size();
      dropped_ += n;
      spdlog::error("check-ins: {} of this origin's check-ins not stored at shutdown: {}",
                    n + rest.size(), w.conn.last_error());
    }
    w.retry = std::move(keep);
    w.retry_durable = std::move(keep_durable);
    retrying_ -= answered;
    w.retry_at = std::chrono::steady_clock::now() + w.backoff;
    w.backoff = std::min(w.backoff * 2, kRetryMax);
    if (answered > 0)
      settle(answered);
  }
}

Result<void> PgCheckins::apply(Writer& w, const std::string& node, const std::string& generation,
                               std::uint64_t batch_seq, const std::vector<store::Checkin>& checkins,
                               bool* duplicate) {
  if (!schema_ready_.load()) {
    std::lock_guard lock(schema_mutex_);
    if (!schema_ready_.load()) {
      std::string why;
      if (auto m = migrate_schema(w.conn, &why); !m) {
        ++failed_;
        spdlog::warn("check-ins: the state database's schema is not ready: {}", why);
        return m.error();
      }
      schema_ready_ = true;
    }
  }
  Result<void> r = Errc::kUnavailable;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const bool was_open = w.conn.open();
    *duplicate = false;
    r = apply_once(w, node, generation, batch_seq, checkins, duplicate);
    if (r)
      break;
    ++failed_;
    w.conn.rollback();
    // What this writer knows of the counters' names may hold some of the rolled-back
    // transaction's: loaded afresh.
    w.caps.reset();
    const bool again =
        r.error() == Errc::kConflict || (r.error() == Errc::kUnavailable && was_open);
    spdlog::warn("check-ins: batch {}:{}:{} ({} check-ins) not committed{}: {}", node, generation,
                 batch_seq, checkins.size(), again ? ", trying again" : "", w.conn.last_error());
    if (!again)
      break;
  }
  if (r) {
    ++(*duplicate ? duplicate_ : applied_);
    if (!*duplicate)
      applied_checkins_ += checkins.size();
  }
  return r;
}

Result<void> PgCheckins::apply_once(Writer& w, const std::string& node,
                                    const std::string& generation, std::uint64_t batch_seq,
                                    const std::vector<store::Checkin>& checkins, bool* duplicate) {
  Connection& c = w.conn;
  const std::int64_t now = wall_clock_ms();
  // Aggregated before BEGIN: the transaction holds its locks only for the statements.
  const BatchRows rows =
      aggregate(checkins, now, options_.timeline_events, options_.is_release, &recent_);
  if (auto b = c.begin(); !b)
    return b.error();
  // The sender's high-water mark: no row back means this batch (or a later one) of the
  // sender was applied already, here or on another origin; nothing else is written.
  auto mark = c.exec(
      "INSERT INTO be_checkin_senders AS s (node, generation, batch_seq, updated_ms) "
      "VALUES ($1, $2, $3, $4) ON CONFLICT (node, generation) DO UPDATE SET batch_seq = "
      "EXCLUDED.batch_seq, updated_ms = EXCLUDED.updated_ms WHERE s.batch_seq < "
      "EXCLUDED.batch_seq RETURNING batch_seq",
      {node, generation, std::to_string(batch_seq), std::to_string(now)});
  if (!mark)
    return mark.error();
  if (mark->size() == 0) {
    *duplicate = true;
    c.rollback();
    return {};
  }
  // Every statement below takes its rows as one array per column (unnest): a short text
  // that PostgreSQL parses and plans in no time whatever the rows. Rows go in key order, so
  // concurrent transactions lock shared rows in the same order.
  //
  // Device rows: the newest event by time wins (a late event leaves the row), and each
  // device's timeline count moves on by its events of the batch.
  const std::uint32_t ring = options_.timeline_events;
  std::map<std::pair<std::string_view, std::string_view>, std::int64_t> timeline_n;
  if (!rows.devices.empty()) {
    Columns cols(12);
    for (const auto& [key, dev] : rows.devices) {
      cols.text(0, key.first);
      cols.text(1, key.second);
      add_event(cols, 2, *dev.last,
                dev.version ? std::optional<std::string_view>(*dev.version) : std::nullopt);
      cols.number(11, ring > 0 ? static_cast<std::int64_t>(dev.timeline.size()) : 0);
    }
    static const std::string sql = [] {
      std::string set =
          "timeline_n = d.timeline_n + EXCLUDED.timeline_n, time_ms = GREATEST(d.time_ms, "
          "EXCLUDED.time_ms)";
      for (const std::string_view col : {"platform", "version_build", "action", "decision",
                                         "plugin_version", "custom_id", "default_channel"}) {
        set += ", " + std::string(col) +
               " = CASE WHEN EXCLUDED.time_ms >= d.time_ms THEN EXCLUDED." + std::string(col) +
               " ELSE d." + std::string(col) + " END";
      }
      set +=
          ", version_name = CASE WHEN EXCLUDED.time_ms >= d.time_ms THEN "
          "COALESCE(EXCLUDED.version_name, d.version_name) ELSE d.version_name END";
      return "INSERT INTO be_checkin_devices AS d (app_id, device_id, time_ms, " +
             std::string(kEventColumns) + ", timeline_n) SELECT * FROM unnest($1::text[], " +
             "$2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], " +
             "$8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[]) ON CONFLICT " +
             "(app_id, device_id) DO UPDATE SET " + set +
             " RETURNING app_id, device_id, timeline_n";
    }();
    auto r = c.exec(sql, cols.params());
    if (!r)
      return r.error();
    for (int k = 0; k < r->size(); ++k) {
      const auto found =
          rows.devices.find({std::string(r->text(k, 0)), std::string(r->text(k, 1))});
      if (found != rows.devices.end())
        timeline_n[{found->first.first, found->first.second}] = r->i64(k, 2);
    }
  }
  // Timelines: a ring of `ring` slots per device; event number k (from 1) goes to slot
  // k % ring, so only the last `ring` events are kept.
  if (ring > 0) {
    Columns cols(13);
    std::size_t n = 0;
    for (const auto& [key, dev] : rows.devices) {
      const auto found = timeline_n.find({key.first, key.second});
      if (found == timeline_n.end() || dev.timeline.empty())
        continue;
      const auto m = static_cast<std::int64_t>(dev.timeline.size());
      for (std::int64_t k = std::max<std::int64_t>(0, m - ring); k < m; ++k) {
        const std::int64_t pos = found->second - m + k + 1;
        const store::Checkin& e = *dev.timeline[static_cast<std::size_t>(k)];
        cols.text(0, key.first);
        cols.text(1, key.second);
        cols.number(2, pos % ring);
        cols.number(3, pos);
        add_event(cols, 4, e, e.version_name);
        ++n;
      }
    }
    if (n > 0) {
      static const std::string sql =
          "INSERT INTO be_checkin_timeline (app_id, device_id, slot, pos, time_ms, " +
          std::string(kEventColumns) +
          ") SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], "
          "$5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], "
          "$11::text[], $12::text[], $13::text[]) ON CONFLICT (app_id, device_id, slot) DO "
          "UPDATE SET pos = EXCLUDED.pos, time_ms = EXCLUDED.time_ms, platform = "
          "EXCLUDED.platform, version_name = EXCLUDED.version_name, version_build = "
          "EXCLUDED.version_build, action = EXCLUDED.action, decision = EXCLUDED.decision, "
          "plugin_version = EXCLUDED.plugin_version, custom_id = EXCLUDED.custom_id, "
          "default_channel = EXCLUDED.default_channel";
      if (auto r = c.exec(sql, cols.params()); !r)
        return r.error();
    }
  }
  // The devices (and releases) seen each open day: only those not seen before count.
  std::vector<SeenKey> inserted;
  if (!rows.seen.empty()) {
    Columns cols(4);
    for (const auto& [app, day, device, release] : rows.seen) {
      cols.text(0, app);
      cols.text(1, day);
      cols.text(2, device);
      cols.text(3, release);
    }
    auto r = c.exec(
        "INSERT INTO be_checkin_day_seen (app_id, day, device_id, release) SELECT * FROM "
        "unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING "
        "RETURNING app_id, day, device_id, release",
        cols.params());
    if (!r)
      return r.error();
    inserted.reserve(static_cast<std::size_t>(r->size()));
    for (int k = 0; k < r->size(); ++k) {
      inserted.emplace_back(std::string(r->text(k, 0)), std::string(r->text(k, 1)),
                            std::string(r->text(k, 2)), std::string(r->text(k, 3)));
    }
  }
  // The counters, last: the rows every transaction of the hour shares are locked for the
  // shortest time. Names capped per map as the embedded store caps them, from the names
  // stored (a bucket is read again when the batch would add a name to it).
  std::map<CountKey, std::uint64_t> raw = rows.counts;
  for (auto& [key, n] : day_counts(inserted))
    raw[key] += n;
  {
    std::set<std::pair<std::string_view, std::string_view>> reload;
    for (const auto& [key, n] : raw) {
      if (!w.caps.loaded(key.app_id, key.bucket) || w.caps.is_new(key))
        reload.emplace(key.app_id, key.bucket);
    }
    if (w.caps.buckets() + reload.size() > 4096)
      w.caps.reset();
    for (const auto& [app, bucket] : reload) {
      auto r =
          c.exec("SELECT kind, name, sub FROM be_checkin_counts WHERE app_id = $1 AND bucket = $2",
                 {std::string(app), std::string(bucket)});
      if (!r)
        return r.error();
      w.caps.clear(app, bucket);
      for (int k = 0; k < r->size(); ++k) {
        const std::string_view kind = r->text(k, 0);
        w.caps.add_stored(app, bucket, kind.empty() ? '\0' : kind[0], r->text(k, 1), r->text(k, 2));
      }
    }
  }
  const auto counts = cap_counts(raw, w.caps);
  if (!counts.empty()) {
    Columns cols(6);
    for (const auto& [key, count] : counts) {
      cols.text(0, key.app_id);
      cols.text(1, key.bucket);
      cols.text(2, std::string_view(&key.kind, 1));
      cols.text(3, key.name);
      cols.text(4, key.sub);
      cols.number(5, static_cast<std::int64_t>(count));
    }
    auto r = c.exec(
        "INSERT INTO be_checkin_counts AS t (app_id, bucket, kind, name, sub, count) SELECT * "
        "FROM unnest($1::text[], $2::text[], $3::\"char\"[], $4::text[], $5::text[], "
        "$6::bigint[]) ON CONFLICT (app_id, bucket, kind, name, sub) DO UPDATE SET count = "
        "t.count + EXCLUDED.count",
        cols.params());
    if (!r)
      return r.error();
  }
  // The events auto-pause counts, for the origin that evaluates it for the tier: in this
  // transaction, so each is there exactly once with its batch.
  if (options_.pause_event) {
    Columns cols(6);
    std::size_t n = 0;
    for (const auto& e : checkins) {
      if (!options_.pause_event(e))
        continue;
      cols.number(0, e.time_ms);
      cols.text(1, e.app_id);
      cols.text(2, e.device_id);
      cols.text(3, e.version_name);
      cols.text(4, e.action);
      cols.text(5, e.decision);
      ++n;
    }
    if (n > 0) {
      auto r = c.exec(
          "INSERT INTO be_pause_events (time_ms, app_id, device_id, version_name, action, "
          "decision) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], "
          "$5::text[], $6::text[])",
          cols.params());
      if (!r)
        return r.error();
    }
  }
  // A lost connection here leaves the outcome unknown: the batch is retried with its key,
  // and applied once whichever way it went.
  if (auto r = c.commit(); !r)
    return r.error();
  recent_.remember(rows);
  return {};
}

Result<Rows> PgCheckins::read(std::string_view sql, const std::vector<Param>& params) const {
  std::lock_guard lock(read_mutex_);
  const bool was_open = read_conn_.open();
  auto rows = read_conn_.exec(sql, params);
  // A connection PostgreSQL closed meanwhile (a restart) is found broken at its first use.
  if (!rows && rows.error() == Errc::kUnavailable && was_open)
    rows = read_conn_.exec(sql, params);
  return rows;
}

Result<store::Analytics> PgCheckins::analytics(const std::string& app_id, std::int64_t from_ms,
                                               std::int64_t to_ms) const {
  const std::string first_hour = store::utc_hour(from_ms);
  const std::string last_hour = store::utc_hour(to_ms);
  Result<Rows> rows = read(
      "SELECT bucket, kind, name, sub, count FROM be_checkin_counts WHERE app_id = $1 AND "
      "bucket >= $2 AND bucket < $3",
      {app_id, first_hour.substr(0, 10), last_hour.substr(0, 10) + "U"});
  if (!rows)
    return rows.error();
  store::Analytics out;
  for (int k = 0; k < rows->size(); ++k) {
    const std::string bucket(rows->text(k, 0));
    const std::string_view kind = rows->text(k, 1);
    const std::string_view name = rows->text(k, 2);
    const std::string_view sub = rows->text(k, 3);
    const auto n = static_cast<std::uint64_t>(rows->i64(k, 4));
    if (kind.size() != 1)
      continue;
    if (bucket.size() == 10) {
      if (kind == "D")
        out.days[bucket].devices += n;
      else if (kind == "v")
        store::add_capped(out.days[bucket].by_release, store::analytics_release(name), n);
      continue;
    }
    if (bucket < first_hour || bucket > last_hour)
      continue;
    store::HourStats& s = out.hours[bucket];
    switch (kind[0]) {
      case 'a': store::add_capped(s.actions, name, n); break;
      case 'p': store::add_capped(s.platforms, store::analytics_platform(name), n); break;
      case 'r': store::add_capped(s.releases, store::analytics_release(name), n); break;
      case 'i': store::add_capped(s.installs, store::analytics_release(name), n); break;
      case 't': {
        std::string release(store::analytics_release(name));
        if (!s.targets.contains(release) &&
            s.targets.size() - (s.targets.contains(std::string(store::kOtherName)) ? 1 : 0) >=
                store::kMaxAnalyticsNames)
          release = store::kOtherName;
        store::add_capped(s.targets[release], sub, n);
        break;
      }
      default: break;
    }
  }
  return out;
}

Result<std::vector<store::TimelineEntry>> PgCheckins::timeline(const std::string& app_id,
                                                               const std::string& device_id,
                                                               std::size_t limit) const {
  std::vector<store::TimelineEntry> out;
  if (options_.timeline_events == 0 || limit == 0)
    return out;
  const std::size_t n = std::min<std::size_t>(limit, options_.timeline_events);
  // Within the retention, as the embedded store's timelines.
  const std::int64_t since = options_.retention_days == 0
                                 ? INT64_MIN
                                 : wall_clock_ms() - std::int64_t{options_.retention_days} * kDayMs;
  Result<Rows> rows = read("SELECT time_ms, " + std::string(kEventColumns) +
                               " FROM be_checkin_timeline WHERE app_id = $1 AND device_id = $2 "
                               "AND time_ms >= $4 ORDER BY time_ms DESC, pos DESC LIMIT $3",
                           {app_id, device_id, std::to_string(n), std::to_string(since)});
  if (!rows)
    return rows.error();
  for (int k = 0; k < rows->size(); ++k)
    out.push_back(event_of(*rows, k, 0, app_id, device_id));
  return out;
}

Result<store::DevicePage> PgCheckins::devices(
    const std::string& app_id, const std::string& after, std::size_t limit, std::size_t max_scan,
    const std::function<bool(const store::Checkin&)>& keep) const {
  store::DevicePage page;
  std::size_t scanned = 0;
  std::string cursor = after;
  std::string last_id;
  while (true) {
    // One row more than the scan may read: whether another follows decides the cursor.
    const std::size_t chunk =
        std::min<std::size_t>(1000, max_scan == SIZE_MAX ? 1000 : max_scan - scanned + 1);
    Result<Rows> rows = read("SELECT device_id, time_ms, " + std::string(kEventColumns) +
                                 " FROM be_checkin_devices WHERE app_id = $1 AND device_id > $2 "
                                 "ORDER BY device_id LIMIT $3",
                             {app_id, cursor, std::to_string(chunk)});
    if (!rows)
      return rows.error();
    for (int k = 0; k < rows->size(); ++k) {
      if (page.devices.size() == limit || scanned == max_scan) {
        page.next = last_id;  // more may follow
        return page;
      }
      ++scanned;
      last_id = std::string(rows->text(k, 0));
      store::Checkin c = event_of(*rows, k, 1, app_id, last_id);
      if (keep(c))
        page.devices.push_back(std::move(c));
    }
    if (static_cast<std::size_t>(rows->size()) < chunk)
      return page;
    cursor = last_id;
  }
}

Result<std::optional<store::Checkin>> PgCheckins::last(const std::string& app_id,
                                                       const std::string& device_id) const {
  Result<Rows> rows = read("SELECT time_ms, " + std::string(kEventColumns) +
                               " FROM be_checkin_devices WHERE app_id = $1 AND device_id = $2",
                           {app_id, device_id});
  if (!rows)
    return rows.error();
  if (rows->size() == 0)
    return std::optional<store::Checkin>();
  return std::optional<store::Checkin>(event_of(*rows, 0, 0, app_id, device_id));
}

Result<std::map<std::string, std::uint64_t>> PgCheckins::native_builds(
    const std::string& app_id, std::size_t max_devices) const {
  Result<Rows> rows = read(
      "SELECT version_build, count(*) FROM (SELECT version_build FROM be_checkin_devices "
      "WHERE app_id = $1 ORDER BY device_id LIMIT $2) s WHERE version_build <> '' GROUP BY "
      "version_build",
      {app_id, std::to_string(std::min<std::size_t>(max_devices, INT64_MAX))});
  if (!rows)
    return rows.error();
  std::map<std::string, std::uint64_t> out;
  for (int k = 0; k < rows->size(); ++k)
    out[std::string(rows->text(k, 0))] = static_cast<std::uint64_t>(rows->i64(k, 1));
  return out;
}

Result<void> PgCheckins::sweep_retention(std::int64_t now_ms) {
  // A connection of its own: a long sweep does not hold the admin reads back.
  std::lock_guard lock(sweep_mutex_);
  auto& c = sweep_conn_;
  // The device sets of closed days: their counts stay.
  if (auto r = c.exec("DELETE FROM be_checkin_day_seen WHERE day < $1", {first_open_day(now_ms)});
      !r)
    return r.error();
  if (options_.retention_days == 0)
    return {};
  const std::int64_t cutoff_ms = now_ms - std::int64_t{options_.retention_days} * kDayMs;
  const std::string cutoff_day = store::utc_day(cutoff_ms);
  // Hours ("YYYY-MM-DDTHH") and days before the cutoff day sort below it.
  if (auto r = c.exec("DELETE FROM be_checkin_counts WHERE bucket < $1", {cutoff_day}); !r)
    return r.error();
  // The timelines of devices not seen since the cutoff (every event of theirs is older). An
  // active device's ring may hold older events too: reads leave them out.
  if (auto r =
          c.exec("DELETE FROM be_checkin_timeline t USING be_checkin_devices d WHERE t.app_id = "
                 "d.app_id AND t.device_id = d.device_id AND d.time_ms < $1",
                 {std::to_string(cutoff_ms)});
      !r)
    return r.error();
  // A sender silent for as long will not retry a batch (a child keeps its generation while
  // it runs and numbers anew at a start).
  if (auto r = c.exec("DELETE FROM be_checkin_senders WHERE updated_ms < $1",
                      {std::to_string(cutoff_ms)});
      !r)
    return r.error();
  return {};
}

PgCheckinsStats PgCheckins::stats() const {
  PgCheckinsStats s;
  s.batches_applied = applied_.load();
  s.batches_duplicate = duplicate_.load();
  s.batches_failed = failed_.load();
  s.checkins_applied = applied_checkins_.load();
  s.dropped = dropped_.load();
  std::lock_guard lock(mutex_);
  s.pending = own_.size() + retrying_.load();
  return s;
}

void PgCheckins::render(std::string& out) const {
  const auto s = stats();
  out +=
      "# HELP edge_checkins_pg_batches_total Check-in batches written to the state database, by "
      "result (failed: transactions not committed, retried or refused with 503).\n"
      "# TYPE edge_checkins_pg_batches_total counter\n";
  out += "edge_checkins_pg_batches_total{result=\"applied\"} " + std::to_string(s.batches_applied) +
         "\n";
  out += "edge_checkins_pg_batches_total{result=\"duplicate\"} " +
         std::to_string(s.batches_duplicate) + "\n";
  out += "edge_checkins_pg_batches_total{result=\"failed\"} " + std::to_string(s.batches_failed) +
         "\n";
  out +=
      "# HELP edge_checkins_pg_applied_total Check-ins committed to the state database.\n"
      "# TYPE edge_checkins_pg_applied_total counter\n";
  out += "edge_checkins_pg_applied_total " + std::to_string(s.checkins_applied) + "\n";
  out +=
      "# HELP edge_checkins_pg_pending This origin's own check-ins waiting for the state "
      "database.\n# TYPE edge_checkins_pg_pending gauge\n";
  out += "edge_checkins_pg_pending " + std::to_string(s.pending) + "\n";
  out +=
      "# HELP edge_checkins_pg_dropped_total This origin's own check-ins dropped while the state "
      "database was unreachable (past the pending bound, or at shutdown).\n"
      "# TYPE edge_checkins_pg_dropped_total counter\n";
  out += "edge_checkins_pg_dropped_total " + std::to_string(s.dropped) + "\n";
}

}  // namespace edge::pg
