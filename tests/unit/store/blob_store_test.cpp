#include "edge/store/blob_store.hpp"

#include <future>
#include <sstream>

#include <gtest/gtest.h>

#include "edge/store/record.hpp"

#include "test_util.hpp"
#include <fcntl.h>
#include <unistd.h>

namespace edge::store {
namespace {

using testing::Node;
using testing::random_bytes;
using testing::TempDir;

// Reads the bytes a list of pieces describes, as sendfile would send them.
std::vector<std::uint8_t> gather(const std::vector<Piece>& pieces) {
  std::vector<std::uint8_t> out;
  for (const auto& p : pieces) {
    const std::size_t at = out.size();
    out.resize(at + p.length);
    EXPECT_EQ(::pread(p.segment->fd(), out.data() + at, p.length, static_cast<off_t>(p.offset)),
              static_cast<ssize_t>(p.length));
  }
  return out;
}

TEST(BlobStore, PutAndReadSizes) {
  TempDir tmp;
  Node n(tmp.path());
  for (std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{1} << 20, std::size_t{5} << 20}) {
    const auto bytes = random_bytes(size, size + 1);
    auto info = n.blobs->put(bytes);
    ASSERT_TRUE(info) << size;
    EXPECT_EQ(info->id, sha256_of(bytes));
    EXPECT_EQ(info->size, size);
    EXPECT_TRUE(info->inserted);
    auto recipe = n.blobs->recipe(info->id);
    ASSERT_TRUE(recipe);
    EXPECT_EQ((*recipe)->size, size);
    EXPECT_EQ((*recipe)->chunks.size(), info->chunks);
    auto back = n.blobs->read(info->id);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, bytes);
    auto again = n.blobs->put(bytes);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->inserted);
  }
  EXPECT_EQ(n.chunks->stats().blobs, 4U);
}

TEST(BlobStore, StreamedPiecesEqualOneShot) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(3 << 20, 9);
  auto w = n.blobs->begin();
  for (std::size_t off = 0; off < bytes.size(); off += 1000) {
    w->write(std::span(bytes).subspan(off, std::min<std::size_t>(1000, bytes.size() - off)));
  }
  std::promise<std::pair<boost::system::error_code, BlobInfo>> p;
  w->finish(sha256_of(bytes), {}, [&](boost::system::error_code ec, BlobInfo i) {
    p.set_value({ec, i});
  });
  auto [ec, info] = p.get_future().get();
  ASSERT_FALSE(ec) << ec.message();
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  auto via_stream = n.blobs->put(in);
  ASSERT_TRUE(via_stream);
  EXPECT_EQ(via_stream->id, info.id);
  EXPECT_FALSE(via_stream->inserted);
  EXPECT_EQ(*(*n.blobs->recipe(info.id)), *(*n.blobs->recipe(via_stream->id)));
}

// An upload paused for backpressure (the server stops reading the socket) resumes once the
// store has taken enough of it: a waiter that is never called leaves the upload hanging.
TEST(BlobStore, APausedUploadResumesWhenTheStoreCatchesUp) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(24 << 20, 12);
  auto w = n.blobs->begin();
  std::promise<void> resumed;
  bool waited = false;
  w->write(bytes);
  if (w->bytes_in_flight() > 0) {
    waited = true;
    w->async_wait_in_flight_below(0, {}, [&] { resumed.set_value(); });
    ASSERT_EQ(resumed.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready)
        << "the paused upload was never resumed";
    EXPECT_EQ(w->bytes_in_flight(), 0U);
  }
  std::promise<boost::system::error_code> done;
  w->finish(sha256_of(bytes), {},
            [&](boost::system::error_code ec, BlobInfo) { done.set_value(ec); });
  EXPECT_FALSE(done.get_future().get());
  if (!waited)
    GTEST_SKIP() << "the store took 24 MiB before the wait began: nothing paused";
}

TEST(BlobStore, WrongExpectedHashStoresNoRecipe) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(200000, 10);
  const auto wrong = sha256_of(random_bytes(10, 11));
  auto r = n.blobs->put(bytes, wrong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kChecksumMismatch);
  EXPECT_EQ(n.blobs->recipe(sha256_of(bytes)).error(), Errc::kNotFound);
  EXPECT_EQ(n.blobs->recipe(wrong).error(), Errc::kNotFound);
  EXPECT_EQ(n.chunks->stats().blobs, 0U);
}

