#include "edge/pg/fleet.hpp"

#include <algorithm>
#include <limits>
#include <map>

#include "edge/core/utf8.hpp"

namespace edge::pg {
namespace {

constexpr std::size_t kRowsPerStatement = 500;  // 7 parameters each
constexpr std::size_t kMaxPage = 10'000;

std::string num(std::uint64_t v) {
  return std::to_string(std::min<std::uint64_t>(v, std::numeric_limits<std::int64_t>::max()));
}

}  // namespace

FleetTable::FleetTable(std::string url) : conn_(std::move(url), "bundle-edge-fleet") {}

Result<void> FleetTable::upsert(const std::vector<store::FleetRow>& rows) {
  // One row per node (a statement may not update a row twice): the last of the report wins.
  std::map<std::string_view, const store::FleetRow*> last;
  for (const auto& r : rows) {
    if (!valid_utf8(r.node_id) || !valid_utf8(r.doc) || !valid_utf8(r.via) ||
        r.doc.find('\0') != std::string::npos)
      return Errc::kInvalidArgument;
    last[r.node_id] = &r;
  }
  std::vector<const store::FleetRow*> todo;
  todo.reserve(last.size());
  for (const auto& [_, r] : last)
    todo.push_back(r);
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < todo.size(); i += kRowsPerStatement) {
    const std::size_t n = std::min(kRowsPerStatement, todo.size() - i);
    std::vector<Param> p;
    p.reserve(n * 7);
    std::string sql =
        "INSERT INTO be_fleet (node_id, received_ms, via, lag_seq, outbox_depth, outbox_bytes, "
        "doc) VALUES ";
    for (std::size_t j = 0; j < n; ++j) {
      const auto& r = *todo[i + j];
      const std::size_t b = j * 7;
      sql += j == 0 ? "(" : ",(";
      for (std::size_t k = 1; k <= 7; ++k)
        sql += (k > 1 ? ",$" : "$") + std::to_string(b + k);
      sql += ')';
      p.emplace_back(r.node_id);
      p.emplace_back(std::to_string(r.received_ms));
      p.emplace_back(r.via);
      p.emplace_back(num(r.lag_seq));
      p.emplace_back(num(r.outbox_depth));
      p.emplace_back(num(r.outbox_bytes));
      p.emplace_back(r.doc);
    }
    // A report that took longer to arrive than a newer one through another origin does not
    // overwrite it.
    sql +=
        " ON CONFLICT (node_id) DO UPDATE SET received_ms = EXCLUDED.received_ms, "
        "via = EXCLUDED.via, lag_seq = EXCLUDED.lag_seq, outbox_depth = EXCLUDED.outbox_depth, "
        "outbox_bytes = EXCLUDED.outbox_bytes, doc = EXCLUDED.doc "
        "WHERE be_fleet.received_ms <= EXCLUDED.received_ms";
    if (auto r = conn_.exec(sql, p); !r)
      return r.error();
  }
  return {};
}

Result<std::vector<store::FleetRow>> FleetTable::page(std::string_view after, std::size_t limit,
                                                      std::int64_t min_received_ms) const {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec(
      "SELECT node_id, received_ms, via, lag_seq, outbox_depth, outbox_bytes, doc FROM be_fleet "
      "WHERE node_id > $1 AND received_ms > $2 ORDER BY node_id LIMIT $3",
      {std::string(after), std::to_string(min_received_ms),
       std::to_string(std::min(limit, kMaxPage))});
  if (!r)
    return r.error();
  std::vector<store::FleetRow> out;
  out.reserve(static_cast<std::size_t>(r->size()));
  for (int i = 0; i < r->size(); ++i) {
    store::FleetRow row;
    row.node_id = r->text(i, 0);
    row.received_ms = r->i64(i, 1);
    row.via = r->text(i, 2);
    row.lag_seq = static_cast<std::uint64_t>(r->i64(i, 3));
    row.outbox_depth = static_cast<std::uint64_t>(r->i64(i, 4));
    row.outbox_bytes = static_cast<std::uint64_t>(r->i64(i, 5));
    row.doc = r->text(i, 6);
    out.push_back(std::move(row));
  }
  return out;
}

Result<store::FleetTotals> FleetTable::totals(std::int64_t min_received_ms,
                                              std::int64_t stale_before_ms) const {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec(
      "SELECT count(*), count(*) FILTER (WHERE received_ms < $2), "
      "COALESCE(sum(outbox_depth), 0), COALESCE(sum(outbox_bytes), 0), "
      "(SELECT node_id FROM be_fleet WHERE received_ms > $1 AND lag_seq > 0 "
      " ORDER BY lag_seq DESC, node_id LIMIT 1), "
      "COALESCE(max(lag_seq), 0) FROM be_fleet WHERE received_ms > $1",
      {std::to_string(min_received_ms), std::to_string(stale_before_ms)});
  if (!r)
    return r.error();
  if (r->size() != 1)
    return Errc::kCorrupt;
  store::FleetTotals t;
  t.nodes = static_cast<std::size_t>(r->i64(0, 0));
  t.stale = static_cast<std::size_t>(r->i64(0, 1));
  t.outbox_depth = static_cast<std::uint64_t>(r->i64(0, 2));
  t.outbox_bytes = static_cast<std::uint64_t>(r->i64(0, 3));
  t.max_lag_node = r->text(0, 4);
  t.max_lag_seq = static_cast<std::uint64_t>(r->i64(0, 5));
  return t;
}

Result<std::size_t> FleetTable::expire(std::int64_t min_received_ms, std::size_t max_nodes) {
  std::lock_guard lock(mutex_);
  auto r =
      conn_.exec("DELETE FROM be_fleet WHERE received_ms <= $1", {std::to_string(min_received_ms)});
  if (!r)
    return r.error();
  auto n = static_cast<std::size_t>(r->affected());
  if (max_nodes > 0) {
    auto k = conn_.exec(
        "DELETE FROM be_fleet WHERE node_id IN "
        "(SELECT node_id FROM be_fleet ORDER BY received_ms DESC, node_id OFFSET $1)",
        {std::to_string(max_nodes)});
    if (!k)
      return k.error();
    n += static_cast<std::size_t>(k->affected());
  }
  return n;
}

}  // namespace edge::pg
