// Garbage collection in the store: erase_garbage removes recipes and chunks in one commit,
// compact_segment copies live chunks forward and removes the file, and both survive a reopen;
// LocalBlobGate keeps collector rounds and writers apart.
#include <thread>

#include <gtest/gtest.h>

#include "edge/store/blob_gate.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"

#include "test_util.hpp"

namespace edge::store {
namespace {

using testing::Node;
using testing::random_bytes;
using testing::TempDir;

TEST(Garbage, EraseThenCompactKeepsLiveChunksWhole) {
  TempDir tmp;
  Node n(tmp.path(), Node::small_segments());  // 2 MiB segments
  std::vector<Sha256> ids;
  for (int i = 0; i < 100; ++i) {  // ~6.4 MiB: several sealed segments
    const auto body = random_bytes(64 * 1024, 7000 + i);
    ids.push_back(sha256_of(body));
    ASSERT_TRUE(n.chunks->put(ids.back(), body));
  }
  // Two of every three chunks are garbage.
  std::vector<Sha256> dead, live;
  for (int i = 0; i < 100; ++i)
    (i % 3 == 0 ? live : dead).push_back(ids[i]);
  const auto before = n.chunks->stats();
  auto erased = n.chunks->erase_garbage({}, dead);
  ASSERT_TRUE(erased);
  EXPECT_EQ(erased->chunks, dead.size());
  EXPECT_EQ(erased->bytes, dead.size() * 64 * 1024);
  // Erasing again removes nothing (already gone).
  EXPECT_EQ(n.chunks->erase_garbage({}, dead)->chunks, 0U);
  for (const auto& id : dead)
    EXPECT_FALSE(n.chunks->contains(id));

  {
    // A backup copying the segments keeps compaction out.
    auto held = n.chunks->hold_segment_files();
    const auto sealed = n.chunks->sealed_segments();
    ASSERT_FALSE(sealed.empty());
    EXPECT_EQ(n.chunks->compact_segment(sealed.front()).error(), Errc::kConflict);
    EXPECT_TRUE(std::filesystem::exists(n.chunks->segment_path(sealed.front())));
  }
  std::uint64_t freed = 0, moved = 0;
  for (const auto& u : n.chunks->segment_use()) {
    if (!u.sealed)
      continue;
    EXPECT_LT(u.live_bytes, u.bytes / 2) << "segment " << u.id;
    auto c = n.chunks->compact_segment(u.id);
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->segments, 1U);
    freed += c->bytes;
    moved += c->relocated;
    EXPECT_FALSE(std::filesystem::exists(n.chunks->segment_path(u.id)));
  }
  EXPECT_GT(moved, 0U);
  EXPECT_GT(freed, 2ULL << 20);
  EXPECT_LT(n.chunks->stats().bytes_on_disk, before.bytes_on_disk - (2ULL << 20));
  EXPECT_EQ(n.chunks->compact_segment(999999).error(), Errc::kNotFound);
  for (const auto& id : live) {
    auto r = n.chunks->read(id);
    ASSERT_TRUE(r);
    EXPECT_EQ(sha256_of(*r), id);
  }
  EXPECT_TRUE(n.chunks->verify_index()->empty());
  n.reopen();
  EXPECT_TRUE(n.chunks->recovery().problems.empty());
  for (const auto& id : live)
    EXPECT_TRUE(n.chunks->contains(id));
  for (const auto& id : dead)
    EXPECT_FALSE(n.chunks->contains(id));
  EXPECT_EQ(n.chunks->stats().chunks, live.size());
}

TEST(Garbage, RecipesGoFirstAndLeaveTheCache) {
  TempDir tmp;
  Node n(tmp.path(), Node::small_segments());
  BlobStore blobs(*n.chunks);
  const auto data = random_bytes(300000, 42);
  auto info = blobs.put(data);
  ASSERT_TRUE(info);
  ASSERT_TRUE(blobs.recipe(info->id));  // cached now
  std::vector<Sha256> chunks;
  ASSERT_TRUE(
      n.chunks->for_each_chunk([&](const Sha256& id, const IndexEntry&) { chunks.push_back(id); }));
  int recipes = 0;
  ASSERT_TRUE(n.chunks->for_each_blob([&](const Sha256& id, std::string_view) {
    EXPECT_EQ(id, info->id);
    ++recipes;
  }));
  EXPECT_EQ(recipes, 1);
  auto r = blobs.erase_garbage({info->id}, chunks);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 1U);
  EXPECT_EQ(r->chunks, chunks.size());
  EXPECT_EQ(blobs.recipe(info->id).error(), Errc::kNotFound) << "not answered from the cache";
  EXPECT_EQ(n.chunks->stats().blobs, 0U);
  // Stored again: a new recipe, readable.
  ASSERT_TRUE(blobs.put(data));
  EXPECT_EQ(*blobs.read(info->id), data);
}

TEST(Garbage, GateKeepsRoundsAndWritersApart) {
  LocalBlobGate gate(2);
  auto g = gate.quiet();
  ASSERT_TRUE(g);
  auto ticket = gate.enter();
  ASSERT_TRUE(ticket);
  EXPECT_EQ(gate.quiet().error(), Errc::kConflict) << "a writer is inside";
  bool ran = false;
  EXPECT_FALSE(*gate.exclusive(*g, [&]() -> Result<void> {
    ran = true;
    return {};
  }));
  EXPECT_FALSE(ran);
  const Sha256 a = sha256_of(random_bytes(10, 1)), b = sha256_of(random_bytes(10, 2)),
               c = sha256_of(random_bytes(10, 3));
  const Sha256 stored[] = {a, b, c};
  const auto t0 = LocalBlobGate::Clock::now();
  gate.leave(*ticket, stored);  // room for two: c is not remembered
  EXPECT_TRUE(gate.last_stored(a));
  EXPECT_FALSE(gate.last_stored(c));
  EXPECT_GE(gate.forget_before(t0 - std::chrono::hours(1)), t0) << "complete only since then";
  // A round with the gate quiet runs, and holds writers back until it ends.
  g = gate.quiet();
  ASSERT_TRUE(g);
  std::atomic<bool> entered{false};
  std::thread writer;
  EXPECT_TRUE(*gate.exclusive(*g, [&]() -> Result<void> {
    writer = std::thread([&] {
      auto t = gate.enter();
      entered = true;
      gate.leave(*t, {});
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_FALSE(entered.load()) << "a writer waits for the round";
    return {};
  }));
  writer.join();
  EXPECT_TRUE(entered.load());
  EXPECT_FALSE(*gate.exclusive(*g, [] { return Result<void>(); })) << "a writer came since";
}

}  // namespace
}  // namespace edge::store
