#include "edge/pg/access.hpp"

#include <limits>

#include "edge/core/utf8.hpp"

#include <spdlog/spdlog.h>

namespace edge::pg {
namespace {

/// Most rows one call reads or deletes: the tables are bounded by their sweeps, this bounds
/// one statement whatever they hold.
constexpr std::size_t kMaxRows = 100'000;
constexpr std::size_t kPruneSlice = 10'000;

std::string num(std::uint64_t v) {
  // bigint columns: numbers past its range (an `after` of 2^64-1) are clamped.
  return std::to_string(std::min<std::uint64_t>(v, std::numeric_limits<std::int64_t>::max()));
}

/// Documents are JSON text: PostgreSQL refuses bytes that are not UTF-8 (and NUL) in text.
bool storable(std::string_view doc) {
  return valid_utf8(doc) && doc.find('\0') == std::string_view::npos;
}

}  // namespace

std::string hex_key(std::string_view key) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(key.size() * 2);
  for (const char c : key) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

bool unhex_key(std::string_view hex, std::string& out) {
  out.clear();
  if (hex.size() % 2 != 0)
    return false;
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]), lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

AccessTable::AccessTable(std::string url, std::uint64_t audit_keep)
    : audit_keep_(audit_keep),
      conn_(url, "bundle-edge-access"),
      read_conn_(std::move(url), "bundle-edge-access-read") {}

