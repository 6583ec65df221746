// bundle-edge: wiring only (DESIGN §1). Reads the config, opens the stores, serves.
// Control plane: exceptions are allowed here, caught below, logged, exit 1 (2 for config).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <unordered_set>
#include <utility>

#include <boost/program_options.hpp>

#include "edge/api/api.hpp"
#include "edge/api/auto_pause.hpp"
#include "edge/api/blob_backend.hpp"
#include "edge/api/gc.hpp"
#include "edge/api/upstream.hpp"
#include "edge/config.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"
#include "edge/server/server.hpp"
#include "edge/store/access_store.hpp"
#include "edge/store/backup.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/database.hpp"
#include "edge/store/state_store.hpp"
#include "edge/tier_loader.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

namespace po = boost::program_options;

namespace {

constexpr std::string_view kVersion = "0.1.0";

// `bytes` random bytes as lower-case hex.
std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return edge::to_hex(std::span<const unsigned char>(raw));
}

// The admin token: configured, or kept in <data>/admin.token (created 0600 on first start).
std::string admin_token(const edge::Config& c) {
  if (!c.admin_token.empty())
    return c.admin_token;
  const auto path = c.data_dir / "admin.token";
  if (std::ifstream in(path); in) {
    std::string token;
    std::getline(in, token);
    if (!token.empty()) {
      spdlog::info("admin token: read from {}", path.string());
      return token;
    }
  }
  const std::string token = random_hex(32);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, token.data(), token.size()) != static_cast<ssize_t>(token.size()) ||
      ::fsync(fd) != 0) {
    throw std::runtime_error("cannot write " + path.string());
  }
  ::close(fd);
  spdlog::info("admin token: generated and written to {} (mode 0600)", path.string());
  return token;
}

// This node's id in check-in batch keys: configured, or kept in <data>/node.id. A wiped
// data directory gets a new id, so its restarted batch numbers never collide upstream.
std::string node_id(const edge::Config& c) {
  if (!c.node_id.empty())
    return c.node_id;
  const auto path = c.data_dir / "node.id";
  if (std::ifstream in(path); in) {
    std::string id;
    std::getline(in, id);
    if (!id.empty())
      return id;
  }
  const std::string id = "node-" + random_hex(8);
  std::ofstream out(path, std::ios::trunc);
  out << id << "\n";
  out.flush();
  if (!out)
    throw std::runtime_error("cannot write " + path.string());
  return id;
}

// Pins the chunks of every blob a channel points at (DESIGN §6: eviction keeps them).
void update_pins(const edge::api::ControlService& control, edge::store::BlobStore& blobs,
                 edge::store::ChunkStore& chunks) {
  std::unordered_set<edge::Sha256, edge::Sha256Hash> ids;
  for (const auto& blob : edge::control::served_blobs(*control.snapshot())) {
    if (auto recipe = blobs.recipe(blob)) {
      for (const auto& ch : (*recipe)->chunks)
        ids.insert(ch.id);
    }
  }
  chunks.set_pin_set(std::make_shared<edge::store::HashPinSet>(std::move(ids)));
}

// server.background_slice_us as this kernel takes it: the value, or 0 (logged once) when the
// kernel refuses a custom slice or has none (Linux < 6.12). Probed on the main thread, which
// is given its default back.
std::uint32_t usable_background_slice(std::uint32_t us) {
  if (us == 0)
    return 0;
  const std::chrono::microseconds slice{us};
  if (auto set = edge::set_thread_slice(slice); !set) {
    spdlog::warn(
        "server.background_slice_us = {}: the kernel refused a custom slice ({}); "
        "every thread keeps the default",
        us, set.error().message());
    return 0;
  }
  const auto now = edge::thread_slice();
  (void)edge::set_thread_slice(std::chrono::microseconds{0});
  if (!now || *now != slice) {
    spdlog::info(
        "server.background_slice_us = {}: this kernel has no custom slices (Linux < "
        "6.12); every thread keeps the default",
        us);
    return 0;
  }
  return us;
}

// While it lives, the main thread runs with the short slice (usable_background_slice), so
// that the threads started meanwhile inherit it: RocksDB's flushes and compactions, the disk
// guard, the check-in writer, auto-pause, the admin scan threads. Everything else (the event loops,
// fills and the chunk store's committer and syncer, sync, pushes) keeps the kernel's default: a
// short slice lets a thread preempt the one it wakes next to, which costs the fill path ~15% on a
// streaming miss, and the point is that bookkeeping makes way for serving, not the reverse.
class BackgroundSlice {
 public:
  explicit BackgroundSlice(std::uint32_t us) : us_(us) {
    if (us_ != 0)
      (void)edge::set_thread_slice(std::chrono::microseconds{us_});  // probed: accepted
  }
  ~BackgroundSlice() {
    if (us_ != 0)
      (void)edge::set_thread_slice(std::chrono::microseconds{0});  // best effort
  }
  BackgroundSlice(const BackgroundSlice&) = delete;
  BackgroundSlice& operator=(const BackgroundSlice&) = delete;

 private:
  std::uint32_t us_;
};

// Backups asked for through the admin API (POST /v1/admin/backup): one at a time, on a
// thread of their own; a stop waits for a running one (it is joined before the server and the
// stores go away).
/// Reads the state database's health every 2 s on a thread of its own, so that /metrics
/// and /readyz never wait on the database.
class StateHealthPoller {
 public:
  explicit StateHealthPoller(edge::tier::StateLog& log) : log_(log) {
    thread_ = edge::named_thread("state-health", [this] { run(); });
  }
  ~StateHealthPoller() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  StateHealthPoller(const StateHealthPoller&) = delete;
  StateHealthPoller& operator=(const StateHealthPoller&) = delete;

  void render(std::string& out) const {
    const auto h = get();
    char line[256];
    out +=
        "# HELP edge_state_backend_up 1 while the state database (PostgreSQL) answers as a "
        "primary.\n# TYPE edge_state_backend_up gauge\n";
    out += "edge_state_backend_up " + std::string(h.up ? "1" : "0") + "\n";
    out +=
        "# HELP edge_state_backend_errors_total Health checks of the state database that "
        "failed.\n# TYPE edge_state_backend_errors_total counter\n";
    out += "edge_state_backend_errors_total " + std::to_string(errors_.load()) + "\n";
    if (h.standbys >= 0) {
      out +=
          "# HELP edge_state_standbys Streaming standbys the state database's primary "
          "reports.\n# TYPE edge_state_standbys gauge\n";
      out += "edge_state_standbys " + std::to_string(h.standbys) + "\n";
    }
    if (h.replication_lag_s >= 0) {
      std::snprintf(line, sizeof line,
                    "# HELP edge_state_replication_lag_seconds The largest replay lag of the "
                    "state database's standbys.\n# TYPE edge_state_replication_lag_seconds "
                    "gauge\nedge_state_replication_lag_seconds %.3f\n",
                    h.replication_lag_s);
      out += line;
    }
  }
  std::string degraded() const {
    const auto h = get();
    return h.up ? std::string() : "state database: " + h.error;
  }

