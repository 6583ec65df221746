#include "edge/api/api.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include "edge/api/console.hpp"
#include "edge/api/fill_stream.hpp"
#include "edge/control/model.hpp"
#include "edge/core/clock.hpp"
#include "edge/http/http.hpp"

namespace edge::api {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::string_view kCacheControl = "public, max-age=31536000, immutable, no-transform";

std::string_view field(const RequestHeader& req, bhttp::field f) {
  const auto it = req.find(f);
  return it == req.end() ? std::string_view()
                         : std::string_view(it->value().data(), it->value().size());
}

// "<sha256>[/<name>]" -> id and name; nullopt id if malformed.
std::pair<Result<Sha256>, std::string_view> split_id(std::string_view rest) {
  const auto slash = rest.find('/');
  const auto id_text = rest.substr(0, slash);
  const auto name = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  return {Sha256::parse(id_text), name};
}

Response bad_id(std::string_view what, std::string_view text, Route route) {
  const auto shown = text.substr(0, 80);
  return error_response(400, "bad_id",
                        std::string(what) + " id must be 64 hex characters, got '" +
                            std::string(shown) + (text.size() > 80 ? "...'" : "'"),
                        route);
}

std::string boundary() {
  static std::atomic<std::uint64_t> counter{0x5eed};
  char buf[40];
  std::snprintf(buf, sizeof buf, "bundle-edge-%016llx",
                static_cast<unsigned long long>(counter.fetch_add(0x9e3779b97f4a7c15ULL) ^
                                                0xa5a5a5a5a5a5ULL));
  return buf;
}

void set_entity_headers(Response& r, const std::string& etag, const Sha256& id) {
  r.set("ETag", etag);
  r.set("Accept-Ranges", "bytes");
  r.set("Cache-Control", kCacheControl);
  r.set("X-Checksum-Sha256", id.hex());
}

// The admin API's answers (JSON, /metrics) are never to be sniffed into something else,
// nor kept by a browser cache or a proxy: they hold fleet data and change with every write.
void set_api_headers(Response& r) {
  if (r.header("X-Content-Type-Options").empty())
    r.set("X-Content-Type-Options", "nosniff");
  if (r.header("Cache-Control").empty())
    r.set("Cache-Control", "no-store");
}

}  // namespace

bool is_scan(bhttp::verb method, std::string_view path) {
  if (method != bhttp::verb::get && method != bhttp::verb::head)
    return false;
  if (path == "/v1/admin/fleet" || path == "/v1/admin/audit" || path == "/v1/admin/audit/refusals")
    return true;
  constexpr std::string_view kApps = "/v1/admin/apps/";
  if (!path.starts_with(kApps))
    return false;
  // Segments as ControlService splits them: empty ones (`//`) do not count.
  std::vector<std::string_view> segs;
  for (std::string_view rest = path.substr(kApps.size()); !rest.empty() && segs.size() < 5;) {
    const auto slash = rest.find('/');
    if (slash != 0)
      segs.push_back(rest.substr(0, slash));
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  }
  if (segs.size() == 2)
    return segs[1] == "device_index" || segs[1] == "stats" || segs[1] == "devices" ||
           segs[1] == "plugins" || segs[1] == "reach";
  return segs.size() == 4 && segs[1] == "channels" && segs[3] == "history";
}

std::optional<std::string> framing_error(const RequestHeader& req) {
  http::RequestHead head;
  head.version = req.version();
  head.target = std::string_view(req.target().data(), req.target().size());
  for (auto [it, end] = req.equal_range(bhttp::field::transfer_encoding); it != end; ++it)
    head.transfer_encoding.emplace_back(it->value().data(), it->value().size());
  head.host_fields = req.count(bhttp::field::host);
  head.content_length = req.count(bhttp::field::content_length) > 0;
  return http::check_request_head(head);
}

namespace {

// An upload or release write refused because its gate could not be entered.
Response gate_refusal(std::string_view what, Route route) {
  Response r = error_response(503, "state_backend_unavailable",
                              std::string(what) +
                                  " could not be registered against garbage collection (the "
                                  "state backend did not answer); retry",
                              route);
  r.set("Retry-After", "5");
  set_api_headers(r);
  return r;
}

}  // namespace

GateTicket::~GateTicket() {
  std::lock_guard lock(mutex_);
  for (auto it = held_.rbegin(); it != held_.rend(); ++it)
    it->first->leave(it->second, stored_);
}

Result<std::shared_ptr<GateTicket>> GateTicket::enter(const std::vector<store::BlobGate*>& gates) {
  auto t = std::make_shared<GateTicket>();
  for (auto* g : gates) {
    auto ticket = g->enter();
    if (!ticket)
      return make_error_code(Errc::kUnavailable);  // the ones entered are left by ~GateTicket
    t->held_.emplace_back(g, *ticket);
  }
  return t;
}

bool Upload::write(std::span<const std::uint8_t> bytes) {
  received_ += bytes.size();
  if (received_ > max_bytes_)
    return false;
  writer_->write(bytes);
  return true;
}

