// Eviction under a byte budget (edge role): FIFO over sealed segments, pinned chunks copied
// forward, bytes on disk within budget + one segment, readers of an evicted segment finish.
#include <unordered_set>

#include <gtest/gtest.h>

#include "edge/store/chunk_store.hpp"

#include "test_util.hpp"
#include <unistd.h>

namespace edge::store {
namespace {

using testing::Node;
using testing::random_bytes;
using testing::TempDir;

TEST(Eviction, PinnedSurviveOldUnpinnedGoWithinBudget) {
  TempDir tmp;
  ChunkStoreOptions o = Node::small_segments();  // 2 MiB segments
  o.max_bytes = 6ULL << 20;
  Node n(tmp.path(), o);

  constexpr int kCount = 300;  // 300 x 64 KiB = ~19 MiB through a 6 MiB budget
  std::vector<Sha256> ids;
  std::unordered_set<Sha256, Sha256Hash> pinned;
  auto pins = std::make_shared<HashPinSet>(std::unordered_set<Sha256, Sha256Hash>{});
  // Pin every 10th chunk of the first 100: they are in the oldest segments.
  for (int i = 0; i < kCount; ++i) {
    const auto body = random_bytes(64 * 1024, 1000 + i);
    ids.push_back(sha256_of(body));
    if (i < 100 && i % 10 == 0)
      pinned.insert(ids.back());
  }
  n.chunks->set_pin_set(std::make_shared<HashPinSet>(pinned));

  std::uint64_t max_seen = 0;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(n.chunks->put(ids[i], random_bytes(64 * 1024, 1000 + i)));
    n.chunks->flush();  // the eviction that follows a commit has run
    max_seen = std::max(max_seen, n.chunks->stats().bytes_on_disk);
  }
  ASSERT_TRUE(n.chunks->evict_now());
  const auto s = n.chunks->stats();
  EXPECT_LE(max_seen, o.max_bytes + o.segment_bytes) << "within budget plus one segment, always";
  EXPECT_LE(s.bytes_on_disk, o.max_bytes + o.segment_bytes);
  EXPECT_GT(s.evicted_segments, 0U);
  EXPECT_GT(s.evicted_chunks, 0U);
  EXPECT_GE(s.relocated_chunks, pinned.size());

  for (const auto& id : pinned) {
    auto r = n.chunks->read(id);
    ASSERT_TRUE(r) << "pinned chunk evicted";
    EXPECT_EQ(sha256_of(*r), id);
  }
  int old_gone = 0;
  for (int i = 0; i < 100; ++i)
    old_gone += !pinned.contains(ids[i]) && !n.chunks->contains(ids[i]);
  EXPECT_EQ(old_gone, 90) << "every unpinned chunk of the oldest segments went";
  for (int i = kCount - 20; i < kCount; ++i)
    EXPECT_TRUE(n.chunks->contains(ids[i])) << "newest stay";
  EXPECT_TRUE(n.chunks->verify_index()->empty());

  // Stats and pins survive a reopen.
  const auto before = n.chunks->stats();
  n.reopen();
  EXPECT_TRUE(n.chunks->recovery().problems.empty());
  EXPECT_EQ(n.chunks->stats().chunks, before.chunks);
  EXPECT_EQ(n.chunks->stats().bytes_on_disk, before.bytes_on_disk);
}

TEST(Eviction, ReaderOfAnEvictedSegmentFinishes) {
  TempDir tmp;
  ChunkStoreOptions o = Node::small_segments();
  o.max_bytes = 4ULL << 20;
  Node n(tmp.path(), o);
  const auto first = random_bytes(100000, 1);
  const auto id = testing::put_chunk(*n.chunks, first);
  auto loc = n.chunks->find(id);  // like a sendfile in flight
  ASSERT_TRUE(loc);
  for (int i = 0; i < 120; ++i)
    testing::put_chunk(*n.chunks, random_bytes(64 * 1024, 10 + i));
  ASSERT_TRUE(n.chunks->evict_now());
  EXPECT_FALSE(n.chunks->contains(id));
  EXPECT_FALSE(std::filesystem::exists(loc->segment->path())) << "unlinked";
  std::vector<std::uint8_t> buf(loc->length);
  ASSERT_EQ(::pread(loc->segment->fd(), buf.data(), buf.size(), static_cast<off_t>(loc->offset)),
            static_cast<ssize_t>(buf.size()));
  EXPECT_EQ(buf, first) << "the open descriptor still reads the bytes";
}

TEST(Eviction, OriginRoleNeverEvicts) {
  TempDir tmp;
  Node n(tmp.path());  // max_bytes = 0
  std::vector<Sha256> ids;
  for (int i = 0; i < 100; ++i)
    ids.push_back(testing::put_chunk(*n.chunks, random_bytes(64 * 1024, i)));
  ASSERT_TRUE(n.chunks->evict_now());
  EXPECT_EQ(n.chunks->stats().evicted_segments, 0U);
  for (const auto& id : ids)
    EXPECT_TRUE(n.chunks->contains(id));
}

}  // namespace
}  // namespace edge::store
