#include "edge/store/chunk_store.hpp"

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "edge/store/uring.hpp"

#include "test_util.hpp"
#include <fcntl.h>
#include <unistd.h>

namespace edge::store {
namespace {

using testing::Node;
using testing::random_bytes;
using testing::TempDir;

TEST(ChunkStore, PutFindRead) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(100000, 1);
  const auto id = sha256_of(bytes);
  EXPECT_EQ(n.chunks->find(id).error(), Errc::kNotFound);
  auto put = n.chunks->put(id, bytes);
  ASSERT_TRUE(put);
  EXPECT_TRUE(*put);
  auto loc = n.chunks->find(id);
  ASSERT_TRUE(loc);
  EXPECT_EQ(loc->length, bytes.size());
  std::vector<std::uint8_t> via_fd(loc->length);
  ASSERT_EQ(
      ::pread(loc->segment->fd(), via_fd.data(), via_fd.size(), static_cast<off_t>(loc->offset)),
      static_cast<ssize_t>(via_fd.size()));
  EXPECT_EQ(via_fd, bytes) << "the location is what sendfile will send";
  auto read = n.chunks->read(id);
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, bytes);
  const auto s = n.chunks->stats();
  EXPECT_EQ(s.chunks, 1U);
  EXPECT_EQ(s.bytes_live, bytes.size());
  EXPECT_EQ(s.segments, 1U);
}

// Threads of this process named `name` (/proc/self/task/*/comm).
int threads_named(const std::string& name) {
  int n = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name)
      ++n;
  }
  return n;
}

TEST(IoRing, TheReaperThreadStartsWithTheFirstSubmission) {
  TempDir tmp;
  const auto path = tmp.path() / "f";
  std::ofstream(path) << "0123456789";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  {
    IoRing ring(8);
    EXPECT_EQ(threads_named("uring-reaper"), 0) << "an idle ring keeps no thread";
    char buf[4] = {};
    ASSERT_TRUE(ring.read(fd, 3, buf, sizeof buf));
    EXPECT_EQ(std::string(buf, sizeof buf), "3456");
    EXPECT_EQ(threads_named("uring-reaper"), 1);
    ASSERT_TRUE(ring.read(fd, 0, buf, sizeof buf)) << "one reaper serves the next ones";
    EXPECT_EQ(threads_named("uring-reaper"), 1);
  }
  EXPECT_EQ(threads_named("uring-reaper"), 0) << "the destructor joins it";
  ::close(fd);
}

TEST(ChunkStore, PresentChunkIsNotWrittenTwice) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(5000, 2);
  const auto id = sha256_of(bytes);
  ASSERT_TRUE(*n.chunks->put(id, bytes));
  const auto before = n.chunks->stats();
  auto again = n.chunks->put(id, bytes);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  // Concurrent duplicates inside one batch are deduplicated by the commit thread too.
  std::vector<std::thread> threads;
  const auto other = random_bytes(7000, 3);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { ASSERT_TRUE(n.chunks->put(sha256_of(other), other)); });
  }
  for (auto& t : threads)
    t.join();
  const auto after = n.chunks->stats();
  EXPECT_EQ(after.chunks, 2U);
  EXPECT_EQ(after.bytes_on_disk, before.bytes_on_disk + 64 + other.size());
}

TEST(ChunkStore, RejectsBytesThatDoNotMatchTheirId) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(4096, 4);
  const auto wrong = sha256_of(random_bytes(4096, 5));
  auto r = n.chunks->put(wrong, bytes);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kChecksumMismatch);
  EXPECT_EQ(n.chunks->stats().chunks, 0U);
  EXPECT_EQ(n.chunks->stats().bytes_on_disk, 0U) << "nothing was written";
  EXPECT_FALSE(n.chunks->find(wrong));
  const auto big = random_bytes((1 << 20) + 1, 6);
  EXPECT_EQ(n.chunks->put(sha256_of(big), big).error(), Errc::kTooLarge);
}

TEST(ChunkStore, AsyncCompletionsRunOnTheCallersExecutor) {
  TempDir tmp;
  Node n(tmp.path());
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread::id io_thread;
  std::thread runner([&] {
    io_thread = std::this_thread::get_id();
    io.run();
  });
  const auto bytes = random_bytes(30000, 7);
  const auto id = sha256_of(bytes);
  std::promise<std::thread::id> put_on;
  n.chunks->async_put(id, bytes, io.get_executor(), [&](boost::system::error_code ec, bool ins) {
    EXPECT_FALSE(ec);
    EXPECT_TRUE(ins);
    put_on.set_value(std::this_thread::get_id());
  });
  const auto put_thread = put_on.get_future().get();
  std::promise<std::pair<std::thread::id, std::vector<std::uint8_t>>> read_on;
  n.chunks->async_read(id, io.get_executor(),
                       [&](boost::system::error_code ec, std::vector<std::uint8_t> body) {
                         EXPECT_FALSE(ec);
                         read_on.set_value({std::this_thread::get_id(), std::move(body)});
                       });
  auto [read_thread, body] = read_on.get_future().get();
  guard.reset();
  runner.join();
  EXPECT_EQ(put_thread, io_thread);
  EXPECT_EQ(read_thread, io_thread);
  EXPECT_EQ(body, bytes);
}