void Upload::finish(const store::ChunkStore::Executor& ex, std::function<void(Response)> answer) {
  const auto expected = expected_;
  auto done = [answer = std::move(answer), audit = std::move(on_answered)](Response r) {
    set_api_headers(r);
    if (audit)
      audit(r.status);
    answer(std::move(r));
  };
  writer_->finish(
      expected, ex,
      [expected, ex, mirror = mirror_, stats = mirror_stats_, done = std::move(done),
       ticket = ticket_](boost::system::error_code ec, store::BlobInfo info) mutable {
        if (ec == Errc::kChecksumMismatch) {
          done(error_response(400, "checksum_mismatch",
                              "X-Content-Sha256 is " + expected->hex() +
                                  " but the body hashes to " + info.id.hex() +
                                  "; nothing was stored",
                              Route::kUpload));
          return;
        }
        if (ec == Errc::kStorageFull) {
          done(storage_full_response(507, "the upload", Route::kUpload));
          return;
        }
        if (ec) {
          done(error_response(500, "store_error", "storing the blob failed: " + ec.message(),
                              Route::kUpload));
          return;
        }
        // Its grace period against garbage collection starts now (whether new or not).
        if (ticket)
          ticket->stored(info.id);
        Response r;
        r.route = Route::kUpload;
        r.status = info.inserted ? 201 : 200;
        r.set("Content-Type", "application/json");
        r.body = "{\"sha256\":\"" + info.id.hex() + "\",\"size\":" + std::to_string(info.size) +
                 ",\"chunks\":" + std::to_string(info.chunks) + "}";
        if (!mirror)
          return done(std::move(r));
        // DESIGN §12.2: acknowledged only once durable in the blob backend; the answer goes
        // back to the connection's own executor.
        mirror(info.id, true,
               [ex, stats, id = info.id, r = std::move(r), done = std::move(done),
                ticket](boost::system::error_code mec) mutable {
                 Response answer = std::move(r);
                 if (mec) {
                   const std::string why = stats != nullptr ? stats->last_error() : std::string();
                   answer = error_response(503, "blob_backend_unavailable",
                                           "blob " + id.hex() +
                                               " could not be written to the blob backend (" +
                                               (why.empty() ? mec.message() : why) +
                                               "); it is not acknowledged: retry the upload",
                                           Route::kUpload);
                   answer.set("Retry-After", "5");
                 }
                 if (ex) {
                   boost::asio::post(ex, [done = std::move(done), a = std::move(answer)]() mutable {
                     done(std::move(a));
                   });
                 } else {
                   done(std::move(answer));
                 }
               });
      });
}

Api::Api(store::ChunkStore& chunks, store::BlobStore& blobs, Metrics& metrics, ApiOptions options)
    : chunks_(chunks), blobs_(blobs), metrics_(metrics), options_(std::move(options)) {}

Response Api::health(bool ready_check) const {
  Response r;
  r.route = ready_check ? Route::kReady : Route::kHealth;
  r.set("Content-Type", "application/json");
  r.set("Cache-Control", "no-store");
  // Why the upstream is not answering, if it is not (e.g. its certificate was rejected).
  const auto upstream_error = [&](std::string& body) {
    const auto* sync = metrics_.sync();
    const std::string why = sync != nullptr ? sync->upstream_error() : std::string();
    if (why.empty())
      return;
    body.pop_back();
    body += ",\"upstream_error\":\"";
    append_json_escaped(body, why);
    body += "\"}";
  };
  if (ready_check && !ready_.load(std::memory_order_relaxed)) {
    r.status = 503;
    r.body = "{\"status\":\"starting\"}";
    upstream_error(r.body);
    return r;
  }
  r.body = "{\"status\":\"ok\"}";
  if (const auto* sync = metrics_.sync(); ready_check && sync != nullptr) {
    // An edge that lost contact with its upstream still serves what it has, but its state
    // may be old: say so (a load balancer may be told to take it out: stale_is_unready).
    const std::int64_t now = wall_clock_ms();
    if (const auto stale = sync->stale_for_ms(now, metrics_.started_ms()); stale > 0) {
      if (options_.stale_is_unready)
        r.status = 503;
      r.body = "{\"status\":\"degraded\",\"reason\":\"no answer from the upstream for " +
               std::to_string(stale / 1000) + " s\"}";
    }
    if (ready_check)
      upstream_error(r.body);
  }
  if (ready_check) {
    std::string why;
    for (const auto& check : degraded_) {
      auto w = check();
      if (!w.empty())
        why += (why.empty() ? "" : "; ") + w;
    }
    if (!why.empty() && r.body == "{\"status\":\"ok\"}") {
      r.body = "{\"status\":\"degraded\",\"reason\":\"";
      append_json_escaped(r.body, why);
      r.body += "\"}";
    }
  }
  if (ready_check && backend_stats_ != nullptr) {
    // An origin on S3 serves what it has cached while the bucket is down, and refuses
    // uploads (503): still ready, but say so.
    const bool up = backend_stats_->reachable.load(std::memory_order_relaxed) != 0;
    if (!up && r.body.starts_with("{\"status\":\"ok\""))
      r.body = "{\"status\":\"degraded\",\"reason\":\"the blob backend is not answering\"}";
    r.body.pop_back();
    r.body += up ? ",\"blob_backend\":\"ok\"" : ",\"blob_backend\":\"unreachable\"";
    if (const std::string why = backend_stats_->last_error(); !up && !why.empty()) {
      r.body += ",\"blob_backend_error\":\"";
      append_json_escaped(r.body, why);
      r.body += "\"";
    }
    r.body += "}";
  }
  return r;
}

