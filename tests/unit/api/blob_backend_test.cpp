#include "edge/api/blob_backend.hpp"

#include <future>
#include <map>
#include <mutex>

#include <gtest/gtest.h>

#include "../store/test_util.hpp"

namespace edge::api {
namespace {

using boost::system::error_code;

// A bucket in memory: records the order of writes, and can be made to fail like a store
// that is down.
class MemoryObjects final : public store::ObjectStore {
 public:
  Result<void> put(std::string_view key, std::span<const std::uint8_t> bytes) override {
    std::lock_guard lock(mutex_);
    if (down)
      return fail();
    objects_[std::string(key)].assign(bytes.begin(), bytes.end());
    writes_.emplace_back(key);
    return {};
  }
  Result<std::vector<std::uint8_t>> get(std::string_view key, std::uint64_t max_bytes) override {
    std::lock_guard lock(mutex_);
    if (down)
      return fail();
    const auto it = objects_.find(std::string(key));
    if (it == objects_.end())
      return Errc::kNotFound;
    if (it->second.size() > max_bytes)
      return Errc::kTooLarge;
    return it->second;
  }
  Result<bool> exists(std::string_view key) override {
    std::lock_guard lock(mutex_);
    if (down)
      return fail();
    return objects_.contains(std::string(key));
  }
  Result<void> remove(std::string_view key) override {
    std::lock_guard lock(mutex_);
    objects_.erase(std::string(key));
    return {};
  }
  Result<store::ObjectListing> list(std::string_view, std::string_view) override {
    return Errc::kIo;
  }
  std::string describe() const override { return "memory"; }
  store::ObjectStoreStats& stats() override { return stats_; }

  std::vector<std::string> writes() {
    std::lock_guard lock(mutex_);
    return writes_;
  }
  std::vector<std::uint8_t>& object(const std::string& key) {
    std::lock_guard lock(mutex_);
    return objects_.at(key);
  }
  bool has(const std::string& key) {
    std::lock_guard lock(mutex_);
    return objects_.contains(key);
  }
  std::atomic<bool> down{false};

 private:
  Errc fail() {
    stats_.set_error("memory store is down");
    return Errc::kIo;
  }
  std::mutex mutex_;
  std::map<std::string, std::vector<std::uint8_t>> objects_;  // guarded by mutex_
  std::vector<std::string> writes_;                           // guarded by mutex_
  store::ObjectStoreStats stats_;
};

error_code wait(const std::function<void(Filler::Done)>& start) {
  std::promise<error_code> p;
  auto f = p.get_future();
  start([&p](error_code ec) { p.set_value(ec); });
  return f.get();
}

struct BlobBackendTest : ::testing::Test {
  store::testing::TempDir tmp;
  MemoryObjects bucket;
  std::vector<std::uint8_t> data = store::testing::random_bytes(700 << 10, 7);
  Sha256 id = sha256_of(data);

