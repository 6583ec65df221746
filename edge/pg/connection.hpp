#pragma once

// The only code of the project that includes libpq (DESIGN §1: one module per outside
// engine). Everything PostgreSQL-specific lives in edge/pg.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"

struct pg_conn;
struct pg_result;

namespace edge::pg {

/// A connection string with any password removed, for logs and errors: `password=...`
/// key/value pairs and the password part of a postgres:// URI's user info.
std::string redact(std::string_view url);

/// The rows of one statement's answer (text format).
class Rows {
 public:
  Rows() = default;
  explicit Rows(pg_result* res);
  ~Rows();
  Rows(Rows&& o) noexcept : res_(o.res_) { o.res_ = nullptr; }
  Rows& operator=(Rows&& o) noexcept;
  Rows(const Rows&) = delete;
  Rows& operator=(const Rows&) = delete;

  int size() const;
  bool null(int row, int col) const;
  std::string_view text(int row, int col) const;
  std::int64_t i64(int row, int col) const;  ///< 0 when null or not a number
  /// Rows affected by an INSERT/UPDATE/DELETE.
  std::uint64_t affected() const;

 private:
  pg_result* res_ = nullptr;
};

/// A statement parameter in text format; nullopt is SQL NULL.
using Param = std::optional<std::string>;

/// One libpq connection to the state database, opened on first use and opened again after
/// it broke. Not thread-safe: one per thread or guarded by its user.
///
/// Errors: Errc::kUnavailable when the server cannot be reached or cannot take writes (a
/// lost connection, a standby in recovery, an administrator shutdown, a read-only
/// transaction): the caller answers 503 and retries later. Errc::kConflict for a
/// serialization failure or deadlock. Errc::kDatabase for anything else (a bug or a schema
/// problem). last_error() says what in words, without credentials.
class Connection {
 public:
  explicit Connection(std::string url, std::string application_name = "bundle-edge");
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Opens the connection if it is not open (bounded by connect_timeout in the URL, else 5 s).
  Result<void> ensure();
  /// Runs one statement with text parameters ($1, $2, ...).
  Result<Rows> exec(std::string_view sql, const std::vector<Param>& params = {});
  /// Runs statements without parameters (several separated by ';' allowed).
  Result<void> exec_script(std::string_view sql);
  /// BEGIN / COMMIT / ROLLBACK. rollback() never fails (a broken connection is dropped).
  Result<void> begin(std::string_view mode = {});
  Result<void> commit();
  void rollback();

  /// LISTEN on `channel`, then waits up to `timeout` for a notification on this
  /// connection. True if one (or more) arrived; false on timeout or a broken connection
  /// (then reopened on the next call, and LISTEN issued again).
  bool wait_notify(std::string_view channel, std::chrono::milliseconds timeout);

  /// Closes the connection (the next call opens it again).
  void reset();
  bool open() const { return conn_ != nullptr; }
  /// How many times a connection was opened: a session-level lock or LISTEN is lost when this
  /// moves.
  std::uint64_t opens() const { return opens_; }
  const std::string& last_error() const { return last_error_; }
  /// The redacted connection string, for messages.
  const std::string& where() const { return redacted_; }
  /// The server's host:port of the open connection ("" when closed).
  std::string server() const;

 private:
  Result<Rows> finish(pg_result* res, std::string_view sql);
  void fail(std::string what);

  std::string url_;
  std::string redacted_;
  std::string app_name_;
  pg_conn* conn_ = nullptr;
  bool listening_ = false;
  std::uint64_t opens_ = 0;
  std::string last_error_;
};

/// Quotes a string as a SQL literal (for the few statements built as text).
std::string literal(std::string_view s);

}  // namespace edge::pg