Response Api::handle_public(const RequestHeader& req, std::string_view body,
                            std::string_view client) const {
  const std::string_view target =
      http::origin_form(std::string_view(req.target().data(), req.target().size()));
  const std::string_view path = http::path_of(target);
  const bool get = req.method() == bhttp::verb::get;
  const bool head = req.method() == bhttp::verb::head;
  const auto route_of = [&](std::string_view prefix, Route route) -> std::optional<Route> {
    return path.starts_with(prefix) ? std::optional(route) : std::nullopt;
  };
  Response r;
  // Chunks and recipes are for child edges (DESIGN §6): behind the sync token, so that
  // anonymous cache-busting ids never become upstream load.
  const auto node_to_node = [&](Route route) -> std::optional<Response> {
    if (sync_ == nullptr) {
      return error_response(403, "sync_disabled",
                            "this node has no sync.token; node-to-node routes are off", route);
    }
    return sync_->refuse_unauthorized(req, route);
  };
  if (auto rt = route_of("/v1/blobs/", Route::kBlob)) {
    r = (get || head) ? serve_blob(req, path.substr(10), true, client)
                      : method_not_allowed("GET, HEAD", *rt);
  } else if (auto rc = route_of("/v1/chunks/", Route::kChunk)) {
    if (auto refused = node_to_node(*rc)) {
      r = std::move(*refused);
    } else {
      r = (get || head) ? serve_chunk(req, path.substr(11), true)
                        : method_not_allowed("GET, HEAD", *rc);
    }
  } else if (auto rr = route_of("/v1/recipes/", Route::kRecipe)) {
    if (auto refused = node_to_node(*rr)) {
      r = std::move(*refused);
    } else {
      r = (get || head) ? serve_recipe(path.substr(12), true)
                        : method_not_allowed("GET, HEAD", *rr);
    }
  } else if (path == "/healthz" || path == "/readyz") {
    r = (get || head) ? health(path == "/readyz") : method_not_allowed("GET, HEAD", Route::kHealth);
  } else if (sync_ != nullptr && SyncApi::handles(path)) {
    const auto q = target.find('?');
    r = sync_->handle(
        req, path, q == std::string_view::npos ? std::string_view() : target.substr(q + 1), body);
  } else if (device_ != nullptr && path == "/channel_self") {
    const auto q = target.find('?');
    const std::string_view query =
        q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    const std::string_view m(req.method_string().data(), req.method_string().size());
    r = (m == "GET" || m == "PUT" || m == "POST" || m == "DELETE")
            ? device_->channel_self(m, query, body)
            : method_not_allowed("GET, PUT, POST, DELETE", Route::kChannelSelf);
  } else if (device_ != nullptr && path == "/website_live") {
    r = (get || head) ? DeviceApi::website_live() : method_not_allowed("GET, HEAD", Route::kOther);
  } else if (device_ != nullptr && path == "/updates/manifest_size") {
    r = req.method() == bhttp::verb::post ? device_->manifest_size(body)
                                          : method_not_allowed("POST", Route::kUpdates);
  } else if (device_ != nullptr && path == "/stats") {
    const bool post = req.method() == bhttp::verb::post;
    r = (post || get) ? device_->stats(post, body) : method_not_allowed("GET, POST", Route::kStats);
  } else if (device_ != nullptr && path == "/updates") {
    const bool post = req.method() == bhttp::verb::post;
    r = (post || get) ? device_->updates(post, body)
                      : method_not_allowed("GET, POST", Route::kUpdates);
  } else {
    r = error_response(404, "not_found", "no route for " + std::string(path.substr(0, 200)));
  }
  if (head && r.later) {
    // The deferred answer is a HEAD's too.
    r.later = [later = std::move(r.later)](const store::ChunkStore::Executor& ex,
                                           std::function<void(Response)> reply) {
      later(ex, [reply = std::move(reply)](Response real) {
        real.head_only = true;
        reply(std::move(real));
      });
    };
  }
  r.head_only = head;
  return r;
}

std::optional<Caller> Api::admin_caller(const RequestHeader& req, std::string_view path,
                                        Response& refusal) const {
  std::optional<Caller> caller;
  if (access_ != nullptr) {
    caller = access_->identify(req);
  } else if (bearer_matches(req, options_.admin_token)) {
    caller = Caller{"bootstrap", Role::kAdmin, {}};
  }
  if (!caller) {
    refusal = error_response(401, "unauthorized",
                             "missing, wrong or revoked 'Authorization: Bearer <token>'");
    refusal.set("WWW-Authenticate", "Bearer");
    return std::nullopt;
  }
  if (access_ != nullptr) {
    // A token that keeps being refused is told to back off before anything else is done.
    if (auto wait = access_->throttle(*caller)) {
      refusal = std::move(*wait);
      return std::nullopt;
    }
    if (auto no = access_->refuse(*caller, req.method(), path)) {
      access_->refused(*caller, req.method(), path, no->status);
      refusal = std::move(*no);
      return std::nullopt;
    }
  }
  return caller;
}

Response Api::handle_admin(const RequestHeader& req, std::string_view body) const {
  // A release write checks that its blobs are stored, then commits: garbage collection must
  // not remove one in between (GateTicket), until the write is answered.
  std::shared_ptr<GateTicket> ticket;
  if (!gates_.empty() && req.method() == bhttp::verb::put) {
    const std::string_view target =
        http::origin_form(std::string_view(req.target().data(), req.target().size()));
    const std::string_view path = http::path_of(target);
    if (path.starts_with("/v1/admin/apps/") && path.find("/releases/") != std::string_view::npos) {
      auto t = GateTicket::enter(gates_);
      if (!t)
        return gate_refusal("the release write", Route::kAdmin);
      ticket = std::move(*t);
    }
  }
  Response r = admin_answer(req, body, true);
  if (ticket && r.later) {
    r.later = [later = std::move(r.later), ticket](const store::ChunkStore::Executor& ex,
                                                   std::function<void(Response)> reply) {
      later(ex, [reply = std::move(reply), ticket](Response answer) { reply(std::move(answer)); });
    };
  }
  return r;
}

