#include "edge/api/sync.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/json.hpp>

#include "edge/api/device.hpp"
#include "edge/control/json_parse.hpp"
#include "edge/core/clock.hpp"
#include "edge/core/utf8.hpp"

#include <openssl/crypto.h>

namespace edge::api {
namespace {

namespace json = boost::json;
namespace bhttp = boost::beast::http;
using store::Change;
using store::StateKind;

constexpr std::uint32_t kMaxWaitMs = 60'000;  // longest long poll
constexpr std::size_t kMaxCheckinsPerBatch = 10'000;
constexpr std::size_t kMaxField = store::kMaxCheckinField;

std::optional<StateKind> kind_of(std::string_view s) {
  if (s == "app")
    return StateKind::kApp;
  if (s == "release")
    return StateKind::kRelease;
  if (s == "channel")
    return StateKind::kChannel;
  if (s == "device")
    return StateKind::kDevice;
  return std::nullopt;
}

void append_doc(std::string& out, const Change& c) {
  out += "{\"kind\":\"";
  out += store::state_kind_name(c.kind);
  out += "\",\"app_id\":\"";
  out += json_escape(c.app_id);
  out += "\",\"key\":\"";
  out += json_escape(c.key);
  out += "\",\"doc\":";
  // Stored documents are JSON this node's control module wrote (or validated).
  out += c.deleted || c.value.empty() ? std::string_view("null") : std::string_view(c.value);
}

bool fail(std::string* error, std::string message) {
  if (error != nullptr)
    *error = std::move(message);
  return false;
}

std::optional<std::uint64_t> as_u64(const json::value* v) {
  if (v == nullptr)
    return std::nullopt;
  if (v->is_uint64())
    return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0)
    return static_cast<std::uint64_t>(v->get_int64());
  return std::nullopt;
}

std::optional<std::string> as_string(const json::object& o, std::string_view name,
                                     std::size_t max) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || !v->is_string() || v->get_string().size() > max)
    return std::nullopt;
  const std::string_view s = v->get_string();
  if (s.find('\0') != std::string_view::npos)
    return std::nullopt;
  return std::string(s);
}

// One document or change object; `numbered`: a change (seq, deleted) rather than a doc.
bool parse_entry(const json::value& v, bool numbered, Change& c, std::string* error,
                 std::size_t index) {
  const std::string at = "[" + std::to_string(index) + "]";
  if (!v.is_object())
    return fail(error, at + ": expected an object");
  const auto& o = v.get_object();
  if (numbered) {
    const auto seq = as_u64(o.if_contains("seq"));
    if (!seq || *seq == 0)
      return fail(error, at + ".seq: expected a positive integer");
    c.seq = *seq;
    const auto* d = o.if_contains("deleted");
    if (d != nullptr && !d->is_bool())
      return fail(error, at + ".deleted: expected a boolean");
    c.deleted = d != nullptr && d->get_bool();
  }
  const auto kind = as_string(o, "kind", 16);
  const auto k = kind ? kind_of(*kind) : std::nullopt;
  if (!k)
    return fail(error, at + ".kind: expected app, release, channel or device");
  c.kind = *k;
  auto app = as_string(o, "app_id", 255);
  if (!app || !valid_app_id(*app))
    return fail(error, at + ".app_id: expected an app id");
  c.app_id = std::move(*app);
  auto key = as_string(o, "key", 255);
  if (!key || (c.kind == StateKind::kApp) != key->empty())
    return fail(error, at + ".key: expected a name (empty for an app)");
  c.key = std::move(*key);
  const auto* doc = o.if_contains("doc");
  if (c.deleted) {
    c.value.clear();
  } else if (doc == nullptr || !doc->is_object()) {
    return fail(error, at + ".doc: expected an object");
  } else {
    c.value = json::serialize(*doc);
  }
  return true;
}

std::optional<json::value> parse_json(std::string_view text, std::string* error) {
  boost::system::error_code ec;
  json::value v = control::parse_finite(text, ec);
  if (ec) {
    fail(error, "body is not JSON: " + ec.message());
    return std::nullopt;
  }
  if (!v.is_object()) {
    fail(error, "body must be a JSON object");
    return std::nullopt;
  }
  return v;
}