 private:
  edge::pg::StateHealth get() const {
    std::lock_guard lock(mutex_);
    return health_;
  }
  void run() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      lock.unlock();
      auto h = log_.health();
      if (!h.up)
        errors_.fetch_add(1);
      lock.lock();
      health_ = std::move(h);
      cv_.wait_for(lock, std::chrono::seconds(2), [&] { return stop_; });
    }
  }

  edge::tier::StateLog& log_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  edge::pg::StateHealth health_;
  std::atomic<std::uint64_t> errors_{0};
  bool stop_ = false;
  std::thread thread_;
};

class BackupRunner {
 public:
  BackupRunner(edge::store::Database& db, edge::store::StateStore& state,
               edge::store::ChunkStore& chunks, std::filesystem::path data_dir)
      : db_(db), state_(state), chunks_(chunks), data_dir_(std::move(data_dir)) {}
  ~BackupRunner() {
    if (thread_.joinable())
      thread_.join();
  }
  BackupRunner(const BackupRunner&) = delete;
  BackupRunner& operator=(const BackupRunner&) = delete;

  void start(std::string to, std::function<void(edge::api::Response)> reply) {
    std::lock_guard lock(mutex_);
    if (busy_) {
      reply(edge::api::error_response(409, "backup_running",
                                      "a backup is being written; ask again when it is done",
                                      edge::api::Route::kAdmin));
      return;
    }
    if (thread_.joinable())
      thread_.join();
    busy_ = true;
    thread_ = edge::named_thread("backup", [this, to = std::move(to), reply = std::move(reply)] {
      spdlog::info("backup to {}: started", to);
      std::string problem;
      const auto t0 = std::chrono::steady_clock::now();
      // Garbage collection's compaction would move chunks out of segments the copied index
      // names and remove those files: it waits until the copy is done.
      auto files = chunks_.hold_segment_files();
      auto made = edge::store::make_backup(
          db_, state_, data_dir_, to,
          [&to](std::string_view p) { spdlog::info("backup to {}: {}", to, p); }, &problem);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
      edge::api::Response r;
      if (made) {
        spdlog::info("backup to {}: done, {} files, {} bytes in {} ms", to, made->files,
                     made->bytes, ms);
        edge::api::JsonObjectWriter w;
        w.string("to", to)
            .raw("files", std::to_string(made->files))
            .raw("bytes", std::to_string(made->bytes))
            .raw("last_seq", std::to_string(made->last_seq))
            .string("epoch", made->epoch)
            .raw("ms", std::to_string(ms));
        r = edge::api::make_json_response(200, std::move(w).finish(), edge::api::Route::kAdmin);
      } else {
        spdlog::error("backup to {} failed: {}", to, problem);
        const bool bad = made.error() == edge::Errc::kInvalidArgument;
        r = edge::api::error_response(bad ? 400 : 500,
                                      bad ? "invalid_backup_target" : "backup_failed", problem,
                                      edge::api::Route::kAdmin);
      }
      {
        std::lock_guard lock(mutex_);
        busy_ = false;
      }
      reply(std::move(r));
    });
  }

 private:
  edge::store::Database& db_;
  edge::store::StateStore& state_;
  edge::store::ChunkStore& chunks_;
  std::filesystem::path data_dir_;
  std::mutex mutex_;
  bool busy_ = false;  // guarded by mutex_
  std::thread thread_;
};

