#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "edge/api/response.hpp"
#include "edge/control/state.hpp"
#include "edge/store/checkin_backend.hpp"

namespace edge::api {

/// A time given in a stats query: milliseconds since 1970 ("1764633600000"), a UTC day
/// ("2026-12-02") or a UTC hour ("2026-12-02T13"). A day or hour means its first
/// millisecond, or with `end` its last. nullopt: none of these (or out of range).
std::optional<std::int64_t> parse_query_time(std::string_view text, bool end);

/// GET /v1/admin/apps/<app>/stats?from=&to=&resolution=hour|day (DESIGN §11).
///
/// Defaults: `to` now, `resolution` day, `from` the start of the 30th day back (day) or of
/// the 24th hour back (hour). At most 400 days, or 2232 hours (93 days), per query. The
/// answer has the buckets (`days` with check-ins by action, platform, running release,
/// installs and target-naming events, plus distinct devices and devices per release; or
/// `hours` with the counters and `days` with the device figures), a per-release summary of
/// the range (installs, failures, `failure_rate_bps` = failures / (installs + failures))
/// and each rollout's progress (devices on its release and on the channel's release per
/// day). A bad parameter is a 400 `invalid_query_parameters` naming it. Every name map of a
/// bucket, of the range's totals and of each target holds at most store::kMaxAnalyticsNames
/// names (the largest counts) and "other" with the rest, so the answer stays bounded (a
/// day's bucket sums 24 hours, each capped in the store).
Response analytics_response(const store::CheckinQueries& checkins, const control::AppState& app,
                            std::string_view query, std::int64_t now_ms);

}  // namespace edge::api
