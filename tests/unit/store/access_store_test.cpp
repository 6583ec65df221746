#include "edge/store/access_store.hpp"

#include <gtest/gtest.h>

#include "edge/store/checkin_store.hpp"

#include "test_util.hpp"

namespace edge::store {
namespace {

using testing::TempDir;

TEST(AccessStore, TokensPersistAndRevokeAndStayOutOfOtherMetaKeys) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    AccessStore a(*db);
    ASSERT_TRUE(a.put_token("ci", R"({"role":"publisher"})"));
    ASSERT_TRUE(a.put_token("alice", R"({"role":"admin"})"));
    ASSERT_TRUE(a.put_token("ci", R"({"role":"viewer"})")) << "a put replaces";
    EXPECT_EQ(a.erase_token("nobody").error(), Errc::kNotFound);
    // The check-in store's dead letters share the meta family: neither sees the other's keys.
    CheckinStore checkins(*db, {true, 1 << 20});
    EXPECT_TRUE(checkins.dead_letters()->empty());
  }
  auto db = Database::open(tmp.path() / "db");
  AccessStore a(*db);
  auto t = a.tokens();
  ASSERT_TRUE(t);
  ASSERT_EQ(t->size(), 2U);
  EXPECT_EQ((*t)[0].first, "alice");
  EXPECT_EQ((*t)[1].first, "ci");
  EXPECT_EQ((*t)[1].second, R"({"role":"viewer"})");
  ASSERT_TRUE(a.erase_token("ci"));
  EXPECT_EQ(a.tokens()->size(), 1U);
}

TEST(AccessStore, AuditNumbersContinueAfterReopenAndOldRecordsGo) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    AccessStore a(*db, 5);
    ASSERT_TRUE(a.put_token("zz", "{}"));  // a token key after the audit keys
    for (int i = 1; i <= 7; ++i)
      EXPECT_EQ(*a.append_audit("{\"i\":" + std::to_string(i) + "}"), static_cast<unsigned>(i));
    auto page = a.audit_after(0, 100);
    ASSERT_TRUE(page);
    ASSERT_EQ(page->size(), 5U) << "keeps the newest 5";
    EXPECT_EQ(page->front().first, 3U);
    EXPECT_EQ(page->back().second, R"({"i":7})");
  }
  auto db = Database::open(tmp.path() / "db");
  AccessStore a(*db, 5);
  EXPECT_EQ(*a.append_audit(R"({"i":8})"), 8U) << "numbering survives a restart";
  auto page = a.audit_after(6, 1);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 1U);
  EXPECT_EQ(page->front().first, 7U);
}

// Refusals are a key range of their own: however many there are, the audit log's bound
// counts only audit records.
TEST(AccessStore, RefusalsNeverPushAuditRecordsOut) {
  TempDir tmp;
  {
    auto db = Database::open(tmp.path() / "db");
    AccessStore a(*db, 3);
    ASSERT_TRUE(a.append_audit(R"({"time_ms":1,"token":"admin"})"));
    for (int i = 0; i < 1000; ++i)
      ASSERT_TRUE(a.put_refusal("viewer PUT /p" + std::to_string(i % 10), "{\"count\":1}"));
    ASSERT_TRUE(a.put_refusal("viewer PUT /p0", R"({"count":2})")) << "a put replaces";
    auto page = a.audit_after(0, 100);
    ASSERT_EQ(page->size(), 1U);
    EXPECT_EQ(page->front().second, R"({"time_ms":1,"token":"admin"})");
    ASSERT_EQ(a.refusals()->size(), 10U);
    ASSERT_TRUE(a.erase_refusal("viewer PUT /p9"));
    ASSERT_TRUE(a.erase_refusal("nothing")) << "absent: nothing happens";
  }
  auto db = Database::open(tmp.path() / "db");
  AccessStore a(*db, 3);
  EXPECT_EQ(*a.append_audit(R"({"time_ms":2})"), 2U) << "refusal keys are not audit numbers";
  auto r = a.refusals();
  ASSERT_EQ(r->size(), 9U);
  EXPECT_EQ((*r)[0].first, "viewer PUT /p0");
  EXPECT_EQ((*r)[0].second, R"({"count":2})");
  EXPECT_EQ(a.tokens()->size(), 0U) << "refusals are not tokens";
}

TEST(AccessStore, AuditRecordsGoByAgeOldestFirst) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  AccessStore a(*db, 0);
  for (int t : {100, 200, 300, 400})
    ASSERT_TRUE(
        a.append_audit("{\"time_ms\":" + std::to_string(t) + R"(,"path":"\"time_ms\":1"})"));
  EXPECT_EQ(*a.prune_audit(100), 0U);
  EXPECT_EQ(*a.prune_audit(250), 2U);
  auto page = a.audit_after(0, 100);
  ASSERT_EQ(page->size(), 2U);
  EXPECT_EQ(page->front().first, 3U);
  auto newest = a.audit_before(~std::uint64_t{0}, 1);
  ASSERT_EQ(newest->size(), 1U);
  EXPECT_EQ(newest->front().first, 4U);
  auto back = a.audit_before(4, 10);
  ASSERT_EQ(back->size(), 1U) << "below 4, newest first, the pruned ones gone";
  EXPECT_EQ(back->front().first, 3U);
  EXPECT_EQ(*a.prune_audit(1'000), 2U);
  EXPECT_TRUE(a.audit_after(0, 10)->empty());
  EXPECT_EQ(*a.append_audit(R"({"time_ms":500})"), 5U) << "numbering goes on";
}

}  // namespace
}  // namespace edge::store
