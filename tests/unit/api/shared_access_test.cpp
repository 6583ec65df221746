// Access on a shared backend (the origin tier): tokens created or revoked through another
// origin are picked up by reload(); a backend that cannot be read keeps the tokens in memory;
// token writes it cannot take answer 503 and change nothing; audit records it refuses wait
// and are appended, in order, once it is back; records name their origin; the refusal page
// shows every origin's. The backend is an in-memory stand-in with the tier's contract
// (store::AccessBackend, shared() true); the PostgreSQL one runs in integration.tier_access.
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>

#include "edge/api/access.hpp"
#include "edge/store/access_backend.hpp"

namespace {

namespace bhttp = boost::beast::http;
namespace json = boost::json;
using namespace edge;

/// What every origin of the fake tier sees.
struct Tables {
  std::mutex mutex;
  std::map<std::string, std::string> tokens, refusals;
  std::map<std::uint64_t, std::string> audit;
  std::uint64_t audit_seq = 0;
  bool down = false;
  int pruned_audit = 0, pruned_refusals = 0;
};

class FakeShared final : public store::AccessBackend {
 public:
  explicit FakeShared(Tables& t) : t_(t) {}
  Result<void> put_token(std::string_view name, std::string_view doc) override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    if (!t_.tokens.emplace(std::string(name), std::string(doc)).second)
      return Errc::kConflict;
    return {};
  }
  Result<void> erase_token(std::string_view name) override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    return t_.tokens.erase(std::string(name)) == 1 ? Result<void>() : Result<void>(Errc::kNotFound);
  }
  Result<std::vector<std::pair<std::string, std::string>>> tokens() const override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    return std::vector<std::pair<std::string, std::string>>(t_.tokens.begin(), t_.tokens.end());
  }
  Result<std::uint64_t> append_audit(std::string_view doc) override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    t_.audit.emplace(++t_.audit_seq, std::string(doc));
    return t_.audit_seq;
  }
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_after(
      std::uint64_t after, std::size_t limit) const override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    std::vector<std::pair<std::uint64_t, std::string>> out;
    for (auto it = t_.audit.upper_bound(after); it != t_.audit.end() && out.size() < limit; ++it)
      out.emplace_back(*it);
    return out;
  }
  Result<std::vector<std::pair<std::uint64_t, std::string>>> audit_before(
      std::uint64_t, std::size_t) const override {
    return std::vector<std::pair<std::uint64_t, std::string>>{};
  }
  Result<void> put_refusal(std::string_view key, std::string_view doc) override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    t_.refusals[std::string(key)] = std::string(doc);
    return {};
  }
  Result<void> erase_refusal(std::string_view key) override {
    std::lock_guard lock(t_.mutex);
    t_.refusals.erase(std::string(key));
    return {};
  }
  Result<std::vector<std::pair<std::string, std::string>>> refusals() const override {
    std::lock_guard lock(t_.mutex);
    if (t_.down)
      return Errc::kUnavailable;
    return std::vector<std::pair<std::string, std::string>>(t_.refusals.begin(), t_.refusals.end());
  }
  Result<std::size_t> prune_audit(std::int64_t) override {
    std::lock_guard lock(t_.mutex);
    ++t_.pruned_audit;
    return std::size_t{0};
  }
  bool shared() const override { return true; }
  Result<std::size_t> prune_refusals(std::int64_t, std::size_t) override {
    std::lock_guard lock(t_.mutex);
    ++t_.pruned_refusals;
    return std::size_t{0};
  }

 private:
  Tables& t_;
};

bhttp::request_header<> request(bhttp::verb method, std::string_view target,
                                std::string_view token) {
  bhttp::request_header<> h;
  h.method(method);
  h.target(target);
  h.set(bhttp::field::authorization, "Bearer " + std::string(token));
  return h;
}

api::Caller bootstrap() {
  return api::Caller{"bootstrap", api::Role::kAdmin, {}};
}

