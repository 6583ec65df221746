#include "edge/pg/state_log.hpp"

#include <map>
#include <tuple>

#include "edge/pg/schema.hpp"

#include <spdlog/spdlog.h>

namespace edge::pg {
namespace {

constexpr std::string_view kChannel = "bundle_edge_feed";
/// Rows per multi-row statement (6 parameters each, far below the 65535 limit).
constexpr std::size_t kRowsPerStatement = 1000;

std::string kind_text(store::StateKind k) {
  return std::to_string(static_cast<int>(k));
}

/// "($1,$2,$3),($4,$5,$6),..." for `rows` rows of `cols` parameters.
std::string placeholders(std::size_t rows, std::size_t cols) {
  std::string out;
  std::size_t n = 1;
  for (std::size_t r = 0; r < rows; ++r) {
    out += r == 0 ? "(" : ",(";
    for (std::size_t c = 0; c < cols; ++c) {
      if (c > 0)
        out += ',';
      out += '$' + std::to_string(n++);
    }
    out += ')';
  }
  return out;
}

bool valid_kind(std::int64_t k) {
  return k >= 1 && k <= 4;
}

}  // namespace

StateLog::StateLog(std::string url, store::StateStore& mirror)
    : mirror_(mirror),
      write_conn_(url, "bundle-edge-write"),
      follow_conn_(url, "bundle-edge-follow"),
      listen_conn_(url, "bundle-edge-listen"),
      health_conn_(std::move(url), "bundle-edge-health") {}

Result<void> StateLog::open(std::string* error) {
  std::lock_guard lock(write_mutex_);
  auto r = migrate_schema(write_conn_, error);
  if (!r)
    return r.error();
  if (*r < schema_version_known())
    spdlog::info("state: schema of {} migrated from version {} to {}", write_conn_.where(), *r,
                 schema_version_known());
  return {};
}

Result<void> StateLog::write_changes(Connection& c, const std::vector<store::Change>& changes,
                                     const std::vector<store::Change>& documents) {
  for (std::size_t i = 0; i < changes.size(); i += kRowsPerStatement) {
    const std::size_t n = std::min(kRowsPerStatement, changes.size() - i);
    std::vector<Param> p;
    p.reserve(n * 6);
    for (std::size_t j = i; j < i + n; ++j) {
      const auto& ch = changes[j];
      p.emplace_back(std::to_string(ch.seq));
      p.emplace_back(kind_text(ch.kind));
      p.emplace_back(ch.deleted ? "t" : "f");
      p.emplace_back(ch.app_id);
      p.emplace_back(ch.key);
      p.emplace_back(ch.value);
    }
    auto r = c.exec("INSERT INTO be_changelog (seq, kind, deleted, app_id, key, value) VALUES " +
                        placeholders(n, 6),
                    p);
    if (!r)
      return r.error();
  }
  // The documents end as the last change of each key leaves them.
  std::map<std::tuple<int, std::string_view, std::string_view>, const store::Change*> last;
  for (const auto& ch : documents)
    last[{static_cast<int>(ch.kind), ch.app_id, ch.key}] = &ch;
  std::vector<const store::Change*> puts, dels;
  for (const auto& [k, ch] : last)
    (ch->deleted ? dels : puts).push_back(ch);
  for (std::size_t i = 0; i < puts.size(); i += kRowsPerStatement) {
    const std::size_t n = std::min(kRowsPerStatement, puts.size() - i);
    std::vector<Param> p;
    for (std::size_t j = i; j < i + n; ++j) {
      p.emplace_back(kind_text(puts[j]->kind));
      p.emplace_back(puts[j]->app_id);
      p.emplace_back(puts[j]->key);
      p.emplace_back(puts[j]->value);
    }
    auto r =
        c.exec("INSERT INTO be_documents (kind, app_id, key, value) VALUES " + placeholders(n, 4) +
                   " ON CONFLICT (kind, app_id, key) DO UPDATE SET value = EXCLUDED.value",
               p);
    if (!r)
      return r.error();
  }
  for (std::size_t i = 0; i < dels.size(); i += kRowsPerStatement) {
    const std::size_t n = std::min(kRowsPerStatement, dels.size() - i);
    std::vector<Param> p;
    for (std::size_t j = i; j < i + n; ++j) {
      p.emplace_back(kind_text(dels[j]->kind));
      p.emplace_back(dels[j]->app_id);
      p.emplace_back(dels[j]->key);
    }
    std::string sql = "DELETE FROM be_documents WHERE (kind, app_id, key) IN (";
    std::size_t k = 1;
    for (std::size_t j = 0; j < n; ++j) {
      sql += j == 0 ? "(" : ",(";
      sql += "$" + std::to_string(k) + "::smallint,$" + std::to_string(k + 1) + ",$" +
             std::to_string(k + 2) + ")";
      k += 3;
    }
    sql += ")";
    auto r = c.exec(sql, p);
    if (!r)
      return r.error();
  }
  return {};
}

Result<std::uint64_t> StateLog::commit(store::StateStore::Batch& batch, std::uint64_t based_on) {
  if (batch.empty())
    return Errc::kInvalidArgument;
  std::vector<store::Change> changes = batch.changes();
  for (const auto& ch : changes) {
    if (ch.app_id.find('\0') != std::string::npos || ch.key.find('\0') != std::string::npos)
      return Errc::kInvalidArgument;
  }
  std::uint64_t last = 0;
  {
    std::lock_guard lock(write_mutex_);
    auto& c = write_conn_;
    if (auto r = c.begin(); !r)
      return r.error();
    auto fail = [&](const boost::system::error_code& e) -> Result<std::uint64_t> {
      spdlog::warn("state: write of {} change(s) after seq {} not committed: {}", changes.size(),
                   based_on, c.last_error());
      c.rollback();
      return e;
    };
    // The row lock taken here serialises every origin's writes until COMMIT; the condition
    // refuses a write validated against an older state than the shared one.
    auto head =
        c.exec("UPDATE be_feed_head SET seq = seq + $1 WHERE id = 1 AND seq = $2 RETURNING seq",
               {std::to_string(changes.size()), std::to_string(based_on)});
    if (!head)
      return fail(head.error());
    if (head->size() != 1) {
      c.rollback();
      return Errc::kConflict;
    }
    last = static_cast<std::uint64_t>(head->i64(0, 0));
    std::uint64_t seq = last - changes.size();
    for (auto& ch : changes)
      ch.seq = ++seq;
    if (auto w = write_changes(c, changes, changes); !w)
      return fail(w.error());
    if (auto n = c.exec("SELECT pg_notify($1, $2)", {std::string(kChannel), std::to_string(last)});
        !n)
      return fail(n.error());
    // A lost connection here leaves the outcome unknown: the caller answers 503 and the
    // follower applies the write if it did commit.
    if (auto r = c.commit(); !r)
      return fail(r.error());
  }
  // Into the local store at once (read your writes): the caller holds the service's write
  // lock, so the follower cannot have applied past based_on meanwhile.
  auto applied = mirror_.apply(changes);
  if (!applied) {
    spdlog::error(
        "state: changes {}..{} committed to PostgreSQL but not to the local store ({}); "
        "the follower applies them again",
        changes.front().seq, last, applied.error().message());
    return applied.error();
  }
  return last;
}

Result<store::FollowStep> StateLog::follow(std::uint64_t after, const std::string& epoch,
                                           std::size_t limit) {
  std::lock_guard lock(follow_mutex_);
  auto& c = follow_conn_;
  auto h = c.exec("SELECT seq, epoch, log_start FROM be_feed_head WHERE id = 1");
  if (!h)
    return h.error();
  if (h->size() != 1)
    return Errc::kCorrupt;
  const auto head_seq = static_cast<std::uint64_t>(h->i64(0, 0));
  const std::string head_epoch(h->text(0, 1));
  const auto log_start = static_cast<std::uint64_t>(h->i64(0, 2));
  store::FollowStep step;
  if (epoch.empty() && after == 0 && log_start <= 1) {
    // A fresh local store: take the epoch and replay the whole log, so it can serve edges
    // the same changes as every other origin.
    if (auto e = mirror_.set_epoch(head_epoch); !e)
      return e.error();
  } else if (epoch != head_epoch || after > head_seq || after + 1 < log_start) {
    if (auto r = c.begin("ISOLATION LEVEL REPEATABLE READ READ ONLY"); !r)
      return r.error();
    auto hh = c.exec("SELECT seq, epoch FROM be_feed_head WHERE id = 1");
    auto docs = hh ? c.exec(
                         "SELECT kind, app_id, key, value FROM be_documents "
                         "ORDER BY kind, app_id, key")
                   : Result<Rows>(hh.error());
    if (!docs) {
      c.rollback();
      return docs.error();
    }
    c.rollback();  // read only: nothing to commit
    store::StateStore::Snapshot snap;
    snap.seq = static_cast<std::uint64_t>(hh->i64(0, 0));
    snap.epoch = std::string(hh->text(0, 1));
    snap.docs.reserve(static_cast<std::size_t>(docs->size()));
    for (int i = 0; i < docs->size(); ++i) {
      const auto kind = docs->i64(i, 0);
      if (!valid_kind(kind))
        return Errc::kCorrupt;
      store::Change d;
      d.kind = static_cast<store::StateKind>(kind);
      d.app_id = docs->text(i, 1);
      d.key = docs->text(i, 2);
      d.value = docs->text(i, 3);
      snap.docs.push_back(std::move(d));
    }
    step.snapshot = std::move(snap);
    return step;
  }
  if (after >= head_seq)
    return step;
  auto rows = c.exec(
      "SELECT seq, kind, deleted, app_id, key, value FROM be_changelog WHERE seq > $1 "
      "ORDER BY seq LIMIT $2",
      {std::to_string(after), std::to_string(limit)});
  if (!rows)
    return rows.error();
  step.changes.reserve(static_cast<std::size_t>(rows->size()));
  for (int i = 0; i < rows->size(); ++i) {
    const auto kind = rows->i64(i, 1);
    if (!valid_kind(kind))
      return Errc::kCorrupt;
    store::Change ch;
    ch.seq = static_cast<std::uint64_t>(rows->i64(i, 0));
    ch.kind = static_cast<store::StateKind>(kind);
    ch.deleted = rows->text(i, 2) == "t";
    ch.app_id = rows->text(i, 3);
    ch.key = rows->text(i, 4);
    ch.value = rows->text(i, 5);
    step.changes.push_back(std::move(ch));
  }
  return step;
}

bool StateLog::wait_change(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(wait_mutex_);
    if (interrupted_)
      return false;
  }
  const auto start = std::chrono::steady_clock::now();
  if (listen_conn_.wait_notify(kChannel, timeout))
    return true;
  // A broken listening connection returns at once: wait out the rest, interruptibly.
  const auto rest = timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - start);
  if (rest.count() > 0) {
    std::unique_lock lock(wait_mutex_);
    wait_cv_.wait_for(lock, rest, [&] { return interrupted_; });
  }
  return false;
}