// "epoch": absent (older nodes) or 1-32 lower-case hex digits.
bool parse_epoch(const json::object& o, std::string& out, std::string* error) {
  const auto* e = o.if_contains("epoch");
  if (e == nullptr)
    return true;
  if (!e->is_string() || !store::StateStore::valid_epoch(e->get_string()))
    return fail(error, "epoch: expected 1-32 lower-case hex digits");
  out = std::string(e->get_string());
  return true;
}

// The string fields of a check-in with their wire names, for the encoder and the parser.
template <class C>
auto checkin_fields(C& c) {
  using S = std::conditional_t<std::is_const_v<C>, const std::string, std::string>;
  return std::array<std::pair<const char*, S*>, 10>{{{"app_id", &c.app_id},
                                                     {"device_id", &c.device_id},
                                                     {"platform", &c.platform},
                                                     {"version_name", &c.version_name},
                                                     {"version_build", &c.version_build},
                                                     {"action", &c.action},
                                                     {"decision", &c.decision},
                                                     {"plugin_version", &c.plugin_version},
                                                     {"custom_id", &c.custom_id},
                                                     {"default_channel", &c.default_channel}}};
}
// The fields from plugin_version on came later: a child of an older version omits them.
constexpr std::size_t kRequiredCheckinFields = 7;

Response json_reply(unsigned status, std::string body, Route route) {
  Response r = make_json_response(status, std::move(body), route);
  r.set("Cache-Control", "no-store");
  return r;
}

std::optional<std::uint64_t> query_u64(std::string_view query, std::string_view name) {
  for (const auto& [k, v] : parse_query(query)) {
    if (k != name)
      continue;
    std::uint64_t out = 0;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || p != v.data() + v.size() || v.empty())
      return std::nullopt;
    return out;
  }
  return 0;
}

}  // namespace

std::string encode_changes(const ChangesPage& page) {
  std::string out = "{\"last_seq\":" + std::to_string(page.last_seq);
  if (!page.epoch.empty())
    out += ",\"epoch\":\"" + json_escape(page.epoch) + "\"";
  if (page.snapshot)
    return out + ",\"snapshot\":true}";
  out += ",\"changes\":[";
  bool first = true;
  for (const auto& c : page.changes) {
    out += first ? "" : ",";
    first = false;
    out += "{\"seq\":" + std::to_string(c.seq) + ",\"deleted\":";
    out += c.deleted ? "true," : "false,";
    std::string doc;
    append_doc(doc, c);
    out.append(doc, 1);  // without its '{': the fields continue this object
    out += '}';
  }
  return out + "]}";
}

std::optional<ChangesPage> parse_changes(std::string_view text, std::string* error) {
  auto v = parse_json(text, error);
  if (!v)
    return std::nullopt;
  const auto& o = v->get_object();
  ChangesPage page;
  const auto last = as_u64(o.if_contains("last_seq"));
  if (!last) {
    fail(error, "last_seq: expected a non-negative integer");
    return std::nullopt;
  }
  page.last_seq = *last;
  if (!parse_epoch(o, page.epoch, error))
    return std::nullopt;
  if (const auto* s = o.if_contains("snapshot"); s != nullptr && s->is_bool() && s->get_bool()) {
    page.snapshot = true;
    return page;
  }
  const auto* list = o.if_contains("changes");
  if (list == nullptr || !list->is_array()) {
    fail(error, "changes: expected an array");
    return std::nullopt;
  }
  std::uint64_t prev = 0;
  for (std::size_t i = 0; i < list->get_array().size(); ++i) {
    Change c;
    if (!parse_entry(list->get_array()[i], true, c, error, i))
      return std::nullopt;
    if (c.seq <= prev || c.seq > page.last_seq) {
      fail(error, "changes[" + std::to_string(i) + "].seq: out of order");
      return std::nullopt;
    }
    prev = c.seq;
    page.changes.push_back(std::move(c));
  }
  return page;
}

std::string encode_snapshot(const store::StateStore::Snapshot& snap) {
  std::string out = "{\"last_seq\":" + std::to_string(snap.seq);
  if (!snap.epoch.empty())
    out += ",\"epoch\":\"" + json_escape(snap.epoch) + "\"";
  out += ",\"docs\":[";
  bool first = true;
  for (const auto& c : snap.docs) {
    out += first ? "" : ",";
    first = false;
    append_doc(out, c);
    out += '}';
  }
  return out + "]}";
}

