#include "edge/store/blob_store.hpp"

#include <future>
#include <sstream>

#include <gtest/gtest.h>

#include "test_util.hpp"
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