void StateLog::interrupt() {
  {
    std::lock_guard lock(wait_mutex_);
    interrupted_ = true;
  }
  wait_cv_.notify_all();
}

Result<void> StateLog::import(const store::StateStore::Snapshot& snap,
                              const std::vector<store::Change>& changelog, std::uint64_t log_start,
                              std::string* error) {
  std::lock_guard lock(write_mutex_);
  auto& c = write_conn_;
  auto say = [&](std::string what) {
    if (error != nullptr)
      *error = std::move(what);
  };
  if (auto r = c.begin(); !r) {
    say(c.last_error());
    return r.error();
  }
  auto h = c.exec("SELECT seq FROM be_feed_head WHERE id = 1 FOR UPDATE");
  auto d = h ? c.exec("SELECT count(*) FROM be_documents") : Result<Rows>(h.error());
  if (!d) {
    say(c.last_error());
    c.rollback();
    return d.error();
  }
  if (h->i64(0, 0) != 0 || d->i64(0, 0) != 0) {
    say("the state database already holds " + std::to_string(h->i64(0, 0)) + " change(s) and " +
        std::to_string(d->i64(0, 0)) +
        " document(s): migrate only into an empty one (nothing was changed)");
    c.rollback();
    return Errc::kInvalidArgument;
  }
  // The changelog as retained, the documents as the snapshot has them.
  auto w = write_changes(c, changelog, snap.docs);
  if (w) {
    auto r = c.exec("UPDATE be_feed_head SET seq = $1, epoch = $2, log_start = $3 WHERE id = 1",
                    {std::to_string(snap.seq), snap.epoch, std::to_string(log_start)});
    if (!r)
      w = r.error();
  }
  if (w)
    w = c.commit();
  if (!w) {
    say(c.last_error());
    c.rollback();
    return w.error();
  }
  return {};
}