std::optional<store::StateStore::Snapshot> parse_snapshot(std::string_view text,
                                                          std::string* error) {
  auto v = parse_json(text, error);
  if (!v)
    return std::nullopt;
  const auto& o = v->get_object();
  store::StateStore::Snapshot snap;
  const auto last = as_u64(o.if_contains("last_seq"));
  const auto* list = o.if_contains("docs");
  if (!last || list == nullptr || !list->is_array()) {
    fail(error, "expected {\"last_seq\":N,\"docs\":[...]}");
    return std::nullopt;
  }
  snap.seq = *last;
  if (!parse_epoch(o, snap.epoch, error))
    return std::nullopt;
  for (std::size_t i = 0; i < list->get_array().size(); ++i) {
    Change c;
    if (!parse_entry(list->get_array()[i], false, c, error, i))
      return std::nullopt;
    snap.docs.push_back(std::move(c));
  }
  return snap;
}

std::string encode_checkins(const std::vector<store::Checkin>& checkins) {
  std::string out = "{\"checkins\":[";
  bool first = true;
  for (const auto& c : checkins) {
    out += first ? "{" : ",{";
    first = false;
    for (const auto& [name, value] : checkin_fields(c)) {
      out += '"';
      out += name;
      out += "\":\"";
      out += json_escape(*value);
      out += "\",";
    }
    out += "\"time_ms\":" + std::to_string(c.time_ms) + "}";
  }
  return out + "]}";
}

std::optional<std::vector<store::Checkin>> parse_checkins(std::string_view text,
                                                          std::string* error) {
  auto v = parse_json(text, error);
  if (!v)
    return std::nullopt;
  const auto* list = v->get_object().if_contains("checkins");
  if (list == nullptr || !list->is_array()) {
    fail(error, "checkins: expected an array");
    return std::nullopt;
  }
  if (list->get_array().size() > kMaxCheckinsPerBatch) {
    fail(error, "checkins: more than " + std::to_string(kMaxCheckinsPerBatch) + " in one batch");
    return std::nullopt;
  }
  std::vector<store::Checkin> out;
  out.reserve(list->get_array().size());
  for (std::size_t i = 0; i < list->get_array().size(); ++i) {
    const std::string at = "checkins[" + std::to_string(i) + "]";
    const auto& e = list->get_array()[i];
    if (!e.is_object()) {
      fail(error, at + ": expected an object");
      return std::nullopt;
    }
    const auto& o = e.get_object();
    store::Checkin c;
    std::size_t index = 0;
    for (const auto& [name, field] : checkin_fields(c)) {
      if (index++ >= kRequiredCheckinFields && !o.contains(name))
        continue;
      auto s = as_string(o, name, kMaxField);
      if (!s) {
        fail(error, at + "." + name + ": expected a string of at most " +
                        std::to_string(kMaxField) + " bytes without NUL");
        return std::nullopt;
      }
      *field = std::move(*s);
    }
    if (!valid_app_id(c.app_id) || c.device_id.empty() || c.action.empty()) {
      fail(error, at + ": app_id, device_id and action are required");
      return std::nullopt;
    }
    const auto* t = o.if_contains("time_ms");
    if (t == nullptr || !t->is_int64() || t->get_int64() <= 0) {
      fail(error, at + ".time_ms: expected a positive integer");
      return std::nullopt;
    }
    c.time_ms = t->get_int64();
    out.push_back(std::move(c));
  }
  return out;
}