struct Origin {
  Origin(Tables& t, std::string id, std::size_t pending_keep = 10'000)
      : backend(t),
        access(&backend, "boot-" + id,
               api::AccessOptions{std::int64_t{90} * 86'400'000, 10'000, 30, id, pending_keep}) {}
  FakeShared backend;
  api::Access access;

  // Creates a token through this origin; returns the secret ("" and the status on failure).
  std::string create(std::string_view name, unsigned* status = nullptr) {
    const auto req = request(bhttp::verb::post, "/v1/admin/tokens", "x");
    const std::string body =
        R"({"name":")" + std::string(name) + R"(","role":"viewer","apps":["*"]})";
    auto r = access.handle(bootstrap(), req, "/v1/admin/tokens", body);
    if (status != nullptr)
      *status = r.status;
    if (r.status != 201)
      return {};
    return std::string(json::parse(r.body).at("token").as_string());
  }
  bool knows(const std::string& secret) const {
    return access.identify(request(bhttp::verb::get, "/v1/admin/whoami", secret)).has_value();
  }
  json::value get(std::string_view target) {
    const auto req = request(bhttp::verb::get, target, "x");
    const std::string_view path = target.substr(0, target.find('?'));
    auto r = access.handle(bootstrap(), req, path, {});
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body);
  }
};

TEST(SharedAccess, TokensMadeAndRevokedOnAnotherOriginAreSeenAtTheNextReload) {
  Tables t;
  Origin a(t, "origin-a"), b(t, "origin-b");
  const std::string secret = a.create("ci");
  ASSERT_FALSE(secret.empty());
  EXPECT_TRUE(a.knows(secret));
  EXPECT_FALSE(b.knows(secret));
  ASSERT_TRUE(b.access.reload());
  EXPECT_TRUE(b.knows(secret));
  // Revoked on A: B refuses it once it reloads.
  auto r = a.access.handle(bootstrap(), request(bhttp::verb::delete_, "/v1/admin/tokens/ci", "x"),
                           "/v1/admin/tokens/ci", {});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(a.knows(secret));
  EXPECT_TRUE(b.knows(secret));
  ASSERT_TRUE(b.access.reload());
  EXPECT_FALSE(b.knows(secret));
  // Created on A and revoked through B before B's reload: revoked everywhere.
  const std::string quick = a.create("quick");
  ASSERT_FALSE(quick.empty());
  r = b.access.handle(bootstrap(), request(bhttp::verb::delete_, "/v1/admin/tokens/quick", "x"),
                      "/v1/admin/tokens/quick", {});
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(t.tokens.count("quick"), 0u);
  ASSERT_TRUE(a.access.reload());
  EXPECT_FALSE(a.knows(quick));
  // One name for the tier: created on A, B's in-memory check passes but the backend refuses.
  ASSERT_FALSE(a.create("ops").empty());
  unsigned status = 0;
  EXPECT_TRUE(b.create("ops", &status).empty());
  EXPECT_EQ(status, 409u);
}

TEST(SharedAccess, ABackendDownKeepsTokensAndRefusesTokenWritesWith503) {
  Tables t;
  Origin a(t, "origin-a");
  const std::string secret = a.create("ops");
  ASSERT_FALSE(secret.empty());
  t.down = true;
  EXPECT_FALSE(a.access.reload());
  EXPECT_TRUE(a.knows(secret)) << "a failed reload must keep the tokens in memory";
  unsigned status = 0;
  EXPECT_TRUE(a.create("late", &status).empty());
  EXPECT_EQ(status, 503u);
  auto r = a.access.handle(bootstrap(), request(bhttp::verb::delete_, "/v1/admin/tokens/ops", "x"),
                           "/v1/admin/tokens/ops", {});
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("state_backend_unavailable"), std::string::npos) << r.body;
  EXPECT_TRUE(a.knows(secret)) << "a revocation that was not stored must not be half done";
  t.down = false;
  ASSERT_TRUE(a.access.reload());
  EXPECT_TRUE(a.knows(secret));
  EXPECT_EQ(t.tokens.count("late"), 0u);
}

TEST(SharedAccess, AuditRecordsWaitForTheBackendAndKeepTheirOrderAndOrigin) {
  Tables t;
  Origin a(t, "origin-a");
  a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x", 201, 1);
  t.down = true;
  a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x/channels/c1", 503, 0);
  a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x/channels/c2", 503, 0);
  EXPECT_EQ(a.access.pending_audit(), 2u);
  EXPECT_EQ(a.access.flush_pending(), 2u);  // still down: nothing lost, nothing appended
  t.down = false;
  // The next write appends the waiting ones first.
  a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x/channels/c3", 201, 2);
  EXPECT_EQ(a.access.pending_audit(), 0u);
  const auto recs = a.get("/v1/admin/audit").at("records").as_array();
  ASSERT_EQ(recs.size(), 4u);
  const char* paths[] = {"/v1/admin/apps/x", "/v1/admin/apps/x/channels/c1",
                         "/v1/admin/apps/x/channels/c2", "/v1/admin/apps/x/channels/c3"};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(recs[i].at("path").as_string(), paths[i]);
    EXPECT_EQ(recs[i].at("origin").as_string(), "origin-a");
    EXPECT_EQ(recs[i].at("n").to_number<std::uint64_t>(), i + 1);
  }
  EXPECT_EQ(a.access.audit_dropped(), 0u);
}