Response Api::admin_answer(const RequestHeader& req, std::string_view body, bool may_fill) const {
  const std::string_view target =
      http::origin_form(std::string_view(req.target().data(), req.target().size()));
  const std::string_view raw_path = http::path_of(target);
  const bool get = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
  const bool head = req.method() == bhttp::verb::head;
  if (raw_path == "/healthz" || raw_path == "/readyz") {
    Response r =
        get ? health(raw_path == "/readyz") : method_not_allowed("GET, HEAD", Route::kHealth);
    r.head_only = head;
    return r;
  }
  if (raw_path == "/favicon.ico") {
    // Browsers ask for it on every console page, without the token: an empty answer they
    // may keep, not a 401.
    Response r = get ? Response{} : method_not_allowed("GET, HEAD", Route::kAdmin);
    r.route = Route::kAdmin;
    if (get) {
      r.status = 204;
      r.set("Cache-Control", "public, max-age=86400");
    }
    r.head_only = head;
    return r;
  }
  if (is_console_path(raw_path)) {
    Response r = console_response(req, raw_path);  // static files; the page sends the token
    r.head_only = head;
    return r;
  }
  Response r;
  std::optional<Caller> caller;
  std::string path;
  if (auto bad = http::decode_path(raw_path, path)) {
    r = error_response(400, "bad_path", *bad, Route::kAdmin);
  } else if (caller = admin_caller(req, path, r); !caller) {
    // r: the 401 or 403
  } else if (is_scan(req.method(), path)) {
    r = start_scan(*caller, req, path, body);
  } else if (auto fill = may_fill ? fill_release_blobs(*caller, req, path, body) : std::nullopt) {
    return std::move(*fill);  // asked again (and audited) once the blobs are here
  } else {
    r = admin_route(*caller, req, path, body);
  }
  // Every admin write is recorded: in the audit log, or, answered 4xx, among the refusals
  // (Access::audit tells them apart; admin_caller recorded those refused for their token).
  if (caller && access_ != nullptr && writes(req.method(), path))
    access_->audit(*caller, req.method(), path, r.status, change_seq_of(r));
  const auto finish = [head](Response& a) {
    set_api_headers(a);
    a.head_only = head;
  };
  if (r.later) {
    r.later = [later = std::move(r.later), finish](const store::ChunkStore::Executor& ex,
                                                   std::function<void(Response)> reply) {
      later(ex, [reply = std::move(reply), finish](Response real) {
        finish(real);
        reply(std::move(real));
      });
    };
  } else {
    finish(r);
  }
  return r;
}

std::optional<Response> Api::fill_release_blobs(const Caller& caller, const RequestHeader& req,
                                                std::string_view path,
                                                std::string_view body) const {
  // PUT /v1/admin/apps/<app>/releases/<name> on an origin whose blobs are in a shared
  // bucket. A release may name only blobs the bucket has (other origins serve them from
  // there) and this node has verified (it pins their recipes): a blob cached here is made
  // durable in the bucket if it is not yet (an upload answered 503 left it here only), one
  // not cached here (uploaded through another origin) is filled from the bucket.
  if (!mirror_ || filler_ == nullptr || control_ == nullptr || req.method() != bhttp::verb::put ||
      caller.role == Role::kViewer || !path.starts_with("/v1/admin/apps/"))
    return std::nullopt;
  const auto rel = path.find("/releases/", 15);
  if (rel == std::string_view::npos || path.find('/', rel + 10) != std::string_view::npos)
    return std::nullopt;
  auto parsed = control::parse_release(body);
  const auto* doc = std::get_if<control::ReleaseDoc>(&parsed);
  if (doc == nullptr)
    return std::nullopt;  // the control API names what is wrong with it
  std::vector<Sha256> named;
  const auto name = [&](const Sha256& id) {
    if (std::find(named.begin(), named.end(), id) == named.end())
      named.push_back(id);
  };
  if (doc->zip)
    name(*doc->zip);
  for (const auto& m : doc->manifest)
    name(m.blob);
  if (named.empty())
    return std::nullopt;
  return deferred(
      Route::kAdmin, [this, caller, req, path = std::string(path), body = std::string(body), named](
                         const store::ChunkStore::Executor&, std::function<void(Response)> reply) {
        struct Wait {
          std::mutex mutex;
          std::size_t left = 0;
          bool backend_failed = false;  // the bucket did not answer: 503, not 422
        };
        auto wait = std::make_shared<Wait>();
        wait->left = named.size();
        auto one = [this, caller, req, path, body, wait, reply](boost::system::error_code ec) {
          {
            std::lock_guard lock(wait->mutex);
            if (ec == Errc::kIo)
              wait->backend_failed = true;
            if (--wait->left != 0)
              return;
          }
          if (!wait->backend_failed) {
            // A blob the bucket lacks too: the control API answers 422 missing_blob as usual.
            return reply(admin_answer(req, body, false));
          }
          const std::string why = backend_stats_ != nullptr ? backend_stats_->last_error() : "";
          Response r = error_response(503, "blob_backend_unavailable",
                                      "the blob backend did not answer" +
                                          (why.empty() ? std::string() : " (" + why + ")") +
                                          "; the release was not written: retry",
                                      Route::kAdmin);
          r.set("Retry-After", "5");
          if (access_ != nullptr)
            access_->audit(caller, req.method(), path, r.status, 0);
          set_api_headers(r);
          reply(std::move(r));
        };
        for (const auto& id : named) {
          if (blobs_.recipe(id))
            mirror_(id, false, one);
          else
            filler_->fill_blob(id, one);
        }
      });
}

