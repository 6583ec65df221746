#include "origin-sync/fetcher.hpp"

#include <algorithm>
#include <atomic>
#include <iterator>
#include <thread>
#include <unordered_set>

#include "edge/core/sched.hpp"

#include <spdlog/spdlog.h>

namespace edge::sync {
namespace {

using boost::system::error_code;

constexpr std::uint64_t kMaxChunkBody = 1U << 20;    // DESIGN §2: a chunk is 1 MiB at most
constexpr std::uint64_t kMaxRecipeBody = 64U << 20;  // ~700k chunks of JSON
constexpr std::size_t kChunkWindow = 64;             // chunk fetches one blob has in flight

}  // namespace

Fetcher::Fetcher(const api::UpstreamOptions& options, UpstreamSet& upstreams,
                 store::ChunkStore& chunks, store::BlobStore& blobs, api::SyncMetrics& metrics)
    : options_(options), chunks_(chunks), blobs_(blobs), metrics_(metrics), upstreams_(upstreams) {}

Fetcher::~Fetcher() {
  stop();
}

std::size_t Fetcher::threads() const {
  std::lock_guard lock(mutex_);
  return threads_.size();
}

void Fetcher::stop() {
  std::vector<FailoverClient*> clients;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& c : clients_)
      clients.push_back(c.get());
  }
  for (auto* c : clients)
    c->cancel();
  cv_.notify_all();
  // No thread starts once stopping_ is set; a live one may still move itself to exited_.
  while (true) {
    std::vector<std::thread> join;
    {
      std::lock_guard lock(mutex_);
      std::move(threads_.begin(), threads_.end(), std::back_inserter(join));
      std::move(exited_.begin(), exited_.end(), std::back_inserter(join));
      threads_.clear();
      exited_.clear();
    }
    if (join.empty())
      break;
    for (auto& t : join)
      t.join();
  }
  puts_.wait_idle();  // puts in flight call back into this object
  // Whoever still waits hears that no fetch will come.
  std::unordered_map<Sha256, std::vector<Done>, Sha256Hash> blobs, recipes;
  std::unordered_map<Sha256, std::vector<ChunkWaiter>, Sha256Hash> chunks;
  {
    std::lock_guard lock(mutex_);
    blobs.swap(blob_waiters_);
    chunks.swap(chunk_waiters_);
    recipes.swap(recipe_done_);
    for (auto& q : queues_)
      q.clear();
  }
  for (auto* m : {&blobs, &recipes}) {
    for (auto& [id, list] : *m) {
      for (auto& d : list)
        d(make_error_code(Errc::kShutdown));
    }
  }
  for (auto& [id, list] : chunks) {
    for (auto& w : list)
      w.done(make_error_code(Errc::kShutdown), {});
  }
}

void Fetcher::enqueue_locked(Priority priority, Job job) {
  queues_[static_cast<std::size_t>(priority)].push_back(std::move(job));
  if (stopping_ || queues_[0].size() + queues_[1].size() <= idle_ ||
      threads_.size() >= std::max(1U, options_.fill_concurrency))
    return;
  // Every live thread is busy: one more. Threads that left for idleness are joined first
  // (they hold nothing: each released mutex_ for the last time on its way out).
  for (auto& t : exited_)
    t.join();
  exited_.clear();
  threads_.push_back(named_thread("fill-fetch", [this] { worker(); }));
}

void Fetcher::submit(Priority priority, Job job) {
  {
    std::lock_guard lock(mutex_);
    enqueue_locked(priority, std::move(job));
  }
  cv_.notify_one();
}