TEST(BlobStore, SimilarBlobsShareChunks) {
  TempDir tmp;
  Node n(tmp.path());
  auto v1 = random_bytes(4 << 20, 12);
  auto v2 = v1;
  v2[100] ^= 1;  // one changed byte near the start
  ASSERT_TRUE(n.blobs->put(v1));
  const auto live = n.chunks->stats().bytes_live;
  ASSERT_TRUE(n.blobs->put(v2));
  const auto added = n.chunks->stats().bytes_live - live;
  EXPECT_LE(added, 256U * 1024) << "only the changed chunk is new";
}

TEST(BlobStore, ResolveRanges) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(3 << 20, 13);
  auto info = n.blobs->put(bytes);
  ASSERT_TRUE(info);
  auto recipe = *n.blobs->recipe(info->id);
  ASSERT_GT(recipe->chunks.size(), 3U);
  for (auto [first, len] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, bytes.size()},
           {0, 1},
           {bytes.size() - 1, 1},
           {12345, 500000},
           {recipe->starts[2], recipe->chunks[2].length},
           {recipe->starts[2] - 1, 2}}) {
    auto pieces = n.blobs->resolve(*recipe, first, len);
    ASSERT_TRUE(pieces) << first << "+" << len;
    EXPECT_EQ(gather(*pieces),
              std::vector<std::uint8_t>(bytes.begin() + first, bytes.begin() + first + len));
  }
  EXPECT_TRUE(n.blobs->resolve(*recipe, 5, 0)->empty());
  EXPECT_EQ(n.blobs->resolve(*recipe, bytes.size(), 1).error(), Errc::kRangeNotSatisfiable);
  EXPECT_EQ(n.blobs->resolve(*recipe, 10, bytes.size()).error(), Errc::kRangeNotSatisfiable);
  // A missing chunk is named, so an edge can fill it.
  ASSERT_TRUE(n.chunks->erase(recipe->chunks[1].id));
  Sha256 missing;
  EXPECT_EQ(n.blobs->resolve(*recipe, 0, bytes.size(), &missing).error(), Errc::kNotFound);
  EXPECT_EQ(missing, recipe->chunks[1].id);
}

TEST(BlobStore, MergeAdjacentPieces) {
  auto a = std::make_shared<SegmentFile>(1, ::dup(0), "a");
  auto b = std::make_shared<SegmentFile>(2, ::dup(0), "b");
  std::vector<Piece> p = {{a, 100, 10}, {a, 110, 5}, {a, 200, 1}, {b, 201, 1}, {b, 202, 3}};
  merge_adjacent(p);
  ASSERT_EQ(p.size(), 3U);
  EXPECT_EQ(p[0].length, 15U);
  EXPECT_EQ(p[1].offset, 200U);
  EXPECT_EQ(p[2].length, 4U);
}

TEST(BlobStore, FileStretchCoversARunOfPieces) {
  auto a = std::make_shared<SegmentFile>(1, ::dup(0), "a");
  auto b = std::make_shared<SegmentFile>(2, ::dup(0), "b");
  // Chunk bodies 64 bytes apart (their record headers), as a blob's chunks lie in a segment.
  std::vector<Piece> p = {{a, 100, 1000}, {a, 1164, 500}, {a, 1728, 20}, {a, 1832, 8}};
  auto s = file_stretch(p, 64, 1 << 20);
  EXPECT_EQ(s.offset, 100U);
  EXPECT_EQ(s.length, 1748U - 100U);
  EXPECT_EQ(s.pieces, 3U);  // the fourth is 84 bytes past the third
  s = file_stretch(std::span(p).first(2), 64, 1 << 20);
  EXPECT_EQ(s.pieces, 2U);
  EXPECT_EQ(s.length, 1564U);
  // The byte bound: the first piece always, the next only while the stretch fits.
  s = file_stretch(p, 64, 1564);
  EXPECT_EQ(s.pieces, 2U);
  s = file_stretch(p, 64, 1563);
  EXPECT_EQ(s.pieces, 1U);
  EXPECT_EQ(s.length, 1000U);
  s = file_stretch(p, 64, 10);
  EXPECT_EQ(s.pieces, 1U);
  EXPECT_EQ(s.length, 1000U);
  // Another file, a step back (a chunk stored before its predecessor), an overlap (the same
  // chunk twice in a blob), memory: each ends the run.
  for (const Piece& next :
       {Piece{b, 1164, 500}, Piece{a, 0, 50}, Piece{a, 1000, 300},
        Piece{nullptr, 0, 10, SharedBytes::of(std::vector<std::uint8_t>(10))}}) {
    std::vector<Piece> two = {p[0], next};
    s = file_stretch(two, 64, 1 << 20);
    EXPECT_EQ(s.pieces, 1U);
    EXPECT_EQ(s.length, 1000U);
  }
  // Touching pieces (a chunk split by a range) are a run with no gap.
  std::vector<Piece> touching = {{a, 100, 10}, {a, 110, 5}};
  EXPECT_EQ(file_stretch(touching, 0, 1 << 20).length, 15U);
  EXPECT_EQ(file_stretch(touching, 0, 1 << 20).pieces, 2U);
  // Nothing to probe: no pieces, or bytes in memory.
  EXPECT_EQ(file_stretch({}, 64, 1 << 20).pieces, 0U);
  std::vector<Piece> mem = {{nullptr, 0, 10, SharedBytes::of(std::vector<std::uint8_t>(10))}};
  EXPECT_EQ(file_stretch(mem, 64, 1 << 20).pieces, 0U);
}

