#include "edge/api/fleet.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <gtest/gtest.h>

namespace edge::api {
namespace {

namespace json = boost::json;

NodeStatus status(const std::string& id, std::uint64_t lag = 0, std::uint64_t outbox = 0) {
  std::string error;
  auto r =
      parse_status_report(R"({"nodes":[{"node_id":")" + id + R"(","lag_seq":)" +
                              std::to_string(lag) + R"(,"outbox_depth":)" + std::to_string(outbox) +
                              R"(,"outbox_bytes":)" + std::to_string(outbox * 100) + "}]}",
                          &error);
  EXPECT_TRUE(r) << error;
  return r->front();
}

// One report: `sender`'s own status, then `children` (as a mid-tier edge relays them).
std::vector<NodeStatus> report(const std::string& sender,
                               const std::vector<std::string>& children) {
  std::vector<NodeStatus> out{status(sender)};
  for (const auto& c : children)
    out.push_back(status(c));
  return out;
}

std::set<std::string> ids(const std::vector<NodeStatus>& nodes) {
  std::set<std::string> out;
  for (const auto& n : nodes)
    out.insert(n.node_id);
  return out;
}

TEST(Fleet, NodesNotHeardFromExpire) {
  Fleet fleet({5'000, kMaxFleetNodes});
  fleet.accept(report("mid", {"leaf-1", "leaf-2"}), 1'000);
  EXPECT_EQ(fleet.nodes(5'999).size(), 3U) << "heard from 4.999 s ago: kept";
  // mid reports again, relaying only leaf-1: leaf-2 is no longer heard from.
  fleet.accept(report("mid", {"leaf-1"}), 4'000);
  EXPECT_EQ(ids(fleet.nodes(6'000)), (std::set<std::string>{"leaf-1", "mid"}))
      << "leaf-2, last heard at 1 s, is gone at 6 s";
  EXPECT_TRUE(fleet.nodes(9'000).empty()) << "nobody reported since 4 s";
  EXPECT_EQ(fleet.summary(9'000).nodes, 0U);
  // A node that comes back is shown again.
  fleet.accept(report("mid", {}), 20'000);
  EXPECT_EQ(ids(fleet.nodes(20'000)), std::set<std::string>{"mid"});
}

TEST(Fleet, AFullTableTakesANewNodeByEvictingTheStalest) {
  Fleet fleet;  // the default bound: 10,000 nodes
  // Forged ids fill the table (ten reports of 1000, the first the oldest).
  for (int r = 0; r < 10; ++r) {
    std::vector<std::string> children;
    for (int i = 1; i < 1000; ++i)
      children.push_back("forged-" + std::to_string(r) + "-" + std::to_string(i));
    fleet.accept(report("forger-" + std::to_string(r), children), 1'000 + r);
  }
  ASSERT_EQ(fleet.summary(2'000).nodes, kMaxFleetNodes);
  // A real edge reports: it gets in, the table stays at its bound, and what left is from
  // the oldest report.
  fleet.accept(report("real-edge", {"real-child"}), 2'000);
  const auto now = ids(fleet.nodes(2'000));
  EXPECT_EQ(now.size(), kMaxFleetNodes);
  EXPECT_TRUE(now.contains("real-edge"));
  EXPECT_TRUE(now.contains("real-child"));
  EXPECT_TRUE(now.contains("forger-1")) << "a newer report stays";
  std::size_t oldest_left = 0;
  for (const auto& id : now)
    oldest_left += id.starts_with("forged-0-") || id == "forger-0";
  EXPECT_EQ(oldest_left, 998U) << "two of the stalest report made room";
}

TEST(Fleet, AReportNeverEvictsItsOwnNodes) {
  Fleet fleet({60'000, 3});
  fleet.accept(report("old", {}), 1);
  fleet.accept(report("mid", {"a", "b", "c", "d"}), 2);
  // "old" made room; then the table is all this report's: the rest does not fit this time.
  EXPECT_EQ(ids(fleet.nodes(2)), (std::set<std::string>{"a", "b", "mid"}));
}

TEST(Fleet, PagesByIdWithACursorAndSummarisesTheWholeTable) {
  Fleet fleet({50'000, kMaxFleetNodes});
  std::vector<NodeStatus> r{status("mid", 2, 1)};
  for (int i = 0; i < 250; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "edge-%03d", i);
    r.push_back(status(id, i == 117 ? 40 : 1, 2));
  }
  fleet.accept(std::move(r), 10'000);
  fleet.accept(report("late", {}), 40'000);

  std::vector<std::string> seen;
  FleetQuery q;
  for (int pages = 0;; ++pages) {
    ASSERT_LT(pages, 10);
    std::string next;
    const auto page = fleet.page(q, 40'000, &next);
    EXPECT_LE(page.size(), kDefaultFleetPage);
    for (const auto& n : page)
      seen.push_back(n.node_id);
    if (next.empty())
      break;
    EXPECT_EQ(next, page.back().node_id);
    q.cursor = next;
  }
  ASSERT_EQ(seen.size(), 252U);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 252U) << "no repeats";

  const FleetSummary s = fleet.summary(40'000);
  EXPECT_EQ(s.nodes, 252U);
  EXPECT_EQ(s.stale, 251U) << "heard from 30 s ago, half of the 50 s expiry is 25 s";
  EXPECT_EQ(s.max_lag_seq, 40U);
  EXPECT_EQ(s.max_lag_node, "edge-117");
  EXPECT_EQ(s.outbox_depth, 1U + 250 * 2);
  EXPECT_EQ(s.outbox_bytes, (1U + 250 * 2) * 100);

  // The rendered answer: one page, the summary, the next cursor, all valid JSON.
  FleetQuery small;
  small.limit = 2;
  const json::value doc = json::parse(fleet.render(R"({"node_id":"origin"})", small, 40'000));
  EXPECT_EQ(doc.at("self").at("node_id"), "origin");
  EXPECT_EQ(doc.at("summary").at("nodes"), 252);
  EXPECT_EQ(doc.at("summary").at("stale"), 251);
  EXPECT_EQ(doc.at("summary").at("max_lag_node"), "edge-117");
  ASSERT_EQ(doc.at("nodes").as_array().size(), 2U);
  EXPECT_EQ(doc.at("nodes").at(0).at("node_id"), "edge-000");
  EXPECT_EQ(doc.at("nodes").at(0).at("via"), "mid");
  EXPECT_EQ(doc.at("nodes").at(0).at("stale"), true);
  EXPECT_EQ(doc.at("nodes").at(0).at("age_s"), 30);
  EXPECT_EQ(doc.at("next"), "edge-001");
  FleetQuery last;
  last.cursor = "edge-249";
  last.limit = 1;
  const json::value late = json::parse(fleet.render("{}", last, 40'000));
  ASSERT_EQ(late.at("nodes").as_array().size(), 1U);
  EXPECT_EQ(late.at("nodes").at(0).at("node_id"), "late");
  EXPECT_EQ(late.at("nodes").at(0).at("via"), nullptr) << "it reported itself";
  EXPECT_EQ(late.at("nodes").at(0).at("stale"), false);
  EXPECT_EQ(late.at("next"), "late");
  last.cursor = "late";
  const json::value end = json::parse(fleet.render("{}", last, 40'000));
  ASSERT_EQ(end.at("nodes").as_array().size(), 1U);
  EXPECT_EQ(end.at("nodes").at(0).at("node_id"), "mid");
  EXPECT_TRUE(end.at("next").is_null());
}

TEST(Fleet, TheAnswerStaysSmallWithAFullTable) {
  Fleet fleet;
  for (int r = 0; r < 10; ++r) {
    std::vector<NodeStatus> rep;
    for (int i = 0; i < 1000; ++i) {
      // Statuses near the 4 KiB bound, as a forger would send them.
      const std::string id = "n" + std::to_string(r) + "-" + std::to_string(i);
      std::string error;
      auto one = parse_status_report(
          R"({"nodes":[{"node_id":")" + id + R"(","pad":")" + std::string(3900, 'x') + "\"}]}",
          &error);
      ASSERT_TRUE(one) << error;
      rep.push_back(std::move(one->front()));
    }
    fleet.accept(std::move(rep), 1'000);
  }
  const std::string answer = fleet.render("{}", {}, 2'000);
  EXPECT_EQ(json::parse(answer).at("summary").at("nodes"), 10'000);
  EXPECT_LT(answer.size(), 100U * 4096 + 64 * 1024) << "one page of 100, not 40 MB";
}

TEST(Fleet, QueryParsing) {
  std::string error;
  auto q = parse_fleet_query("", &error);
  ASSERT_TRUE(q) << error;
  EXPECT_EQ(q->limit, kDefaultFleetPage);
  EXPECT_EQ(q->cursor, "");
  q = parse_fleet_query("limit=1000&cursor=edge-7.a_b", &error);
  ASSERT_TRUE(q) << error;
  EXPECT_EQ(q->limit, 1000U);
  EXPECT_EQ(q->cursor, "edge-7.a_b");
  EXPECT_TRUE(parse_fleet_query("cursor=", &error)) << "an empty cursor: the first page";
  for (const char* bad : {"limit=0", "limit=1001", "limit=-1", "limit=abc",
                          "limit=", "cursor=a%20b", "cursor=%00", "nodes=all", "offset=5"}) {
    error.clear();
    EXPECT_FALSE(parse_fleet_query(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
  parse_fleet_query("limit=99999999999999999999999", &error);
  EXPECT_NE(error.find("limit"), std::string::npos) << error;
  parse_fleet_query("x=1", &error);
  EXPECT_NE(error.find("'x'"), std::string::npos) << error;
}

TEST(Fleet, ReportsAreSplitUnderTheReceiversLimits) {
  const std::string own = R"({"node_id":"mid","role":"edge"})";
  std::vector<NodeStatus> children;
  for (int i = 0; i < 2500; ++i) {
    NodeStatus n;
    n.node_id = "leaf-" + std::to_string(i);
    // ~1 KiB each: 2500 of them are 2.5 MiB, over both the byte and the node limit.
    n.doc = R"({"node_id":")" + n.node_id + R"(","pad":")" + std::string(1000, 'p') + "\"}";
    children.push_back(std::move(n));
  }
  const auto bodies = encode_status_reports(own, children);
  ASSERT_GE(bodies.size(), 3U);
  std::set<std::string> relayed;
  for (const auto& body : bodies) {
    EXPECT_LE(body.size(), kMaxReportBytes);
    std::string error;
    const auto part = parse_status_report(body, &error);
    ASSERT_TRUE(part) << error;
    EXPECT_LE(part->size(), kMaxReportNodes);
    EXPECT_EQ(part->front().node_id, "mid") << "every post carries the sender first";
    for (std::size_t i = 1; i < part->size(); ++i)
      EXPECT_TRUE(relayed.insert((*part)[i].node_id).second) << "sent once";
  }
  EXPECT_EQ(relayed.size(), children.size());

  // A smaller budget (after a 413) gives more, smaller posts; nothing below one status.
  const auto small = encode_status_reports(own, children, 8 * 1024, kMaxReportNodes);
  for (const auto& body : small)
    EXPECT_LE(body.size(), 8U * 1024);
  EXPECT_GT(small.size(), bodies.size());
  const auto tiny = encode_status_reports(own, children, 10, kMaxReportNodes);
  EXPECT_EQ(tiny.size(), children.size()) << "one relayed status a post at the least";
  EXPECT_EQ(encode_status_reports(own, {}).size(), 1U) << "a leaf: its own status alone";
}

TEST(Fleet, ParsedStatusesCarryTheSummaryFigures) {
  std::string error;
  const auto r = parse_status_report(
      R"({"nodes":[{"node_id":"a","lag_seq":5,"outbox_depth":3,"outbox_bytes":70},)"
      R"({"node_id":"b","lag_seq":-4,"outbox_depth":1.5,"outbox_bytes":"9"}]})",
      &error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ((*r)[0].lag_seq, 5U);
  EXPECT_EQ((*r)[0].outbox_depth, 3U);
  EXPECT_EQ((*r)[0].outbox_bytes, 70U);
  EXPECT_EQ((*r)[1].lag_seq, 0U) << "not a non-negative integer: not counted";
  EXPECT_EQ((*r)[1].outbox_depth, 0U);
  EXPECT_EQ((*r)[1].outbox_bytes, 0U);
}

}  // namespace
}  // namespace edge::api
