#include "edge/api/blob_backend.hpp"

#include <future>
#include <unordered_set>

#include "edge/core/sched.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

using boost::system::error_code;

constexpr std::uint64_t kMaxChunkBytes = 1U << 20;      // DESIGN §2
constexpr std::uint64_t kMaxRecipeBytes = 64ULL << 20;  // ~1.7M chunks

}  // namespace

// Sub-jobs of one blob (its chunk fills, or its chunk writes): `then` runs once, with the
// first error, after the last of them.
struct BlobBackend::Batch {
  std::mutex mutex;
  std::size_t left = 0;  // guarded by mutex
  error_code first;      // guarded by mutex
  std::function<void(error_code)> then;

  void one(error_code ec) {
    error_code result;
    {
      std::lock_guard lock(mutex);
      if (ec && !first)
        first = ec;
      if (--left != 0)
        return;
      result = first;
    }
    then(result);
  }
};

BlobBackend::BlobBackend(store::ObjectStore& objects, store::ChunkStore& chunks,
                         store::BlobStore& blobs, unsigned threads)
    : objects_(objects), chunks_(chunks), blobs_(blobs) {
  for (unsigned i = 0; i < std::max(1U, threads); ++i)
    threads_.push_back(named_thread("blob-backend", [this] { worker(); }));
}

BlobBackend::~BlobBackend() {
  stop();
}

void BlobBackend::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && threads_.empty())
      return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    t.join();
  threads_.clear();
  // What is still queued runs here and fails fast (every job checks stopping_ first), so
  // each waiter hears Errc::kShutdown.
  while (true) {
    Job job;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty())
        break;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();
  }
}

void BlobBackend::submit(Job job) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job();  // stopping: it fails fast on this thread
}

void BlobBackend::worker() {
  while (true) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_)
        return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();
  }
}

bool BlobBackend::enlist(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                         const Sha256& id, Done& done) {
  std::optional<Errc> refusal;
  bool fresh = false;
  {
    std::lock_guard lock(mutex_);
    const auto miss = missing_.find(id);
    if (stopping_) {
      refusal = Errc::kShutdown;
    } else if (miss != missing_.end() && miss->second > std::chrono::steady_clock::now()) {
      refusal = Errc::kNotFound;  // the bucket said 404 a moment ago
    } else {
      auto [it, first] = waiting.try_emplace(id);
      it->second.push_back(std::move(done));
      fresh = first;
    }
  }
  if (refusal)
    done(make_error_code(*refusal));
  return fresh;
}

void BlobBackend::complete(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                           const Sha256& id, error_code ec) {
  std::vector<Done> list;
  {
    std::lock_guard lock(mutex_);
    if (ec == Errc::kNotFound) {
      if (missing_.size() >= kMissingEntries)
        missing_.clear();
      missing_[id] = std::chrono::steady_clock::now() + kMissingTtl;
    }
    const auto it = waiting.find(id);
    if (it == waiting.end())
      return;
    list.swap(it->second);
    waiting.erase(it);
  }
  for (auto& d : list)
    d(ec);
}

Result<void> BlobBackend::fetch_chunk(const Sha256& id, std::uint32_t size) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return Errc::kShutdown;
  }
  if (chunks_.contains(id))
    return {};
  const std::string key = store::chunk_key(id.hex());
  auto bytes = objects_.get(key, size != 0 ? size : kMaxChunkBytes);
  if (!bytes && bytes.error() != Errc::kTooLarge)
    return bytes.error();
  // The one hash of these bytes: a chunk that is not what its name says is never stored
  // nor sent (a damaged object, or a bucket someone else writes to).
  if (!bytes || sha256_of(*bytes) != id) {
    objects_.stats().verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("blob backend: object {} in {} failed SHA-256 verification ({}); not stored", key,
                  objects_.describe(),
                  bytes ? std::to_string(bytes->size()) + " bytes" : "larger than its recipe says");
    return Errc::kChecksumMismatch;
  }
  std::promise<error_code> stored;
  auto f = stored.get_future();
  chunks_.async_put_verified(id, SharedBytes::of(std::move(*bytes)), {},
                             [&stored](error_code ec, bool) { stored.set_value(ec); });
  if (const error_code ec = f.get(); ec) {
    spdlog::error("blob backend: storing chunk {}: {}", id.hex(), ec.message());
    return ec;
  }
  return {};
}

void BlobBackend::fill_chunk(const Sha256& id, Done done) {
  fill_chunk_sized(id, 0, std::move(done));
}

void BlobBackend::fill_chunk_sized(const Sha256& id, std::uint32_t size, Done done) {
  if (!enlist(chunk_waiters_, id, done))
    return;
  submit([this, id, size] {
    auto r = fetch_chunk(id, size);
    complete(chunk_waiters_, id, r ? error_code() : r.error());
  });
}

void BlobBackend::fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                              const std::vector<std::size_t>& indexes, RunDone done) {
  for (const std::size_t i : indexes) {
    const auto& c = recipe->chunks[i];
    if (chunks_.contains(c.id)) {
      done(i, {}, {});
      continue;
    }
    fill_chunk_sized(c.id, c.length, [done, i](error_code ec) { done(i, ec, {}); });
  }
}

