#include "edge/api/fleet.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include <boost/json.hpp>

#include "edge/api/device_info.hpp"
#include "edge/api/response.hpp"
#include "edge/control/json_parse.hpp"
#include "edge/core/utf8.hpp"
#include "edge/http/http.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

namespace json = boost::json;

// A non-negative integer field of a status object, 0 otherwise (the summary's figures).
std::uint64_t figure(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr)
    return 0;
  if (const auto* u = v->if_uint64())
    return *u;
  if (const auto* i = v->if_int64())
    return *i > 0 ? static_cast<std::uint64_t>(*i) : 0;
  return 0;
}

}  // namespace

std::optional<std::vector<NodeStatus>> parse_status_report(std::string_view text,
                                                           std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<std::vector<NodeStatus>> {
    if (error != nullptr)
      *error = std::move(why);
    return std::nullopt;
  };
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 4;
  const json::value v = control::parse_finite(text, ec, {}, opt);
  const json::object* o = ec ? nullptr : v.if_object();
  if (o == nullptr)
    return fail("expected a JSON object {\"nodes\":[...]}");
  const json::value* nodes = o->if_contains("nodes");
  if (nodes == nullptr || !nodes->is_array())
    return fail("nodes: expected an array");
  if (nodes->get_array().size() > kMaxReportNodes)
    return fail("nodes: at most " + std::to_string(kMaxReportNodes) + " per report");
  std::vector<NodeStatus> out;
  for (const auto& n : nodes->get_array()) {
    const json::object* node = n.if_object();
    if (node == nullptr)
      return fail("nodes: each entry must be an object");
    for (const auto& [key, value] : *node) {
      if (value.is_object() || value.is_array())
        return fail("nodes: field '" + std::string(key.substr(0, 64)) + "' must be flat");
      if (key == "received_ms" || key == "age_s" || key == "via")
        return fail("nodes: '" + std::string(key) + "' is set by the receiver");
    }
    const json::value* id = node->if_contains("node_id");
    if (id == nullptr || !id->is_string() || !is_plain_name(id->get_string()))
      return fail("nodes: node_id must be 1-64 of [A-Za-z0-9._-]");
    std::string doc = json::serialize(*node);
    if (doc.size() > kMaxStatusBytes)
      return fail("nodes: a status is at most 4096 bytes");
    NodeStatus status;
    status.node_id = std::string(id->get_string());
    status.doc = std::move(doc);
    status.lag_seq = figure(*node, "lag_seq");
    status.outbox_depth = figure(*node, "outbox_depth");
    status.outbox_bytes = figure(*node, "outbox_bytes");
    out.push_back(std::move(status));
  }
  return out;
}

std::string encode_node_status(const NodeFigures& f) {
  const std::uint64_t lookups = f.blob_hits + f.blob_misses;
  char ratio[32];
  std::snprintf(
      ratio, sizeof ratio, "%.4f",
      lookups == 0 ? 1.0 : static_cast<double>(f.blob_hits) / static_cast<double>(lookups));
  const auto n = [](std::uint64_t v) { return std::to_string(v); };
  JsonObjectWriter w;
  w.string("node_id", f.node_id)
      .string("role", f.role)
      .string("version", f.version)
      .string("upstream", f.upstream)
      .raw("cursor_seq", n(f.cursor_seq))
      .raw("upstream_seq", n(f.upstream_seq))
      .raw("lag_seq", n(f.upstream_seq > f.cursor_seq ? f.upstream_seq - f.cursor_seq : 0))
      .raw("outbox_depth", n(f.outbox_depth))
      .raw("outbox_bytes", n(f.outbox_bytes))
      .raw("cache_bytes", n(f.cache_bytes))
      .raw("blob_hits", n(f.blob_hits))
      .raw("blob_misses", n(f.blob_misses))
      .raw("hit_ratio", ratio)
      .raw("bytes_served", n(f.bytes_served))
      .raw("seconds_since_contact", f.last_contact_ms == 0
                                        ? std::string("null")
                                        : std::to_string((f.now_ms - f.last_contact_ms) / 1000))
      .raw("reported_ms", std::to_string(f.now_ms));
  return std::move(w).finish();
}

std::string encode_status_report(const std::string& own, const std::vector<NodeStatus>& relayed) {
  std::string out = "{\"nodes\":[" + own;
  for (const auto& n : relayed)
    out += "," + n.doc;
  out += "]}";
  return out;
}

std::vector<std::string> encode_status_reports(const std::string& own,
                                               const std::vector<NodeStatus>& relayed,
                                               std::size_t max_bytes, std::size_t max_nodes) {
  const std::string head = "{\"nodes\":[" + own;
  constexpr std::size_t kTail = 2;  // "]}"
  std::vector<std::string> out;
  std::string body = head;
  std::size_t count = 1;
  for (const auto& n : relayed) {
    // A body holds at least one relayed status, so every one is sent even if too big.
    if (count > 1 &&
        (count + 1 > max_nodes || body.size() + 1 + n.doc.size() + kTail > max_bytes)) {
      out.push_back(body + "]}");
      body = head;
      count = 1;
    }
    body += ',';
    body += n.doc;
    ++count;
  }
  out.push_back(body + "]}");
  return out;
}