TEST(BlobStore, ConsecutiveChunksOfABlobFormOneStretch) {
  TempDir tmp;
  Node n(tmp.path());
  const auto bytes = random_bytes(3 << 20, 17);
  auto info = n.blobs->put(bytes);
  ASSERT_TRUE(info);
  auto recipe = *n.blobs->recipe(info->id);
  auto pieces = n.blobs->resolve(*recipe, 0, bytes.size());
  ASSERT_TRUE(pieces);
  ASSERT_GT(pieces->size(), 10U);
  // One probe per segment stretch: the pieces of one segment, headers apart, are one run.
  std::size_t runs = 0;
  std::size_t segments = 0;
  const SegmentFile* last = nullptr;
  for (std::size_t i = 0; i < pieces->size();) {
    const auto s = file_stretch(std::span(*pieces).subspan(i), kRecordHeaderBytes, 64 << 20);
    ASSERT_GE(s.pieces, 1U);
    i += s.pieces;
    ++runs;
  }
  for (const auto& p : *pieces) {
    segments += p.segment.get() != last;
    last = p.segment.get();
  }
  EXPECT_EQ(runs, segments);
  // Just written: in the page cache.
  const auto s = file_stretch(*pieces, kRecordHeaderBytes, 64 << 20);
  EXPECT_TRUE(pieces->front().segment->cached(s.offset, s.length));
}

TEST(SegmentFile, CachedProbesEveryPageOfTheRange) {
  TempDir tmp;
  const auto path = tmp.path() / "probe";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  const auto bytes = random_bytes(1 << 20, 3);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  SegmentFile f(1, fd, path);
  EXPECT_TRUE(f.cached(0, bytes.size()));
  EXPECT_TRUE(f.cached(4095, 2));
  EXPECT_TRUE(f.cached(0, 0));
  // Drop the file from the page cache (where the filesystem lets us), then read its first
  // page back: a probe of the whole range must see the rest missing, not just the first page.
  ASSERT_EQ(::fdatasync(fd), 0);
  for (int i = 0; i < 20 && f.cached(0, bytes.size()); ++i) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (f.cached(0, bytes.size()))
      ::usleep(10000);  // pages still under writeback stay; a moment later they go
  }
  if (f.cached(0, bytes.size()))
    GTEST_SKIP() << "this filesystem keeps the pages (tmpfs?): nothing to probe";
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);  // no readahead past the page read
  char page[4096];
  ASSERT_EQ(::pread(fd, page, sizeof page, 0), static_cast<ssize_t>(sizeof page));
  EXPECT_TRUE(f.cached(0, 4096));
  EXPECT_FALSE(f.cached(0, bytes.size()));
  EXPECT_FALSE(f.cached(512 << 10, 4096));
}

TEST(BlobStore, RecipeDecodeRejectsDamage) {
  const auto id = sha256_of(std::string_view("x"));
  Recipe r = Recipe::make(id, {{id, 10}, {id, 20}});
  const std::string enc = r.encode();
  auto back = Recipe::decode(id, enc);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->size, 30U);
  EXPECT_EQ(back->starts, (std::vector<std::uint64_t>{0, 10}));
  EXPECT_FALSE(Recipe::decode(id, enc.substr(0, enc.size() - 1)));
  std::string wrong_size = enc;
  wrong_size[1] = 31;
  EXPECT_EQ(Recipe::decode(id, wrong_size).error(), Errc::kCorrupt);
  std::string version = enc;
  version[0] = 2;
  EXPECT_EQ(Recipe::decode(id, version).error(), Errc::kUnsupportedVersion);
}

}  // namespace
}  // namespace edge::store