std::optional<store::Recipe> parse_recipe(std::string_view text, const Sha256& expected,
                                          std::string* error) {
  auto v = parse_json(text, error);
  if (!v)
    return std::nullopt;
  const auto& o = v->get_object();
  const auto id = as_string(o, "sha256", 64);
  const auto size = as_u64(o.if_contains("size"));
  const auto* list = o.if_contains("chunks");
  if (!id || !size || list == nullptr || !list->is_array()) {
    fail(error, "expected {\"sha256\",\"size\",\"chunks\":[...]}");
    return std::nullopt;
  }
  if (*id != expected.hex()) {
    fail(error, "sha256: the recipe is for " + *id + ", not " + expected.hex());
    return std::nullopt;
  }
  std::vector<store::ChunkRef> chunks;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < list->get_array().size(); ++i) {
    const auto& e = list->get_array()[i];
    const std::string at = "chunks[" + std::to_string(i) + "]";
    if (!e.is_object()) {
      fail(error, at + ": expected an object");
      return std::nullopt;
    }
    const auto cid = as_string(e.get_object(), "sha256", 64);
    const auto parsed = cid ? Sha256::parse(*cid) : Result<Sha256>(Errc::kInvalidArgument);
    const auto n = as_u64(e.get_object().if_contains("size"));
    if (!parsed || !n || *n == 0 || *n > (1U << 20)) {
      fail(error, at + ": expected a sha256 and a size of 1 byte..1 MiB");
      return std::nullopt;
    }
    total += *n;
    chunks.push_back({*parsed, static_cast<std::uint32_t>(*n)});
  }
  if (total != *size) {
    fail(error,
         "size: " + std::to_string(*size) + " but the chunks add up to " + std::to_string(total));
    return std::nullopt;
  }
  return store::Recipe::make(expected, std::move(chunks));
}

std::optional<IdempotencyKey> parse_idempotency_key(std::string_view key) {
  const auto colon = key.find(':');
  if (colon == std::string_view::npos)
    return std::nullopt;
  IdempotencyKey out;
  const std::string_view node = key.substr(0, colon);
  if (!is_plain_name(node))
    return std::nullopt;
  out.node = std::string(node);
  std::string_view num = key.substr(colon + 1);
  if (const auto second = num.find(':'); second != std::string_view::npos) {
    const std::string_view gen = num.substr(0, second);
    if (gen.empty() || gen.size() > 32)
      return std::nullopt;
    for (const char c : gen) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
        return std::nullopt;
    }
    out.generation = std::string(gen);
    num.remove_prefix(second + 1);
  }
  const auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), out.batch_seq);
  if (num.empty() || ec != std::errc() || p != num.data() + num.size() || out.batch_seq == 0)
    return std::nullopt;
  return out;
}

std::string format_idempotency_key(std::string_view node, std::uint64_t generation,
                                   std::uint64_t batch_seq) {
  char gen[17];
  std::snprintf(gen, sizeof gen, "%016llx", static_cast<unsigned long long>(generation));
  return std::string(node) + ":" + gen + ":" + std::to_string(batch_seq);
}

std::size_t encoded_checkin_size(const store::Checkin& c) {
  std::size_t n = 2 + std::to_string(c.time_ms).size() + 10;  // {} "time_ms": and a comma
  for (const auto& [name, value] : checkin_fields(c))
    n += std::strlen(name) + 6 + json_escape(*value).size();  // "name":"value",
  return n;
}

std::string_view bearer_token(const bhttp::request_header<>& req) {
  const auto it = req.find(bhttp::field::authorization);
  if (it == req.end())
    return {};
  std::string_view auth(it->value().data(), it->value().size());
  // RFC 9110 §11.1: the scheme is case-insensitive ("bearer", "BEARER"); 1*SP follows it.
  constexpr std::string_view kBearer = "bearer";
  if (auth.size() <= kBearer.size() || !boost::beast::iequals(auth.substr(0, 6), kBearer) ||
      auth[kBearer.size()] != ' ')
    return {};
  auth.remove_prefix(kBearer.size());
  while (!auth.empty() && auth.front() == ' ')
    auth.remove_prefix(1);
  return auth;
}

bool bearer_matches(const bhttp::request_header<>& req, std::string_view token) {
  if (token.empty())
    return false;
  const std::string_view given = bearer_token(req);
  // Constant-time compare: the length is not secret, the bytes are.
  return given.size() == token.size() &&
         CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
}

// --- SyncApi --------------------------------------------------------------------------------

struct SyncApi::Waiter {
  Waiter(const store::ChunkStore::Executor& ex, std::uint64_t a) : after(a), timer(ex) {}
  std::uint64_t after;
  boost::asio::steady_timer timer;
};

SyncApi::SyncApi(store::StateStore& state, store::CheckinStore& checkins, std::string sync_token)
    : state_(state), checkins_(checkins), ingest_(&checkins), token_(std::move(sync_token)) {}