TEST(ChunkStore, EraseAndPersistAcrossReopen) {
  TempDir tmp;
  Node n(tmp.path());
  std::vector<Sha256> ids;
  for (int i = 0; i < 50; ++i)
    ids.push_back(testing::put_chunk(*n.chunks, random_bytes(60000 + i, 100 + i)));
  ASSERT_TRUE(n.chunks->erase(ids[0]));
  EXPECT_EQ(n.chunks->erase(ids[0]).error(), Errc::kNotFound);
  EXPECT_GT(n.chunks->stats().segments, 1U) << "2 MiB segments roll";
  const auto before = n.chunks->stats();
  n.reopen();
  EXPECT_TRUE(n.chunks->recovery().problems.empty());
  EXPECT_EQ(n.chunks->recovery().records_reindexed, 0U);
  const auto after = n.chunks->stats();
  EXPECT_EQ(after.chunks, before.chunks);
  EXPECT_EQ(after.bytes_live, before.bytes_live);
  EXPECT_EQ(after.bytes_on_disk, before.bytes_on_disk);
  EXPECT_FALSE(n.chunks->find(ids[0]));
  for (int i = 1; i < 50; ++i) {
    auto r = n.chunks->read(ids[i]);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, random_bytes(60000 + i, 100 + i));
  }
  auto bad = n.chunks->verify_index();
  ASSERT_TRUE(bad);
  EXPECT_TRUE(bad->empty());
}

TEST(ChunkStore, ScrubFindsAFlippedByteAndStopsServingIt) {
  TempDir tmp;
  Node n(tmp.path());
  std::vector<Sha256> ids;
  for (int i = 0; i < 60; ++i)
    ids.push_back(testing::put_chunk(*n.chunks, random_bytes(50000, 200 + i)));
  const auto sealed = n.chunks->sealed_segments();
  ASSERT_FALSE(sealed.empty());
  // Find a chunk in the first sealed segment and flip one byte of its body on disk.
  Sha256 victim;
  std::uint64_t offset = 0;
  for (const auto& id : ids) {
    auto e = n.chunks->find_entry(id);
    if (e && e->segment == sealed.front()) {
      victim = id;
      offset = e->record_offset + 64 + 1234;
      break;
    }
  }
  {
    std::fstream f(n.chunks->segment_path(sealed.front()),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.read(&c, 1);
    c ^= 0x20;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
  }
  EXPECT_EQ(n.chunks->read(victim).error(), Errc::kCorrupt)
      << "reads check XXH3: never the bad bytes";
  auto report = n.chunks->scrub();
  ASSERT_TRUE(report);
  EXPECT_EQ(report->segments, sealed.size());
  ASSERT_EQ(report->erased.size(), 1U);
  EXPECT_EQ(report->erased[0], victim);
  EXPECT_EQ(n.chunks->find(victim).error(), Errc::kNotFound);
  for (const auto& id : ids) {
    if (id != victim) {
      EXPECT_TRUE(n.chunks->read(id)) << "others are intact";
    }
  }
  EXPECT_TRUE(n.chunks->verify_index()->empty());
  // A second scrub finds nothing more.
  EXPECT_TRUE(n.chunks->scrub()->erased.empty());
}

TEST(ChunkStore, UnknownSchemaVersionIsRefused) {
  TempDir tmp;
  { Node n(tmp.path()); }
  {
    // Rewrite meta/schema_version behind the store's back.
    rocksdb::DBOptions o;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(o, (tmp.path() / "db").string(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const auto& name : names)
      cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, (tmp.path() / "db").string(), cfs, &handles, &db).ok());
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "meta") {
        ASSERT_TRUE(db->Put({}, handles[i], "schema_version", "99").ok());
      }
    }
    for (auto* h : handles)
      db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  try {
    auto db = Database::open(tmp.path() / "db");
    FAIL() << "opened a database of schema version 99";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.code(), Errc::kUnsupportedVersion);
    EXPECT_NE(std::string(e.what()).find("schema version 99"), std::string::npos) << e.what();
  }
}

TEST(ChunkStore, RejectsTooSmallSegments) {
  TempDir tmp;
  auto db = Database::open(tmp.path() / "db");
  ChunkStoreOptions o;
  o.segment_bytes = 4096;
  EXPECT_THROW(ChunkStore::open(*db, tmp.path() / "seg", o), StoreError);
}

}  // namespace
}  // namespace edge::store