void Fetcher::worker() {
  FailoverClient* client = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!free_clients_.empty()) {
      client = free_clients_.back();
      free_clients_.pop_back();
    } else {
      clients_.push_back(std::make_unique<FailoverClient>(upstreams_, options_));
      client = clients_.back().get();
      if (stopping_)
        client->cancel();  // stop() cancelled the clients it saw before this one was made
    }
  }
  while (true) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      ++idle_;
      const bool woken = cv_.wait_for(lock, kIdleLinger, [&] {
        return stopping_ || !queues_[0].empty() || !queues_[1].empty();
      });
      --idle_;
      if (stopping_)
        return;
      if (!woken) {
        // Idle for kIdleLinger: leave, handing the connection and this thread's handle
        // back (unless stop() took the handle already: then it joins this thread).
        free_clients_.push_back(client);
        const auto self = std::find_if(threads_.begin(), threads_.end(), [](const std::thread& t) {
          return t.get_id() == std::this_thread::get_id();
        });
        if (self != threads_.end()) {
          exited_.push_back(std::move(*self));
          threads_.erase(self);
        }
        return;
      }
      // Device-facing work first: a device waiting for its bundle never queues behind a
      // prefetch of the next release.
      auto& q = !queues_[0].empty() ? queues_[0] : queues_[1];
      job = std::move(q.front());
      q.pop_front();
    }
    job(*client);
  }
}

void Fetcher::complete(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                       const Sha256& id, error_code ec) {
  std::vector<Done> list;
  {
    std::lock_guard lock(mutex_);
    remember_locked(id, ec);
    const auto it = waiting.find(id);
    if (it == waiting.end())
      return;
    list.swap(it->second);
    waiting.erase(it);
  }
  for (auto& d : list)
    d(ec);
}

void Fetcher::trust_recipes(const std::vector<std::pair<Sha256, Sha256>>& pins) {
  pins_.trust(pins);
}

bool Fetcher::present(const Sha256& blob) const {
  auto recipe = blobs_.recipe(blob);
  if (!recipe)
    return false;
  for (const auto& c : (*recipe)->chunks) {
    if (!chunks_.find(c.id))
      return false;
  }
  return true;
}

Result<HttpReply> Fetcher::get(FailoverClient& client, const std::string& target,
                               std::uint64_t max_body,
                               const std::vector<std::pair<std::string, std::string>>& headers,
                               unsigned expect) {
  for (unsigned attempt = 0;; ++attempt) {
    auto reply = client.request("GET", target, {}, headers, 0, max_body);
    if (!reply && reply.error() == Errc::kTooLarge) {
      // A lying upstream: bigger than anything this id can be. Not retried.
      metrics_.verify_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("fill: GET {}{}: the body passed {} bytes; refused", client.base_url(), target,
                    max_body);
      return Errc::kChecksumMismatch;
    }
    if (reply && reply->status == expect)
      return reply;
    if (reply && reply->status == 404)
      return Errc::kNotFound;
    if (!reply && reply.error() == Errc::kShutdown)
      return Errc::kShutdown;
    metrics_.fill_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("fill: GET {}{}: {}", client.base_url(), target,
                 reply ? "HTTP " + std::to_string(reply->status) : reply.error().message());
    if (attempt >= options_.retries)
      return Errc::kIo;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(backoff_ms(attempt, 100, options_.backoff_max_ms)));
  }
}

void Fetcher::remember_locked(const Sha256& id, error_code ec) {
  if (ec != Errc::kNotFound)
    return;
  if (missing_.size() >= kMissingEntries)
    missing_.clear();  // a flood of unknown ids: start over rather than grow
  missing_[id] = std::chrono::steady_clock::now() + kMissingTtl;
}

std::optional<Errc> Fetcher::refusal_locked(const Sha256& id) const {
  const auto miss = missing_.find(id);
  if (miss != missing_.end() && miss->second > std::chrono::steady_clock::now())
    return Errc::kNotFound;  // upstream said 404 a moment ago: do not ask again yet
  if (stopping_)
    return Errc::kShutdown;
  return std::nullopt;
}

