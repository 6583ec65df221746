#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/beast/http/message.hpp>

#include "edge/api/response.hpp"
#include "edge/store/access_backend.hpp"

namespace edge::api {

/// What an admin token may do (DESIGN §11).
enum class Role : std::uint8_t {
  kAdmin,      ///< everything, tokens and the audit log included
  kPublisher,  ///< its apps: read, upload blobs, create and change releases, channels,
               ///< devices; never delete
  kViewer,     ///< its apps: read only
};
std::string_view role_name(Role role);

/// Who made an admin request.
struct Caller {
  std::string name;  ///< the token's name ("bootstrap" for admin.token)
  Role role = Role::kAdmin;
  std::vector<std::string> apps;  ///< publisher and viewer: the apps it may touch ("*": all)
};

/// Names no created token may take: the bootstrap token's and the node's own automation's
/// (is_system_actor), so an audit record's name says who acted.
bool is_reserved_name(std::string_view name);
/// True for the names the node's automation writes under ("auto-pause"): never a token's.
/// Audit records carry it as "actor_kind": "system" (else "token"), a field no request
/// can set.
bool is_system_actor(std::string_view name);

/// Bounds of the audit log and of refusals (config [admin]).
struct AccessOptions {
  /// Audit records and refusal records older than this are deleted (0: no age bound).
  std::int64_t audit_keep_ms = std::int64_t{90} * 86'400'000;
  /// Distinct refusal records kept (token, method, path); the least recently seen goes.
  std::size_t refusals_keep = 10'000;
  /// 403s a token may collect in a minute; past it, every admin request it makes is
  /// answered 429 with Retry-After for a minute (0: no limit).
  std::uint32_t refusals_per_minute = 30;
  /// The node's id, set on the origins of a tier (shared backend): every audit and refusal
  /// record names the origin it went through. "" (embedded): records carry no origin.
  std::string origin;
  /// Audit records kept in memory while the backend refuses them, appended when it is back
  /// (past it, the oldest go, each one logged).
  std::size_t pending_audit_keep = 10'000;
};

/// The app of `/v1/admin/apps/<app>/decide` (a dry run of /updates: it writes nothing, so
/// every role that reads the app may call it), or nullopt for any other path.
std::optional<std::string_view> decide_app(std::string_view path);

/// True if `caller` may read app `app_id`: an admin, or a token whose apps name it (or "*").
bool may_read_app(const Caller& caller, std::string_view app_id);

/// True if an admin request may change something: every method but GET and HEAD, except
/// the dry run of decide_app. Writes are what a viewer is refused and what the audit log
/// records.
bool writes(boost::beast::http::verb method, std::string_view path);

/// Scoped admin tokens and the audit log (DESIGN §11). The bootstrap token (admin.token)
/// is always an admin named "bootstrap"; other tokens are created through the API, stored
/// as SHA-256 hashes (the secret is shown once, at creation) and looked up by that hash, so
/// the secret is never compared byte by byte; the digest found is then compared in constant
/// time. A revoked token is refused from the next request on.
///
/// Thread-safety: all methods may be called from any thread.
class Access {
 public:
  /// `store` may be null (tests, nodes without scoped tokens): only the bootstrap token
  /// works and nothing is audited. Loads the stored tokens (a stored token under a
  /// reserved name, from an older version, is skipped and may only be revoked) and the
  /// refusal records.
  Access(store::AccessBackend* store, std::string bootstrap_token, AccessOptions options = {});
  ~Access();
  Access(const Access&) = delete;
  Access& operator=(const Access&) = delete;

  /// Reads the tokens from the backend again (a shared backend: tokens created or revoked
  /// through other origins). False, and the tokens in memory kept, if the backend cannot be
  /// read: token checks go on from memory while the state database is down.
  bool reload();
  /// Appends the audit records kept while the backend refused them; returns how many are
  /// still waiting.
  std::size_t flush_pending();
  /// Audit records waiting for the backend, and those dropped because too many waited.
  std::size_t pending_audit() const;
  std::uint64_t audit_dropped() const;
  /// Starts a thread that, every `interval`, reloads the tokens and flushes the pending
  /// audit records (shared backends: a token revoked on another origin is refused here
  /// within `interval` plus one read). stop_refresh() (or the destructor) joins it.
  void start_refresh(std::chrono::milliseconds interval);
  void stop_refresh();
  /// Shared backends: the retention of the audit log and of the refusal records for every
  /// origin (admin.audit_keep_days, refusals_keep), as singleton work; audit_keep is the
  /// backend's own. Embedded nodes prune as they write and need not call it.
  void sweep_shared(std::int64_t now_ms);