Response Api::admin_route(const Caller& caller, const RequestHeader& req, std::string_view path,
                          std::string_view body) const {
  const bool get = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
  Response r;
  if (access_ != nullptr && Access::owns(path)) {
    r = access_->handle(caller, req, path, body);
  } else if (path == "/v1/admin/whoami") {
    r = get ? whoami(caller) : method_not_allowed("GET, HEAD", Route::kAdmin);
  } else if (path == "/metrics") {
    if (!get) {
      r = method_not_allowed("GET, HEAD", Route::kMetrics);
    } else {
      r.route = Route::kMetrics;
      r.set("Content-Type", "text/plain; version=0.0.4");
      r.body = metrics_.render(chunks_.stats());
    }
  } else if (const auto app = decide_app(path); app && device_ != nullptr) {
    r = req.method() == bhttp::verb::post ? device_->decide_for(*app, body)
                                          : method_not_allowed("POST", Route::kAdmin);
    r.route = Route::kAdmin;
  } else if (control_ != nullptr &&
             (path == "/v1/admin/apps" || path.starts_with("/v1/admin/apps/"))) {
    r = control_->handle(req, path, body);
    r.route = Route::kAdmin;
  } else if (path == "/v1/admin/fleet" && fleet_ != nullptr) {
    if (!get) {
      r = method_not_allowed("GET, HEAD", Route::kAdmin);
    } else {
      const std::string_view target(req.target().data(), req.target().size());
      const auto q = target.find('?');
      std::string error;
      if (const auto query = parse_fleet_query(
              q == std::string_view::npos ? std::string_view() : target.substr(q + 1), &error)) {
        r = make_json_response(200, fleet_->render(self_status_(), *query, wall_clock_ms()),
                               Route::kAdmin);
      } else {
        r = error_response(400, "invalid_query_parameters", error);
      }
    }
  } else if (path == "/v1/admin/backup" && backup_) {
    r = backup_route(caller, req, body);
  } else if (path == "/v1/admin/gc" && gc_) {
    r = gc_route(caller, req, body);
  } else if (sync_ != nullptr && path == "/v1/admin/outbox/dead-letters") {
    r = get ? sync_->dead_letters() : method_not_allowed("GET, HEAD", Route::kAdmin);
  } else if (path == "/v1/admin/blobs") {
    r = method_not_allowed("PUT", Route::kUpload);
  } else {
    r = error_response(404, "not_found", "no admin route for " + std::string(path.substr(0, 200)));
  }
  return r;
}

