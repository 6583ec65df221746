#include "edge/pg/connection.hpp"

#include <cstdlib>
#include <cstring>

#include <libpq-fe.h>
#include <poll.h>

namespace edge::pg {

std::string redact(std::string_view url) {
  std::string out(url);
  // URI form: postgres[ql]://user:password@host...
  if (const auto scheme = out.find("://"); scheme != std::string::npos) {
    const auto at = out.find('@', scheme + 3);
    const auto slash = out.find('/', scheme + 3);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const auto colon = out.find(':', scheme + 3);
      if (colon != std::string::npos && colon < at)
        out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // key=value form, and ?password= / &password= in a URI's query.
  for (std::size_t pos = 0; (pos = out.find("password", pos)) != std::string::npos;) {
    std::size_t eq = pos + 8;
    while (eq < out.size() && out[eq] == ' ')
      ++eq;
    if (eq >= out.size() || out[eq] != '=') {
      pos += 8;
      continue;
    }
    std::size_t start = eq + 1;
    while (start < out.size() && out[start] == ' ')
      ++start;
    std::size_t end = start;
    if (end < out.size() && out[end] == '\'') {
      ++end;
      while (end < out.size() && out[end] != '\'')
        end += out[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, out.size());
    } else {
      while (end < out.size() && out[end] != ' ' && out[end] != '&')
        ++end;
    }
    out.replace(start, end - start, "***");
    pos = start + 3;
  }
  return out;
}

Rows::Rows(pg_result* res) : res_(res) {}
Rows::~Rows() {
  if (res_ != nullptr)
    PQclear(res_);
}
Rows& Rows::operator=(Rows&& o) noexcept {
  if (this != &o) {
    if (res_ != nullptr)
      PQclear(res_);
    res_ = o.res_;
    o.res_ = nullptr;
  }
  return *this;
}
int Rows::size() const {
  return res_ == nullptr ? 0 : PQntuples(res_);
}
bool Rows::null(int row, int col) const {
  return res_ == nullptr || PQgetisnull(res_, row, col) != 0;
}
std::string_view Rows::text(int row, int col) const {
  if (null(row, col))
    return {};
  return {PQgetvalue(res_, row, col), static_cast<std::size_t>(PQgetlength(res_, row, col))};
}
std::int64_t Rows::i64(int row, int col) const {
  if (null(row, col))
    return 0;
  return std::strtoll(PQgetvalue(res_, row, col), nullptr, 10);
}
std::uint64_t Rows::affected() const {
  if (res_ == nullptr)
    return 0;
  const char* n = PQcmdTuples(res_);
  return n == nullptr || *n == 0 ? 0 : std::strtoull(n, nullptr, 10);
}

std::string literal(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'')
      out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

Connection::Connection(std::string url, std::string application_name)
    : url_(std::move(url)), redacted_(redact(url_)), app_name_(std::move(application_name)) {}

Connection::~Connection() {
  reset();
}

void Connection::reset() {
  if (conn_ != nullptr)
    PQfinish(conn_);
  conn_ = nullptr;
  listening_ = false;
}

void Connection::fail(std::string what) {
  last_error_ = std::move(what);
  while (!last_error_.empty() && (last_error_.back() == '\n' || last_error_.back() == ' '))
    last_error_.pop_back();
  for (auto& c : last_error_) {
    if (c == '\n')
      c = ' ';
  }
}

std::string Connection::server() const {
  if (conn_ == nullptr)
    return {};
  const char* h = PQhost(conn_);
  const char* p = PQport(conn_);
  return std::string(h == nullptr ? "" : h) + ":" + (p == nullptr ? "" : p);
}

Result<void> Connection::ensure() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK)
    return {};
  reset();
  // Our defaults first: values the URL itself sets come later in expansion and win.
  const char* keys[] = {"connect_timeout",
                        "application_name",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "dbname",
                        nullptr};
  const char* values[] = {"5", app_name_.c_str(), "5", "2", "3", url_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    fail("cannot connect to PostgreSQL at " + redacted_ + ": " +
         (conn_ == nullptr ? std::string("out of memory") : redact(PQerrorMessage(conn_))));
    reset();
    return Errc::kUnavailable;
  }
  ++opens_;
  return {};
}

Result<Rows> Connection::finish(pg_result* res, std::string_view sql) {
  const auto status = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    return Rows(res);
  std::string state;
  if (res != nullptr) {
    if (const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE); s != nullptr)
      state = s;
  }
  std::string msg = res != nullptr ? PQresultErrorMessage(res) : "";
  if (msg.empty() && conn_ != nullptr)
    msg = PQerrorMessage(conn_);
  if (res != nullptr)
    PQclear(res);
  const bool broken = conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK;
  const std::string_view head = sql.substr(0, std::min<std::size_t>(sql.find(' '), 24));
  fail("PostgreSQL " + std::string(head) + " failed" + (state.empty() ? "" : " (" + state + ")") +
       ": " + redact(msg));
  if (broken) {
    reset();
    return Errc::kUnavailable;
  }
  // Connection problems, a standby (read-only) after a failover, shutdowns.
  if (state.starts_with("08") || state == "25006" || state.starts_with("57P") || state == "53300") {
    reset();
    return Errc::kUnavailable;
  }
  if (state == "40001" || state == "40P01")
    return Errc::kConflict;
  return Errc::kDatabase;
}

Result<Rows> Connection::exec(std::string_view sql, const std::vector<Param>& params) {
  if (auto r = ensure(); !r)
    return r.error();
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params)
    values.push_back(p ? p->c_str() : nullptr);
  const std::string text(sql);
  pg_result* res = PQexecParams(conn_, text.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), nullptr, nullptr, 0);
  return finish(res, sql);
}

Result<void> Connection::exec_script(std::string_view sql) {
  if (auto r = ensure(); !r)
    return r.error();
  const std::string text(sql);
  auto r = finish(PQexec(conn_, text.c_str()), sql);
  if (!r)
    return r.error();
  return {};
}

Result<void> Connection::begin(std::string_view mode) {
  return exec_script(mode.empty() ? std::string("BEGIN") : "BEGIN " + std::string(mode));
}

Result<void> Connection::commit() {
  return exec_script("COMMIT");
}

void Connection::rollback() {
  if (conn_ == nullptr)
    return;
  if (PQtransactionStatus(conn_) == PQTRANS_IDLE)
    return;
  if (!exec_script("ROLLBACK"))
    reset();
}

bool Connection::wait_notify(std::string_view channel, std::chrono::milliseconds timeout) {
  if (!listening_) {
    if (!exec_script("LISTEN " + std::string(channel)))
      return false;
    listening_ = true;
  }
  auto drain = [&] {
    bool any = false;
    while (PGnotify* n = PQnotifies(conn_)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  };
  if (PQconsumeInput(conn_) == 0) {
    fail("PostgreSQL connection lost while listening: " + redact(PQerrorMessage(conn_)));
    reset();
    return false;
  }
  if (drain())
    return true;
  pollfd pfd{PQsocket(conn_), POLLIN, 0};
  const int n = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (n <= 0)
    return false;
  if (PQconsumeInput(conn_) == 0) {
    fail("PostgreSQL connection lost while listening: " + redact(PQerrorMessage(conn_)));
    reset();
    return false;
  }
  return drain();
}

}  // namespace edge::pg