std::optional<FleetQuery> parse_fleet_query(std::string_view query, std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<FleetQuery> {
    if (error != nullptr)
      *error = std::move(why);
    return std::nullopt;
  };
  FleetQuery q;
  for (const auto& [key, value] : parse_query(query)) {
    if (key == "limit") {
      std::uint64_t n = 0;
      if (!http::parse_u64(value, n) || n < 1 || n > kMaxFleetPage) {
        return fail("limit: expected 1.." + std::to_string(kMaxFleetPage) + ", got '" +
                    utf8_quote(value, 64) + "'");
      }
      q.limit = static_cast<std::size_t>(n);
    } else if (key == "cursor") {
      if (!value.empty() && !is_plain_name(value))
        return fail("cursor: expected a node id (the 'next' of a page)");
      q.cursor = value;
    } else {
      return fail("unknown parameter '" + utf8_quote(key, 64) + "' (expected limit, cursor)");
    }
  }
  return q;
}

Fleet::Fleet(FleetOptions options) : options_(options) {
  if (options_.max_nodes == 0)
    options_.max_nodes = 1;
}

void Fleet::expire_locked(std::int64_t now_ms) const {
  while (!by_age_.empty() && now_ms - by_age_.begin()->first >= options_.expire_after_ms) {
    nodes_.erase(by_age_.begin()->second);
    by_age_.erase(by_age_.begin());
  }
}

bool Fleet::stale(const NodeStatus& n, std::int64_t now_ms) const {
  return now_ms - n.received_ms > options_.expire_after_ms / 2;
}

void Fleet::accept(std::vector<NodeStatus> report, std::int64_t now_ms) {
  if (report.empty())
    return;
  const std::string sender = report.front().node_id;
  if (backend_ != nullptr) {
    std::vector<store::FleetRow> rows;
    rows.reserve(report.size());
    for (std::size_t i = 0; i < report.size(); ++i) {
      const auto& n = report[i];
      rows.push_back({n.node_id, n.doc, now_ms, i == 0 ? std::string() : sender, n.lag_seq,
                      n.outbox_depth, n.outbox_bytes});
    }
    // This node's table has the report either way: the shared view lacks it until the next
    // report once the backend is back.
    if (auto up = backend_->upsert(rows); !up)
      spdlog::warn("fleet: cannot share the report of {} ({} node(s)) with the tier: {}", sender,
                   rows.size(), up.error().message());
  }
  std::lock_guard lock(mutex_);
  expire_locked(now_ms);
  for (std::size_t i = 0; i < report.size(); ++i) {
    auto& n = report[i];
    n.received_ms = now_ms;
    n.via = i == 0 ? std::string() : sender;
    if (const auto it = nodes_.find(n.node_id); it != nodes_.end()) {
      by_age_.erase({it->second.received_ms, n.node_id});
      by_age_.insert({now_ms, n.node_id});
      it->second = std::move(n);
      continue;
    }
    if (nodes_.size() >= options_.max_nodes) {
      // Full: the node heard from longest ago makes room, unless that is this report's
      // (all received now): a new node gets in, a report cannot push itself out.
      if (by_age_.empty() || by_age_.begin()->first >= now_ms)
        continue;
      nodes_.erase(by_age_.begin()->second);
      by_age_.erase(by_age_.begin());
    }
    by_age_.insert({now_ms, n.node_id});
    std::string id = n.node_id;
    nodes_.emplace(std::move(id), std::move(n));
  }
}

std::vector<NodeStatus> Fleet::nodes(std::int64_t now_ms) const {
  std::lock_guard lock(mutex_);
  expire_locked(now_ms);
  std::vector<NodeStatus> out;
  out.reserve(nodes_.size());
  for (const auto& [id, n] : nodes_)
    out.push_back(n);
  return out;
}

std::vector<NodeStatus> Fleet::page(const FleetQuery& q, std::int64_t now_ms,
                                    std::string* next) const {
  std::lock_guard lock(mutex_);
  expire_locked(now_ms);
  return page_locked(q, next);
}

std::vector<NodeStatus> Fleet::page_locked(const FleetQuery& q, std::string* next) const {
  auto it = q.cursor.empty() ? nodes_.begin() : nodes_.upper_bound(q.cursor);
  std::vector<NodeStatus> out;
  for (; it != nodes_.end() && out.size() < q.limit; ++it)
    out.push_back(it->second);
  if (next != nullptr)
    *next = it != nodes_.end() && !out.empty() ? out.back().node_id : std::string();
  return out;
}

FleetSummary Fleet::summary(std::int64_t now_ms) const {
  std::lock_guard lock(mutex_);
  expire_locked(now_ms);
  return summary_locked(now_ms);
}

