#include "edge/api/access.hpp"

#include <algorithm>
#include <chrono>

#include <boost/json.hpp>

#include "edge/api/control_service.hpp"
#include "edge/api/device_info.hpp"
#include "edge/api/sync.hpp"
#include "edge/control/json_parse.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/sha256.hpp"
#include "edge/core/utf8.hpp"
#include "edge/http/http.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

namespace bhttp = boost::beast::http;
namespace json = boost::json;

constexpr std::string_view kTokensPath = "/v1/admin/tokens";
constexpr std::string_view kAuditPath = "/v1/admin/audit";
constexpr std::string_view kRefusalsPath = "/v1/admin/audit/refusals";
constexpr std::int64_t kMinuteMs = 60'000;
constexpr std::string_view kAppsPath = "/v1/admin/apps";
constexpr std::size_t kMaxTokens = 1000;
constexpr std::size_t kMaxApps = 100;

std::optional<Role> parse_role(std::string_view s) {
  if (s == "admin")
    return Role::kAdmin;
  if (s == "publisher")
    return Role::kPublisher;
  if (s == "viewer")
    return Role::kViewer;
  return std::nullopt;
}

// The secret handed out once: "bet_" and 64 hex digits of randomness.
std::string new_secret() {
  std::uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return {};
  return "bet_" + to_hex(raw);
}

json::array apps_json(const std::vector<std::string>& apps) {
  json::array a;
  for (const auto& app : apps)
    a.emplace_back(app);
  return a;
}

// The app a path under /v1/admin/apps/ names (empty for the list itself).
std::string_view app_of(std::string_view path) {
  if (!path.starts_with(kAppsPath) || path.size() <= kAppsPath.size() + 1)
    return {};
  std::string_view rest = path.substr(kAppsPath.size() + 1);
  return rest.substr(0, rest.find('/'));
}

// A write to a shared backend (the tier's PostgreSQL) that cannot be made now.
Response backend_unavailable(std::string_view what) {
  return error_response(503, "state_backend_unavailable",
                        "the state database cannot take writes now (down or failing over): " +
                            std::string(what) + "; retry");
}

std::string_view actor_kind(std::string_view name) {
  return is_system_actor(name) ? "system" : "token";
}

// A refusal record as stored and answered (Access::Refusal, private to Access).
template <class Refusal>
json::object refusal_json(const Refusal& r) {
  json::object o{{"token", r.token},    {"actor_kind", actor_kind(r.token)},
                 {"role", r.role},      {"method", r.method},
                 {"path", r.path},      {"status", r.status},
                 {"count", r.count},    {"first_ms", r.first_ms},
                 {"last_ms", r.last_ms}};
  if (!r.origin.empty())
    o["origin"] = r.origin;  // a tier: the origin that refused it
  return o;
}

// The refusal record a (token, method, path) coalesces into.
std::string refusal_key(std::string_view token, std::string_view method, std::string_view path) {
  std::string k(token);
  k += '\0';
  k += method;
  k += '\0';
  k += path;
  return k;
}

}  // namespace

bool is_system_actor(std::string_view name) {
  return name == "auto-pause";
}

bool is_reserved_name(std::string_view name) {
  return name == "bootstrap" || name == "system" || name.starts_with("system-") ||
         is_system_actor(name);
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kAdmin: return "admin";
    case Role::kPublisher: return "publisher";
    case Role::kViewer: return "viewer";
  }
  return "viewer";
}

