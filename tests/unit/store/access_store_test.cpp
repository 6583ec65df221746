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

}  // namespace
}  // namespace edge::store