  // Uploads `data` to a node and mirrors it into the bucket.
  void publish() {
    store::testing::Node writer(tmp.path() / "writer");
    ASSERT_TRUE(writer.blobs->put(data));
    BlobBackend backend(bucket, *writer.chunks, *writer.blobs, 4);
    ASSERT_FALSE(wait([&](Filler::Done d) { backend.mirror(id, std::move(d)); }));
  }
};

TEST_F(BlobBackendTest, MirrorWritesEveryChunkThenTheRecipe) {
  publish();
  const auto writes = bucket.writes();
  ASSERT_GE(writes.size(), 3U);
  EXPECT_EQ(writes.back(), store::recipe_key(id.hex()));  // visible only after its chunks
  for (std::size_t i = 0; i + 1 < writes.size(); ++i)
    EXPECT_TRUE(writes[i].starts_with("chunks/")) << writes[i];
  // Mirrored again: the recipe is there, nothing is written twice.
  store::testing::Node writer(tmp.path() / "writer");
  BlobBackend backend(bucket, *writer.chunks, *writer.blobs, 2);
  EXPECT_FALSE(wait([&](Filler::Done d) { backend.mirror(id, std::move(d)); }));
  EXPECT_EQ(bucket.writes().size(), writes.size());
}

TEST_F(BlobBackendTest, MirrorFailsWithoutARecipeWhenTheBucketIsDown) {
  store::testing::Node writer(tmp.path() / "writer");
  ASSERT_TRUE(writer.blobs->put(data));
  BlobBackend backend(bucket, *writer.chunks, *writer.blobs, 2);
  bucket.down = true;
  EXPECT_EQ(wait([&](Filler::Done d) { backend.mirror(id, std::move(d)); }), Errc::kIo);
  bucket.down = false;
  EXPECT_FALSE(bucket.has(store::recipe_key(id.hex())));
  EXPECT_FALSE(wait([&](Filler::Done d) { backend.mirror(id, std::move(d)); }));
  EXPECT_TRUE(bucket.has(store::recipe_key(id.hex())));
}

TEST_F(BlobBackendTest, AnEmptyNodeFillsAWholeVerifiedBlob) {
  publish();
  store::testing::Node reader(tmp.path() / "reader");
  BlobBackend backend(bucket, *reader.chunks, *reader.blobs, 4);
  EXPECT_FALSE(wait([&](Filler::Done d) { backend.fill_blob(id, std::move(d)); }));
  auto read = reader.blobs->read(id);
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, data);
  EXPECT_EQ(bucket.stats().verify_failures.load(), 0U);
  // An id the bucket does not have.
  EXPECT_EQ(wait([&](Filler::Done d) {
              backend.fill_blob(sha256_of(std::span(data).first(10)), std::move(d));
            }),
            Errc::kNotFound);
}

TEST_F(BlobBackendTest, ADamagedChunkObjectIsNeverStoredAndIsCounted) {
  publish();
  const auto writes = bucket.writes();
  auto& victim = bucket.object(writes.front());
  victim[victim.size() / 2] ^= 0x5A;
  store::testing::Node reader(tmp.path() / "reader");
  BlobBackend backend(bucket, *reader.chunks, *reader.blobs, 4);
  EXPECT_EQ(wait([&](Filler::Done d) { backend.fill_blob(id, std::move(d)); }),
            Errc::kChecksumMismatch);
  EXPECT_GE(bucket.stats().verify_failures.load(), 1U);
  EXPECT_FALSE(reader.blobs->recipe(id));
  auto bad = Sha256::parse(writes.front().substr(7));
  ASSERT_TRUE(bad);
  EXPECT_FALSE(reader.chunks->contains(*bad));
}

TEST_F(BlobBackendTest, APinnedRecipeStreamsChunksAsTheyVerify) {
  publish();
  auto encoded = bucket.object(store::recipe_key(id.hex()));
  auto recipe = store::Recipe::decode(
      id, std::string_view(reinterpret_cast<const char*>(encoded.data()), encoded.size()));
  ASSERT_TRUE(recipe);
  store::testing::Node reader(tmp.path() / "reader");
  BlobBackend backend(bucket, *reader.chunks, *reader.blobs, 4);
  backend.trust_recipes({{id, recipe->digest()}});
  std::promise<std::shared_ptr<const store::Recipe>> got;
  backend.fill_recipe(id, [&got](error_code ec, std::shared_ptr<const store::Recipe> r) {
    EXPECT_FALSE(ec);
    got.set_value(std::move(r));
  });
  auto fetched = got.get_future().get();
  ASSERT_NE(fetched, nullptr);
  EXPECT_EQ(*fetched, *recipe);
  EXPECT_FALSE(reader.blobs->recipe(id)) << "stored only once the blob is whole";
  std::vector<std::size_t> all(fetched->chunks.size());
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = i;
  std::mutex m;
  std::vector<std::vector<std::uint8_t>> parts(all.size());
  std::promise<void> each;
  std::size_t left = all.size();
  backend.fill_chunks(fetched, all, [&](std::size_t i, error_code ec, SharedBytes bytes) {
    EXPECT_FALSE(ec);
    std::lock_guard lock(m);
    if (bytes)
      parts[i].assign(bytes.data, bytes.data + bytes.size);
    else
      parts[i] = *reader.chunks->read(fetched->chunks[i].id);
    if (--left == 0)
      each.set_value();
  });
  each.get_future().get();
  std::vector<std::uint8_t> whole;
  for (const auto& p : parts)
    whole.insert(whole.end(), p.begin(), p.end());
  EXPECT_EQ(whole, data);
  // The stream's end: the blob is checked and its recipe stored.
  EXPECT_FALSE(wait([&](Filler::Done d) { backend.fill_blob(id, std::move(d)); }));
  EXPECT_TRUE(reader.blobs->recipe(id));
}

TEST_F(BlobBackendTest, ARecipeThatIsNotThePinnedOneIsRefused) {
  publish();
  store::testing::Node reader(tmp.path() / "reader");
  BlobBackend backend(bucket, *reader.chunks, *reader.blobs, 2);
  backend.trust_recipes({{id, sha256_of(std::span(data).first(3))}});
  std::promise<error_code> got;
  backend.fill_recipe(
      id, [&got](error_code ec, std::shared_ptr<const store::Recipe>) { got.set_value(ec); });
  EXPECT_EQ(got.get_future().get(), Errc::kChecksumMismatch);
  EXPECT_GE(bucket.stats().verify_failures.load(), 1U);
}

}  // namespace
}  // namespace edge::api
