#include "edge/api/fleet.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include <boost/json.hpp>

#include "edge/api/response.hpp"
#include "edge/control/json_parse.hpp"
#include "edge/core/utf8.hpp"

namespace edge::api {
namespace {

namespace json = boost::json;

constexpr std::size_t kMaxReportNodes = 1000;

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
    return fail("nodes: at most 1000 per report");
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
    out.push_back({std::string(id->get_string()), std::move(doc), 0, {}});
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

void Fleet::accept(std::vector<NodeStatus> report, std::int64_t now_ms) {
  if (report.empty())
    return;
  const std::string sender = report.front().node_id;
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < report.size(); ++i) {
    auto& n = report[i];
    n.received_ms = now_ms;
    n.via = i == 0 ? std::string() : sender;
    if (!nodes_.contains(n.node_id) && nodes_.size() >= kMaxFleetNodes)
      continue;
    nodes_[n.node_id] = std::move(n);
  }
}

std::vector<NodeStatus> Fleet::nodes() const {
  std::lock_guard lock(mutex_);
  std::vector<NodeStatus> out;
  out.reserve(nodes_.size());
  for (const auto& [id, n] : nodes_)
    out.push_back(n);
  return out;
}

std::string Fleet::render(const std::string& self, std::int64_t now_ms) const {
  std::string out = "{\"self\":" + self + ",\"nodes\":[";
  bool first = true;
  for (const auto& n : nodes()) {
    if (!first)
      out += ',';
    first = false;
    out.append(n.doc, 0, n.doc.size() - 1);  // the object without its '}'
    out += ",\"received_ms\":" + std::to_string(n.received_ms) +
           ",\"age_s\":" + std::to_string((now_ms - n.received_ms) / 1000) + ",\"via\":";
    out += n.via.empty() ? std::string("null") : "\"" + n.via + "\"";
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace edge::api