FleetSummary Fleet::summary_locked(std::int64_t now_ms) const {
  FleetSummary s;
  s.nodes = nodes_.size();
  for (const auto& [id, n] : nodes_) {
    if (stale(n, now_ms))
      ++s.stale;
    if (n.lag_seq > s.max_lag_seq) {
      s.max_lag_seq = n.lag_seq;
      s.max_lag_node = id;
    }
    s.outbox_depth += n.outbox_depth;
    s.outbox_bytes += n.outbox_bytes;
  }
  return s;
}

void Fleet::sweep_shared(std::int64_t now_ms) {
  if (backend_ == nullptr)
    return;
  if (auto n = backend_->expire(now_ms - options_.expire_after_ms, options_.max_nodes); !n)
    spdlog::warn("fleet: cannot expire the tier's fleet table: {}", n.error().message());
}

std::optional<std::string> Fleet::render_shared(const std::string& self, const FleetQuery& q,
                                                std::int64_t now_ms) const {
  // Rows at or past the expiry are left out as this table leaves them out.
  const std::int64_t min_received = now_ms - options_.expire_after_ms;
  auto rows = backend_->page(q.cursor, q.limit + 1, min_received);
  if (!rows) {
    spdlog::warn("fleet: cannot read the tier's fleet table ({}): this origin's reports only",
                 rows.error().message());
    return std::nullopt;
  }
  auto totals = backend_->totals(min_received, now_ms - options_.expire_after_ms / 2);
  if (!totals) {
    spdlog::warn("fleet: cannot read the tier's fleet table ({}): this origin's reports only",
                 totals.error().message());
    return std::nullopt;
  }
  std::string next;
  if (rows->size() > q.limit) {
    rows->resize(q.limit);
    next = rows->back().node_id;
  }
  std::vector<NodeStatus> page;
  page.reserve(rows->size());
  for (auto& r : *rows) {
    NodeStatus n;
    n.node_id = std::move(r.node_id);
    n.doc = std::move(r.doc);
    n.received_ms = r.received_ms;
    n.via = std::move(r.via);
    n.lag_seq = r.lag_seq;
    n.outbox_depth = r.outbox_depth;
    n.outbox_bytes = r.outbox_bytes;
    page.push_back(std::move(n));
  }
  FleetSummary s;
  s.nodes = totals->nodes;
  s.stale = totals->stale;
  s.max_lag_seq = totals->max_lag_seq;
  s.max_lag_node = totals->max_lag_node;
  s.outbox_depth = totals->outbox_depth;
  s.outbox_bytes = totals->outbox_bytes;
  return render_page(self, page, s, next, now_ms);
}

std::string Fleet::render(const std::string& self, const FleetQuery& q, std::int64_t now_ms) const {
  if (backend_ != nullptr) {
    if (auto shared = render_shared(self, q, now_ms))
      return std::move(*shared);
  }
  std::string next;
  std::vector<NodeStatus> page;
  FleetSummary s;
  {
    std::lock_guard lock(mutex_);
    expire_locked(now_ms);
    page = page_locked(q, &next);
    s = summary_locked(now_ms);
  }
  return render_page(self, page, s, next, now_ms);
}

std::string Fleet::render_page(const std::string& self, const std::vector<NodeStatus>& page,
                               const FleetSummary& s, const std::string& next,
                               std::int64_t now_ms) const {
  const auto quoted = [](const std::string& id) {
    // Node ids are plain names ([A-Za-z0-9._-]): nothing to escape.
    return id.empty() ? std::string("null") : "\"" + id + "\"";
  };
  std::string out = "{\"self\":" + self + ",\"summary\":{\"nodes\":" + std::to_string(s.nodes) +
                    ",\"stale\":" + std::to_string(s.stale) +
                    ",\"max_lag_seq\":" + std::to_string(s.max_lag_seq) +
                    ",\"max_lag_node\":" + quoted(s.max_lag_node) +
                    ",\"outbox_depth\":" + std::to_string(s.outbox_depth) +
                    ",\"outbox_bytes\":" + std::to_string(s.outbox_bytes) +
                    ",\"expire_after_ms\":" + std::to_string(options_.expire_after_ms) +
                    ",\"max_nodes\":" + std::to_string(options_.max_nodes) + "},\"nodes\":[";
  bool first = true;
  for (const auto& n : page) {
    if (!first)
      out += ',';
    first = false;
    out.append(n.doc, 0, n.doc.size() - 1);  // the object without its '}'
    out += ",\"received_ms\":" + std::to_string(n.received_ms) +
           ",\"age_s\":" + std::to_string((now_ms - n.received_ms) / 1000) +
           ",\"stale\":" + (stale(n, now_ms) ? "true" : "false") + ",\"via\":" + quoted(n.via);
    out += '}';
  }
  out += "],\"next\":" + quoted(next) + "}";
  return out;
}

}  // namespace edge::api
