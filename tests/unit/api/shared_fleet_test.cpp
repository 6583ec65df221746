// Fleet on a shared backend (the origin tier): reports accepted by one origin show in every
// origin's render(), paged by node id with the same expiry and summary as the in-memory
// table; a backend that cannot be read falls back to this origin's own reports. The backend
// is an in-memory stand-in with the contract of store::FleetBackend; the PostgreSQL one runs
// in integration.tier_access.
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <gtest/gtest.h>

#include "edge/api/fleet.hpp"
#include "edge/store/fleet_backend.hpp"

namespace {

namespace json = boost::json;
using namespace edge;

class FakeFleet final : public store::FleetBackend {
 public:
  bool down = false;
  Result<void> upsert(const std::vector<store::FleetRow>& rows) override {
    std::lock_guard lock(mutex_);
    if (down)
      return Errc::kUnavailable;
    for (const auto& r : rows) {
      auto it = rows_.find(r.node_id);
      if (it == rows_.end() || it->second.received_ms <= r.received_ms)
        rows_[r.node_id] = r;
    }
    return {};
  }
  Result<std::vector<store::FleetRow>> page(std::string_view after, std::size_t limit,
                                            std::int64_t min_received_ms) const override {
    std::lock_guard lock(mutex_);
    if (down)
      return Errc::kUnavailable;
    std::vector<store::FleetRow> out;
    for (auto it = rows_.upper_bound(std::string(after)); it != rows_.end() && out.size() < limit;
         ++it) {
      if (it->second.received_ms > min_received_ms)
        out.push_back(it->second);
    }
    return out;
  }
  Result<store::FleetTotals> totals(std::int64_t min_received_ms,
                                    std::int64_t stale_before_ms) const override {
    std::lock_guard lock(mutex_);
    if (down)
      return Errc::kUnavailable;
    store::FleetTotals t;
    for (const auto& [id, r] : rows_) {
      if (r.received_ms <= min_received_ms)
        continue;
      ++t.nodes;
      t.stale += r.received_ms < stale_before_ms ? 1 : 0;
      if (r.lag_seq > t.max_lag_seq) {
        t.max_lag_seq = r.lag_seq;
        t.max_lag_node = id;
      }
      t.outbox_depth += r.outbox_depth;
      t.outbox_bytes += r.outbox_bytes;
    }
    return t;
  }
  Result<std::size_t> expire(std::int64_t min_received_ms, std::size_t) override {
    std::lock_guard lock(mutex_);
    return std::erase_if(rows_,
                         [&](const auto& kv) { return kv.second.received_ms <= min_received_ms; });
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, store::FleetRow> rows_;
};

api::NodeStatus status(const std::string& id, std::uint64_t lag) {
  std::string error;
  auto r = api::parse_status_report(
      R"({"nodes":[{"node_id":")" + id + R"(","lag_seq":)" + std::to_string(lag) + "}]}", &error);
  EXPECT_TRUE(r) << error;
  return r->front();
}

std::vector<std::string> ids(const json::value& page) {
  std::vector<std::string> out;
  for (const auto& n : page.at("nodes").as_array())
    out.emplace_back(n.at("node_id").as_string());
  return out;
}

TEST(SharedFleet, EveryOriginShowsTheReportsAnyOriginReceived) {
  FakeFleet backend;
  api::Fleet a({10'000, 100}), b({10'000, 100});
  a.set_backend(&backend);
  b.set_backend(&backend);
  a.accept({status("edge-1", 3), status("edge-1a", 0)}, 1'000);  // edge-1 relays edge-1a
  b.accept({status("edge-2", 7)}, 2'000);
  for (const api::Fleet* f : {&a, &b}) {
    const auto page = json::parse(f->render(R"({"node_id":"self"})", {2, ""}, 3'000));
    EXPECT_EQ(ids(page), (std::vector<std::string>{"edge-1", "edge-1a"}));
    EXPECT_EQ(page.at("next").as_string(), "edge-1a");
    EXPECT_EQ(page.at("summary").at("nodes").to_number<int>(), 3);
    EXPECT_EQ(page.at("summary").at("max_lag_node").as_string(), "edge-2");
    EXPECT_EQ(page.at("nodes").as_array()[1].at("via").as_string(), "edge-1");
    const auto rest = json::parse(f->render("{}", {2, "edge-1a"}, 3'000));
    EXPECT_EQ(ids(rest), (std::vector<std::string>{"edge-2"}));
    EXPECT_TRUE(rest.at("next").is_null());
  }
  // Expired rows are left out before the sweep removes them, stale ones marked.
  const auto later = json::parse(a.render("{}", {100, ""}, 11'500));
  EXPECT_EQ(ids(later), (std::vector<std::string>{"edge-2"}));
  EXPECT_EQ(later.at("summary").at("stale").to_number<int>(), 1);
  a.sweep_shared(11'500);
  EXPECT_EQ(backend.page("", 100, 0)->size(), 1u);
}

TEST(SharedFleet, ABackendThatCannotBeReadFallsBackToThisOriginsReports) {
  FakeFleet backend;
  api::Fleet a({10'000, 100}), b({10'000, 100});
  a.set_backend(&backend);
  b.set_backend(&backend);
  b.accept({status("edge-2", 0)}, 1'000);
  backend.down = true;
  a.accept({status("edge-1", 0)}, 1'000);  // not shared, but kept here
  EXPECT_EQ(ids(json::parse(a.render("{}", {100, ""}, 2'000))),
            (std::vector<std::string>{"edge-1"}));
  backend.down = false;
  EXPECT_EQ(ids(json::parse(a.render("{}", {100, ""}, 2'000))),
            (std::vector<std::string>{"edge-2"}));
}

}  // namespace
