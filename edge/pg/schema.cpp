#include "edge/pg/schema.hpp"

#include <array>
#include <string_view>

namespace edge::pg {
namespace {

/// Step N brings the schema from version N to N+1. Never edit a step that has shipped: add
/// one.
constexpr std::array<std::string_view, 6> kSteps = {
    // 1: control state. One row numbers every change (feed_head.seq, updated in each write
    // transaction, so commit order is sequence order), documents hold the current state,
    // changelog the numbered changes the feed serves.
    R"sql(
CREATE TABLE be_feed_head (
  id integer PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL,
  epoch text NOT NULL,
  log_start bigint NOT NULL
);
INSERT INTO be_feed_head VALUES (1, 0, substr(md5(random()::text || clock_timestamp()::text), 1, 16), 1);
CREATE TABLE be_documents (
  kind smallint NOT NULL,
  app_id text NOT NULL,
  key text NOT NULL,
  value text NOT NULL,
  PRIMARY KEY (kind, app_id, key)
);
CREATE TABLE be_changelog (
  seq bigint PRIMARY KEY,
  kind smallint NOT NULL,
  deleted boolean NOT NULL,
  app_id text NOT NULL,
  key text NOT NULL,
  value text NOT NULL
);
)sql",
    // Admin access shared by the origins (edge/pg/access.hpp): tokens, the audit log
    // numbered by a one-row counter updated in each append's transaction (commit order is
    // number order), refusal records (hex keys); and the fleet view (edge/pg/fleet.hpp):
    // the latest status report of each node. "C" collation: pages ordered by bytes, as the
    // embedded origin orders them.
    R"sql(
CREATE TABLE be_access_head (
  id integer PRIMARY KEY CHECK (id = 1),
  audit_seq bigint NOT NULL
);
INSERT INTO be_access_head VALUES (1, 0);
CREATE TABLE be_tokens (
  name text COLLATE "C" PRIMARY KEY,
  doc text NOT NULL
);
CREATE TABLE be_audit (
  n bigint PRIMARY KEY,
  time_ms bigint NOT NULL,
  doc text NOT NULL
);
CREATE INDEX be_audit_time ON be_audit (time_ms);
CREATE TABLE be_refusals (
  key text COLLATE "C" PRIMARY KEY,
  last_ms bigint NOT NULL,
  doc text NOT NULL
);
CREATE INDEX be_refusals_last ON be_refusals (last_ms);
CREATE TABLE be_fleet (
  node_id text COLLATE "C" PRIMARY KEY,
  received_ms bigint NOT NULL,
  via text NOT NULL,
  lag_seq bigint NOT NULL,
  outbox_depth bigint NOT NULL,
  outbox_bytes bigint NOT NULL,
  doc text NOT NULL
);
CREATE INDEX be_fleet_received ON be_fleet (received_ms);
)sql",
    // 3: check-ins shared by the origins (DESIGN §12.2). Text keys in byte order (COLLATE
    // "C"), as the embedded store pages its device index. be_checkin_senders: the highest
    // batch applied per sender (node, generation), advanced in each batch's transaction;
    // be_checkin_counts: hourly counters and daily distinct devices (HourStats, DayDevices);
    // be_checkin_day_seen: the devices (and releases) seen each open day, deleted once the
    // day is closed; be_checkin_devices: every device's last check-in and the number of
    // timeline events it had; be_checkin_timeline: a ring of the last N events per device.
    // Rows updated in place by every check-in leave room in their pages and have no index
    // but their key, so PostgreSQL updates them without new index entries (HOT).
    R"sql(
CREATE TABLE be_checkin_senders (
  node text COLLATE "C" NOT NULL,
  generation text COLLATE "C" NOT NULL,
  batch_seq bigint NOT NULL,
  updated_ms bigint NOT NULL,
  PRIMARY KEY (node, generation)
);
CREATE TABLE be_checkin_counts (
  app_id text COLLATE "C" NOT NULL,
  bucket text COLLATE "C" NOT NULL,
  kind "char" NOT NULL,
  name text COLLATE "C" NOT NULL,
  sub text COLLATE "C" NOT NULL,
  count bigint NOT NULL,
  PRIMARY KEY (app_id, bucket, kind, name, sub)
);
CREATE TABLE be_checkin_day_seen (
  app_id text COLLATE "C" NOT NULL,
  day text COLLATE "C" NOT NULL,
  device_id text COLLATE "C" NOT NULL,
  release text COLLATE "C" NOT NULL,
  PRIMARY KEY (app_id, day, device_id, release)
);
CREATE TABLE be_checkin_devices (
  app_id text COLLATE "C" NOT NULL,
  device_id text COLLATE "C" NOT NULL,
  time_ms bigint NOT NULL,
  platform text NOT NULL,
  version_name text,
  version_build text NOT NULL,
  action text NOT NULL,
  decision text NOT NULL,
  plugin_version text NOT NULL,
  custom_id text NOT NULL,
  default_channel text NOT NULL,
  timeline_n bigint NOT NULL,
  PRIMARY KEY (app_id, device_id)
) WITH (fillfactor = 80);
CREATE TABLE be_checkin_timeline (
  app_id text COLLATE "C" NOT NULL,
  device_id text COLLATE "C" NOT NULL,
  slot integer NOT NULL,
  pos bigint NOT NULL,
  time_ms bigint NOT NULL,
  platform text NOT NULL,
  version_name text NOT NULL,
  version_build text NOT NULL,
  action text NOT NULL,
  decision text NOT NULL,
  plugin_version text NOT NULL,
  custom_id text NOT NULL,
  default_channel text NOT NULL,
  PRIMARY KEY (app_id, device_id, slot)
) WITH (fillfactor = 80);
)sql",
    // 4: the check-in events rollout auto-pause needs (edge/pg/pause_events.hpp), appended in
    // each check-in batch's transaction and read by the origin holding the singleton lock.
    // `added_ms` is the server's clock when the row was written (one clock for the tier): the
    // reader tails by it with an overlap and skips ids it has seen. Rows older than a day
    // (the longest window) are deleted by the singleton.
    R"sql(
