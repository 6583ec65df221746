#include "edge/pg/pause_events.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace edge::pg {
namespace {

constexpr std::string_view kServerMs = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
constexpr std::size_t kPage = 10'000;

}  // namespace

PauseEvents::PauseEvents(std::string url) : conn_(std::move(url), "bundle-edge-auto-pause") {}

Result<std::size_t> PauseEvents::poll(const std::function<void(const store::Checkin&)>& fn,
                                      std::size_t max_rows) {
  auto now = conn_.exec("SELECT " + std::string(kServerMs));
  if (!now)
    return now.error();
  const std::int64_t start_ms = now->i64(0, 0);
  if (rewind_) {
    seen_.clear();
    since_ms_ = start_ms - kKeepMs;
    rewind_ = false;
  }
  std::size_t n = 0;
  // Keyset pages in (added_ms, id) order, from since_ms_ on.
  std::int64_t after_added = since_ms_ - 1;
  std::int64_t after_id = INT64_MAX;
  bool cut = false;
  while (true) {
    auto rows = conn_.exec(
        "SELECT id, added_ms, time_ms, app_id, device_id, version_name, action, decision FROM "
        "be_pause_events WHERE (added_ms, id) > ($1, $2) ORDER BY added_ms, id LIMIT $3",
        {std::to_string(after_added), std::to_string(after_id), std::to_string(kPage)});
    if (!rows)
      return rows.error();
    for (int k = 0; k < rows->size(); ++k) {
      const std::int64_t id = rows->i64(k, 0);
      after_added = rows->i64(k, 1);
      after_id = id;
      if (!seen_.emplace(id, after_added).second)
        continue;  // read in the previous poll's overlap
      store::Checkin c;
      c.time_ms = rows->i64(k, 2);
      c.app_id = rows->text(k, 3);
      c.device_id = rows->text(k, 4);
      c.version_name = rows->text(k, 5);
      c.action = rows->text(k, 6);
      c.decision = rows->text(k, 7);
      fn(c);
      ++n;
    }
    if (static_cast<std::size_t>(rows->size()) < kPage)
      break;
    if (n >= max_rows) {
      cut = true;
      break;
    }
  }
  // The next poll reads again from kOverlapMs before this one began: rows inserted before it
  // and committed after it are found then.
  since_ms_ = cut ? after_added : std::max(since_ms_, start_ms - kOverlapMs);
  std::erase_if(seen_, [&](const auto& e) { return e.second < since_ms_; });
  return n;
}

Result<std::uint64_t> PauseEvents::sweep(std::int64_t max_rows_per_app) {
  auto r =
      conn_.exec("DELETE FROM be_pause_events WHERE added_ms < " + std::string(kServerMs) + " - $1",
                 {std::to_string(kKeepMs)});
  if (!r)
    return r.error();
  std::uint64_t removed = r->affected();
  // Apps past the cap (the index on (app_id, id) makes each count and cut a range scan).
  auto over = conn_.exec("SELECT app_id FROM be_pause_events GROUP BY app_id HAVING count(*) > $1",
                         {std::to_string(max_rows_per_app)});
  if (!over)
    return over.error();
  for (int i = 0; i < over->size(); ++i) {
    const std::string app(over->text(i, 0));
    auto cut = conn_.exec(
        "DELETE FROM be_pause_events WHERE app_id = $1 AND id <= (SELECT id FROM be_pause_events "
        "WHERE app_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        {app, std::to_string(max_rows_per_app)});
    if (!cut)
      return cut.error();
    removed += cut->affected();
    spdlog::warn("tier: auto-pause events of app {} past {} rows: the oldest {} removed", app,
                 max_rows_per_app, cut->affected());
  }
  return removed;
}

}  // namespace edge::pg
