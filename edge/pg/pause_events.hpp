#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/pg/connection.hpp"
#include "edge/store/checkin_backend.hpp"

namespace edge::pg {

/// The check-in events rollout auto-pause needs, shared by the origins of a tier (DESIGN
/// §12.2: auto-pause is singleton work on the tier's whole data). PgCheckins appends them in
/// each batch's own transaction (be_pause_events, only the events a watched rollout counts,
/// as AutoPauser::observe would keep them); the origin holding the singleton lock reads them
/// here and feeds its AutoPauser.
///
/// Ids are taken when a row is inserted and may commit out of order, so the reader does not
/// tail by id alone: each poll reads the rows added (on the server's clock, one for the
/// tier) since kOverlapMs before the previous poll began, and skips the ids it has seen. A
/// row is missed only if its transaction stayed open longer than the overlap between its
/// insert and its commit (a check-in batch's transaction lasts milliseconds).
///
/// Growth: one row per counted event (an update check offering a watched rollout's release,
/// a try, a failure of a device the rollout selects) for at most a day: sweep() deletes rows
/// older than the longest window, so the table holds at most a day of those events (about
/// 100 bytes each): a device checking for updates 20 times a day in a watched rollout adds
/// about 2 kB. Devices that forge events under new ids add rows at their request rate, so
/// sweep() also keeps at most kMaxRowsPerApp rows per app (the newest), twice what an
/// AutoPauser keeps per rollout.
class PauseEvents {
 public:
  /// Re-read before the previous poll's start.
  static constexpr std::int64_t kOverlapMs = 5'000;
  /// The longest auto-pause window: older rows are swept and not read back.
  static constexpr std::int64_t kKeepMs = 1440LL * 60'000;
  /// Rows kept per app at most (the newest).
  static constexpr std::int64_t kMaxRowsPerApp = 2'000'000;

  explicit PauseEvents(std::string url);

  /// Starts again from the last kKeepMs (a new holder's rebuild): the next poll() reads all
  /// of it.
  void rewind() { rewind_ = true; }
  /// Calls `fn` with each event committed since the previous poll (or, after rewind(), in
  /// the last kKeepMs, up to `max_rows`), in id order. Returns how many.
  Result<std::size_t> poll(const std::function<void(const store::Checkin&)>& fn,
                           std::size_t max_rows = 5'000'000);
  /// Deletes the rows older than kKeepMs (server clock), and an app's oldest rows past
  /// `max_rows_per_app`.
  Result<std::uint64_t> sweep(std::int64_t max_rows_per_app = kMaxRowsPerApp);

 private:
  Connection conn_;
  bool rewind_ = true;
  std::int64_t since_ms_ = 0;                            ///< server ms the next poll reads from
  std::unordered_map<std::int64_t, std::int64_t> seen_;  ///< id -> added_ms, added >= since_ms_
};

}  // namespace edge::pg