template <class Waiter>
std::optional<Errc> Fetcher::enlist(
    std::unordered_map<Sha256, std::vector<Waiter>, Sha256Hash>& waiting, const Sha256& id,
    Waiter& waiter, bool& fresh) {
  std::lock_guard lock(mutex_);
  if (auto refusal = refusal_locked(id))
    return refusal;
  auto [it, first] = waiting.try_emplace(id);
  it->second.push_back(std::move(waiter));
  fresh = first;  // not fresh: a fetch is already on its way, this caller waits for it
  return std::nullopt;
}

bool Fetcher::wait_for(std::unordered_map<Sha256, std::vector<Done>, Sha256Hash>& waiting,
                       const Sha256& id, Done& done) {
  bool fresh = false;
  if (auto refusal = enlist(waiting, id, done, fresh)) {
    done(make_error_code(*refusal));
    return false;
  }
  return fresh;
}

bool Fetcher::wait_for_chunk(const Sha256& id, ChunkWaiter waiter) {
  bool fresh = false;
  if (auto refusal = enlist(chunk_waiters_, id, waiter, fresh)) {
    waiter.done(make_error_code(*refusal), {});
    return false;
  }
  return fresh;
}

void Fetcher::complete_chunk(const Sha256& id, error_code ec, const SharedBytes& verified) {
  std::vector<ChunkWaiter> list;
  {
    std::lock_guard lock(mutex_);
    remember_locked(id, ec);
    list = api::take_chunk_waiters(chunk_waiters_, id, static_cast<bool>(verified));
  }
  for (auto& w : list)
    w.done(ec, verified);
}

void Fetcher::fill_chunk(const Sha256& id, Done done) {
  fill_chunk_at(id, Priority::kDevice, std::move(done));
}

void Fetcher::fill_chunks(std::shared_ptr<const store::Recipe> recipe,
                          const std::vector<std::size_t>& indexes, RunDone done) {
  fill_runs_at(recipe, indexes, Priority::kDevice, done, true);
}

void Fetcher::fill_runs_at(const std::shared_ptr<const store::Recipe>& recipe,
                           const std::vector<std::size_t>& indexes, Priority priority,
                           const RunDone& done, bool early) {
  // Which chunks this call fetches: those stored are done, those another fill fetches
  // are waited for (single flight per chunk), the rest are ours.
  std::vector<std::size_t> ours;
  for (const std::size_t i : indexes) {
    const Sha256& id = recipe->chunks[i].id;
    if (chunks_.find(id)) {
      done(i, {}, {});
      continue;
    }
    ChunkWaiter w{[done, i](error_code ec, SharedBytes bytes) { done(i, ec, std::move(bytes)); },
                  early};
    if (wait_for_chunk(id, std::move(w)))
      ours.push_back(i);
  }
  // Adjacent chunks of ours in runs of at most kRunChunks and kRunBytes, one Range request
  // each.
  for (std::size_t k = 0; k < ours.size();) {
    std::size_t j = k;
    std::uint64_t bytes = recipe->chunks[ours[k]].length;
    while (j + 1 < ours.size() && ours[j + 1] == ours[j] + 1 && j + 1 - k < kRunChunks &&
           bytes + recipe->chunks[ours[j + 1]].length <= kRunBytes) {
      ++j;
      bytes += recipe->chunks[ours[j]].length;
    }
    submit(priority, [this, recipe, a = ours[k], b = ours[j]](FailoverClient& client) {
      fetch_run(client, recipe, a, b);
    });
    k = j + 1;
  }
}

