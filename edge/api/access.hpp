#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/message.hpp>

#include "edge/api/response.hpp"
#include "edge/store/access_store.hpp"

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
  /// works and nothing is audited. Loads the stored tokens.
  Access(store::AccessStore* store, std::string bootstrap_token);

  /// The caller presenting the request's bearer token, or nullopt (answer 401).
  std::optional<Caller> identify(const boost::beast::http::request_header<>& req) const;
  /// Null if `caller` may make this request; else the 403 answer naming what is missing.
  std::optional<Response> refuse(const Caller& caller, boost::beast::http::verb method,
                                 std::string_view path) const;
  /// True for the routes this class answers (/v1/admin/tokens[/<name>], /v1/admin/audit).
  static bool owns(std::string_view path);
  /// Answers those routes (the caller was identified and allowed).
  Response handle(const Caller& caller, const boost::beast::http::request_header<>& req,
                  std::string_view path, std::string_view body);
  /// Records an admin write (any method but GET and HEAD): time, token, method, path,
  /// status and the change seq it made (0: none). Failures are logged, never answered.
  void audit(const Caller& caller, boost::beast::http::verb method, std::string_view path,
             unsigned status, std::uint64_t change_seq);

  /// Who made a numbered change, and when, from the audit log.
  struct Author {
    std::string token;
    std::int64_t time_ms = 0;
  };
  /// The authors of the changes numbered `seqs` that the audit log still holds.
  std::map<std::uint64_t, Author> authors(const std::vector<std::uint64_t>& seqs) const;

 private:
  struct Token {
    std::string name;
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

  store::AccessStore* store_;
  std::string bootstrap_;
  mutable std::mutex mutex_;
  std::map<std::string, Token> by_name_;  // guarded by mutex_
};

}  // namespace edge::api