std::optional<Access::Refusal> Access::parse_refusal(std::string_view doc) {
  boost::system::error_code ec;
  const json::value v = json::parse(doc, ec);
  const json::object* o = v.if_object();
  if (ec || o == nullptr)
    return std::nullopt;
  Refusal r;
  const auto str = [&](const char* f) {
    const auto* x = o->if_contains(f);
    return x != nullptr && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  const auto num = [&](const char* f) {
    const auto* x = o->if_contains(f);
    return x != nullptr && x->is_int64() ? x->get_int64() : std::int64_t{0};
  };
  r.origin = str("origin");
  r.token = str("token");
  r.role = str("role");
  r.method = str("method");
  r.path = str("path");
  r.status = static_cast<unsigned>(num("status"));
  r.count = static_cast<std::uint64_t>(num("count"));
  r.first_ms = num("first_ms");
  r.last_ms = num("last_ms");
  return r;
}

std::map<std::string, Access::Token> Access::parse_tokens(
    const std::vector<std::pair<std::string, std::string>>& stored, bool log) {
  std::map<std::string, Token> out;
  for (const auto& [name, doc] : stored) {
    boost::system::error_code ec;
    const json::value v = json::parse(doc, ec);
    const json::object* o = v.if_object();
    if (ec || o == nullptr) {
      if (log)
        spdlog::error("access: token '{}' is not readable: skipped (revoke it and create it again)",
                      name);
      continue;
    }
    if (is_reserved_name(name)) {
      if (log)
        spdlog::error("access: token '{}' has a reserved name: it is not accepted (revoke it)",
                      name);
      continue;
    }
    Token t;
    t.name = name;
    t.doc = doc;
    const auto* role = o->if_contains("role");
    const auto* hash = o->if_contains("sha256");
    auto r = role != nullptr && role->is_string() ? parse_role(role->get_string()) : std::nullopt;
    auto h = hash != nullptr && hash->is_string() ? Sha256::parse(hash->get_string()) : Errc::kIo;
    if (!r || !h) {
      if (log)
        spdlog::error("access: token '{}' has no valid role or hash: skipped", name);
      continue;
    }
    t.role = *r;
    t.hash = *h;
    if (const auto* apps = o->if_contains("apps"); apps != nullptr && apps->is_array()) {
      for (const auto& a : apps->get_array())
        if (a.is_string())
          t.apps.emplace_back(a.get_string());
    }
    if (const auto* c = o->if_contains("created_ms"); c != nullptr && c->is_int64())
      t.created_ms = c->get_int64();
    if (const auto* c = o->if_contains("created_by"); c != nullptr && c->is_string())
      t.created_by = std::string(c->get_string());
    out.emplace(name, std::move(t));
  }
  return out;
}

std::string Access::refusal_prefix() const {
  if (options_.origin.empty())
    return {};
  return options_.origin + '\0';
}

Access::Access(store::AccessBackend* store, std::string bootstrap_token, AccessOptions options)
    : store_(store), bootstrap_(std::move(bootstrap_token)), options_(std::move(options)) {
  if (store_ == nullptr)
    return;
  // A tier's refusal records are every origin's: this one coalesces and bounds its own (the
  // keys it wrote start with its id); the others' are read when the page is asked for.
  const std::string own = refusal_prefix();
  if (auto stored = store_->refusals()) {
    for (const auto& [key, doc] : *stored) {
      if (!key.starts_with(own))
        continue;
      if (auto r = parse_refusal(doc))
        refusals_.emplace(key, std::move(*r));
    }
  } else {
    spdlog::error("access: cannot read the refusal records: {}", stored.error().message());
  }
  auto stored = store_->tokens();
  if (!stored) {
    spdlog::error("access: cannot read the stored tokens: {}", stored.error().message());
    return;
  }
  by_name_ = parse_tokens(*stored, true);
}

Access::~Access() {
  stop_refresh();
}

bool Access::reload() {
  if (store_ == nullptr)
    return true;
  std::uint64_t writes_before = 0;
  {
    std::lock_guard lock(mutex_);
    writes_before = token_writes_;
  }
  auto stored = store_->tokens();
  if (!stored)
    return false;
  // Unchanged documents parse to the same tokens: only log what is new and bad.
  std::vector<std::pair<std::string, std::string>> fresh;
  {
    std::lock_guard lock(mutex_);
    for (const auto& kv : *stored) {
      const auto it = by_name_.find(kv.first);
      if (it == by_name_.end() || it->second.doc != kv.second)
        fresh.push_back(kv);
    }
  }
  auto parsed = parse_tokens(fresh, false);
  std::lock_guard lock(mutex_);
  if (token_writes_ != writes_before)
    return true;  // a write through this node since the read: the next reload sees it
  std::map<std::string, Token> next;
  for (const auto& [name, doc] : *stored) {
    if (auto it = parsed.find(name); it != parsed.end()) {
      next.emplace(name, std::move(it->second));
    } else if (auto old = by_name_.find(name); old != by_name_.end() && old->second.doc == doc) {
      next.emplace(name, std::move(old->second));
    }
  }
  for (const auto& [name, _] : by_name_) {
    if (!next.contains(name))
      spdlog::info("access: token '{}' was revoked through another origin", name);
  }
  for (const auto& [name, _] : next) {
    if (!by_name_.contains(name))
      spdlog::info("access: token '{}' was created through another origin", name);
  }
  by_name_ = std::move(next);
  return true;
}

void Access::start_refresh(std::chrono::milliseconds interval) {
  if (store_ == nullptr || refresh_thread_.joinable())
    return;
  refresh_thread_ = std::thread([this, interval] {
    std::unique_lock lock(refresh_mutex_);
    while (!refresh_cv_.wait_for(lock, interval, [&] { return refresh_stop_; })) {
      lock.unlock();
      (void)reload();
      (void)flush_pending();
      lock.lock();
    }
  });
}

void Access::stop_refresh() {
  {
    std::lock_guard lock(refresh_mutex_);
    refresh_stop_ = true;
  }
  refresh_cv_.notify_all();
  if (refresh_thread_.joinable())
    refresh_thread_.join();
}

void Access::keep_pending(std::string doc) {
  std::lock_guard lock(pending_mutex_);
  if (options_.pending_audit_keep == 0) {
    ++audit_dropped_;
    spdlog::error("audit: record lost (the backend refused it): {}", doc);
    return;
  }
  while (pending_audit_.size() >= options_.pending_audit_keep) {
    ++audit_dropped_;
    spdlog::error("audit: too many records wait for the backend; dropped: {}",
                  pending_audit_.front());
    pending_audit_.pop_front();
  }
  pending_audit_.push_back(std::move(doc));
}

std::size_t Access::flush_pending() {
  if (store_ == nullptr)
    return 0;
  std::lock_guard flush(flush_mutex_);
  for (;;) {
    std::string doc;
    {
      std::lock_guard lock(pending_mutex_);
      if (pending_audit_.empty())
        return 0;
      doc = pending_audit_.front();
    }
    if (auto n = store_->append_audit(doc); !n) {
      if (n.error() == Errc::kUnavailable || n.error() == Errc::kStorageFull) {
        std::lock_guard lock(pending_mutex_);
        return pending_audit_.size();
      }
      // Refused for what it holds, not for the backend's state: trying again cannot help.
      spdlog::error("audit: record refused by the backend ({}); dropped: {}", n.error().message(),
                    doc);
      std::lock_guard lock(pending_mutex_);
      ++audit_dropped_;
    }
    std::lock_guard lock(pending_mutex_);
    if (!pending_audit_.empty() && pending_audit_.front() == doc)
      pending_audit_.pop_front();
  }
}

std::size_t Access::pending_audit() const {
  std::lock_guard lock(pending_mutex_);
  return pending_audit_.size();
}

std::uint64_t Access::audit_dropped() const {
  std::lock_guard lock(pending_mutex_);
  return audit_dropped_;
}

std::optional<Caller> Access::identify(const bhttp::request_header<>& req) const {
  if (bearer_matches(req, bootstrap_))
    return Caller{"bootstrap", Role::kAdmin, {}};
  const std::string_view given = bearer_token(req);
  if (given.empty() || !given.starts_with("bet_"))
    return std::nullopt;
  const Sha256 digest = sha256_of(given);
  std::lock_guard lock(mutex_);
  for (const auto& [name, t] : by_name_) {
    if (CRYPTO_memcmp(t.hash.bytes.data(), digest.bytes.data(), Sha256::kSize) == 0)
      return Caller{t.name, t.role, t.apps};
  }
  return std::nullopt;
}

std::optional<std::string_view> decide_app(std::string_view path) {
  constexpr std::string_view kPrefix = "/v1/admin/apps/", kSuffix = "/decide";
  if (!path.starts_with(kPrefix) || !path.ends_with(kSuffix) ||
      path.size() <= kPrefix.size() + kSuffix.size())
    return std::nullopt;
  const std::string_view app =
      path.substr(kPrefix.size(), path.size() - kPrefix.size() - kSuffix.size());
  if (app.find('/') != std::string_view::npos)
    return std::nullopt;
  return app;
}

bool may_read_app(const Caller& caller, std::string_view app_id) {
  return caller.role == Role::kAdmin ||
         std::any_of(caller.apps.begin(), caller.apps.end(),
                     [&](const std::string& a) { return a == "*" || a == app_id; });
}

bool writes(bhttp::verb method, std::string_view path) {
  if (method == bhttp::verb::get || method == bhttp::verb::head)
    return false;
  return !(method == bhttp::verb::post && decide_app(path));
}

std::optional<Response> Access::refuse(const Caller& caller, bhttp::verb method,
                                       std::string_view path) const {
  if (caller.role == Role::kAdmin)
    return std::nullopt;
  const auto forbid = [&](const std::string& why) {
    return error_response(
        403, "forbidden",
        "token '" + caller.name + "' (" + std::string(role_name(caller.role)) + ") " + why);
  };
  const bool read = !writes(method, path);
  if (path == "/metrics" || path == "/v1/admin/fleet" || path == "/v1/admin/whoami")
    return read ? std::nullopt : std::optional(forbid("may only read " + std::string(path)));
  if (owns(path) || path == "/v1/admin/outbox/dead-letters")
    return forbid("may not use " + std::string(path) + ": it needs an admin token");
  if (path == "/v1/admin/blobs") {
    if (caller.role == Role::kPublisher)
      return std::nullopt;  // blobs are content-addressed and shared: any publisher uploads
    return forbid("may not upload blobs: it needs a publisher or admin token");
  }
  const std::string_view app = app_of(path);
  if (app.empty()) {
    return forbid("may not list every app: ask for GET " + std::string(kAppsPath) +
                  "/<app_id> of an app it holds");
  }
  if (!may_read_app(caller, app)) {
    return forbid("may not touch app '" + std::string(app.substr(0, 255)) +
                  "': it is not among the token's apps");
  }
  if (read)
    return std::nullopt;
  if (caller.role == Role::kViewer)
    return forbid("may only read");
  if (method == bhttp::verb::delete_)
    return forbid("may not delete: it needs an admin token");
  return std::nullopt;
}

bool Access::owns(std::string_view path) {
  return path == kTokensPath || path.starts_with(std::string(kTokensPath) + "/") ||
         path == kAuditPath || path == kRefusalsPath;
}

std::optional<Response> Access::throttle(const Caller& caller) const {
  if (options_.refusals_per_minute == 0 || store_ == nullptr)
    return std::nullopt;
  const std::int64_t now = wall_clock_ms();
  std::int64_t until = 0;
  {
    std::lock_guard lock(refusal_mutex_);
    const auto it = strikes_.find(caller.name);
    if (it == strikes_.end() || it->second.blocked_until_ms <= now)
      return std::nullopt;
    until = it->second.blocked_until_ms;
  }
  const std::int64_t wait_s = (until - now + 999) / 1000;
  Response r = error_response(429, "too_many_refusals",
                              "token '" + caller.name +
                                  "' was refused more than admin.refusals_per_minute (" +
                                  std::to_string(options_.refusals_per_minute) +
                                  ") times in a minute; retry in " + std::to_string(wait_s) + " s");
  r.set("Retry-After", std::to_string(wait_s));
  return r;
}

void Access::refused(const Caller& caller, bhttp::verb method, std::string_view path,
                     unsigned status) {
  if (store_ == nullptr)
    return;
  const std::int64_t now = wall_clock_ms();
  const std::string_view method_name(bhttp::to_string(method).data(),
                                     bhttp::to_string(method).size());
  // Valid UTF-8 in the stored document, whatever the request path held.
  const std::string shown = utf8_clamp(path, 512);
  const std::string key = refusal_prefix() + refusal_key(caller.name, method_name, shown);
  std::string doc;
  {
    std::lock_guard lock(refusal_mutex_);
    if (status == 403 && options_.refusals_per_minute > 0) {
      auto& s = strikes_[caller.name];
      if (now - s.window_start_ms >= kMinuteMs) {
        s.window_start_ms = now;
        s.count = 0;
      }
      if (++s.count >= options_.refusals_per_minute && s.blocked_until_ms <= now) {
        s.blocked_until_ms = now + kMinuteMs;
        spdlog::warn("access: token '{}' was refused {} times in a minute: answered 429 for {} s",
                     caller.name, s.count, kMinuteMs / 1000);
      }
    }
    auto it = refusals_.find(key);
    if (it == refusals_.end()) {
      if (options_.refusals_keep == 0)
        return;
      if (refusals_.size() >= options_.refusals_keep) {
        // Full: the least recently seen record makes room (rare: one key per token and route).
        auto oldest = refusals_.begin();
        for (auto i = refusals_.begin(); i != refusals_.end(); ++i) {
          if (i->second.last_ms < oldest->second.last_ms)
            oldest = i;
        }
        if (auto e = store_->erase_refusal(oldest->first); !e)
          spdlog::warn("access: cannot drop a refusal record: {}", e.error().message());
        refusals_.erase(oldest);
      }
      it = refusals_
               .emplace(key,
                        Refusal{options_.origin, caller.name, std::string(role_name(caller.role)),
                                std::string(method_name), std::string(shown), status, 0, now, now})
               .first;
    }
    Refusal& r = it->second;
    ++r.count;
    r.status = status;
    r.last_ms = now;
    doc = json::serialize(refusal_json(r));
  }
  if (auto put = store_->put_refusal(key, doc); !put)
    spdlog::warn("access: cannot record a refusal: {}", put.error().message());
  prune(now);
}

void Access::prune(std::int64_t now_ms) {
  if (options_.audit_keep_ms <= 0)
    return;
  const std::int64_t cutoff = now_ms - options_.audit_keep_ms;
  std::vector<std::string> gone;
  {
    std::lock_guard lock(refusal_mutex_);
    if (now_ms - last_prune_ms_ < kMinuteMs)
      return;
    last_prune_ms_ = now_ms;
    for (auto it = refusals_.begin(); it != refusals_.end();) {
      if (it->second.last_ms < cutoff) {
        gone.push_back(it->first);
        it = refusals_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& key : gone)
    (void)store_->erase_refusal(key);
  if (store_->shared())
    return;  // the tier's audit log: sweep_shared, on one origin for all
  if (auto n = store_->prune_audit(cutoff); !n)
    spdlog::warn("audit: cannot delete old records: {}", n.error().message());
}

void Access::sweep_shared(std::int64_t now_ms) {
  if (store_ == nullptr || !store_->shared())
    return;
  const std::int64_t cutoff =
      options_.audit_keep_ms > 0 ? now_ms - options_.audit_keep_ms : std::int64_t{0};
  if (cutoff > 0) {
    if (auto n = store_->prune_audit(cutoff); !n)
      spdlog::warn("audit: cannot delete old records: {}", n.error().message());
  }
  if (auto n = store_->prune_refusals(cutoff, options_.refusals_keep); !n)
    spdlog::warn("audit: cannot delete old refusal records: {}", n.error().message());
}

Response Access::handle(const Caller& caller, const bhttp::request_header<>& req,
                        std::string_view path, std::string_view body) {
  const auto method = req.method();
  const std::string_view target =
      http::origin_form(std::string_view(req.target().data(), req.target().size()));
  Response r;
  if (store_ == nullptr) {
    r = error_response(404, "not_found", "scoped tokens are not available on this node");
  } else if (path == kRefusalsPath) {
    const auto q = target.find('?');
    r = method == bhttp::verb::get || method == bhttp::verb::head
            ? refusals_page(q == std::string_view::npos ? std::string_view() : target.substr(q + 1))
            : method_not_allowed("GET");
  } else if (path == kAuditPath) {
    const auto q = target.find('?');
    r = method == bhttp::verb::get || method == bhttp::verb::head
            ? audit_page(q == std::string_view::npos ? std::string_view() : target.substr(q + 1))
            : method_not_allowed("GET");
  } else if (path == kTokensPath) {
    if (method == bhttp::verb::post) {
      r = create(caller, body);
    } else if (method == bhttp::verb::get || method == bhttp::verb::head) {
      r = list();
    } else {
      r = method_not_allowed("GET, POST");
    }
  } else {
    const std::string_view name = path.substr(kTokensPath.size() + 1);
    r = method == bhttp::verb::delete_ ? revoke(name) : method_not_allowed("DELETE");
  }
  r.route = Route::kAdmin;
  return r;
}

Response Access::create(const Caller& caller, std::string_view body) {
  boost::system::error_code ec;
  const json::value v = control::parse_finite(body, ec);
  const json::object* o = v.if_object();
  if (ec || o == nullptr)
    return error_response(400, "invalid_json_body", "expected a JSON object {name, role, apps}");
  for (const auto& [key, _] : *o) {
    if (key != "name" && key != "role" && key != "apps") {
      return error_response(
          400, "invalid_json_body",
          "unknown field '" + std::string(key.substr(0, 64)) + "' (expected name, role, apps)");
    }
  }
  const auto* name = o->if_contains("name");
  if (name == nullptr || !name->is_string() || !is_plain_name(name->get_string()))
    return error_response(400, "invalid_name", "name: expected 1-64 of [A-Za-z0-9._-]");
  if (is_reserved_name(name->get_string())) {
    return error_response(400, "reserved_name",
                          "name: '" + std::string(name->get_string()) +
                              "' is reserved for the node itself (bootstrap, auto-pause, system, "
                              "system-*): audit records under it must be the node's");
  }
  const auto* role_v = o->if_contains("role");
  const auto role =
      role_v != nullptr && role_v->is_string() ? parse_role(role_v->get_string()) : std::nullopt;
  if (!role)
    return error_response(400, "invalid_role", "role: expected 'admin', 'publisher' or 'viewer'");
  Token t;
  t.name = std::string(name->get_string());
  t.role = *role;
  if (const auto* apps = o->if_contains("apps"); apps != nullptr) {
    if (!apps->is_array() || apps->get_array().size() > kMaxApps) {
      return error_response(400, "invalid_apps",
                            "apps: expected an array of at most 100 app ids (or \"*\")");
    }
    for (const auto& a : apps->get_array()) {
      if (!a.is_string() || (a.get_string() != "*" && !valid_app_id(a.get_string()))) {
        return error_response(400, "invalid_apps",
                              "apps: each entry must be an app id such as com.example.app, or "
                              "\"*\"");
      }
      t.apps.emplace_back(a.get_string());
    }
  }
  if (t.role == Role::kAdmin && !t.apps.empty())
    return error_response(400, "invalid_apps",
                          "apps: an admin token holds every app; leave it out");
  if (t.role != Role::kAdmin && t.apps.empty()) {
    return error_response(400, "invalid_apps",
                          "apps: a " + std::string(role_name(t.role)) +
                              " token needs the apps it may touch (\"*\" for all)");
  }
  const std::string secret = new_secret();
  if (secret.empty())
    return error_response(500, "internal", "no randomness for a new token");
  t.hash = sha256_of(secret);
  t.created_ms = wall_clock_ms();
  t.created_by = caller.name;
  json::object doc{{"role", role_name(t.role)},
                   {"apps", apps_json(t.apps)},
                   {"sha256", t.hash.hex()},
                   {"created_ms", t.created_ms},
                   {"created_by", t.created_by}};
  {
    std::unique_lock lock(mutex_);
    if (by_name_.contains(t.name)) {
      return error_response(409, "token_exists",
                            "a token named '" + t.name + "' exists: revoke it first");
    }
    if (by_name_.size() >= kMaxTokens)
      return error_response(409, "too_many_tokens", "1000 tokens exist: revoke some first");
    t.doc = json::serialize(doc);
    // A shared backend refuses a second token of one name itself (kConflict), and may be
    // slow or down: token checks must not wait for it. The embedded store is checked and
    // written under the lock.
    if (store_->shared())
      lock.unlock();
    auto put = store_->put_token(t.name, t.doc);
    if (!lock.owns_lock())
      lock.lock();
    if (!put) {
      if (put.error() == Errc::kStorageFull)
        return storage_full_response(507, "a new token", Route::kAdmin);
      if (put.error() == Errc::kUnavailable)
        return backend_unavailable("the token was not created");
      if (put.error() == Errc::kConflict) {
        return error_response(409, "token_exists",
                              "a token named '" + t.name +
                                  "' exists (created through another origin): revoke it "
                                  "first");
      }
      return error_response(500, "internal", "cannot store the token: " + put.error().message());
    }
    ++token_writes_;
    by_name_.emplace(t.name, t);
  }
  json::object out{{"name", t.name},
                   {"role", role_name(t.role)},
                   {"apps", apps_json(t.apps)},
                   {"token", secret},
                   {"created_ms", t.created_ms},
                   {"created_by", t.created_by},
                   {"note", "the token is shown once: store it now"}};
  return make_json_response(201, json::serialize(out), Route::kAdmin);
}

Response Access::list() const {
  json::array tokens;
  std::lock_guard lock(mutex_);
  for (const auto& [name, t] : by_name_) {
    tokens.push_back(json::object{{"name", name},
                                  {"role", role_name(t.role)},
                                  {"apps", apps_json(t.apps)},
                                  {"created_ms", t.created_ms},
                                  {"created_by", t.created_by}});
  }
  return make_json_response(200, json::serialize(json::object{{"tokens", std::move(tokens)}}),
                            Route::kAdmin);
}

Response Access::revoke(std::string_view name) {
  std::unique_lock lock(mutex_);
  const bool known = by_name_.contains(std::string(name));
  // A token stored under a name reserved since (never loaded) can still be removed, and in a
  // tier one created through another origin since this one's last reload.
  if (!known && !is_reserved_name(name) && !store_->shared()) {
    return error_response(404, "not_found",
                          "no token named '" + std::string(name.substr(0, 64)) + "'");
  }
  // As in create(): token checks never wait for a shared backend.
  if (store_->shared())
    lock.unlock();
  auto erased = store_->erase_token(name);
  if (!lock.owns_lock())
    lock.lock();
  if (!erased && erased.error() == Errc::kUnavailable)
    return backend_unavailable(known ? "the token was not revoked and still works"
                                     : "nothing was revoked");
  if (!erased && (erased.error() != Errc::kNotFound || !known)) {
    if (erased.error() == Errc::kNotFound) {
      return error_response(404, "not_found",
                            "no token named '" + std::string(name.substr(0, 64)) + "'");
    }
    return error_response(500, "internal", "cannot revoke: " + erased.error().message());
  }
  ++token_writes_;
  by_name_.erase(std::string(name));  // refused from the next request on
  return make_json_response(200, json::serialize(json::object{{"revoked", name}}), Route::kAdmin);
}

Response Access::audit_page(std::string_view query) const {
  std::uint64_t after = 0;
  std::uint64_t limit = 100;
  std::string bad;
  for (const auto& [key, value] : parse_query(query)) {
    std::uint64_t* out = key == "after" ? &after : key == "limit" ? &limit : nullptr;
    if (out == nullptr) {
      bad = "unknown parameter '" + key.substr(0, 64) + "' (expected after, limit)";
      break;
    }
    if (!http::parse_u64(value, *out)) {
      bad = key + ": expected a non-negative integer, got '" + value.substr(0, 64) + "'";
      break;
    }
  }
  if (bad.empty() && (limit == 0 || limit > 1000))
    bad = "limit: expected 1..1000, got " + std::to_string(limit);
  if (!bad.empty())
    return error_response(400, "invalid_query_parameters", bad);
  auto page = store_->audit_after(after, limit);
  if (!page)
    return error_response(500, "internal", "cannot read the audit log: " + page.error().message());
  std::string body = "{\"records\":[";
  for (std::size_t i = 0; i < page->size(); ++i) {
    const auto& [n, doc] = (*page)[i];
    if (i > 0)
      body += ',';
    body += "{\"n\":" + std::to_string(n) + ',';
    body.append(doc, 1);  // the stored object without its '{'
  }
  body += "]}";
  return make_json_response(200, std::move(body), Route::kAdmin);
}

Response Access::refusals_page(std::string_view query) const {
  std::uint64_t limit = 100;
  for (const auto& [key, value] : parse_query(query)) {
    if (key != "limit") {
      return error_response(400, "invalid_query_parameters",
                            "unknown parameter '" + key.substr(0, 64) + "' (expected limit)");
    }
    if (!http::parse_u64(value, limit) || limit == 0 || limit > 1000) {
      return error_response(400, "invalid_query_parameters",
                            "limit: expected 1..1000, got '" + value.substr(0, 64) + "'");
    }
  }
  std::vector<Refusal> all;
  std::optional<std::vector<std::pair<std::string, std::string>>> shared;
  if (store_->shared()) {
    // Every origin's records; this one's own from memory if the backend cannot be read.
    if (auto stored = store_->refusals())
      shared = std::move(*stored);
    else
      spdlog::warn("access: cannot read the tier's refusal records ({}): this origin's only",
                   stored.error().message());
  }
  if (shared) {
    all.reserve(shared->size());
    for (const auto& [_, doc] : *shared) {
      if (auto r = parse_refusal(doc))
        all.push_back(std::move(*r));
    }
  } else {
    std::lock_guard lock(refusal_mutex_);
    all.reserve(refusals_.size());
    for (const auto& [_, r] : refusals_)
      all.push_back(r);
  }
  const std::size_t total = all.size();
  const std::size_t n = std::min<std::size_t>(limit, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n), all.end(),
                    [](const Refusal& a, const Refusal& b) { return a.last_ms > b.last_ms; });
  json::array out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& r = all[i];
    out.push_back(refusal_json(r));
  }
  return make_json_response(
      200, json::serialize(json::object{{"refusals", std::move(out)}, {"total", total}}),
      Route::kAdmin);
}

std::map<std::uint64_t, Access::Author> Access::authors(
    const std::vector<std::uint64_t>& seqs) const {
  std::map<std::uint64_t, Author> out;
  if (store_ == nullptr || seqs.empty())
    return out;
  for (const auto s : seqs)
    out.emplace(s, Author{});
  // Newest first: the changes asked for are usually recent, and the scan stops once all
  // of them are found.
  std::size_t found = 0;
  for (std::uint64_t before = ~std::uint64_t{0}; found < seqs.size();) {
    auto page = store_->audit_before(before, 1000);
    if (!page || page->empty())
      break;
    for (const auto& [n, doc] : *page) {
      before = n;
      boost::system::error_code ec;
      const json::value v = json::parse(doc, ec);
      const json::object* o = v.if_object();
      const json::value* seq = o != nullptr ? o->if_contains("change_seq") : nullptr;
      if (seq == nullptr || !seq->is_number())
        continue;
      const auto it = out.find(seq->to_number<std::uint64_t>(ec));
      if (ec || it == out.end() || !it->second.token.empty())
        continue;
      if (const auto* t = o->if_contains("token"); t != nullptr && t->is_string())
        it->second.token = std::string(t->get_string());
      it->second.actor_kind = std::string(actor_kind(it->second.token));
      if (const auto* t = o->if_contains("time_ms"); t != nullptr && t->is_int64())
        it->second.time_ms = t->get_int64();
      ++found;
    }
  }
  std::erase_if(out, [](const auto& kv) { return kv.second.token.empty(); });
  return out;
}

void Access::audit(const Caller& caller, bhttp::verb method, std::string_view path, unsigned status,
                   std::uint64_t change_seq) {
  if (store_ == nullptr)
    return;
  if (status >= 400 && status < 500) {
    refused(caller, method, path, status);
    return;
  }
  const std::int64_t now = wall_clock_ms();
  // time_ms first: AccessStore::prune_audit reads it.
  json::object doc{{"time_ms", now},
                   {"token", caller.name},
                   {"actor_kind", actor_kind(caller.name)},
                   {"role", role_name(caller.role)},
                   {"method", std::string(bhttp::to_string(method))},
                   {"path", utf8_clamp(path, 512)},
                   {"status", status},
                   {"change_seq", change_seq}};
  if (!options_.origin.empty())
    doc["origin"] = options_.origin;
  std::string text = json::serialize(doc);
  // Records that waited for the backend go first, so the log keeps their order.
  if (flush_pending() > 0) {
    keep_pending(std::move(text));
  } else if (auto n = store_->append_audit(text); !n) {
    // Kept in memory and appended once the backend takes it again (start_refresh, or the
    // next admin write): the write happened, its record must not vanish.
    spdlog::warn("audit: cannot record {} {} now ({}): kept to append later",
                 std::string(bhttp::to_string(method)), path, n.error().message());
    keep_pending(std::move(text));
  }
  prune(now);
}

}  // namespace edge::api