Response Api::backup_route(const Caller& caller, const RequestHeader& req,
                           std::string_view body) const {
  if (req.method() != bhttp::verb::post)
    return method_not_allowed("POST", Route::kAdmin);
  if (caller.role != Role::kAdmin)
    return error_response(403, "forbidden", "backups need an admin token", Route::kAdmin);
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(body, ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  const boost::json::value* to = o != nullptr ? o->if_contains("to") : nullptr;
  if (to == nullptr || !to->is_string() || to->get_string().empty() || to->get_string()[0] != '/' ||
      to->get_string().size() > 4096) {
    return error_response(400, "invalid_body",
                          "expected {\"to\": \"/absolute/path\"}: a new folder on this node's "
                          "file system for the backup",
                          Route::kAdmin);
  }
  return deferred(Route::kAdmin, [backup = backup_, dest = std::string(to->get_string())](
                                     const store::ChunkStore::Executor&,
                                     std::function<void(Response)> reply) mutable {
    backup(std::move(dest), std::move(reply));
  });
}

Response Api::gc_route(const Caller& caller, const RequestHeader& req,
                       std::string_view body) const {
  if (req.method() != bhttp::verb::post)
    return method_not_allowed("POST", Route::kAdmin);
  if (caller.role != Role::kAdmin)
    return error_response(403, "forbidden", "garbage collection needs an admin token",
                          Route::kAdmin);
  bool dry_run = false;
  if (!body.empty()) {
    boost::system::error_code ec;
    const boost::json::value v = boost::json::parse(body, ec);
    const boost::json::object* o = ec ? nullptr : v.if_object();
    const boost::json::value* d = o != nullptr ? o->if_contains("dry_run") : nullptr;
    if (o == nullptr || o->size() > 1 || (o->size() == 1 && (d == nullptr || !d->is_bool()))) {
      return error_response(400, "invalid_body", "expected {} or {\"dry_run\": true|false}",
                            Route::kAdmin);
    }
    dry_run = d != nullptr && d->get_bool();
  }
  return deferred(Route::kAdmin, [gc = gc_, dry_run](const store::ChunkStore::Executor&,
                                                     std::function<void(Response)> reply) {
    gc(dry_run, std::move(reply));
  });
}

Response Api::start_scan(const Caller& caller, const RequestHeader& req, std::string_view path,
                         std::string_view body) const {
  {
    std::lock_guard lock(scans_mutex_);
    const auto it = scans_by_token_.find(caller.name);
    const unsigned mine = it == scans_by_token_.end() ? 0 : it->second;
    std::optional<Response> refusal;
    if (options_.max_scans_per_token > 0 && mine >= options_.max_scans_per_token) {
      refusal = error_response(
          429, "too_many_scans",
          "admin.max_scans_per_token (" + std::to_string(options_.max_scans_per_token) +
              ") scans from token '" + caller.name +
              "' are in flight (device index, stats, fleet, history, audit, overrides); retry "
              "when one has answered",
          Route::kAdmin);
    } else if (options_.max_queued_scans > 0 && scans_ >= options_.max_queued_scans) {
      refusal =
          error_response(503, "scans_busy",
                         "admin.max_queued_scans (" + std::to_string(options_.max_queued_scans) +
                             ") scans are in flight on this node; retry",
                         Route::kAdmin);
    }
    if (refusal) {
      refusal->set("Retry-After", "1");
      return std::move(*refusal);
    }
    ++scans_by_token_[caller.name];
    ++scans_;
  }
  // The slot is given back when the answer is produced, or when the work is dropped (a
  // server stopping with scans queued).
  struct Slot {
    Slot(const Api* a, std::string n) : api(a), name(std::move(n)) {}
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { api->end_scan(name); }
    const Api* api;
    std::string name;
  };
  auto slot = std::make_shared<Slot>(this, caller.name);
  Response r = deferred(Route::kAdmin,
                        [this, slot, caller, req = RequestHeader(req), path = std::string(path),
                         body = std::string(body)](const store::ChunkStore::Executor&,
                                                   std::function<void(Response)> reply) mutable {
                          Response answer = admin_route(caller, req, path, body);
                          slot.reset();
                          reply(std::move(answer));
                        });
  r.scan = true;
  return r;
}

void Api::end_scan(const std::string& name) const {
  std::lock_guard lock(scans_mutex_);
  --scans_;
  if (const auto it = scans_by_token_.find(name); it != scans_by_token_.end() && --it->second == 0)
    scans_by_token_.erase(it);
}

Response Api::whoami(const Caller& caller) const {
  const bool read_only = control_ != nullptr && control_->read_only();
  // JSON arrays of strings: `[` then `,"x"` per item; the first comma becomes nothing.
  const auto add = [](std::string& array, std::string_view item) {
    array += array.size() > 1 ? ",\"" : "\"";
    append_json_escaped(array, item);
    array += '"';
  };
  std::string apps = "[", visible = "[";
  for (const auto& a : caller.apps)
    add(apps, a);
  if (control_ != nullptr) {
    for (const auto& [id, app] : control_->snapshot()->apps()) {
      if (may_read_app(caller, id))
        add(visible, id);
    }
  }
  apps += ']';
  visible += ']';
  JsonObjectWriter w;
  w.string("name", caller.name)
      .string("role", role_name(caller.role))
      .raw("apps", apps)
      .raw("visible_apps", visible)
      .string("node_role", is_edge() ? "edge" : "origin")
      .boolean("read_only", read_only)
      .boolean("can_write", caller.role != Role::kViewer && !read_only)
      .boolean("can_delete", caller.role == Role::kAdmin && !read_only)
      .boolean("can_manage_tokens", caller.role == Role::kAdmin);
  return make_json_response(200, std::move(w).finish(), Route::kAdmin);
}

bool Api::is_upload(const RequestHeader& req) {
  const std::string_view target =
      http::origin_form(std::string_view(req.target().data(), req.target().size()));
  return req.method() == bhttp::verb::put && http::path_of(target) == "/v1/admin/blobs";
}

std::variant<Response, std::unique_ptr<Upload>> Api::begin_upload(
    const RequestHeader& req, std::optional<std::uint64_t> content_length) const {
  Response refusal;
  const auto caller = admin_caller(req, "/v1/admin/blobs", refusal);
  if (!caller) {
    refusal.route = Route::kUpload;
    refusal.close = true;  // the body was not read
    set_api_headers(refusal);
    return refusal;
  }
  if (is_edge()) {
    Response r = edge_refusal();
    r.route = Route::kUpload;
    r.close = true;
    set_api_headers(r);
    return r;
  }
  std::optional<Sha256> expected;
  if (const auto it = req.find("X-Content-Sha256"); it != req.end()) {
    const std::string_view v(it->value().data(), it->value().size());
    auto id = Sha256::parse(v);
    if (!id) {
      Response r = bad_id("X-Content-Sha256: blob", v, Route::kUpload);
      r.close = true;
      set_api_headers(r);
      return r;
    }
    expected = *id;
  }
  if (!chunks_.writable()) {
    Response r = storage_full_response(507, "the upload", Route::kUpload);
    r.close = true;
    set_api_headers(r);
    return r;
  }
  if (content_length && *content_length > options_.max_upload_bytes) {
    Response r = error_response(413, "too_large",
                                "body of " + std::to_string(*content_length) +
                                    " bytes exceeds admin.max_upload_bytes (" +
                                    std::to_string(options_.max_upload_bytes) + ")",
                                Route::kUpload);
    r.close = true;
    set_api_headers(r);
    return r;
  }
  std::shared_ptr<GateTicket> ticket;
  if (!gates_.empty()) {
    auto t = GateTicket::enter(gates_);
    if (!t) {
      Response r = gate_refusal("the upload", Route::kUpload);
      r.close = true;  // the body was not read
      return r;
    }
    ticket = std::move(*t);
  }
  auto upload = std::make_unique<Upload>(blobs_.begin(), expected, options_.max_upload_bytes,
                                         mirror_, backend_stats_, std::move(ticket));
  if (access_ != nullptr) {
    upload->on_answered = [access = access_, caller = *caller](unsigned status) {
      access->audit(caller, bhttp::verb::put, "/v1/admin/blobs", status, 0);
    };
  }
  return upload;
}

void Api::warm(const store::Piece& piece, const store::ChunkStore::Executor& ex,
               std::function<void(boost::system::error_code)> done) const {
  metrics_.warmed();
  chunks_.async_warm(piece.segment, piece.offset, piece.length, ex, std::move(done));
}

Response Api::fill_then(Route route, const Sha256& id, FillKind kind, std::string_view client,
                        std::function<Response(std::shared_ptr<const store::Recipe>)> again) const {
  // One client may have fills of only so many distinct ids in flight: random ids from one
  // address must not occupy the upstream connections that other devices' fills need.
  // Waiting on an id it already waits for is free (single flight: no upstream cost).
  std::string who(client);
  if (options_.max_fills_per_client > 0 && !who.empty()) {
    std::lock_guard lock(fills_mutex_);
    auto& ids = fills_by_client_[who];
    const auto it = ids.find(id);
    if (it == ids.end() && ids.size() >= options_.max_fills_per_client) {
      Response r = error_response(503, "fill_busy",
                                  "upstream.max_fills_per_client (" +
                                      std::to_string(options_.max_fills_per_client) +
                                      ") fills from this address are in flight; retry",
                                  route);
      r.set("Retry-After", "1");
      return r;
    }
    ++ids[id];
  }
  return deferred(route, [this, route, id, kind, again = std::move(again), who](
                             const store::ChunkStore::Executor&,
                             std::function<void(Response)> reply) {
    auto done = [this, route, id, kind, again, who, reply = std::move(reply)](
                    boost::system::error_code ec, std::shared_ptr<const store::Recipe> recipe) {
      if (options_.max_fills_per_client > 0 && !who.empty()) {
        std::lock_guard lock(fills_mutex_);
        if (auto c = fills_by_client_.find(who); c != fills_by_client_.end()) {
          if (auto it = c->second.find(id); it != c->second.end() && --it->second == 0)
            c->second.erase(it);
          if (c->second.empty())
            fills_by_client_.erase(c);
        }
      }
      if (!ec)
        return reply(again(std::move(recipe)));
      reply(fill_failure(route, (kind == FillKind::kChunk ? "chunk " : "blob ") + id.hex(), ec));
    };
    switch (kind) {
      case FillKind::kChunk:
        return filler_->fill_chunk(id, [done](boost::system::error_code ec) { done(ec, nullptr); });
      case FillKind::kBlob:
        return filler_->fill_blob(id, [done](boost::system::error_code ec) { done(ec, nullptr); });
      case FillKind::kRecipe: return filler_->fill_recipe(id, std::move(done));
    }
  });
}

Response Api::serve_blob(const RequestHeader& req, std::string_view rest, bool may_fill,
                         std::string_view client) const {
  auto split = split_id(rest);
  const auto& id = split.first;
  if (!id)
    return bad_id("blob", rest.substr(0, rest.find('/')), Route::kBlob);
  auto recipe = blobs_.recipe(*id);
  if (may_fill && recipe)
    metrics_.blob_lookup(true);
  if (!recipe && recipe.error() == Errc::kNotFound && may_fill && filler_ != nullptr) {
    // Only blobs a release names are filled for devices: any other id is a 404 here, at
    // no cost upstream.
    const auto fillable = fillable_.load();
    if (fillable == nullptr || fillable->contains(*id)) {
      metrics_.blob_lookup(false);
      // A trusted recipe first (DESIGN §10), then the answer streams while chunks fill.
      return fill_then(Route::kBlob, *id, FillKind::kRecipe, client,
                       [this, req, rest = std::string(rest), client = std::string(client)](
                           std::shared_ptr<const store::Recipe> fetched) {
                         return blob_answer(req, rest, std::move(fetched), true, client);
                       });
    }
    return error_response(404, "not_found",
                          "no blob " + id->hex() + " on this node (no release names it)",
                          Route::kBlob);
  }
  if (!recipe) {
    if (recipe.error() == Errc::kNotFound) {
      return error_response(404, "not_found", "no blob " + id->hex() + " on this node",
                            Route::kBlob);
    }
    return error_response(500, "store_error", "blob " + id->hex() + ": " + recipe.error().message(),
                          Route::kBlob);
  }
  return blob_answer(req, rest, std::move(*recipe), may_fill, client);
}

Response Api::blob_answer(const RequestHeader& req, std::string_view rest,
                          std::shared_ptr<const store::Recipe> recipe, bool may_fill,
                          std::string_view client) const {
  // Named, not a structured binding: clang 14 cannot capture those.
  const auto split = split_id(rest);
  const auto& id = split.first;
  const std::string_view name = split.second;
  const auto& rec = *recipe;
  const std::string etag = http::format_etag(id->hex());
  Response r;
  r.route = Route::kBlob;
  if (const auto inm = field(req, bhttp::field::if_none_match);
      !inm.empty() && http::if_none_match(inm, etag)) {
    r.status = 304;
    r.set("ETag", etag);
    r.set("Cache-Control", kCacheControl);
    return r;
  }
  set_entity_headers(r, etag, *id);
  const std::string content_type(http::content_type_for(name));

  // Which ranges? None (200) unless a parseable Range survives If-Range.
  std::vector<http::ByteRange> ranges;
  if (const auto range = field(req, bhttp::field::range); !range.empty()) {
    const auto if_range = field(req, bhttp::field::if_range);
    const bool honour = if_range.empty() || http::if_range_matches(if_range, etag);
    if (auto specs = honour ? http::parse_range(range) : std::nullopt) {
      auto resolved = http::resolve_ranges(*specs, rec.size);
      if (!resolved) {
        Response u = error_response(
            416, "range_not_satisfiable",
            "blob " + id->hex() + " has " + std::to_string(rec.size) + " bytes", Route::kBlob);
        u.set("Content-Range", http::format_unsatisfied_range(rec.size));
        u.set("ETag", etag);
        u.set("Accept-Ranges", "bytes");
        return u;
      }
      ranges = std::move(*resolved);
    }
  }
  const auto pieces_for = [&](std::uint64_t first, std::uint64_t length) {
    return blobs_.resolve(rec, first, length);
  };
  // A chunk not stored here (a blob filling now, or a chunk evicted or lost to corruption):
  // an edge streams the range while the chunks fill (DESIGN §10); the origin has no
  // upstream: 503.
  const bool can_fill = may_fill && filler_ != nullptr;
  const auto stream = [&](std::uint64_t first, std::uint64_t length) {
    r.stream = std::make_shared<FillStream>(chunks_, blobs_, *filler_, recipe, first, length,
                                            Route::kBlob);
    r.stream_length = length;
    return r;
  };
  const auto unavailable = [&] {
    return error_response(503, "chunk_unavailable",
                          "a chunk of blob " + id->hex() + " is not stored on this node",
                          Route::kBlob);
  };
  if (ranges.size() <= 1) {
    const std::uint64_t first = ranges.empty() ? 0 : ranges[0].first;
    const std::uint64_t length = ranges.empty() ? rec.size : ranges[0].length;
    r.status = ranges.empty() ? 200 : 206;
    r.set("Content-Type", content_type);
    if (!ranges.empty())
      r.set("Content-Range", http::format_content_range(ranges[0], rec.size));
    auto p = pieces_for(first, length);
    if (!p)
      return can_fill ? stream(first, length) : unavailable();
    r.parts.push_back({std::string(), std::move(*p)});
    return r;
  }
  // RFC 9110 §14.6: multipart/byteranges, one part per range. Not streamed: a missing
  // chunk fills the whole blob first.
  const std::string b = boundary();
  r.status = 206;
  r.set("Content-Type", "multipart/byteranges; boundary=" + b);
  for (const auto& range : ranges) {
    auto p = pieces_for(range.first, range.length);
    if (!p) {
      if (!can_fill)
        return unavailable();
      return fill_then(Route::kBlob, *id, FillKind::kBlob, client,
                       [this, req, rest = std::string(rest)](std::shared_ptr<const store::Recipe>) {
                         return serve_blob(req, rest, false);
                       });
    }
    std::string prefix =
        (r.parts.empty() ? "--" : "\r\n--") + b + "\r\nContent-Type: " + content_type +
        "\r\nContent-Range: " + http::format_content_range(range, rec.size) + "\r\n\r\n";
    r.parts.push_back({std::move(prefix), std::move(*p)});
  }
  r.body = "\r\n--" + b + "--\r\n";
  return r;
}

Response Api::serve_chunk(const RequestHeader& req, std::string_view rest, bool may_fill) const {
  auto id = split_id(rest).first;
  if (!id)
    return bad_id("chunk", rest, Route::kChunk);
  auto loc = chunks_.find(*id);
  if (!loc && may_fill && filler_ != nullptr) {
    return fill_then(Route::kChunk, *id, FillKind::kChunk, {},
                     [this, req, rest = std::string(rest)](std::shared_ptr<const store::Recipe>) {
                       return serve_chunk(req, rest, false);
                     });
  }
  if (!loc)
    return error_response(404, "not_found", "no chunk " + id->hex() + " on this node",
                          Route::kChunk);
  const std::string etag = http::format_etag(id->hex());
  Response r;
  r.route = Route::kChunk;
  if (const auto inm = field(req, bhttp::field::if_none_match);
      !inm.empty() && http::if_none_match(inm, etag)) {
    r.status = 304;
    r.set("ETag", etag);
    return r;
  }
  set_entity_headers(r, etag, *id);
  r.set("Content-Type", "application/octet-stream");
  r.parts.push_back(
      {std::string(), {store::Piece{std::move(loc->segment), loc->offset, loc->length}}});
  return r;
}

Response Api::serve_recipe(std::string_view rest, bool may_fill) const {
  auto id = split_id(rest).first;
  if (!id)
    return bad_id("blob", rest, Route::kRecipe);
  auto recipe = blobs_.recipe(*id);
  if (!recipe && may_fill && filler_ != nullptr) {
    return fill_then(Route::kRecipe, *id, FillKind::kBlob, {},
                     [this, rest = std::string(rest)](std::shared_ptr<const store::Recipe>) {
                       return serve_recipe(rest, false);
                     });
  }
  if (!recipe)
    return error_response(404, "not_found", "no blob " + id->hex() + " on this node",
                          Route::kRecipe);
  Response r;
  r.route = Route::kRecipe;
  r.set("Content-Type", "application/json");
  r.set("ETag", http::format_etag(id->hex()));
  r.set("Cache-Control", kCacheControl);
  std::string body = "{\"sha256\":\"" + id->hex() +
                     "\",\"size\":" + std::to_string((*recipe)->size) + ",\"chunks\":[";
  bool first = true;
  for (const auto& c : (*recipe)->chunks) {
    body += first ? "" : ",";
    body += "{\"sha256\":\"" + c.id.hex() + "\",\"size\":" + std::to_string(c.length) + "}";
    first = false;
  }
  body += "]}";
  r.body = std::move(body);
  return r;
}

}  // namespace edge::api