int run(const edge::Config& c) {
  const std::uint32_t background_slice = usable_background_slice(c.background_slice_us);
  std::filesystem::create_directories(c.data_dir);
  const std::string token = admin_token(c);

  edge::store::DatabaseOptions db_options;
  db_options.block_cache_bytes = c.block_cache_bytes;
  db_options.write_buffer_bytes = c.write_buffer_bytes;
  db_options.min_free_bytes = c.min_free_bytes;
  db_options.reserve_bytes = c.reserve_bytes;
  auto db = [&] {
    const BackgroundSlice slice(background_slice);
    return edge::store::Database::open(c.data_dir / "db", db_options);
  }();
  auto chunks = edge::store::ChunkStore::open(*db, c.data_dir / "segments", c.store);
  const auto& rec = chunks->recovery();
  for (const auto& problem : rec.problems)
    spdlog::warn("recovery: {}", problem);
  if (rec.records_reindexed > 0 || rec.bytes_truncated > 0) {
    spdlog::info("recovery: re-indexed {} records, truncated {} torn bytes", rec.records_reindexed,
                 rec.bytes_truncated);
  }
  const bool is_edge = c.role == "edge";
  edge::store::BlobStore blobs(*chunks);
  edge::store::StateStore state(*db);
  state.set_log_retention(c.changelog_keep);
  state.set_channel_history_keep(c.channel_history_keep);
  // The origin tier: control state shared with other origins in PostgreSQL; the local
  // StateStore follows it (DESIGN §12.2).
  std::unique_ptr<edge::tier::StateLog> state_log;
  if (c.state_backend == "postgres") {
    state_log = edge::tier::load("state.backend = \"postgres\"").state_log(c.state_url, state);
    std::string why;
    if (auto opened = state_log->open(&why); !opened) {
      if (opened.error() != edge::Errc::kUnavailable)
        throw std::runtime_error("state database " + state_log->where() + ": " + why);
      spdlog::warn(
          "state database {} unreachable at start ({}): serving the local state, admin "
          "writes answer 503 until it is back",
          state_log->where(), why);
    }
  }
  if (!is_edge && !state_log && state.epoch().empty()) {
    // The origin names its feed's numbering once; a follower that sees another name later
    // knows the numbering restarted (DESIGN §6, README "Sync").
    // On a full disk the epoch is adopted in memory and written with the first change that
    // the disk takes (StateStore::set_epoch): the node runs with writes refused.
    if (auto set = state.set_epoch(random_hex(8)); !set) {
      if (set.error() != edge::Errc::kStorageFull)
        throw std::runtime_error("cannot write the feed epoch: " + set.error().message());
      spdlog::warn(
          "storage is full: the new feed epoch {} is written with the first change once space "
          "returns",
          state.epoch());
    }
  }
  edge::api::ControlService control(state, blobs);
  control.set_read_only(is_edge);
  if (state_log) {
    control.set_log(state_log->log());
    if (auto caught = control.catch_up(); caught) {
      spdlog::info("state: following {} from seq {} (epoch {})", state_log->where(),
                   state.last_seq(), state.epoch());
    }
  }
  // Declared before the check-in store it observes: it outlives the store's writer thread.
  std::optional<edge::api::AutoPauser> auto_pause;
  edge::store::CheckinStore checkins = [&] {
    const BackgroundSlice slice(background_slice);
    // Target names count under their release only if it is one of the app's (the control
    // state outlives the store's writer thread: declared before it).
    auto is_release = [&control](std::string_view app_id, std::string_view release) {
      const auto app = control.snapshot()->app(app_id);
      return app != nullptr && app->releases.contains(release);
    };
    return edge::store::CheckinStore(
        *db, {is_edge, c.outbox_max_bytes, c.timeline_events, c.retention_days, is_release});
  }();
  control.set_checkins(&checkins);
  edge::api::Metrics metrics;
  edge::api::SyncMetrics sync_metrics;
  metrics.set_storage(db.get());
  metrics.set_checkins(&checkins);
  metrics.set_sync(
      &sync_metrics, [&state] { return state.last_seq(); }, is_edge ? &checkins : nullptr);
  if (is_edge)
    sync_metrics.stale_after_ms = c.upstream.stale_threshold_ms();
  edge::api::Api api(*chunks, blobs, metrics,
                     {token, c.max_upload_bytes, c.upstream.stale_is_unready,
                      c.upstream.max_fills_per_client, c.max_scans_per_token, c.max_queued_scans});
  api.set_control(&control);
  // Scoped admin tokens and the audit log: this node's own, never synced (DESIGN §11); on
  // the origins of a tier, shared in PostgreSQL, each record naming its origin (the
  // bootstrap token stays each origin's own).
  edge::store::AccessStore access_store(*db, c.audit_keep);
  std::unique_ptr<edge::store::AccessBackend> access_table;
  if (state_log)
    access_table =
        edge::tier::load("state.backend = \"postgres\"").access_table(c.state_url, c.audit_keep);
  edge::api::Access access(access_table ? access_table.get() : &access_store, token,
                           {std::int64_t{c.audit_keep_days} * 86'400'000, c.refusals_keep,
                            c.refusals_per_minute, access_table ? node_id(c) : std::string()});
  api.set_access(&access);
  control.set_access(&access);
  metrics.add_section([&access](std::string& out) {
    out +=
        "# HELP edge_audit_pending Audit records waiting for the store (the state database "
        "of a tier, or a full disk) to take them.\n# TYPE edge_audit_pending gauge\n";
    out += "edge_audit_pending " + std::to_string(access.pending_audit()) + "\n";
    out +=
        "# HELP edge_audit_dropped_total Audit records dropped: too many waited for the "
        "store, or it refused them.\n# TYPE edge_audit_dropped_total counter\n";
    out += "edge_audit_dropped_total " + std::to_string(access.audit_dropped()) + "\n";
  });
  // Rollout auto-pause runs where check-ins end up: the origin (edges relay theirs). On the
  // origins of a tier it is singleton work on the tier's check-ins (below), not started here.
  if (!is_edge) {
    auto_pause.emplace(control, &access);
    checkins.set_observer([&auto_pause](const edge::store::Checkin& c) { auto_pause->observe(c); });
    if (!state_log) {
      const BackgroundSlice slice(background_slice);
      auto_pause->start(checkins);
    }
    metrics.set_auto_pause(&*auto_pause);
  }
  edge::api::SyncApi sync(state, checkins, c.sync_token);
  api.set_sync(&sync);

  // The upstream side (edges) and pushes to edges (any node with sync.push_to), from
  // origin-sync through the interfaces of edge/api/upstream.hpp.
  std::unique_ptr<edge::api::UpstreamClient> upstream;
  std::unique_ptr<edge::api::ChangePusher> pusher;
  // The fleet view (DESIGN §11): every node keeps what the nodes below it report, shows it
  // with its own status at GET /v1/admin/fleet, and (edges) reports both upstream.
  // Its entries expire after missed reports: 5 intervals unless sync.fleet_expire_ms says.
  const std::uint32_t status_interval =
      c.upstream.status_interval_ms > 0 ? c.upstream.status_interval_ms : 10'000;
  edge::api::Fleet fleet(
      {c.fleet_expire_ms > 0 ? std::int64_t{c.fleet_expire_ms} : std::int64_t{5} * status_interval,
       edge::api::kMaxFleetNodes});
  sync.set_fleet(&fleet);
  const std::string self_id = node_id(c);
  const auto self_status = [&, self_id] {
    const auto ob = checkins.outbox_stats();
    return edge::api::encode_node_status(
        {self_id, c.role, std::string(kVersion), sync_metrics.current_upstream(), state.last_seq(),
         sync_metrics.upstream_seq.load(), ob.depth, ob.bytes, chunks->stats().bytes_live,
         metrics.blob_hits(), metrics.blob_misses(), metrics.body_bytes_total(),
         sync_metrics.last_contact_ms.load(), edge::wall_clock_ms()});
  };
  api.set_fleet(&fleet, self_status);
  if (is_edge) {
    upstream = edge::api::make_upstream_client(
        c.upstream,
        {control, *chunks, blobs, checkins, sync_metrics, self_id, self_status, &fleet});
    api.set_filler(&upstream->filler());
    sync.set_push_sink(&upstream->push_sink());
  }
  // [blobs] backend = "s3" (DESIGN §12.2): the segment store becomes a verified cache of a
  // bucket that several origins share; a miss fills from it, an upload is acknowledged once
  // durable in it. Credentials come from the environment only and are never logged.
  std::unique_ptr<edge::store::ObjectStore> bucket;
  std::unique_ptr<edge::api::BlobBackend> blob_backend;
  if (c.blobs.backend == "s3") {
    auto& tier = edge::tier::load("blobs.backend = \"s3\"");
    auto credentials = tier.s3_credentials();
    if (!credentials) {
      throw std::runtime_error(
          "blobs.backend = \"s3\": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
          "AWS_SESSION_TOKEN for temporary credentials) in the environment");
    }
    bucket = tier.s3_client(
        {c.blobs.endpoint, c.blobs.bucket, c.blobs.region, c.blobs.path_style, c.blobs.timeout_ms},
        std::move(*credentials));
    blob_backend =
        std::make_unique<edge::api::BlobBackend>(*bucket, *chunks, blobs, c.blobs.concurrency);
    api.set_blob_backend(
        blob_backend.get(),
        [b = blob_backend.get()](const edge::Sha256& id, bool refresh,
                                 std::function<void(boost::system::error_code)> done) {
          b->mirror(id, std::move(done), refresh);
        },
        &bucket->stats());
    metrics.set_objects(&bucket->stats());
    // Recipes the releases pin stream while their chunks fill (as on an edge).
    blob_backend->trust_recipes(edge::control::pinned_recipes(*control.snapshot()));
    blob_backend->start_probe(std::chrono::seconds(10));
    spdlog::info("blobs: {}; this node's segment store is its cache", bucket->describe());
    // The blobs of this origin's releases go to the bucket if it lacks them (an origin that
    // kept them in its embedded store until now), in the background: a HEAD each otherwise.
    for (const auto& id : edge::control::named_blobs(*control.snapshot()))
      blob_backend->mirror(id, [](boost::system::error_code) {});
  }
  if (!c.push_to.empty()) {
    pusher = edge::api::make_change_pusher(c.push_to, c.sync_token, c.push_ca_file,
                                           c.upstream.timeout_ms, state, sync_metrics);
  }
  // Edges fill device misses only for blobs a release names (cache-busting ids are 404s).
  const auto update_fillable = [&] {
    if (!is_edge)
      return;
    const auto named = edge::control::named_blobs(*control.snapshot());
    api.set_fillable(std::make_shared<const edge::api::FillableBlobs>(named.begin(), named.end()));
  };
  // The tier's singleton work runs on the origin holding PostgreSQL's advisory lock: pushes
  // to sync.push_to (every origin would push the same changes otherwise) and the shared
  // changelog's retention.
  std::unique_ptr<edge::tier::PauseEvents> pause_events;
  std::unique_ptr<edge::tier::Singleton> singleton;
  if (state_log) {
    singleton = edge::tier::load("state.backend = \"postgres\"").singleton(c.state_url);
    singleton->add_task(
        "changelog retention", std::chrono::seconds(10), [&state_log, keep = c.changelog_keep] {
          auto n = state_log->trim_changelog(keep);
          if (!n)
            spdlog::warn("tier: changelog retention failed: {}", n.error().message());
        });
    metrics.add_section([&singleton](std::string& out) {
      out +=
          "# HELP edge_tier_singleton_held 1 while this origin holds the tier's singleton lock "
          "(retention, pushes).\n# TYPE edge_tier_singleton_held gauge\n";
      out += "edge_tier_singleton_held " + std::string(singleton->held() ? "1" : "0") + "\n";
    });
  }
  // The tier's access state and fleet view (edge/pg/access.hpp, fleet.hpp): tokens created
  // or revoked through another origin are seen here within a second (reload); audit records
  // the database refused wait in memory and are appended once it is back; the fleet reports
  // go to one shared table; retention of all three is singleton work.
  std::unique_ptr<edge::store::FleetBackend> fleet_table;
  if (state_log) {
    fleet_table = edge::tier::load("state.backend = \"postgres\"").fleet_table(c.state_url);
    fleet.set_backend(fleet_table.get());
    singleton->add_task("access retention", std::chrono::seconds(10),
                        [&access] { access.sweep_shared(edge::wall_clock_ms()); });
    singleton->add_task("fleet expiry", std::chrono::seconds(5),
                        [&fleet] { fleet.sweep_shared(edge::wall_clock_ms()); });
    access.start_refresh(std::chrono::seconds(1));
  }
  // The origin tier keeps check-ins in PostgreSQL, shared by every origin (DESIGN §12.2): it
  // takes devices' and children's check-ins and answers the admin API's reads in place of
  // the local store, which stays constructed for what only it has (the device-table metrics)
  // and takes none. Their retention sweep is singleton work (hourly). Auto-pause is singleton
  // work too, on the whole tier's check-ins: each batch's transaction appends the events it
  // counts to be_pause_events (edge/pg/pause_events.hpp); the origin holding the lock feeds
  // its AutoPauser from there every second (the last 24 h again when it takes the lock) and
  // runs the checks; the others neither count nor pause.
  std::unique_ptr<edge::tier::Checkins> pg_checkins;
  edge::store::CheckinIngest* ingest = &checkins;
  if (state_log) {
    auto is_release = [&control](std::string_view app_id, std::string_view release) {
      const auto app = control.snapshot()->app(app_id);
      return app != nullptr && app->releases.contains(release);
    };
    edge::pg::PgCheckinsOptions pg_options{node_id(c), c.timeline_events, c.retention_days,
                                           is_release};
    if (auto_pause) {
      pg_options.pause_event = [&auto_pause](const edge::store::Checkin& ci) {
        return auto_pause->counts(ci);
      };
    }
    pg_checkins = edge::tier::load("state.backend = \"postgres\"")
                      .checkins(c.state_url, std::move(pg_options));
    if (auto_pause) {
      pause_events = edge::tier::load("state.backend = \"postgres\"").pause_events(c.state_url);
      singleton->add_task(
          "auto-pause", std::chrono::seconds(1),
          [&auto_pause, &pause_events, &singleton, taken = std::uint64_t{0}]() mutable {
            const bool rebuild = singleton->acquisitions() != taken;
            if (rebuild) {
              taken = singleton->acquisitions();
              pause_events->rewind();
            }
            const auto t0 = std::chrono::steady_clock::now();
            auto n = pause_events->poll(
                [&auto_pause](const edge::store::Checkin& e) { auto_pause->observe(e); });
            if (!n) {
              spdlog::warn("tier: auto-pause cannot read the tier's check-in events: {}",
                           n.error().message());
              return;  // no check on what may be partial
            }
            if (rebuild) {
              spdlog::info(
                  "auto-pause: windows of {} watched rollouts rebuilt from {} check-in events "
                  "of the tier in {} ms",
                  auto_pause->watched_rollouts(), *n,
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count());
            }
            auto_pause->check_now();
          });
      singleton->add_task("auto-pause retention", std::chrono::minutes(1), [&pause_events] {
        if (auto r = pause_events->sweep(); !r)
          spdlog::warn("tier: auto-pause event retention failed: {}", r.error().message());
      });
    }
    ingest = &pg_checkins->ingest();
    control.set_checkins(&pg_checkins->queries());
    sync.set_ingest(&pg_checkins->ingest());
    metrics.add_section([p = pg_checkins.get()](std::string& out) { p->render(out); });
    singleton->add_task("check-in retention", std::chrono::hours(1), [p = pg_checkins.get()] {
      if (auto r = p->sweep_retention(edge::wall_clock_ms()); !r)
        spdlog::warn("tier: check-in retention failed: {}", r.error().message());
    });
  }
  // Garbage collection of blobs no release references (docs/operations.md): this node's
  // store on every origin (the embedded one's, or an origin's cache of the bucket), and the
  // bucket on the tier's singleton holder. Uploads and release writes pass the gates, so a
  // pass never removes what one of them relies on.
  edge::store::LocalBlobGate local_gate;
  std::unique_ptr<edge::store::BlobGate> pg_gate;
  std::optional<edge::api::StoreCollector> store_gc;
  std::optional<edge::api::BucketCollector> bucket_gc;
  std::optional<edge::api::GcRunner> gc_runner;
  if (!is_edge) {
    const edge::api::GcOptions gc_options{std::chrono::seconds(c.gc.grace_s),
                                          c.gc.compact_below_pct / 100.0, 1000};
    std::vector<edge::store::BlobGate*> gates{&local_gate};
    store_gc.emplace(blobs, local_gate, gc_options);
    if (bucket) {
      edge::store::BlobGate* shared = &local_gate;
      if (state_log) {
        pg_gate =
            edge::tier::load("state.backend = \"postgres\"").blob_gate(c.state_url, node_id(c));
        gates.push_back(pg_gate.get());
        shared = pg_gate.get();
      }
      bucket_gc.emplace(*bucket, blobs, *shared, gc_options);
    }
    api.set_blob_gates(gates);
    gc_runner.emplace(
        &*store_gc, bucket_gc ? &*bucket_gc : nullptr,
        [&control]() -> edge::Result<std::vector<edge::Sha256>> {
          // A release another origin committed must be seen before anything is removed.
          if (auto r = control.catch_up(); !r)
            return r.error();
          return edge::control::named_blobs(*control.snapshot());
        },
        [&singleton] { return !singleton || singleton->held(); },
        std::chrono::seconds(c.gc.interval_s));
    api.set_gc([&gc_runner](bool dry_run, std::function<void(edge::api::Response)> reply) {
      auto answer = [reply](std::string json) {
        edge::api::Response r;
        r.route = edge::api::Route::kAdmin;
        r.status = json.starts_with("{\"error\"") ? 503 : 200;
        r.set("Content-Type", "application/json");
        r.body = std::move(json);
        reply(std::move(r));
      };
      if (!gc_runner->run_now(dry_run, answer)) {
        reply(edge::api::error_response(429, "busy",
                                        "8 garbage collections are queued already; wait for "
                                        "them",
                                        edge::api::Route::kAdmin));
      }
    });
    metrics.add_section([&gc_runner](std::string& out) { gc_runner->render(out); });
    gc_runner->start();
  }
  control.set_on_commit([&](std::uint64_t seq) {
    sync.notify(seq);
    if (pusher && (!singleton || singleton->held()))
      pusher->notify(seq);
    update_pins(control, blobs, *chunks);
    update_fillable();
    if (blob_backend)
      blob_backend->trust_recipes(edge::control::pinned_recipes(*control.snapshot()));
  });
  update_pins(control, blobs, *chunks);
  update_fillable();

  std::optional<edge::server::Server> server_slot;
  {
    // The admin scan threads start with the server: a scan makes way for the event loop.
    const BackgroundSlice slice(background_slice);
    server_slot.emplace(c.server, api);
  }
  auto& server = *server_slot;
  // Declared after the server: joined (a running backup finished) before the server goes.
  BackupRunner backups(*db, state, *chunks, c.data_dir);
  api.set_backup([&backups](std::string to, std::function<void(edge::api::Response)> reply) {
    backups.start(std::move(to), std::move(reply));
  });
  server.set_on_stop([&sync] { sync.stop(); });
  // Devices refuse plain http:// in production: with TLS on, the derived URL is https://.
  const bool tls = c.server.tls.enabled;
  const std::string& url_host = tls ? c.server.tls.listen_host : c.server.listen_host;
  const bool v6 = url_host.find(':') != std::string::npos;
  const std::string public_url =
      !c.public_url.empty()
          ? c.public_url
          : (tls ? "https://" : "http://") + (v6 ? "[" + url_host + "]" : url_host) + ":" +
                std::to_string(tls ? server.tls_port() : server.public_port());
  edge::api::DeviceApi device(control, public_url, ingest, &blobs, is_edge);
  api.set_device(&device);
  if (is_edge && state.last_seq() == 0) {
    // A fresh edge has nothing to answer devices with until its first sync.
    upstream->set_on_synced([&api] {
      api.set_ready(true);
      spdlog::info("in sync with the upstream: ready");
    });
  } else {
    api.set_ready(true);  // an origin, or an edge with state from an earlier run
  }
  std::optional<StateHealthPoller> state_health;
  if (state_log) {
    control.start_following();
    singleton->start();
    state_health.emplace(*state_log);
    metrics.add_section([&state_health](std::string& out) { state_health->render(out); });
    api.add_degraded_check([&state_health] { return state_health->degraded(); });
  }
  if (upstream) {
    upstream->start();
    std::string urls;
    for (const auto& u : c.upstream.urls)
      urls += (urls.empty() ? "" : ", ") + u;
    spdlog::info("edge {} following {}{}", self_id, urls,
                 c.upstream.urls.size() > 1 ? " (in that order of preference)" : "");
  }
  if (pusher)
    pusher->start();
  const auto st = chunks->stats();
  spdlog::info(
      "bundle-edge {} role={} data={} chunks={} blobs={} apps={} change_seq={} threads={} "
      "send_mode={}",
      kVersion, c.role, c.data_dir.string(), st.chunks, st.blobs, control.snapshot()->apps().size(),
      state.last_seq(), c.server.threads, c.server.use_sendfile ? "sendfile" : "copy");
  if (c.server.plain) {
    spdlog::info("public listener on {}:{} (public_url {})", c.server.listen_host,
                 server.public_port(), public_url);
  }
  if (tls) {
    spdlog::info("TLS listener on {}:{} (public_url {}, cert {}, min {}); kernel TLS: {}",
                 c.server.tls.listen_host, server.tls_port(), public_url, c.server.tls.cert_file,
                 c.server.tls.min_protocol,
                 !c.server.tls.ktls ? "off (tls.ktls = false)"
                 : edge::server::kernel_tls_listed()
                     ? "offered by the kernel (used per connection when the "
                       "cipher allows; see edge_tls_connections_total)"
                     : "not offered by this kernel (modprobe tls), "
                       "bodies go pread + SSL_write");
  }
  spdlog::info("admin listener on {}:{}{}", c.server.admin_host, server.admin_port(),
               tls && c.server.tls.admin ? " (TLS)" : "");
  {
    // Where `bundle-edge backup --data DIR` finds this running node.
    const bool v6a = c.server.admin_host.find(':') != std::string::npos;
    std::ofstream(c.data_dir / "admin.url")
        << (tls && c.server.tls.admin ? "https://" : "http://")
        << (v6a ? "[" + c.server.admin_host + "]" : c.server.admin_host) << ":"
        << server.admin_port() << "\n";
  }
  server.run();
  control.stop_following();
  state_health.reset();
  if (singleton)
    singleton->stop();
  access.stop_refresh();
  // Upstream work stops before the server and the stores go away; the outbox gets up to
  // 5 s to drain (SIGTERM, DESIGN §7).
  if (upstream)
    upstream->stop(std::chrono::seconds(5));
  if (pusher)
    pusher->stop();
  if (gc_runner)
    gc_runner->stop();
  if (blob_backend)
    blob_backend->stop();
  // Deferred answers (durable check-ins) reach their sessions while the server still exists.
  checkins.flush();
  if (pg_checkins) {
    pg_checkins->ingest().flush();
    pg_checkins.reset();  // its writers stop before what they call (auto-pause) does
  }
  if (auto_pause)
    auto_pause->stop();
  control.drain();
  spdlog::info("stopped: closing the store");
  return 0;
}

}  // namespace

