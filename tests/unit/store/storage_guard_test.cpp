// A data directory below store.min_free: every store refuses writes before touching the
// disk (issue #9 item 2), reads go on, and what was stored before is all there.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/state_store.hpp"

#include "test_util.hpp"

namespace edge::store {
namespace {

using testing::TempDir;

DatabaseOptions full_disk() {
  DatabaseOptions o;
  o.min_free_bytes = ~std::uint64_t{0} >> 2;  // more than any disk has free
  return o;
}

TEST(StorageGuard, BelowMinFreeEveryWriteIsRefusedAndReadsGoOn) {
  TempDir tmp;
  Sha256 blob;
  {
    auto db = Database::open(tmp.path() / "db");
    auto chunks = ChunkStore::open(*db, tmp.path() / "seg");
    BlobStore blobs(*chunks);
    const auto bytes = testing::random_bytes(100'000, 7);
    blob = blobs.put(bytes)->id;
    StateStore s(*db);
    ASSERT_TRUE(s.put(StateKind::kApp, "com.a.b", "", "{}"));
  }
  auto db = Database::open(tmp.path() / "db", full_disk());
  EXPECT_FALSE(db->writable());
  EXPECT_TRUE(db->storage_status().full);
  auto chunks = ChunkStore::open(*db, tmp.path() / "seg");
  BlobStore blobs(*chunks);
  EXPECT_TRUE(blobs.recipe(blob)) << "reads go on";
  EXPECT_EQ(blobs.read(blob)->size(), 100'000U);
  const auto more = testing::random_bytes(50'000, 8);
  EXPECT_EQ(blobs.put(more).error(), Errc::kStorageFull);
  StateStore s(*db);
  EXPECT_EQ(s.put(StateKind::kApp, "com.c.d", "", "{}").error(), Errc::kStorageFull);
  EXPECT_EQ(s.last_seq(), 1U) << "nothing numbered";
  CheckinStore checkins(*db, {true, 1 << 20});
  std::promise<bool> p;
  checkins.record({"com.a.b", "dev", "ios", "1", "1", "updates", "", 1},
                  [&p](bool ok) { p.set_value(ok); });
  EXPECT_FALSE(p.get_future().get());
  EXPECT_EQ(checkins.outbox_stats().depth, 0U);
  EXPECT_GE(db->storage_status().refused, 3U);
}

TEST(StorageGuard, RoomForMeasuresNowAndMarksFull) {
  TempDir tmp;
  DatabaseOptions o;
  o.min_free_bytes = 1 << 20;
  auto db = Database::open(tmp.path() / "db", o);
  EXPECT_TRUE(db->writable());
  EXPECT_TRUE(db->room_for(1 << 20));
  EXPECT_FALSE(db->room_for(~std::uint64_t{0} >> 2)) << "an impossible burst";
  EXPECT_FALSE(db->writable()) << "and the node stops writing at once";
}

TEST(StorageGuard, ACheckinStoreRunsTheFreeSpaceCheckOnItsWriterThread) {
  const auto guards = [] {
    int n = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string line;
      if (std::getline(comm, line) && line == "disk-guard")
        ++n;
    }
    return n;
  };
  TempDir tmp;
  DatabaseOptions o;
  o.min_free_bytes = 1 << 20;
  o.check_interval_ms = 20;
  auto db = Database::open(tmp.path() / "db", o);
  // The thread names itself once it runs.
  for (int i = 0; i < 100 && guards() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(guards(), 1) << "a database alone checks on a thread of its own";
  CheckinStore checkins(*db, {true, 1 << 20});
  EXPECT_EQ(guards(), 0) << "the check-in writer took the check over";
  EXPECT_FALSE(db->room_for(~std::uint64_t{0} >> 2));
  EXPECT_FALSE(db->writable());
  // The writer's next check sees the space that is there and writes resume.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!db->writable() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(db->writable());
}

}  // namespace
}  // namespace edge::store