void Fetcher::fetch_run(FailoverClient& client, const std::shared_ptr<const store::Recipe>& recipe,
                        std::size_t a, std::size_t b) {
  const std::uint64_t lo = recipe->starts[a];
  const std::uint64_t hi = recipe->starts[b] + recipe->chunks[b].length;  // one past
  Result<HttpReply> reply = Errc::kIo;
  if (a < b) {
    reply = get(client, "/v1/blobs/" + recipe->id.hex(), hi - lo,
                {{"Range", "bytes=" + std::to_string(lo) + "-" + std::to_string(hi - 1)}}, 206);
  }
  if (!reply || reply->body.size != hi - lo) {
    if (!reply && reply.error() == Errc::kShutdown) {
      for (std::size_t i = a; i <= b; ++i)
        complete_chunk(recipe->chunks[i].id, reply.error());
      return;
    }
    // One chunk, or an upstream that did not serve the range: a request per chunk (their
    // waiters are ours already).
    for (std::size_t i = a; i <= b; ++i)
      fetch_chunk(client, recipe->chunks[i].id, recipe->chunks[i].length);
    return;
  }
  metrics_.fills.fetch_add(1, std::memory_order_relaxed);
  metrics_.fill_bytes.fetch_add(hi - lo, std::memory_order_relaxed);
  // Each chunk is a slice of the reply: hashed, streamed and stored from where it arrived.
  std::size_t at = 0;
  for (std::size_t i = a; i <= b; ++i) {
    const auto len = recipe->chunks[i].length;
    store_chunk(recipe->chunks[i].id, reply->body.slice(at, len), client.base_url());
    at += len;
  }
}

void Fetcher::fill_chunk_at(const Sha256& id, Priority priority, Done done, std::uint32_t size) {
  ChunkWaiter w{[d = std::move(done)](error_code ec, const SharedBytes&) { d(ec); }, false};
  if (wait_for_chunk(id, std::move(w)))
    submit(priority, [this, id, size](FailoverClient& client) { fetch_chunk(client, id, size); });
}

void Fetcher::fetch_chunk(FailoverClient& client, const Sha256& id, std::uint32_t size) {
  if (chunks_.find(id))
    return complete_chunk(id, {});
  auto reply = get(client, "/v1/chunks/" + id.hex(), size != 0 ? size : kMaxChunkBody);
  if (!reply)
    return complete_chunk(id, reply.error());
  metrics_.fills.fetch_add(1, std::memory_order_relaxed);
  metrics_.fill_bytes.fetch_add(reply->body.size, std::memory_order_relaxed);
  store_chunk(id, std::move(reply->body), client.base_url());
}

void Fetcher::store_chunk(const Sha256& id, SharedBytes bytes, const std::string& from) {
  const std::uint64_t n = bytes.size;
  // The one hash of these bytes: a bad chunk is never sent nor stored.
  if (sha256_of(bytes.span()) != id) {
    metrics_.verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("fill: chunk {} from {} failed SHA-256 verification ({} bytes); not stored",
                  id.hex(), from, n);
    return complete_chunk(id, make_error_code(Errc::kChecksumMismatch));
  }
  complete_chunk(id, {}, bytes);  // streams send it while it is stored
  puts_.put(id, std::move(bytes), [this, id](error_code ec) {
    if (ec)
      spdlog::error("fill: storing chunk {}: {}", id.hex(), ec.message());
    complete_chunk(id, ec);
  });
}

// One blob's chunk fetches in flight. The callbacks of its chunk fills hold it; once the
// last one has run, nothing does (no self-reference to break).
struct Fetcher::BlobFill : std::enable_shared_from_this<BlobFill> {
  Fetcher* fetcher = nullptr;
  Sha256 id;
  std::shared_ptr<const store::Recipe> recipe;
  Priority priority = Priority::kDevice;
  std::vector<std::size_t> missing;  // recipe indexes of the chunks to fetch, ascending
  std::mutex mutex;
  std::size_t next = 0;       // guarded by mutex
  std::size_t in_flight = 0;  // guarded by mutex
  error_code first_error;     // guarded by mutex

  // Issues chunk fetches up to the window (none after a failure), adjacent chunks as one
  // run (a Range request on the blob).
  void issue() {
    std::vector<std::size_t> batch;
    {
      std::lock_guard lock(mutex);
      while (!first_error && next < missing.size() && in_flight < kChunkWindow) {
        batch.push_back(missing[next++]);
        ++in_flight;
      }
    }
    fetcher->fill_runs_at(
        recipe, batch, priority,
        [self = shared_from_this()](std::size_t, error_code ec, const SharedBytes&) {
          self->on_chunk(ec);
        },
        false);
  }