Result<void> AccessTable::put_token(std::string_view name, std::string_view doc) {
  if (!storable(name) || !storable(doc))
    return Errc::kInvalidArgument;
  std::lock_guard lock(mutex_);
  // Never replaces: another origin may have created the name since the caller looked.
  auto r = conn_.exec("INSERT INTO be_tokens (name, doc) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                      {std::string(name), std::string(doc)});
  if (!r)
    return r.error();
  if (r->affected() == 0)
    return Errc::kConflict;
  return {};
}

Result<void> AccessTable::erase_token(std::string_view name) {
  if (!storable(name))
    return Errc::kNotFound;
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("DELETE FROM be_tokens WHERE name = $1", {std::string(name)});
  if (!r)
    return r.error();
  if (r->affected() == 0)
    return Errc::kNotFound;
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> AccessTable::tokens() const {
  std::lock_guard lock(read_mutex_);
  auto r = read_conn_.exec("SELECT name, doc FROM be_tokens ORDER BY name LIMIT $1",
                           {std::to_string(kMaxRows)});
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(static_cast<std::size_t>(r->size()));
  for (int i = 0; i < r->size(); ++i)
    out.emplace_back(std::string(r->text(i, 0)), std::string(r->text(i, 1)));
  return out;
}

Result<std::uint64_t> AccessTable::append_audit(std::string_view doc) {
  if (!storable(doc))
    return Errc::kInvalidArgument;
  std::lock_guard lock(mutex_);
  auto& c = conn_;
  if (auto r = c.begin(); !r)
    return r.error();
  auto fail = [&](const boost::system::error_code& e) -> Result<std::uint64_t> {
    c.rollback();
    return e;
  };
  // The row lock serialises every origin's appends until COMMIT: numbers in commit order.
  auto head = c.exec(
      "UPDATE be_access_head SET audit_seq = audit_seq + 1 WHERE id = 1 RETURNING audit_seq");
  if (!head)
    return fail(head.error());
  if (head->size() != 1)
    return fail(Errc::kCorrupt);
  const auto n = static_cast<std::uint64_t>(head->i64(0, 0));
  auto ins = c.exec(
      "INSERT INTO be_audit (n, time_ms, doc) VALUES "
      "($1, COALESCE((($2::jsonb)->>'time_ms')::bigint, 0), $2)",
      {std::to_string(n), std::string(doc)});
  if (!ins)
    return fail(ins.error());
  if (audit_keep_ != 0 && n > audit_keep_) {
    // The count bound, as the embedded store keeps it: records fall out as new ones come.
    auto del = c.exec("DELETE FROM be_audit WHERE n <= $1", {std::to_string(n - audit_keep_)});
    if (!del)
      return fail(del.error());
  }
  // A lost connection here leaves the outcome unknown: the caller keeps the record and
  // appends it again (at worst twice, never lost).
  if (auto r = c.commit(); !r)
    return fail(r.error());
  return n;
}

Result<std::vector<std::pair<std::uint64_t, std::string>>> AccessTable::audit_after(
    std::uint64_t after, std::size_t limit) const {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("SELECT n, doc FROM be_audit WHERE n > $1 ORDER BY n LIMIT $2",
                      {num(after), std::to_string(std::min(limit, kMaxRows))});
  if (!r)
    return r.error();
  std::vector<std::pair<std::uint64_t, std::string>> out;
  out.reserve(static_cast<std::size_t>(r->size()));
  for (int i = 0; i < r->size(); ++i)
    out.emplace_back(static_cast<std::uint64_t>(r->i64(i, 0)), std::string(r->text(i, 1)));
  return out;
}

Result<std::vector<std::pair<std::uint64_t, std::string>>> AccessTable::audit_before(
    std::uint64_t before, std::size_t limit) const {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  if (before == 0)
    return out;
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("SELECT n, doc FROM be_audit WHERE n < $1 ORDER BY n DESC LIMIT $2",
                      {num(before), std::to_string(std::min(limit, kMaxRows))});
  if (!r)
    return r.error();
  out.reserve(static_cast<std::size_t>(r->size()));
  for (int i = 0; i < r->size(); ++i)
    out.emplace_back(static_cast<std::uint64_t>(r->i64(i, 0)), std::string(r->text(i, 1)));
  return out;
}

Result<void> AccessTable::put_refusal(std::string_view key, std::string_view doc) {
  if (!storable(doc))
    return Errc::kInvalidArgument;
  std::lock_guard lock(mutex_);
  auto r = conn_.exec(
      "INSERT INTO be_refusals (key, last_ms, doc) VALUES "
      "($1, COALESCE((($2::jsonb)->>'last_ms')::bigint, 0), $2) "
      "ON CONFLICT (key) DO UPDATE SET last_ms = EXCLUDED.last_ms, doc = EXCLUDED.doc",
      {hex_key(key), std::string(doc)});
  if (!r)
    return r.error();
  return {};
}

Result<void> AccessTable::erase_refusal(std::string_view key) {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("DELETE FROM be_refusals WHERE key = $1", {hex_key(key)});
  if (!r)
    return r.error();
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> AccessTable::refusals() const {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("SELECT key, doc FROM be_refusals ORDER BY key LIMIT $1",
                      {std::to_string(kMaxRows)});
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(static_cast<std::size_t>(r->size()));
  std::string key;
  for (int i = 0; i < r->size(); ++i) {
    if (!unhex_key(r->text(i, 0), key))
      continue;  // not written by this code
    out.emplace_back(key, std::string(r->text(i, 1)));
  }
  // Hex order is byte order: the keys come out ordered as the caller's bytes.
  return out;
}

Result<std::size_t> AccessTable::prune_audit(std::int64_t before_ms) {
  std::lock_guard lock(mutex_);
  // Oldest first, a slice per statement: appenders never wait for a long delete.
  auto r = conn_.exec(
      "DELETE FROM be_audit WHERE n IN "
      "(SELECT n FROM be_audit WHERE time_ms < $1 ORDER BY n LIMIT $2)",
      {std::to_string(before_ms), std::to_string(kPruneSlice)});
  if (!r)
    return r.error();
  return static_cast<std::size_t>(r->affected());
}

Result<std::size_t> AccessTable::prune_refusals(std::int64_t before_ms, std::size_t keep) {
  std::lock_guard lock(mutex_);
  auto r = conn_.exec("DELETE FROM be_refusals WHERE last_ms < $1", {std::to_string(before_ms)});
  if (!r)
    return r.error();
  std::size_t n = static_cast<std::size_t>(r->affected());
  if (keep > 0) {
    auto k = conn_.exec(
        "DELETE FROM be_refusals WHERE key IN "
        "(SELECT key FROM be_refusals ORDER BY last_ms DESC, key OFFSET $1)",
        {std::to_string(keep)});
    if (!k)
      return k.error();
    n += static_cast<std::size_t>(k->affected());
  }
  return n;
}

}  // namespace edge::pg
