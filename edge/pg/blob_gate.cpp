#include "edge/pg/blob_gate.hpp"

#include <spdlog/spdlog.h>

namespace edge::pg {

PgBlobGate::PgBlobGate(std::string url, std::string origin, std::chrono::seconds lease)
    : origin_(std::move(origin)),
      lease_(lease),
      writers_(url, "bundle-edge blob gate"),
      collector_(std::move(url), "bundle-edge collector") {}

Result<std::uint64_t> PgBlobGate::enter() {
  std::lock_guard lock(writers_mutex_);
  if (auto b = writers_.begin(); !b)
    return b.error();
  auto bumped = writers_.exec("UPDATE be_blob_gate SET generation = generation + 1 WHERE id = 1");
  if (!bumped) {
    writers_.rollback();
    return bumped.error();
  }
  auto lease = writers_.exec(
      "INSERT INTO be_blob_leases (origin, expires_at) VALUES ($1, now() + make_interval(secs "
      "=> $2)) RETURNING id",
      {origin_, std::to_string(lease_.count())});
  if (!lease || lease->size() != 1) {
    writers_.rollback();
    return lease ? make_error_code(Errc::kDatabase) : lease.error();
  }
  const auto id = static_cast<std::uint64_t>(lease->i64(0, 0));
  if (auto c = writers_.commit(); !c)
    return c.error();
  return id;
}

void PgBlobGate::leave(std::uint64_t ticket, std::span<const Sha256>) {
  std::lock_guard lock(writers_mutex_);
  // A lease that cannot be deleted now expires on its own.
  if (auto r = writers_.exec("DELETE FROM be_blob_leases WHERE id = $1", {std::to_string(ticket)});
      !r) {
    spdlog::warn("blob gate: releasing lease {}: {} (it expires by itself)", ticket,
                 writers_.last_error());
  }
}

Result<std::uint64_t> PgBlobGate::quiet() {
  std::lock_guard lock(collector_mutex_);
  auto rows = collector_.exec(
      "SELECT generation, (SELECT count(*) FROM be_blob_leases WHERE expires_at > now()) FROM "
      "be_blob_gate WHERE id = 1");
  if (!rows)
    return rows.error();
  if (rows->size() != 1)
    return make_error_code(Errc::kDatabase);
  // Expired leases (an origin that died mid-write) are cleared on the way.
  (void)collector_.exec("DELETE FROM be_blob_leases WHERE expires_at <= now()");
  if (rows->i64(0, 1) > 0)
    return make_error_code(Errc::kConflict);
  return static_cast<std::uint64_t>(rows->i64(0, 0));
}

Result<bool> PgBlobGate::exclusive(std::uint64_t generation,
                                   const std::function<Result<void>()>& round) {
  std::lock_guard lock(collector_mutex_);
  if (auto b = collector_.begin(); !b)
    return b.error();
  auto rows = collector_.exec(
      "SELECT generation, (SELECT count(*) FROM be_blob_leases WHERE expires_at > now()) FROM "
      "be_blob_gate WHERE id = 1 FOR UPDATE");
  if (!rows || rows->size() != 1) {
    collector_.rollback();
    return rows ? make_error_code(Errc::kDatabase) : rows.error();
  }
  if (static_cast<std::uint64_t>(rows->i64(0, 0)) != generation || rows->i64(0, 1) > 0) {
    collector_.rollback();
    return false;
  }
  auto r = round();
  // Commit or not, the row lock ends here; what the round removed from the bucket is gone
  // either way, and a writer waiting on the row goes on after it.
  if (!r) {
    collector_.rollback();
    return r.error();
  }
  if (auto c = collector_.commit(); !c)
    return c.error();
  return true;
}

}  // namespace edge::pg
