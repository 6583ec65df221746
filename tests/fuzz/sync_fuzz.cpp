// Node-to-node bodies: changes pages, snapshots, check-in batches and recipes arrive from
// other nodes (or whoever reaches the port), and Idempotency-Key from a header; fleet
// status reports from child nodes. Whatever
// parses must survive a round trip through its encoder unchanged.
#include <cstdint>
#include <string>
#include <string_view>

#include "edge/api/fleet.hpp"
#include "edge/api/sync.hpp"

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
  // Fleet status reports: what parses survives encode -> parse, and the fleet renders it.
  if (auto report = edge::api::parse_status_report(text, &error)) {
    if (report->empty())
      return 0;
    const std::vector<edge::api::NodeStatus> rest(report->begin() + 1, report->end());
    auto again = edge::api::parse_status_report(
        edge::api::encode_status_report(report->front().doc, rest), &error);
    if (!again || again->size() != report->size())
      __builtin_trap();
    edge::api::Fleet fleet;
    fleet.accept(std::move(*report), 1);
    if (fleet.render("{}", 2).empty())
      __builtin_trap();
  }
  return 0;
}