// `bundle-edge backup` and `bundle-edge restore` (docs/backup.md).
int backup_command(int argc, char** argv) {
  namespace fs = std::filesystem;
  const std::string verb = argv[1];
  po::options_description desc(
      verb == "backup"
          ? "bundle-edge backup --data DIR --to DEST: a consistent, verified copy of a node's "
            "data\n(running or stopped; a running node writes it itself, through its admin "
            "API).\nbundle-edge backup --verify SRC: checks a backup.\nOptions"
          : "bundle-edge restore --from SRC --data DIR: a verified backup into a new data "
            "directory\n(the node keeps the backup's feed epoch and sequence numbers).\nOptions");
  std::string data, to, from, verify, token;
  desc.add_options()("help,h", "show this help")("data", po::value(&data),
                                                 "the node's data directory")(
      "to", po::value(&to), "backup: a new folder for the copy (absolute path)")(
      "verify", po::value(&verify), "backup: check the backup in this folder, change nothing")(
      "from", po::value(&from), "restore: the backup folder")(
      "admin-token", po::value(&token),
      "backup of a running node: its admin token (default: <data>/admin.token)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc - 1, argv + 1, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "bundle-edge " << verb << ": " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help") != 0) {
    std::cout << desc << "\n";
    return 0;
  }
  const auto progress = [](std::string_view p) { std::cerr << "  " << p << "\n"; };
  std::string problem;
  if (verb == "backup" && !verify.empty()) {
    auto info = edge::store::verify_backup(verify, &problem);
    if (!info) {
      std::cerr << "bundle-edge backup --verify: " << problem << "\n";
      return 1;
    }
    std::cout << verify << ": a complete backup, " << info->files << " files, " << info->bytes
              << " bytes, feed epoch " << (info->epoch.empty() ? "-" : info->epoch) << ", sequence "
              << info->last_seq << "; every file matches its SHA-256\n";
    return 0;
  }
  if (verb == "backup") {
    if (data.empty() || to.empty()) {
      std::cerr << "bundle-edge backup: give --data DIR and --to DEST\n" << desc << "\n";
      return 2;
    }
    const fs::path dest = fs::absolute(to);
    std::unique_ptr<edge::store::Database> db;
    try {
      db = edge::store::Database::open(fs::path(data) / "db");
    } catch (const std::exception& e) {
      if (std::string_view(e.what()).find("lock") == std::string_view::npos) {
        std::cerr << "bundle-edge backup: " << e.what() << "\n";
        return 1;
      }
    }
    if (!db) {
      // A running node holds the database: it writes the backup itself.
      std::string url;
      std::getline(std::ifstream(fs::path(data) / "admin.url"), url);
      if (token.empty())
        std::getline(std::ifstream(fs::path(data) / "admin.token"), token);
      if (url.empty() || token.empty()) {
        std::cerr << "bundle-edge backup: the node of " << data
                  << " is running, and its admin.url or admin token cannot be read; give "
                     "--admin-token, or use bundle-edge-ctl backup\n";
        return 1;
      }
      std::cerr << "the node is running: asking it (" << url << ") to write the backup\n";
      const std::string body = "{\"to\":\"" + edge::api::json_escape(dest.string()) + "\"}";
      std::string error;
      const auto r =
          edge::api::post_to_node(url, token, "/v1/admin/backup", body, 6 * 3600 * 1000U, &error);
      if (!r) {
        std::cerr << "bundle-edge backup: " << url << ": " << error << "\n";
        return 1;
      }
      if (r->status != 200) {
        std::cerr << "bundle-edge backup: the node answered " << r->status << ": " << r->body
                  << "\n";
        return 1;
      }
      std::cout << r->body << "\n";
      return 0;
    }
    edge::store::StateStore state(*db);
    auto info = edge::store::make_backup(*db, state, data, dest, progress, &problem);
    if (!info) {
      std::cerr << "bundle-edge backup: " << problem << "\n";
      return 1;
    }
    std::cout << dest.string() << ": " << info->files << " files, " << info->bytes
              << " bytes, feed epoch " << (info->epoch.empty() ? "-" : info->epoch) << ", sequence "
              << info->last_seq << "\n";
    return 0;
  }
  if (from.empty() || data.empty()) {
    std::cerr << "bundle-edge restore: give --from SRC and --data DIR\n" << desc << "\n";
    return 2;
  }
  auto info = edge::store::restore_backup(from, data, progress, &problem);
  if (!info) {
    std::cerr << "bundle-edge restore: " << problem << "\n";
    return 1;
  }
  // Opened once as the node will: recovery checks every segment, and the state must be the
  // backup's.
  try {
    auto db = edge::store::Database::open(fs::path(data) / "db");
    auto chunks = edge::store::ChunkStore::open(*db, fs::path(data) / "segments", {});
    for (const auto& p : chunks->recovery().problems)
      std::cerr << "  recovery: " << p << "\n";
    edge::store::StateStore state(*db);
    if (state.last_seq() != info->last_seq || state.epoch() != info->epoch) {
      std::cerr << "bundle-edge restore: the restored state is at sequence " << state.last_seq()
                << " of epoch " << state.epoch() << ", the backup says " << info->last_seq << " of "
                << info->epoch << "\n";
      return 1;
    }
    std::cout << data << ": restored " << info->files << " files, " << info->bytes
              << " bytes; feed epoch " << (info->epoch.empty() ? "-" : info->epoch) << ", sequence "
              << info->last_seq << ", " << chunks->stats().chunks << " chunks, "
              << chunks->stats().blobs << " blobs\n";
  } catch (const std::exception& e) {
    std::cerr << "bundle-edge restore: the restored data does not open: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// `bundle-edge migrate --data DIR --to-state URL`: an embedded origin's control state into
// the tier's PostgreSQL, with its sequence numbers and feed epoch (docs/several-origins.md).
// Writes every blob the stopped origin's releases name to the bucket (chunks, then recipe),
// with progress; 0 when all are there.
int migrate_blobs(const std::filesystem::path& data, edge::store::Database& db,
                  edge::store::StateStore& state, const std::string& bucket_name,
                  const std::string& endpoint, const std::string& region, bool path_style) {
  edge::tier::Module* tier = nullptr;
  try {
    tier = &edge::tier::load("bundle-edge migrate --to-blobs");
  } catch (const std::runtime_error& e) {
    std::cerr << "bundle-edge migrate: " << e.what() << "\n";
    return 1;
  }
  auto credentials = tier->s3_credentials();
  if (!credentials) {
    std::cerr << "bundle-edge migrate: --to-blobs: set AWS_ACCESS_KEY_ID and "
                 "AWS_SECRET_ACCESS_KEY in the environment\n";
    return 2;
  }
  auto snap = state.snapshot();
  if (!snap) {
    std::cerr << "bundle-edge migrate: reading the state failed: " << snap.error().message()
              << "\n";
    return 1;
  }
  const auto control = edge::api::ControlService::preview(*snap);
  if (!control) {
    std::cerr << "bundle-edge migrate: the stored state does not parse\n";
    return 1;
  }
  std::unique_ptr<edge::store::ChunkStore> chunks;
  try {
    chunks = edge::store::ChunkStore::open(db, data / "segments", {});
  } catch (const std::exception& e) {
    std::cerr << "bundle-edge migrate: cannot open the segments: " << e.what() << "\n";
    return 1;
  }
  edge::store::BlobStore blobs(*chunks);
  std::unique_ptr<edge::store::ObjectStore> bucket_ptr;
  try {
    bucket_ptr = tier->s3_client({endpoint, bucket_name, region, path_style, 30'000},
                                 std::move(*credentials));
  } catch (const std::invalid_argument& e) {
    std::cerr << "bundle-edge migrate: " << e.what() << "\n";
    return 2;
  }
  auto& bucket = *bucket_ptr;
  edge::api::BlobBackend backend(bucket, *chunks, blobs, 8);
  const auto ids = edge::control::named_blobs(*control);
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t done = 0, failed = 0;
  for (const auto& id : ids) {
    backend.mirror(id, [&, id](boost::system::error_code ec) {
      std::lock_guard lock(mutex);
      ++done;
      if (ec) {
        ++failed;
        std::cerr << "\nblob " << id.hex() << ": " << ec.message() << " ("
                  << bucket.stats().last_error() << ")\n";
      }
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mutex);
    while (done < ids.size()) {
      cv.wait_for(lock, std::chrono::milliseconds(500));
      std::cerr << "\rblobs in the bucket: " << done - failed << "/" << ids.size() << std::flush;
    }
  }
  std::cerr << "\n";
  backend.stop();
  if (failed > 0) {
    std::cerr << "bundle-edge migrate: " << failed << " of " << ids.size()
              << " blobs not written to " << bucket.describe()
              << "; nothing was written to the state database: run it again\n";
    return 1;
  }
  std::cout << ids.size() << " blobs written to " << bucket.describe() << "\n";
  return 0;
}

int migrate_command(int argc, char** argv) {
  namespace fs = std::filesystem;
  po::options_description desc(
      "bundle-edge migrate --data DIR --to-state URL [--to-blobs s3://BUCKET --s3-endpoint URL]:\n"
      "copies a stopped embedded origin's control state (apps, releases, channels, device "
      "overrides,\nthe retained changelog) into an empty PostgreSQL state database, keeping "
      "its feed epoch and\nsequence numbers so that edges follow on without a snapshot; with "
      "--to-blobs, first writes\nevery blob a release names (its chunks, then its recipe) to "
      "the bucket, credentials from\nAWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Check-in "
      "history is not copied.\nOptions");
  std::string data, to_state, to_blobs, s3_endpoint, s3_region = "us-east-1";
  bool virtual_host = false;
  desc.add_options()("help,h", "show this help")("data", po::value(&data),
                                                 "the stopped origin's data directory")(
      "to-state", po::value(&to_state), "libpq connection string of the state database")(
      "to-blobs", po::value(&to_blobs), "s3://BUCKET: also copy the releases' blobs there")(
      "s3-endpoint", po::value(&s3_endpoint), "with --to-blobs: http(s)://host[:port]")(
      "s3-region", po::value(&s3_region), "with --to-blobs: the region (default us-east-1)")(
      "s3-virtual-host", po::bool_switch(&virtual_host),
      "with --to-blobs: virtual-host style addressing (default: path style)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc - 1, argv + 1, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "bundle-edge migrate: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help") != 0) {
    std::cout << desc << "\n";
    return 0;
  }
  if (data.empty() || to_state.empty()) {
    std::cerr << "bundle-edge migrate: --data and --to-state are required\n" << desc << "\n";
    return 2;
  }
  if (!fs::is_directory(fs::path(data) / "db")) {
    std::cerr << "bundle-edge migrate: " << data << " holds no node data (no db/ in it)\n";
    return 2;
  }
  std::unique_ptr<edge::store::Database> db;
  try {
    db = edge::store::Database::open(fs::path(data) / "db");
  } catch (const std::exception& e) {
    std::cerr << "bundle-edge migrate: cannot open " << data
              << " (is the origin still running? stop it first): " << e.what() << "\n";
    return 1;
  }
  edge::store::StateStore state(*db);
  if (!to_blobs.empty()) {
    if (!to_blobs.starts_with("s3://") || to_blobs.size() <= 5 ||
        to_blobs.find('/', 5) != std::string::npos) {
      std::cerr << "bundle-edge migrate: --to-blobs: expected s3://BUCKET, got '" << to_blobs
                << "'\n";
      return 2;
    }
    if (s3_endpoint.empty()) {
      std::cerr << "bundle-edge migrate: --to-blobs needs --s3-endpoint (e.g. "
                   "https://s3.us-east-1.amazonaws.com)\n";
      return 2;
    }
    if (int rc = migrate_blobs(fs::path(data), *db, state, to_blobs.substr(5), s3_endpoint,
                               s3_region, !virtual_host);
        rc != 0)
      return rc;
  }
  auto snap = state.snapshot();
  if (!snap) {
    std::cerr << "bundle-edge migrate: reading the state failed: " << snap.error().message()
              << "\n";
    return 1;
  }
  if (snap->epoch.empty()) {
    std::cerr << "bundle-edge migrate: " << data << " has no feed epoch: it is not an origin's\n";
    return 1;
  }
  std::vector<edge::store::Change> log;
  const std::uint64_t log_start = state.log_start();
  for (std::uint64_t after = log_start - 1;;) {
    auto page = state.changes_after(after, 10'000);
    if (!page) {
      std::cerr << "bundle-edge migrate: reading the changelog failed: " << page.error().message()
                << "\n";
      return 1;
    }
    if (page->empty())
      break;
    after = page->back().seq;
    log.insert(log.end(), std::make_move_iterator(page->begin()),
               std::make_move_iterator(page->end()));
    std::cerr << "\rread " << log.size() << " changes" << std::flush;
  }
  std::cerr << "\n";
  // The tier's StateLog wants a local store to follow into; this one is not written.
  std::unique_ptr<edge::tier::StateLog> target_ptr;
  try {
    target_ptr = edge::tier::load("bundle-edge migrate").state_log(to_state, state);
  } catch (const std::runtime_error& e) {
    std::cerr << "bundle-edge migrate: " << e.what() << "\n";
    return 1;
  }
  auto& target = *target_ptr;
  std::string why;
  if (auto opened = target.open(&why); !opened) {
    std::cerr << "bundle-edge migrate: state database " << target.where() << ": " << why << "\n";
    return 1;
  }
  if (auto done = target.import(*snap, log, log_start, &why); !done) {
    std::cerr << "bundle-edge migrate: " << target.where() << ": " << why << "\n";
    return 1;
  }
  std::cout << "migrated " << snap->docs.size() << " documents and " << log.size()
            << " changes (sequence " << log_start << ".." << snap->seq << ", feed epoch "
            << snap->epoch << ") into " << target.where() << "\n";
  return 0;
}

int main(int argc, char** argv) {
  // sendfile(2) has no MSG_NOSIGNAL: a peer reset must not kill the process.
  ::signal(SIGPIPE, SIG_IGN);
  // Chunk buffers (16 KiB-1 MiB) come and go at line rate: keep them on the heap instead of
  // a fresh mmap (and its page faults) each time.
  ::mallopt(M_MMAP_THRESHOLD, 8 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  if (argc >= 2 &&
      (std::string_view(argv[1]) == "backup" || std::string_view(argv[1]) == "restore"))
    return backup_command(argc, argv);
  if (argc >= 2 && std::string_view(argv[1]) == "migrate")
    return migrate_command(argc, argv);

  edge::ConfigOverrides o;
  po::options_description desc(
      "bundle-edge: OTA bundle origin/edge node\n\nWith no arguments: an origin on "
      "127.0.0.1:8080, admin on 127.0.0.1:9090, data in ./var.\nOptions");
  std::string config, role, listen, admin_listen, data, token, threads, upstream, sync_token, node;
  std::string tls_listen, tls_cert, tls_key, state_url;
  desc.add_options()("help,h", "show this help")(
      "config", po::value(&config), "TOML config file (every key: conf/bundle-edge.toml)")(
      "role", po::value(&role), "origin | edge (overrides node.role)")(
      "listen", po::value(&listen), "public host:port (overrides server.listen)")(
      "admin-listen", po::value(&admin_listen), "admin host:port (overrides admin.listen)")(
      "data", po::value(&data), "data directory (overrides node.data_dir)")(
      "admin-token", po::value(&token), "admin bearer token (overrides admin.token)")(
      "threads", po::value(&threads),
      "event-loop threads, 0 = one per core (overrides server.threads)")(
      "upstream", po::value(&upstream),
      "edges: http://host:port of the upstream, or several separated by commas in order of "
      "preference (overrides upstream.url)")(
      "sync-token", po::value(&sync_token),
      "token node-to-node calls to this node carry (overrides sync.token)")(
      "node-id", po::value(&node), "this node's id in check-in batches (overrides node.id)")(
      "tls-listen", po::value(&tls_listen), "HTTPS host:port (overrides tls.listen)")(
      "tls-cert", po::value(&tls_cert), "PEM certificate chain (overrides tls.cert_file)")(
      "tls-key", po::value(&tls_key), "PEM private key (overrides tls.key_file)")(
      "state-url", po::value(&state_url),
      "origins: keep the control state in PostgreSQL at this libpq connection string, shared "
      "with other origins (sets state.backend = \"postgres\" and state.url)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "bundle-edge: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help") != 0) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("config") != 0)
    o.config_file = config;
  if (vm.count("role") != 0)
    o.role = role;
  if (vm.count("listen") != 0)
    o.listen = listen;
  if (vm.count("admin-listen") != 0)
    o.admin_listen = admin_listen;
  if (vm.count("data") != 0)
    o.data_dir = data;
  if (vm.count("admin-token") != 0)
    o.admin_token = token;
  if (vm.count("threads") != 0)
    o.threads = threads;
  if (vm.count("upstream") != 0)
    o.upstream = upstream;
  if (vm.count("sync-token") != 0)
    o.sync_token = sync_token;
  if (vm.count("node-id") != 0)
    o.node_id = node;
  if (vm.count("tls-listen") != 0)
    o.tls_listen = tls_listen;
  if (vm.count("tls-cert") != 0)
    o.tls_cert = tls_cert;
  if (vm.count("tls-key") != 0)
    o.tls_key = tls_key;
  if (vm.count("state-url") != 0)
    o.state_url = state_url;

  edge::Config c;
  try {
    c = edge::load_config(o);
  } catch (const edge::ConfigError& e) {
    std::cerr << "bundle-edge: config error: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(c.log_level));
  try {
    return run(c);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}
