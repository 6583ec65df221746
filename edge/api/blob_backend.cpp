#include "edge/api/blob_backend.hpp"

#include <algorithm>
#include <iterator>
#include <type_traits>
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
  probe_cv_.notify_all();
  for (auto& t : threads_)
    t.join();
  threads_.clear();
  if (probe_.joinable())
    probe_.join();
  puts_.wait_idle();  // chunk writes in flight call back into this object
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

void BlobBackend::start_probe(std::chrono::milliseconds every) {
  probe_ = named_thread("blob-probe", [this, every] {
    std::uint64_t seen = requests_.load(std::memory_order_relaxed);
    std::unique_lock lock(mutex_);
    while (!probe_cv_.wait_for(lock, every, [&] { return stopping_; })) {
      const std::uint64_t now = requests_.load(std::memory_order_relaxed);
      if (now != seen) {
        seen = now;  // the bucket was asked meanwhile: its answers tell
        continue;
      }
      lock.unlock();
      // Any answer (a 404 included) means the bucket is there; the client records it.
      (void)objects_.exists("health/probe");
      lock.lock();
    }
  });
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
    requests_.fetch_add(1, std::memory_order_relaxed);
    job();
  }
}

template <class Waiter>
bool BlobBackend::enlist(std::unordered_map<Sha256, std::vector<Waiter>, Sha256Hash>& waiting,
                         const Sha256& id, Waiter& waiter) {
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
      it->second.push_back(std::move(waiter));
      fresh = first;
    }
  }
  if (refusal) {
    if constexpr (std::is_same_v<Waiter, ChunkWaiter>)
      waiter.done(make_error_code(*refusal), {});
    else
      waiter(make_error_code(*refusal));
  }
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

void BlobBackend::complete_chunk(const Sha256& id, error_code ec, const SharedBytes& verified) {
  std::vector<ChunkWaiter> list;
  {
    std::lock_guard lock(mutex_);
    if (ec == Errc::kNotFound) {
      if (missing_.size() >= kMissingEntries)
        missing_.clear();
      missing_[id] = std::chrono::steady_clock::now() + kMissingTtl;
    }
    list = take_chunk_waiters(chunk_waiters_, id, static_cast<bool>(verified));
  }
  for (auto& w : list)
    w.done(ec, verified);
}

void BlobBackend::fetch_chunk(const Sha256& id, std::uint32_t size) {
  if (stopping())
    return complete_chunk(id, make_error_code(Errc::kShutdown));
  if (chunks_.contains(id))
    return complete_chunk(id, {});
  const std::string key = store::chunk_key(id.hex());
  auto bytes = objects_.get(key, size != 0 ? size : kMaxChunkBytes);
  if (!bytes && bytes.error() != Errc::kTooLarge)
    return complete_chunk(id, bytes.error());
  // The one hash of these bytes: a chunk that is not what its name says is never stored
  // nor sent (a damaged object, or a bucket someone else writes to).
  if (!bytes || sha256_of(*bytes) != id) {
    objects_.stats().verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("blob backend: object {} in {} failed SHA-256 verification ({}); not stored", key,
                  objects_.describe(),
                  bytes ? std::to_string(bytes->size()) + " bytes" : "larger than its recipe says");
    return complete_chunk(id, make_error_code(Errc::kChecksumMismatch));
  }
  SharedBytes shared = SharedBytes::of(std::move(*bytes));
  complete_chunk(id, {}, shared);  // streams send it while it is stored
  puts_.put(id, std::move(shared), [this, id](error_code ec) {
    if (ec)
      spdlog::error("blob backend: storing chunk {}: {}", id.hex(), ec.message());
    complete_chunk(id, ec);
  });
}

void BlobBackend::fill_chunk(const Sha256& id, Done done) {
  fill_chunk_sized(id, 0, {[d = std::move(done)](error_code ec, const SharedBytes&) { d(ec); }});
}

void BlobBackend::fill_chunk_sized(const Sha256& id, std::uint32_t size, ChunkWaiter waiter) {
  if (!enlist(chunk_waiters_, id, waiter))
    return;
  submit([this, id, size] { fetch_chunk(id, size); });
}

void BlobBackend::fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                              const std::vector<std::size_t>& indexes, RunDone done) {
  for (const std::size_t i : indexes) {
    const auto& c = recipe->chunks[i];
    if (chunks_.contains(c.id)) {
      done(i, {}, {});
      continue;
    }
    fill_chunk_sized(
        c.id, c.length,
        {[done, i](error_code ec, SharedBytes bytes) { done(i, ec, std::move(bytes)); }, true});
  }
}

void BlobBackend::trust_recipes(const std::vector<std::pair<Sha256, Sha256>>& pins) {
  pins_.trust(pins);
}