SyncApi::~SyncApi() = default;

bool SyncApi::handles(std::string_view path) {
  return path.starts_with("/v1/sync/") || path == "/v1/checkins";
}

std::optional<Response> SyncApi::refuse_unauthorized(const bhttp::request_header<>& req,
                                                     Route route) const {
  if (token_.empty()) {
    return error_response(403, "sync_disabled",
                          "this node has no sync.token; node-to-node routes are off", route);
  }
  if (!bearer_matches(req, token_)) {
    Response r = error_response(401, "unauthorized",
                                "missing or wrong 'Authorization: Bearer <sync token>'", route);
    r.set("WWW-Authenticate", "Bearer");
    return r;
  }
  return std::nullopt;
}

Response SyncApi::dead_letters() const {
  auto list = checkins_.dead_letters(100);
  if (!list) {
    return error_response(500, "store_error", "reading the dead letters: " + list.error().message(),
                          Route::kAdmin);
  }
  std::string out = "{\"dead_letters\":[";
  bool first = true;
  for (const auto& d : *list) {
    out += first ? "" : ",";
    first = false;
    const std::string checkins = encode_checkins(d.checkins);  // {"checkins":[...]}
    out += "{\"batch_seq\":" + std::to_string(d.batch_seq) +
           ",\"time_ms\":" + std::to_string(d.time_ms) + ",\"reason\":\"" + json_escape(d.reason) +
           "\"," + checkins.substr(1);
  }
  return json_reply(200, out + "]}", Route::kAdmin);
}

Response SyncApi::changes_now(std::uint64_t after) const {
  ChangesPage page;
  page.last_seq = state_.last_seq();
  page.epoch = state_.epoch();
  if (after + 1 < state_.log_start()) {
    page.snapshot = true;  // the entries after `after` were compacted away
  } else {
    auto changes = state_.changes_after(after, kFeedPageChanges, kFeedPageBytes);
    if (!changes) {
      return error_response(500, "store_error",
                            "reading the changelog: " + changes.error().message(), Route::kSync);
    }
    page.changes = std::move(*changes);
  }
  return json_reply(200, encode_changes(page), Route::kSync);
}

Response SyncApi::long_poll(std::uint64_t after, std::uint32_t wait_ms) {
  if (wait_ms == 0 || state_.last_seq() > after)
    return changes_now(after);
  return deferred(Route::kSync, [this, after, wait_ms](const store::ChunkStore::Executor& ex,
                                                       std::function<void(Response)> reply) {
    auto w = std::make_shared<Waiter>(ex, after);
    w->timer.expires_after(std::chrono::milliseconds(wait_ms));
    bool stopped = false;
    {
      std::lock_guard lock(mutex_);
      stopped = stopped_;
      if (!stopped)
        waiters_.push_back(w);
    }
    if (stopped) {
      reply(changes_now(after));
      return;
    }
    w->timer.async_wait([this, w, reply = std::move(reply)](boost::system::error_code) {
      {
        std::lock_guard lock(mutex_);
        std::erase(waiters_, w);
      }
      reply(changes_now(w->after));
    });
    // A commit between the check above and the registration must not wait out the poll.
    if (state_.last_seq() > after)
      boost::asio::post(ex, [w] { w->timer.cancel(); });
  });
}

void SyncApi::notify(std::uint64_t seq) {
  std::lock_guard lock(mutex_);
  for (const auto& w : waiters_) {
    if (w->after < seq)
      boost::asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  }
}

void SyncApi::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  for (const auto& w : waiters_)
    boost::asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
}