  void on_chunk(error_code ec) {
    bool last = false;
    error_code result;
    {
      std::lock_guard lock(mutex);
      --in_flight;
      if (ec && !first_error)
        first_error = ec;
      last = in_flight == 0 && (first_error || next == missing.size());
      result = first_error;
    }
    if (!last)
      return issue();
    // The last chunk is in (or the first failure drained): finish on a pool thread.
    std::lock_guard lock(fetcher->mutex_);
    if (fetcher->stopping_)
      return;
    fetcher->enqueue_locked(priority, [f = fetcher, id = id, recipe = recipe, result](
                                          FailoverClient&) { f->finish_blob(id, recipe, result); });
    fetcher->cv_.notify_one();
  }
};

void Fetcher::fill_blob(const Sha256& id, Done done) {
  fill_blob_at(id, Priority::kDevice, std::move(done));
}

void Fetcher::fill_blob_at(const Sha256& id, Priority priority, Done done) {
  if (wait_for(blob_waiters_, id, done)) {
    submit(priority,
           [this, id, priority](FailoverClient& client) { fetch_blob(client, id, priority); });
  }
}

Result<std::shared_ptr<const store::Recipe>> Fetcher::get_recipe(FailoverClient& client,
                                                                 const Sha256& id) {
  if (auto local = blobs_.recipe(id))
    return *local;  // a chunk of a known blob went missing (eviction, scrub)
  auto [fetched, pin] = pins_.lookup(id);
  if (fetched)
    return fetched;
  auto reply = get(client, "/v1/recipes/" + id.hex(), kMaxRecipeBody);
  if (!reply)
    return reply.error();
  metrics_.fills.fetch_add(1, std::memory_order_relaxed);
  std::string error;
  auto parsed = api::parse_recipe(reply->text(), id, &error);
  if (!parsed) {
    metrics_.verify_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("fill: recipe of blob {} from {} is invalid: {}", id.hex(), client.base_url(),
                  error);
    return Errc::kChecksumMismatch;
  }
  // A recipe the release pins must be that recipe: a lying upstream cannot make this node
  // fetch (or stream) chunks of its choosing. Releases written before recipe_sha256
  // existed pin nothing: their blob is still checked whole before its recipe is stored.
  if (pin && parsed->digest() != *pin) {
    metrics_.verify_failures.fetch_add(1, std::memory_order_relaxed);
    metrics_.recipe_mismatches.fetch_add(1, std::memory_order_relaxed);
    spdlog::error(
        "fill: recipe of blob {} from {} hashes to {}, not to the {} its release pins; refused",
        id.hex(), client.base_url(), parsed->digest().hex(), pin->hex());
    return Errc::kChecksumMismatch;
  }
  auto recipe = std::make_shared<const store::Recipe>(std::move(*parsed));
  if (pin)
    pins_.keep(id, recipe);  // an unpinned one is trusted once its blob verified whole
  return recipe;
}

void Fetcher::fill_recipe(const Sha256& id, RecipeDone done) {
  if (auto local = blobs_.recipe(id))
    return done({}, *local);
  auto [cached, pin] = pins_.lookup(id);
  if (cached)
    return done({}, std::move(cached));
  if (!pin) {
    // Nothing to check a fetched recipe against before the blob's own SHA-256: the whole
    // blob first, as before recipe pins existed.
    return fill_blob(id, [this, id, done = std::move(done)](error_code ec) {
      auto stored = ec ? Result<std::shared_ptr<const store::Recipe>>(ec) : blobs_.recipe(id);
      if (!stored)
        return done(stored.error(), nullptr);
      done({}, *stored);
    });
  }
  // Single flight, with the negative cache and stop rules of the other fills.
  Done relay = [this, id, done](error_code ec) mutable {
    auto recipe =
        ec ? Result<std::shared_ptr<const store::Recipe>>(ec) : pins_.after_fill(blobs_, id);
    if (!recipe)
      return done(recipe.error(), nullptr);
    done({}, std::move(*recipe));
  };
  if (wait_for(recipe_done_, id, relay)) {
    submit(Priority::kDevice, [this, id](FailoverClient& client) {
      auto recipe = get_recipe(client, id);
      complete(recipe_done_, id, recipe ? error_code() : recipe.error());
    });
  }
}