CREATE TABLE be_pause_events (
  id bigserial PRIMARY KEY,
  added_ms bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
  time_ms bigint NOT NULL,
  app_id text NOT NULL,
  device_id text NOT NULL,
  version_name text NOT NULL,
  action text NOT NULL,
  decision text NOT NULL
);
CREATE INDEX be_pause_events_added ON be_pause_events (added_ms, id);
)sql",
    // 5: the gate between garbage collection of the bucket and the writers that rely on its
    // blobs (edge/pg/blob_gate.hpp). A writer bumps the generation (the row lock waits for a
    // collector's round) and holds a lease until it is answered; a lease that outlives its
    // origin expires.
    R"sql(
CREATE TABLE be_blob_gate (
  id integer PRIMARY KEY CHECK (id = 1),
  generation bigint NOT NULL
);
INSERT INTO be_blob_gate VALUES (1, 0);
CREATE TABLE be_blob_leases (
  id bigserial PRIMARY KEY,
  origin text NOT NULL,
  expires_at timestamptz NOT NULL
);
)sql",
    // 6: the auto-pause events per app, for the sweep's cap on rows per app.
    R"sql(
CREATE INDEX be_pause_events_app ON be_pause_events (app_id, id);
)sql",
};

}  // namespace

int schema_version_known() {
  return static_cast<int>(kSteps.size());
}

Result<int> migrate_schema(Connection& conn, std::string* error) {
  auto say = [&](std::string what) {
    if (error != nullptr)
      *error = std::move(what);
  };
  // A session-level lock: held across the steps' transactions, released below (or by the
  // server when this connection dies).
  if (auto r = conn.exec("SELECT pg_advisory_lock($1)", {std::to_string(kLockMigrate)}); !r) {
    say(conn.last_error());
    return r.error();
  }
  struct Unlock {
    Connection& c;
    ~Unlock() {
      if (c.open())
        (void)c.exec("SELECT pg_advisory_unlock($1)", {std::to_string(kLockMigrate)});
    }
  } unlock{conn};
  if (auto r = conn.exec_script(
          "CREATE TABLE IF NOT EXISTS be_schema (id integer PRIMARY KEY CHECK (id = 1), "
          "version integer NOT NULL); "
          "INSERT INTO be_schema VALUES (1, 0) ON CONFLICT (id) DO NOTHING");
      !r) {
    say(conn.last_error());
    return r.error();
  }
  auto found = conn.exec("SELECT version FROM be_schema WHERE id = 1");
  if (!found) {
    say(conn.last_error());
    return found.error();
  }
  const int before = static_cast<int>(found->i64(0, 0));
  const int known = schema_version_known();
  if (before > known) {
    say("the state database has schema version " + std::to_string(before) +
        " and this bundle-edge knows versions up to " + std::to_string(known) +
        ": it was written by a newer bundle-edge; run that version (nothing was changed)");
    return Errc::kUnsupportedVersion;
  }
  for (int v = before; v < known; ++v) {
    if (auto r = conn.begin(); !r) {
      say(conn.last_error());
      return r.error();
    }
    auto step = conn.exec_script(kSteps[static_cast<std::size_t>(v)]);
    if (step)
      step = conn.exec_script("UPDATE be_schema SET version = " + std::to_string(v + 1));
    if (step)
      step = conn.commit();
    if (!step) {
      say("migrating the state database to schema version " + std::to_string(v + 1) +
          " failed: " + conn.last_error());
      conn.rollback();
      return step.error();
    }
  }
  return before;
}

}  // namespace edge::pg
