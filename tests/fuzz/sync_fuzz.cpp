// Node-to-node bodies: changes pages, snapshots, check-in batches and recipes arrive from
// other nodes (or whoever reaches the port), and Idempotency-Key from a header; fleet
// status reports from child nodes and the fleet view's query string. Whatever parses must
// survive a round trip through its encoder unchanged.
#include <cstdint>
#include <string>
#include <string_view>

#include "edge/api/fleet.hpp"
#include "edge/api/sync.hpp"
#include "edge/core/utf8.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  if (auto page = edge::api::parse_changes(text, &error)) {
    auto again = edge::api::parse_changes(edge::api::encode_changes(*page), &error);
    if (!again || again->changes != page->changes || again->last_seq != page->last_seq)
      __builtin_trap();
  }
  if (auto snap = edge::api::parse_snapshot(text, &error)) {
    auto again = edge::api::parse_snapshot(edge::api::encode_snapshot(*snap), &error);
    if (!again || again->docs != snap->docs || again->seq != snap->seq)
      __builtin_trap();
  }
  if (auto list = edge::api::parse_checkins(text, &error)) {
    auto again = edge::api::parse_checkins(edge::api::encode_checkins(*list), &error);
    if (!again || again->size() != list->size())
      __builtin_trap();
  }
  const auto id = edge::sha256_of(std::string_view("fuzz"));
  if (auto recipe = edge::api::parse_recipe(text, id, &error)) {
    std::uint64_t total = 0;
    for (const auto& c : recipe->chunks)
      total += c.length;
    if (total != recipe->size || recipe->id != id)
      __builtin_trap();
  }
  if (auto key = edge::api::parse_idempotency_key(text)) {
    if (key->node.empty() || key->batch_seq == 0)
      __builtin_trap();
  }
  // Fleet status reports: what parses survives encode -> parse, also split into several
  // posts (each under the limits, each starting with the sender), and the fleet renders it.
  if (auto report = edge::api::parse_status_report(text, &error)) {
    if (report->empty())
      return 0;
    const std::vector<edge::api::NodeStatus> rest(report->begin() + 1, report->end());
    auto again = edge::api::parse_status_report(
        edge::api::encode_status_report(report->front().doc, rest), &error);
    if (!again || again->size() != report->size())
      __builtin_trap();
    std::size_t relayed = 0;
    const std::size_t max_bytes = 2 * edge::api::kMaxStatusBytes + 64;
    for (const auto& body :
         edge::api::encode_status_reports(report->front().doc, rest, max_bytes, 3)) {
      auto part = edge::api::parse_status_report(body, &error);
      if (!part || part->empty() || part->size() > 3 || body.size() > max_bytes ||
          part->front().node_id != report->front().node_id)
        __builtin_trap();
      relayed += part->size() - 1;
    }
    if (relayed != rest.size())
      __builtin_trap();
    edge::api::Fleet fleet({1000, 2});
    fleet.accept(std::move(*report), 1);
    if (fleet.summary(2).nodes > 2 || fleet.render("{}", {}, 2).empty() ||
        fleet.summary(1001).nodes != 0)
      __builtin_trap();
  }
  // GET /v1/admin/fleet's query: what parses is in bounds, and pages with it.
  if (auto q = edge::api::parse_fleet_query(text, &error)) {
    if (q->limit < 1 || q->limit > edge::api::kMaxFleetPage ||
        (!q->cursor.empty() && !edge::is_plain_name(q->cursor)))
      __builtin_trap();
    edge::api::Fleet fleet;
    std::vector<edge::api::NodeStatus> two(2);
    two[0].node_id = "a";
    two[0].doc = R"({"node_id":"a"})";
    two[1].node_id = "b";
    two[1].doc = R"({"node_id":"b"})";
    fleet.accept(std::move(two), 1);
    std::string next;
    if (fleet.page(*q, 2, &next).size() > q->limit || fleet.render("{}", *q, 2).empty())
      __builtin_trap();
  }
  return 0;
}