void Fetcher::fetch_blob(FailoverClient& client, const Sha256& id, Priority priority) {
  auto got = get_recipe(client, id);
  if (!got)
    return complete(blob_waiters_, id, got.error());
  std::shared_ptr<const store::Recipe> recipe = std::move(*got);
  // Linear in the recipe's length: one hash-set lookup per chunk (a recipe names a chunk
  // more than once when the blob repeats itself).
  std::vector<std::size_t> missing;
  {
    std::unordered_set<Sha256, Sha256Hash> seen;
    seen.reserve(recipe->chunks.size());
    for (std::size_t i = 0; i < recipe->chunks.size(); ++i) {
      const auto& c = recipe->chunks[i];
      if (seen.insert(c.id).second && !chunks_.find(c.id))
        missing.push_back(i);
    }
  }
  if (missing.empty())
    return finish_blob(id, recipe, {});
  // A window of chunk fetches per blob, the next one issued as one completes: a blob of
  // 200k chunks does not fill the queue ahead of other blobs, and the first failure stops
  // the rest (the blob fails as a whole anyway).
  auto fill = std::make_shared<BlobFill>();
  fill->fetcher = this;
  fill->id = id;
  fill->recipe = std::move(recipe);
  fill->priority = priority;
  fill->missing = std::move(missing);
  fill->issue();
}

void Fetcher::finish_blob(const Sha256& id, std::shared_ptr<const store::Recipe> recipe,
                          error_code ec) {
  if (!ec) {
    auto put = blobs_.put_recipe(*recipe, pins_.matches(id, *recipe));
    if (!put) {
      ec = put.error();
      if (ec == Errc::kChecksumMismatch) {
        metrics_.verify_failures.fetch_add(1, std::memory_order_relaxed);
        spdlog::error("fill: blob {} does not hash to its id; recipe not stored", id.hex());
      }
    }
  }
  complete(blob_waiters_, id, ec);
}

Fetcher::Prefetched Fetcher::prefetch(const std::vector<Sha256>& ids,
                                      std::chrono::steady_clock::time_point deadline) {
  struct Wait {
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t left = 0;
    bool ok = true;
  };
  auto w = std::make_shared<Wait>();
  {
    // A release names these blobs now: an earlier 404 no longer counts.
    std::lock_guard lock(mutex_);
    for (const auto& id : ids)
      missing_.erase(id);
  }
  std::vector<Sha256> todo;
  for (const auto& id : ids) {
    if (!present(id))
      todo.push_back(id);
  }
  if (todo.empty())
    return {};
  spdlog::info("prefetch: {} blob(s) before applying the change", todo.size());
  w->left = todo.size();
  metrics_.prefetch_blobs_pending.fetch_add(todo.size(), std::memory_order_relaxed);
  for (const auto& id : todo) {
    fill_blob_at(id, Priority::kBackground, [this, w, id](error_code ec) {
      metrics_.prefetch_blobs_pending.fetch_sub(1, std::memory_order_relaxed);
      if (!ec)
        metrics_.prefetch_blobs_done.fetch_add(1, std::memory_order_relaxed);
      else
        spdlog::warn("prefetch: blob {}: {}", id.hex(), ec.message());
      std::lock_guard lock(w->mutex);
      w->ok = w->ok && !ec;
      --w->left;
      w->cv.notify_all();
    });
  }
  std::unique_lock lock(w->mutex);
  const bool all = w->cv.wait_until(lock, deadline, [&] { return w->left == 0; });
  return {todo.size(), all && w->ok};
}

}  // namespace edge::sync
