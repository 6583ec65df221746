#include <filesystem>

#include <gtest/gtest.h>

#include "edge/api/fleet.hpp"
#include "edge/api/sync.hpp"

#include <unistd.h>

namespace edge::api {
namespace {

using store::Change;
using store::StateKind;

TEST(SyncCodec, ChangesRoundTripAndKeepDocuments) {
  ChangesPage page;
  page.last_seq = 7;
  page.changes = {{5, StateKind::kApp, false, "com.example.app", "", R"({"expose_metadata":true})"},
                  {6, StateKind::kChannel, true, "com.example.app", "beta", ""},
                  {7, StateKind::kRelease, false, "com.example.app", "1.0.0", R"({"zip":null})"}};
  std::string error;
  const auto back = parse_changes(encode_changes(page), &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->last_seq, 7U);
  EXPECT_EQ(back->changes, page.changes);

  ChangesPage snap;
  snap.last_seq = 9;
  snap.snapshot = true;
  const auto instruction = parse_changes(encode_changes(snap), &error);
  ASSERT_TRUE(instruction);
  EXPECT_TRUE(instruction->snapshot);
}

TEST(SyncCodec, BadChangesNameTheField) {
  std::string error;
  EXPECT_FALSE(parse_changes("nope", &error));
  EXPECT_NE(error.find("not JSON"), std::string::npos) << error;
  EXPECT_FALSE(parse_changes(R"({"changes":[]})", &error));
  EXPECT_NE(error.find("last_seq"), std::string::npos) << error;
  EXPECT_FALSE(parse_changes(
      R"({"last_seq":3,"changes":[{"seq":2,"kind":"app","app_id":"com.a.b","key":"","doc":{}},)"
      R"({"seq":2,"kind":"app","app_id":"com.a.b","key":"","doc":{}}]})",
      &error));
  EXPECT_NE(error.find("changes[1].seq: out of order"), std::string::npos) << error;
  EXPECT_FALSE(parse_changes(
      R"({"last_seq":3,"changes":[{"seq":1,"kind":"table","app_id":"com.a.b"}]})", &error));
  EXPECT_NE(error.find("[0].kind"), std::string::npos) << error;
  EXPECT_FALSE(parse_changes(
      R"({"last_seq":3,"changes":[{"seq":1,"kind":"channel","app_id":"com.a.b","key":"","doc":{}}]})",
      &error));
  EXPECT_NE(error.find("[0].key"), std::string::npos) << error;
  EXPECT_FALSE(parse_changes(
      R"({"last_seq":3,"changes":[{"seq":1,"kind":"app","app_id":"com.a.b","key":"","doc":3}]})",
      &error));
  EXPECT_NE(error.find("[0].doc"), std::string::npos) << error;
}

TEST(SyncCodec, EpochsRoundTripAndBadOnesNameTheField) {
  ChangesPage page;
  page.last_seq = 3;
  page.epoch = "00ab";
  std::string error;
  auto back = parse_changes(encode_changes(page), &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->epoch, "00ab");
  store::StateStore::Snapshot snap;
  snap.seq = 3;
  snap.epoch = "ff";
  auto snap_back = parse_snapshot(encode_snapshot(snap), &error);
  ASSERT_TRUE(snap_back) << error;
  EXPECT_EQ(snap_back->epoch, "ff");
  EXPECT_TRUE(parse_changes(R"({"last_seq":1,"changes":[]})", &error)->epoch.empty())
      << "older nodes send none";
  for (const char* bad :
       {R"({"last_seq":1,"epoch":"XYZ","changes":[]})", R"({"last_seq":1,"epoch":"","changes":[]})",
        R"({"last_seq":1,"epoch":5,"changes":[]})",
        R"({"last_seq":1,"epoch":"0123456789abcdef0123456789abcdef0","changes":[]})"}) {
    error.clear();
    EXPECT_FALSE(parse_changes(bad, &error)) << bad;
    EXPECT_NE(error.find("epoch"), std::string::npos) << error;
  }
  EXPECT_FALSE(parse_snapshot(R"({"last_seq":1,"epoch":"Q","docs":[]})", &error));
}

TEST(SyncCodec, CheckinsRoundTripAndRejectBadOnes) {
  std::vector<store::Checkin> list = {
      {"com.a.b", "dev-1", "ios", "1.0.0", "1.0.0", "updates", "update", 1700000000000},
      {"com.a.b", "dev-\"2\"", "android", "", "", "set", "", 1700000000001}};
  std::string error;
  const auto back = parse_checkins(encode_checkins(list), &error);
  ASSERT_TRUE(back) << error;
  ASSERT_EQ(back->size(), 2U);
  EXPECT_EQ((*back)[1].device_id, "dev-\"2\"");
  EXPECT_EQ((*back)[1].time_ms, 1700000000001);
  EXPECT_FALSE(parse_checkins(
      R"({"checkins":[{"app_id":"com.a.b","device_id":"d","platform":"ios","version_name":"",)"
      R"("version_build":"","action":"set","decision":"","time_ms":-1}]})",
      &error));
  EXPECT_NE(error.find("checkins[0].time_ms"), std::string::npos) << error;
  EXPECT_FALSE(parse_checkins(R"({"checkins":[{"app_id":"nope"}]})", &error));
  EXPECT_NE(error.find("checkins[0]"), std::string::npos) << error;
  // The fields added later travel when set, and a child that omits them is still heard.
  list[0].plugin_version = "8.51.23";
  list[0].custom_id = "user-1";
  list[0].default_channel = "beta";
  const auto more = parse_checkins(encode_checkins(list), &error);
  ASSERT_TRUE(more) << error;
  EXPECT_EQ((*more)[0].custom_id, "user-1");
  EXPECT_EQ((*more)[0].default_channel, "beta");
  EXPECT_EQ((*more)[0].plugin_version, "8.51.23");
  const auto older = parse_checkins(
      R"({"checkins":[{"app_id":"com.a.b","device_id":"d","platform":"ios","version_name":"",)"
      R"("version_build":"","action":"set","decision":"","time_ms":5}]})",
      &error);
  ASSERT_TRUE(older) << error;
  EXPECT_TRUE((*older)[0].custom_id.empty());
  EXPECT_FALSE(parse_checkins(
      R"({"checkins":[{"app_id":"com.a.b","device_id":"d","platform":"ios","version_name":"",)"
      R"("version_build":"","action":"set","decision":"","time_ms":5,"custom_id":7}]})",
      &error));
  EXPECT_NE(error.find("checkins[0].custom_id"), std::string::npos) << error;
}

TEST(SyncCodec, NumbersOutsideADoublesRangeAreRefused) {
  // Boost.JSON reads 1e999 as infinity and writes it as `Infinity` (not JSON): a change or a
  // status kept and passed on with one would break every reader after it (found by
  // sync_fuzz in a fleet status report).
  std::string error;
  EXPECT_FALSE(
      parse_changes(R"({"last_seq":1,"changes":[{"seq":1,"kind":"app","app_id":"com.a.b","key":"",)"
                    R"("doc":{"x":1e999}}]})",
                    &error));
  EXPECT_NE(error.find("not JSON"), std::string::npos) << error;
  EXPECT_FALSE(parse_checkins(R"({"checkins":[],"x":-1e400})", &error));
  EXPECT_FALSE(
      parse_status_report(R"({"nodes":[{"node_id":"edge-1","ratio":0.95e666666}]})", &error));
  EXPECT_TRUE(parse_status_report(R"({"nodes":[{"node_id":"edge-1","ratio":0.95}]})", &error));
}

TEST(SyncCodec, RecipesMustMatchTheirIdAndSize) {
  const Sha256 id = sha256_of(std::string_view("abc"));
  const std::string chunk = std::string(R"({"sha256":")") + id.hex() + R"(","size":3})";
  std::string error;
  auto r = parse_recipe(R"({"sha256":")" + id.hex() + R"(","size":3,"chunks":[)" + chunk + "]}", id,
                        &error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->size, 3U);
  ASSERT_EQ(r->chunks.size(), 1U);
  EXPECT_FALSE(parse_recipe(R"({"sha256":")" + id.hex() + R"(","size":4,"chunks":[)" + chunk + "]}",
                            id, &error));
  EXPECT_NE(error.find("add up to 3"), std::string::npos) << error;
  const Sha256 other = sha256_of(std::string_view("xyz"));
  EXPECT_FALSE(parse_recipe(
      R"({"sha256":")" + other.hex() + R"(","size":3,"chunks":[)" + chunk + "]}", id, &error));
  EXPECT_NE(error.find("is for"), std::string::npos) << error;
}

TEST(SyncCodec, IdempotencyKeys) {
  EXPECT_EQ(parse_idempotency_key("node-1a:42"), (IdempotencyKey{"node-1a", "", 42}));
  EXPECT_EQ(parse_idempotency_key("node-1a:00ff:42"), (IdempotencyKey{"node-1a", "00ff", 42}));
  EXPECT_EQ(parse_idempotency_key(format_idempotency_key("e1", 0xabc, 7)),
            (IdempotencyKey{"e1", "0000000000000abc", 7}));
  EXPECT_FALSE(parse_idempotency_key("node::5"));
  EXPECT_FALSE(parse_idempotency_key("node:XYZ:5"));
  EXPECT_FALSE(parse_idempotency_key("node:" + std::string(33, 'a') + ":5"));
  EXPECT_FALSE(parse_idempotency_key("node:ab:0"));
  EXPECT_FALSE(parse_idempotency_key("node:0"));
  EXPECT_FALSE(parse_idempotency_key(":5"));
  EXPECT_FALSE(parse_idempotency_key("no key"));
  EXPECT_FALSE(parse_idempotency_key("a b:5"));
  EXPECT_FALSE(parse_idempotency_key("node:5x"));
  EXPECT_FALSE(parse_idempotency_key(std::string(65, 'a') + ":1"));
}

}  // namespace
}  // namespace edge::api

namespace edge::api {
namespace {

// A node's state and check-in stores in a temporary directory, with a feed epoch.
struct TempNode {
  explicit TempNode(const std::string& epoch)
      : dir(std::filesystem::temp_directory_path() /
            ("sync-api-" + std::to_string(::getpid()) + "-" + epoch)),
        db((std::filesystem::remove_all(dir), store::Database::open(dir))),
        state(*db),
        checkins(*db) {
    EXPECT_TRUE(state.set_epoch(epoch));
  }
  ~TempNode() {
    checkins.flush();
    std::filesystem::remove_all(dir);
  }
  std::filesystem::path dir;
  std::unique_ptr<store::Database> db;
  store::StateStore state;
  store::CheckinStore checkins;
};

TEST(SyncApi, FeedPagesAreBoundedInBytesAndCarryTheEpoch) {
  {
    TempNode node("00ab");
    auto& state = node.state;
    auto& checkins = node.checkins;
    const std::string big(4000, 'x');
    for (int i = 0; i < 600; ++i) {
      ASSERT_TRUE(state.put(StateKind::kRelease, "com.example.app", "r" + std::to_string(i),
                            R"({"comment":")" + big + R"("})"));
    }
    SyncApi api(state, checkins, "tok");
    boost::beast::http::request_header<> req;
    req.method(boost::beast::http::verb::get);
    req.set(boost::beast::http::field::authorization, "Bearer tok");
    const Response r = api.handle(req, "/v1/sync/changes", "after=0&wait_ms=0", "");
    ASSERT_EQ(r.status, 200U) << r.body;
    EXPECT_LT(r.body.size(), (1U << 20) + 8192);
    std::string error;
    const auto page = parse_changes(r.body, &error);
    ASSERT_TRUE(page) << error;
    EXPECT_EQ(page->epoch, "00ab");
    EXPECT_EQ(page->last_seq, 600U);
    EXPECT_GT(page->changes.size(), 100U);
    EXPECT_LT(page->changes.size(), 600U) << "cut by bytes, not only by count";
    EXPECT_EQ(page->changes.front().seq, 1U);
  }
}

struct CountingSink final : PushSink {
  void offer(std::vector<store::Change>, std::uint64_t) override { ++offers; }
  int offers = 0;
};

TEST(SyncApi, PushesOfAnotherEpochOrWithABadOneAreRefused) {
  {
    TempNode node("aa");
    SyncApi api(node.state, node.checkins, "tok");
    CountingSink sink;
    api.set_push_sink(&sink);
    boost::beast::http::request_header<> req;
    req.method(boost::beast::http::verb::post);
    req.set(boost::beast::http::field::authorization, "Bearer tok");
    const auto push = [&](std::string_view body) {
      return api.handle(req, "/v1/sync/changes", "", body);
    };
    EXPECT_EQ(push(R"({"last_seq":1,"epoch":"bb","changes":[]})").status, 409U);
    EXPECT_EQ(push(R"({"last_seq":1,"epoch":"B!","changes":[]})").status, 400U);
    EXPECT_EQ(sink.offers, 0) << "nothing queued";
    EXPECT_EQ(push(R"({"last_seq":1,"epoch":"aa","changes":[]})").status, 200U);
    EXPECT_EQ(push(R"({"last_seq":1,"changes":[]})").status, 200U) << "an older pusher";
    EXPECT_EQ(sink.offers, 2);
  }
}

}  // namespace
}  // namespace edge::api

// json_escape: runs of plain bytes are copied whole, and every byte JSON forbids in a
// string is escaped, wherever it falls (first, last, back to back).
TEST(JsonEscape, EscapesWhatJsonForbidsAndKeepsTheRest) {
  using edge::api::json_escape;
  EXPECT_EQ(json_escape(""), "");
  EXPECT_EQ(json_escape("plain 1.0.0 text"), "plain 1.0.0 text");
  EXPECT_EQ(json_escape("\"quoted\""), "\\\"quoted\\\"");
  EXPECT_EQ(json_escape("a\\b"), "a\\\\b");
  EXPECT_EQ(json_escape("\n\r\t"), "\\n\\r\\t");
  EXPECT_EQ(json_escape(std::string("x\0y", 3)), "x\\u0000y");
  EXPECT_EQ(json_escape("\x1f"), "\\u001f");
  EXPECT_EQ(json_escape("caf\xc3\xa9 \xe2\x9c\x93"), "caf\xc3\xa9 \xe2\x9c\x93");  // UTF-8 as is
  EXPECT_EQ(json_escape("\x7f"), "\x7f");
  std::string s = "tail";
  edge::api::append_json_escaped(s, "\"+");
  EXPECT_EQ(s, "tail\\\"+");
}