Result<std::shared_ptr<const store::Recipe>> BlobBackend::fetch_recipe(const Sha256& id) {
  if (auto local = blobs_.recipe(id))
    return *local;  // a chunk of a known blob went missing here (scrub, a wiped segment)
  const std::string key = store::recipe_key(id.hex());
  auto bytes = objects_.get(key, kMaxRecipeBytes);
  if (!bytes)
    return bytes.error() == Errc::kTooLarge ? Errc::kChecksumMismatch : bytes.error();
  auto recipe = store::Recipe::decode(
      id, std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  if (!recipe) {
    objects_.stats().verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("blob backend: object {} in {} is not a recipe; refused", key,
                  objects_.describe());
    return Errc::kChecksumMismatch;
  }
  return std::make_shared<const store::Recipe>(std::move(*recipe));
}

void BlobBackend::fill_blob(const Sha256& id, Done done) {
  if (enlist(blob_waiters_, id, done))
    submit([this, id] { fetch_blob(id); });
}

void BlobBackend::fetch_blob(const Sha256& id) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return complete(blob_waiters_, id, make_error_code(Errc::kShutdown));
  }
  auto got = fetch_recipe(id);
  if (!got)
    return complete(blob_waiters_, id, got.error());
  std::shared_ptr<const store::Recipe> recipe = std::move(*got);
  std::vector<const store::ChunkRef*> missing;
  std::unordered_set<Sha256, Sha256Hash> seen;
  for (const auto& c : recipe->chunks) {
    if (seen.insert(c.id).second && !chunks_.contains(c.id))
      missing.push_back(&c);
  }
  // The recipe is stored last, and only once the blob's bytes hash to its id.
  auto finish = [this, id, recipe](error_code ec) {
    if (!ec) {
      if (auto put = blobs_.put_recipe(*recipe); !put) {
        ec = put.error();
        if (ec == Errc::kChecksumMismatch) {
          objects_.stats().verify_failures.fetch_add(1, std::memory_order_relaxed);
          spdlog::error("blob backend: blob {} from {} does not hash to its id; not stored",
                        id.hex(), objects_.describe());
        }
      }
    }
    complete(blob_waiters_, id, ec);
  };
  if (missing.empty())
    return finish({});
  auto batch = std::make_shared<Batch>();
  batch->left = missing.size();
  batch->then = std::move(finish);
  for (const auto* c : missing)
    fill_chunk_sized(c->id, c->length, [batch](error_code ec) { batch->one(ec); });
}

void BlobBackend::fill_recipe(const Sha256& id, RecipeDone done) {
  if (auto local = blobs_.recipe(id))
    return done({}, *local);
  fill_blob(id, [this, id, done = std::move(done)](error_code ec) {
    auto stored = ec ? Result<std::shared_ptr<const store::Recipe>>(ec) : blobs_.recipe(id);
    if (!stored)
      return done(stored.error(), nullptr);
    done({}, *stored);
  });
}

void BlobBackend::mirror(const Sha256& id, Done done) {
  Done logged = [this, id, done = std::move(done)](error_code ec) {
    if (ec && ec != Errc::kShutdown) {
      spdlog::warn("blob backend: blob {} not made durable in {}: {}", id.hex(),
                   objects_.describe(),
                   ec == Errc::kIo ? objects_.stats().last_error() : ec.message());
    }
    done(ec);
  };
  submit([this, id, logged = std::move(logged)] { run_mirror(id, logged); });
}

void BlobBackend::run_mirror(const Sha256& id, const Done& done) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return done(make_error_code(Errc::kShutdown));
  }
  auto recipe = blobs_.recipe(id);
  if (!recipe)
    return done(recipe.error());
  // A recipe object exists only once all its chunks do: nothing more to write.
  const std::string rkey = store::recipe_key(id.hex());
  auto there = objects_.exists(rkey);
  if (!there)
    return done(there.error());
  if (*there)
    return done({});
  std::vector<Sha256> ids;
  std::unordered_set<Sha256, Sha256Hash> seen;
  for (const auto& c : (*recipe)->chunks) {
    if (seen.insert(c.id).second)
      ids.push_back(c.id);
  }
  auto batch = std::make_shared<Batch>();
  batch->left = ids.size();
  batch->then = [this, rkey, encoded = (*recipe)->encode(), done](error_code ec) {
    if (ec)
      return done(ec);
    auto put = objects_.put(
        rkey, std::span(reinterpret_cast<const std::uint8_t*>(encoded.data()), encoded.size()));
    done(put ? error_code() : put.error());
  };
  if (ids.empty())
    return batch->then({});
  for (const auto& cid : ids) {
    submit([this, cid, batch] {
      {
        std::lock_guard lock(mutex_);
        if (stopping_)
          return batch->one(make_error_code(Errc::kShutdown));
      }
      const std::string key = store::chunk_key(cid.hex());
      // Chunk objects are immutable: one already there is the same bytes.
      auto present = objects_.exists(key);
      if (!present)
        return batch->one(present.error());
      if (*present)
        return batch->one({});
      auto bytes = chunks_.read(cid);
      if (!bytes) {
        spdlog::error("blob backend: reading chunk {} to write it to {}: {}", cid.hex(),
                      objects_.describe(), bytes.error().message());
        return batch->one(bytes.error());
      }
      auto put = objects_.put(key, *bytes);
      batch->one(put ? error_code() : put.error());
    });
  }
}

}  // namespace edge::api