Result<std::uint64_t> StateLog::trim_changelog(std::uint64_t keep) {
  if (keep == 0)
    return 0;
  std::lock_guard lock(health_mutex_);  // its own connection: never holds up admin writes' one
  auto& c = health_conn_;
  if (auto r = c.begin(); !r)
    return r.error();
  // The head's row lock: writers wait for the few milliseconds of one slice.
  auto h = c.exec("SELECT seq, log_start FROM be_feed_head WHERE id = 1 FOR UPDATE");
  if (!h || h->size() != 1) {
    c.rollback();
    return h ? Result<std::uint64_t>(Errc::kCorrupt) : Result<std::uint64_t>(h.error());
  }
  const auto seq = static_cast<std::uint64_t>(h->i64(0, 0));
  const auto start = static_cast<std::uint64_t>(h->i64(0, 1));
  if (seq <= keep || seq - keep < start) {
    c.rollback();
    return 0;
  }
  const std::uint64_t cut = std::min(seq - keep, start + 9'999);  // delete start..cut
  auto d = c.exec("DELETE FROM be_changelog WHERE seq >= $1 AND seq <= $2",
                  {std::to_string(start), std::to_string(cut)});
  auto u =
      d ? c.exec("UPDATE be_feed_head SET log_start = $1 WHERE id = 1", {std::to_string(cut + 1)})
        : Result<Rows>(d.error());
  if (!u) {
    c.rollback();
    return u.error();
  }
  if (auto r = c.commit(); !r)
    return r.error();
  return d->affected();
}

StateHealth StateLog::health() {
  std::lock_guard lock(health_mutex_);
  StateHealth h;
  auto r = health_conn_.exec(
      "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication), "
      "(SELECT EXTRACT(EPOCH FROM max(replay_lag)) FROM pg_stat_replication)");
  h.server = health_conn_.server();
  if (!r) {
    h.error = health_conn_.last_error();
    return h;
  }
  h.up = r->text(0, 0) == "f";
  if (!h.up)
    h.error = "connected to a standby (in recovery): writes need the primary";
  h.standbys = r->i64(0, 1);
  if (!r->null(0, 2))
    h.replication_lag_s = std::strtod(std::string(r->text(0, 2)).c_str(), nullptr);
  else if (h.standbys == 0)
    h.replication_lag_s = 0;
  return h;
}

}  // namespace edge::pg