TEST(SharedAccess, TooManyWaitingAuditRecordsDropTheOldestAndCountThem) {
  Tables t;
  Origin a(t, "origin-a", 2);
  t.down = true;
  for (int i = 0; i < 5; ++i)
    a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x/channels/c" + std::to_string(i),
                   503, 0);
  EXPECT_EQ(a.access.pending_audit(), 2u);
  EXPECT_EQ(a.access.audit_dropped(), 3u);
  t.down = false;
  EXPECT_EQ(a.access.flush_pending(), 0u);
  ASSERT_EQ(t.audit.size(), 2u);
  EXPECT_NE(t.audit.at(1).find("/c3"), std::string::npos);
  EXPECT_NE(t.audit.at(2).find("/c4"), std::string::npos);
}

TEST(SharedAccess, RefusalsOfEveryOriginAreShownAndEachCoalescesItsOwn) {
  Tables t;
  Origin a(t, "origin-a"), b(t, "origin-b");
  const api::Caller viewer{"dash", api::Role::kViewer, {"*"}};
  a.access.refused(viewer, bhttp::verb::put, "/v1/admin/apps/x/channels/c", 403);
  b.access.refused(viewer, bhttp::verb::put, "/v1/admin/apps/x/channels/c", 403);
  b.access.refused(viewer, bhttp::verb::put, "/v1/admin/apps/x/channels/c", 403);
  const auto page = a.get("/v1/admin/audit/refusals");
  EXPECT_EQ(page.at("total").to_number<std::uint64_t>(), 2u);
  std::map<std::string, std::uint64_t> counts;
  for (const auto& r : page.at("refusals").as_array())
    counts[std::string(r.at("origin").as_string())] = r.at("count").to_number<std::uint64_t>();
  EXPECT_EQ(counts, (std::map<std::string, std::uint64_t>{{"origin-a", 1}, {"origin-b", 2}}));
  // A restarted origin takes back only its own records to coalesce into.
  Origin b2(t, "origin-b");
  b2.access.refused(viewer, bhttp::verb::put, "/v1/admin/apps/x/channels/c", 403);
  counts.clear();
  const auto again = a.get("/v1/admin/audit/refusals");
  for (const auto& r : again.at("refusals").as_array())
    counts[std::string(r.at("origin").as_string())] = r.at("count").to_number<std::uint64_t>();
  EXPECT_EQ(counts, (std::map<std::string, std::uint64_t>{{"origin-a", 1}, {"origin-b", 3}}));
}

TEST(SharedAccess, RetentionOfASharedLogIsTheSweepsNotEachWriters) {
  Tables t;
  Origin a(t, "origin-a");
  a.access.audit(bootstrap(), bhttp::verb::put, "/v1/admin/apps/x", 201, 1);
  EXPECT_EQ(t.pruned_audit, 0) << "a writer of the shared log pruned it";
  a.access.sweep_shared(1'000'000'000'000);
  EXPECT_EQ(t.pruned_audit, 1);
  EXPECT_EQ(t.pruned_refusals, 1);
}

}  // namespace