Result<std::shared_ptr<const store::Recipe>> BlobBackend::fetch_recipe(const Sha256& id) {
  if (auto local = blobs_.recipe(id))
    return *local;  // a chunk of a known blob went missing here (scrub, a wiped segment)
  auto [fetched, pin] = pins_.lookup(id);
  if (fetched)
    return fetched;
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
  // A recipe a release pins must be that recipe, before any chunk is fetched by it.
  if (pin && recipe->digest() != *pin) {
    objects_.stats().verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error(
        "blob backend: object {} in {} hashes to {}, not to the {} its release pins; "
        "refused",
        key, objects_.describe(), recipe->digest().hex(), pin->hex());
    return Errc::kChecksumMismatch;
  }
  auto shared = std::make_shared<const store::Recipe>(std::move(*recipe));
  if (pin)
    pins_.keep(id, shared);
  return shared;
}

void BlobBackend::fill_blob(const Sha256& id, Done done) {
  if (enlist(blob_waiters_, id, done))
    submit([this, id] { fetch_blob(id); });
}

void BlobBackend::fetch_blob(const Sha256& id) {
  if (stopping())
    return complete(blob_waiters_, id, make_error_code(Errc::kShutdown));
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
    if (!ec && stopping())
      ec = make_error_code(Errc::kShutdown);
    if (!ec) {
      const bool pinned = pins_.matches(id, *recipe);
      pins_.forget(id);
      if (auto put = blobs_.put_recipe(*recipe, pinned); !put) {
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
  // The last chunk completes on the chunk store's thread, which put_recipe waits for: the
  // recipe is checked and stored on a pool thread.
  batch->then = [this, finish = std::move(finish)](error_code ec) {
    submit([finish, ec] { finish(ec); });
  };
  for (const auto* c : missing) {
    fill_chunk_sized(c->id, c->length,
                     {[batch](error_code ec, const SharedBytes&) { batch->one(ec); }, false});
  }
}

void BlobBackend::fill_recipe(const Sha256& id, RecipeDone done) {
  if (auto local = blobs_.recipe(id))
    return done({}, *local);
  auto [cached, pin] = pins_.lookup(id);
  if (cached)
    return done({}, std::move(cached));
  const bool pinned = pin.has_value();
  const auto stored = [this, id, done](error_code ec) {
    auto recipe =
        ec ? Result<std::shared_ptr<const store::Recipe>>(ec) : pins_.after_fill(blobs_, id);
    if (!recipe)
      return done(recipe.error(), nullptr);
    done({}, std::move(*recipe));
  };
  if (!pinned) {
    // Nothing to check a recipe object against but the blob's own SHA-256: the whole blob
    // first.
    return fill_blob(id, stored);
  }
  Done relay = stored;
  if (enlist(recipe_waiters_, id, relay)) {
    submit([this, id] {
      auto recipe = fetch_recipe(id);
      complete(recipe_waiters_, id, recipe ? error_code() : recipe.error());
    });
  }
}

void BlobBackend::mirror(const Sha256& id, Done done, bool refresh) {
  Done logged = [this, id, done = std::move(done)](error_code ec) {
    if (ec && ec != Errc::kShutdown && ec != Errc::kNotFound) {
      spdlog::warn("blob backend: blob {} not made durable in {}: {}", id.hex(),
                   objects_.describe(),
                   ec == Errc::kIo ? objects_.stats().last_error() : ec.message());
    }
    done(ec);
  };
  submit([this, id, refresh, logged = std::move(logged)] { run_mirror(id, logged, refresh); });
}

void BlobBackend::run_mirror(const Sha256& id, const Done& done, bool refresh) {
  if (stopping())
    return done(make_error_code(Errc::kShutdown));
  auto recipe = blobs_.recipe(id);
  if (!recipe)
    return done(recipe.error());
  // A recipe object exists only once all its chunks do: nothing more to write.
  const std::string rkey = store::recipe_key(id.hex());
  const auto put_recipe = [this, rkey, encoded = (*recipe)->encode(), done]() {
    auto put = objects_.put(
        rkey, std::span(reinterpret_cast<const std::uint8_t*>(encoded.data()), encoded.size()));
    done(put ? error_code() : put.error());
  };
  auto there = objects_.exists(rkey);
  if (!there)
    return done(there.error());
  // Its chunks are there (a recipe object is written only after them): the recipe is
  // written again so that its age for garbage collection starts now.
  if (*there && refresh)
    return put_recipe();
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
  batch->then = [done, put_recipe](error_code ec) {
    if (ec)
      return done(ec);
    put_recipe();
  };
  if (ids.empty())
    return batch->then({});
  for (const auto& cid : ids) {
    submit([this, cid, batch] {
      if (stopping())
        return batch->one(make_error_code(Errc::kShutdown));
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