  /// The caller presenting the request's bearer token, or nullopt (answer 401).
  std::optional<Caller> identify(const boost::beast::http::request_header<>& req) const;
  /// Null if `caller` may make this request; else the 403 answer naming what is missing.
  std::optional<Response> refuse(const Caller& caller, boost::beast::http::verb method,
                                 std::string_view path) const;
  /// The 429 answer (with Retry-After) if `caller` collected more than
  /// refusals_per_minute 403s in the last minute, else nullopt.
  std::optional<Response> throttle(const Caller& caller) const;
  /// Records that `caller`'s request was refused with `status` (403 from refuse(), or a
  /// 4xx a write was answered): coalesced per (token, method, path) with a count and the
  /// first and last time, apart from the audit log; a 403 counts towards throttle().
  void refused(const Caller& caller, boost::beast::http::verb method, std::string_view path,
               unsigned status);
  /// True for the routes this class answers (/v1/admin/tokens[/<name>], /v1/admin/audit,
  /// /v1/admin/audit/refusals).
  static bool owns(std::string_view path);
  /// Answers those routes (the caller was identified and allowed).
  Response handle(const Caller& caller, const boost::beast::http::request_header<>& req,
                  std::string_view path, std::string_view body);
  /// Records an admin write (any method but GET and HEAD): time, token, actor_kind, method,
  /// path, status and the change seq it made (0: none). A write answered 4xx is a refusal
  /// (refused()), not an audit record: refusals can never push writes out of the audit
  /// log. Failures are logged, never answered.
  void audit(const Caller& caller, boost::beast::http::verb method, std::string_view path,
             unsigned status, std::uint64_t change_seq);

  /// Who made a numbered change, and when, from the audit log.
  struct Author {
    std::string token;
    std::string actor_kind;  ///< "system" or "token"
    std::int64_t time_ms = 0;
  };
  /// The authors of the changes numbered `seqs` that the audit log still holds.
  std::map<std::uint64_t, Author> authors(const std::vector<std::uint64_t>& seqs) const;

 private:
  struct Token {
    std::string name;
    std::string doc;  ///< as stored: a reload keeps a token whose document did not change
    Role role = Role::kViewer;
    std::vector<std::string> apps;
    Sha256 hash;
    std::int64_t created_ms = 0;
    std::string created_by;
  };
  Response create(const Caller& caller, std::string_view body);
  Response list() const;
  Response revoke(std::string_view name);
  Response audit_page(std::string_view query) const;
  Response refusals_page(std::string_view query) const;
  /// Age bound: deletes old audit and refusal records, at most once a minute.
  void prune(std::int64_t now_ms);
  /// The tokens of stored (name, document) pairs; unreadable ones and reserved names are
  /// skipped (logged when `log`).
  static std::map<std::string, Token> parse_tokens(
      const std::vector<std::pair<std::string, std::string>>& stored, bool log);
  /// The refusal records' key prefix of this node ("" embedded, "<origin>\0" in a tier).
  std::string refusal_prefix() const;
  void keep_pending(std::string doc);

  /// Repeated refusals of one (token, method, path), coalesced.
  struct Refusal {
    std::string origin;  ///< "" on an embedded node
    std::string token, role, method, path;
    unsigned status = 0;
    std::uint64_t count = 0;
    std::int64_t first_ms = 0, last_ms = 0;
  };
  static std::optional<Refusal> parse_refusal(std::string_view doc);
  /// A token's 403s in the current minute.
  struct Strikes {
    std::int64_t window_start_ms = 0;
    std::uint32_t count = 0;
    std::int64_t blocked_until_ms = 0;
  };

  store::AccessBackend* store_;
  std::string bootstrap_;
  AccessOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, Token> by_name_;  // guarded by mutex_
  // Token writes made through this node: a reload that read before one of them does not
  // replace the tokens (it would undo the write until the next reload). Guarded by mutex_.
  std::uint64_t token_writes_ = 0;
  mutable std::mutex pending_mutex_;
  std::deque<std::string> pending_audit_;  // guarded by pending_mutex_
  std::uint64_t audit_dropped_ = 0;        // guarded by pending_mutex_
  std::mutex flush_mutex_;                 // one flush at a time keeps their order
  std::mutex refresh_mutex_;
  std::condition_variable refresh_cv_;
  bool refresh_stop_ = false;  // guarded by refresh_mutex_
  std::thread refresh_thread_;
  mutable std::mutex refusal_mutex_;
  std::map<std::string, Refusal> refusals_;  // by store key; guarded by refusal_mutex_
  std::map<std::string, Strikes> strikes_;   // by token name; guarded by refusal_mutex_
  std::int64_t last_prune_ms_ = 0;           // guarded by refusal_mutex_
};

}  // namespace edge::api