Response SyncApi::handle(const bhttp::request_header<>& req, std::string_view path,
                         std::string_view query, std::string_view body) {
  const Route route = path == "/v1/checkins" ? Route::kCheckins : Route::kSync;
  if (auto refused = refuse_unauthorized(req, route))
    return std::move(*refused);
  const auto method = req.method();
  const auto not_allowed = [&](std::string_view allow) { return method_not_allowed(allow, route); };
  if (path == "/v1/sync/snapshot") {
    if (method != bhttp::verb::get)
      return not_allowed("GET");
    auto snap = state_.snapshot();
    if (!snap) {
      return error_response(500, "store_error", "reading the state: " + snap.error().message(),
                            route);
    }
    return json_reply(200, encode_snapshot(*snap), route);
  }
  if (path == "/v1/sync/changes" && method == bhttp::verb::get) {
    const auto after = query_u64(query, "after");
    const auto wait = query_u64(query, "wait_ms");
    if (!after)
      return error_response(400, "bad_query", "after: expected a non-negative integer", route);
    if (!wait || *wait > kMaxWaitMs) {
      return error_response(400, "bad_query",
                            "wait_ms: expected an integer from 0 to " + std::to_string(kMaxWaitMs),
                            route);
    }
    return long_poll(*after, static_cast<std::uint32_t>(*wait));
  }
  if (path == "/v1/sync/changes" && method == bhttp::verb::post) {
    if (push_ == nullptr) {
      return error_response(409, "not_an_edge",
                            "this node is the origin; it does not take pushed changes", route);
    }
    std::string error;
    auto page = parse_changes(body, &error);
    if (!page || page->snapshot)
      return error_response(400, "invalid_body", page ? "a push carries changes" : error, route);
    if (const auto mine = state_.epoch();
        !page->epoch.empty() && !mine.empty() && page->epoch != mine) {
      return error_response(409, "epoch_mismatch",
                            "the push is of feed epoch " + page->epoch + ", this node follows " +
                                mine + "; it will pull",
                            route);
    }
    push_->offer(std::move(page->changes), page->last_seq);
    return json_reply(200, "{\"queued\":true,\"cursor\":" + std::to_string(state_.last_seq()) + "}",
                      route);
  }
  if (path == "/v1/sync/changes")
    return not_allowed("GET, POST");
  if (path == "/v1/sync/status") {
    if (method != bhttp::verb::post)
      return not_allowed("POST");
    if (fleet_ == nullptr)
      return error_response(404, "not_found", "this node keeps no fleet status", route);
    std::string error;
    auto report = parse_status_report(body, &error);
    if (!report)
      return error_response(400, "invalid_body", error, route);
    const std::size_t n = report->size();
    fleet_->accept(std::move(*report), wall_clock_ms());
    return json_reply(200, "{\"accepted\":" + std::to_string(n) + "}", route);
  }
  if (path == "/v1/checkins") {
    if (method != bhttp::verb::post)
      return not_allowed("POST");
    const auto it = req.find("Idempotency-Key");
    const auto key = it == req.end()
                         ? std::nullopt
                         : parse_idempotency_key({it->value().data(), it->value().size()});
    if (!key) {
      return error_response(400, "bad_idempotency_key",
                            "expected 'Idempotency-Key: <node-id>:<generation>:<batch-seq>'",
                            route);
    }
    std::string error;
    auto list = parse_checkins(body, &error);
    if (!list)
      return error_response(400, "invalid_body", error, route);
    // A child's clock cannot date events far into this node's future: times are clamped to
    // the receipt time plus kMaxChildClockSkewMs, so that a check-in dated years ahead cannot
    // keep an auto-pause window (or an hourly bucket of the future) alive.
    const std::int64_t latest = wall_clock_ms() + kMaxChildClockSkewMs;
    for (auto& c : *list)
      c.time_ms = std::min(c.time_ms, latest);
    const std::size_t n = list->size();
    return deferred(route, [this, key = *key, list = std::move(*list), n](
                               const store::ChunkStore::Executor&,
                               std::function<void(Response)> reply) mutable {
      ingest_->record_batch(
          key.node, key.generation, key.batch_seq, std::move(list),
          [this, reply = std::move(reply), n](bool ok, bool duplicate) {
            if (!ok && !ingest_->writable()) {
              reply(storage_full_response(503, "the check-in batch", Route::kCheckins));
              return;
            }
            if (!ok) {
              // Not applied: the child keeps the batch and sends it again, same key.
              const auto why = ingest_->refusal();
              reply(error_response(503, why.code, why.message, Route::kCheckins));
              return;
            }
            reply(json_reply(200,
                             "{\"applied\":" + std::to_string(duplicate ? 0 : n) +
                                 ",\"duplicate\":" + (duplicate ? "true" : "false") + "}",
                             Route::kCheckins));
          });
    });
  }
  return error_response(404, "not_found", "no sync route for " + std::string(path.substr(0, 200)),
                        route);
}

}  // namespace edge::api
