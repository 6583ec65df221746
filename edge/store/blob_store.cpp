#include "edge/store/blob_store.hpp"

#include <algorithm>
#include <cstring>
#include <future>
#include <unordered_set>
#include <utility>

#include <boost/asio/post.hpp>

namespace edge::store {

using boost::system::error_code;

namespace {

constexpr std::uint8_t kRecipeVersion = 1;
constexpr std::size_t kRecipeHeader = 1 + 8 + 4;
constexpr std::size_t kRecipeEntry = 32 + 4;
constexpr std::uint64_t kPutInFlightLimit = 64ULL << 20;

template <class T>
void store_le(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T>
T load_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

// --- Recipe -----------------------------------------------------------------------------

std::string Recipe::encode() const {
  std::string out(kRecipeHeader + chunks.size() * kRecipeEntry, '\0');
  out[0] = static_cast<char>(kRecipeVersion);
  store_le<std::uint64_t>(out.data() + 1, size);
  store_le<std::uint32_t>(out.data() + 9, static_cast<std::uint32_t>(chunks.size()));
  char* p = out.data() + kRecipeHeader;
  for (const auto& c : chunks) {
    std::memcpy(p, c.id.bytes.data(), 32);
    store_le<std::uint32_t>(p + 32, c.length);
    p += kRecipeEntry;
  }
  return out;
}

Sha256 Recipe::digest() const {
  return sha256_of(encode());
}

Result<Recipe> Recipe::decode(const Sha256& id, std::string_view bytes) {
  if (bytes.size() < kRecipeHeader)
    return Errc::kCorrupt;
  if (static_cast<std::uint8_t>(bytes[0]) != kRecipeVersion)
    return Errc::kUnsupportedVersion;
  const auto size = load_le<std::uint64_t>(bytes.data() + 1);
  const auto count = load_le<std::uint32_t>(bytes.data() + 9);
  if ((bytes.size() - kRecipeHeader) / kRecipeEntry != count ||
      (bytes.size() - kRecipeHeader) % kRecipeEntry != 0) {
    return Errc::kCorrupt;
  }
  std::vector<ChunkRef> chunks(count);
  const char* p = bytes.data() + kRecipeHeader;
  for (auto& c : chunks) {
    std::memcpy(c.id.bytes.data(), p, 32);
    c.length = load_le<std::uint32_t>(p + 32);
    if (c.length == 0 || c.length > FastCdc::kMaxChunkBytes)
      return Errc::kCorrupt;
    p += kRecipeEntry;
  }
  Recipe r = make(id, std::move(chunks));
  if (r.size != size)
    return Errc::kCorrupt;
  return r;
}

Recipe Recipe::make(const Sha256& id, std::vector<ChunkRef> chunks) {
  Recipe r;
  r.id = id;
  r.chunks = std::move(chunks);
  r.starts.reserve(r.chunks.size());
  for (const auto& c : r.chunks) {
    r.starts.push_back(r.size);
    r.size += c.length;
  }
  return r;
}

void merge_adjacent(std::vector<Piece>& pieces) {
  if (pieces.empty())
    return;
  std::size_t out = 0;
  for (std::size_t i = 1; i < pieces.size(); ++i) {
    Piece& last = pieces[out];
    if (!last.memory && !pieces[i].memory && pieces[i].segment == last.segment &&
        last.offset + last.length == pieces[i].offset) {
      last.length += pieces[i].length;
    } else {
      pieces[++out] = std::move(pieces[i]);
    }
  }
  pieces.resize(out + 1);
}

FileStretch file_stretch(std::span<const Piece> pieces, std::uint64_t max_gap,
                         std::uint64_t max_bytes) {
  if (pieces.empty() || pieces.front().memory || !pieces.front().segment)
    return {};
  const Piece& first = pieces.front();
  FileStretch s{first.offset, first.length, 1};
  for (const Piece& p : pieces.subspan(1)) {
    const std::uint64_t end = s.offset + s.length;
    if (p.memory || p.segment != first.segment || p.offset < end || p.offset - end > max_gap ||
        p.offset + p.length - s.offset > max_bytes) {
      break;
    }
    s.length = p.offset + p.length - s.offset;
    ++s.pieces;
  }
  return s;
}

// --- BlobWriter -------------------------------------------------------------------------

// Shared with the put completions, which may outlive the writer.
struct BlobWriter::State {
  mutable std::mutex mutex;
  mutable std::condition_variable cv;
  std::uint64_t in_flight = 0;
  std::size_t outstanding = 0;
  error_code first_error;
  std::function<void()> on_drained;  // set by finish()
  std::function<void()> waiter;      // set by async_wait_in_flight_below()
  std::uint64_t wait_limit = 0;
};

BlobWriter::BlobWriter(ChunkStore& chunks, const FastCdc& cdc)
    : store_(chunks), stream_(cdc), state_(std::make_shared<State>()) {}

void BlobWriter::write(std::span<const std::uint8_t> data) {
  hasher_.update(data);
  size_ += data.size();
  stream_.update(data, [this](std::span<const std::uint8_t> c) { put_chunk(c); });
}

void BlobWriter::put_chunk(std::span<const std::uint8_t> chunk) {
  const Sha256 id = sha256_of(chunk);
  chunks_.push_back({id, static_cast<std::uint32_t>(chunk.size())});
  {
    std::lock_guard lock(state_->mutex);
    state_->in_flight += chunk.size();
    ++state_->outstanding;
  }
  store_.async_put(id, std::vector<std::uint8_t>(chunk.begin(), chunk.end()), {},
                   [state = state_, n = chunk.size()](error_code ec, bool) {
                     std::function<void()> drained;
                     std::function<void()> resume;
                     {
                       std::lock_guard lock(state->mutex);
                       state->in_flight -= n;
                       --state->outstanding;
                       if (ec && !state->first_error)
                         state->first_error = ec;
                       if (state->outstanding == 0)
                         drained = std::move(state->on_drained);
                       // A paused upload resumes once enough is stored (else it waits for
                       // ever: the socket is not read while it waits).
                       if (state->waiter && state->in_flight <= state->wait_limit)
                         resume = std::exchange(state->waiter, nullptr);
                     }
                     state->cv.notify_all();
                     if (resume)
                       resume();
                     if (drained)
                       drained();
                   });
}

std::uint64_t BlobWriter::bytes_in_flight() const {
  std::lock_guard lock(state_->mutex);
  return state_->in_flight;
}

void BlobWriter::async_wait_in_flight_below(std::uint64_t limit, const ChunkStore::Executor& ex,
                                            std::function<void()> handler) {
  auto run = [ex, h = std::move(handler)]() mutable {
    if (ex) {
      boost::asio::post(ex, std::move(h));
    } else {
      h();
    }
  };
  {
    std::lock_guard lock(state_->mutex);
    if (state_->in_flight > limit) {
      state_->wait_limit = limit;
      state_->waiter = std::move(run);
      return;
    }
  }
  run();
}

void BlobWriter::wait_in_flight_below(std::uint64_t limit) const {
  std::unique_lock lock(state_->mutex);
  state_->cv.wait(lock, [&] { return state_->in_flight <= limit; });
}

void BlobWriter::finish(std::optional<Sha256> expected, const ChunkStore::Executor& ex,
                        FinishHandler handler) {
  stream_.finish([this](std::span<const std::uint8_t> c) { put_chunk(c); });
  const Sha256 id = hasher_.finish();
  Recipe recipe = Recipe::make(id, std::move(chunks_));
  chunks_.clear();
  BlobInfo info{id, recipe.size, recipe.chunks.size(), false};
  auto complete = [ex, h = std::move(handler)](error_code ec, BlobInfo i) mutable {
    if (ex) {
      boost::asio::post(ex, [h = std::move(h), ec, i]() mutable { h(ec, i); });
    } else {
      h(ec, i);
    }
  };
  // The recipe is committed last, once every chunk is durable (and only if the bytes are
  // the ones the caller announced).
  auto commit = [store = &store_, state = state_, expected, recipe = std::move(recipe), info,
                 complete = std::move(complete)]() mutable {
    error_code ec;
    {
      std::lock_guard lock(state->mutex);
      ec = state->first_error;
    }
    if (!ec && expected && *expected != info.id)
      ec = make_error_code(Errc::kChecksumMismatch);
    if (ec) {
      complete(ec, info);
      return;
    }
    std::unordered_set<Sha256, Sha256Hash> seen;
    std::vector<Sha256> needs;
    for (const auto& c : recipe.chunks) {
      if (seen.insert(c.id).second)
        needs.push_back(c.id);
    }
    store->async_put_blob(
        info.id, recipe.encode(), std::move(needs), {},
        [info, complete = std::move(complete)](error_code ec2, bool inserted) mutable {
          BlobInfo i = info;
          i.inserted = inserted;
          complete(ec2, i);
        });
  };
  bool now = false;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->outstanding == 0) {
      now = true;
    } else {
      state_->on_drained = std::move(commit);
    }
  }
  if (now)
    commit();
}

// --- BlobStore --------------------------------------------------------------------------

BlobStore::BlobStore(ChunkStore& chunks, FastCdc cdc, std::size_t recipe_cache)
    : chunks_(chunks), cdc_(cdc), cache_(recipe_cache) {}

std::unique_ptr<BlobWriter> BlobStore::begin() {
  return std::unique_ptr<BlobWriter>(new BlobWriter(chunks_, cdc_));
}

// Ends a blocking put: waits for the recipe commit on the calling thread.
static Result<BlobInfo> finish_blocking(BlobWriter& w, std::optional<Sha256> expected) {
  std::promise<std::pair<error_code, BlobInfo>> p;
  auto f = p.get_future();
  w.finish(expected, {}, [&p](error_code ec, BlobInfo info) { p.set_value({ec, info}); });
  auto [ec, info] = f.get();
  if (ec)
    return ec;
  return info;
}

Result<BlobInfo> BlobStore::put(std::span<const std::uint8_t> bytes,
                                std::optional<Sha256> expected) {
  auto w = begin();
  constexpr std::size_t kSlice = 1 << 20;
  for (std::size_t off = 0; off < bytes.size(); off += kSlice) {
    w->write(bytes.subspan(off, std::min(kSlice, bytes.size() - off)));
    w->wait_in_flight_below(kPutInFlightLimit);
  }
  return finish_blocking(*w, expected);
}

Result<BlobInfo> BlobStore::put(std::istream& in, std::optional<Sha256> expected) {
  auto w = begin();
  std::vector<std::uint8_t> buf(1 << 20);
  while (in) {
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0)
      break;
    w->write(std::span(buf).first(n));
    w->wait_in_flight_below(kPutInFlightLimit);
  }
  if (in.bad())
    return Errc::kIo;
  return finish_blocking(*w, expected);
}

Result<std::shared_ptr<const Recipe>> BlobStore::recipe(const Sha256& id) const {
  if (auto hit = cache_.get(id))
    return *hit;
  const std::uint64_t epoch = cache_.epoch(id);
  auto bytes = chunks_.get_blob(id);
  if (!bytes)
    return bytes.error();
  auto r = Recipe::decode(id, *bytes);
  if (!r)
    return r.error();
  auto shared = std::make_shared<const Recipe>(std::move(*r));
  cache_.insert(id, shared, epoch);
  return shared;
}

Result<GarbageReport> BlobStore::erase_garbage(std::vector<Sha256> blobs,
                                               std::vector<Sha256> chunks) {
  const std::vector<Sha256> gone = blobs;
  auto r = chunks_.erase_garbage(std::move(blobs), std::move(chunks));
  // Also after a failure: whatever was committed must not be answered from the cache.
  for (const auto& id : gone)
    cache_.erase(id);
  return r;
}

Result<std::vector<Piece>> BlobStore::resolve(const Recipe& recipe, std::uint64_t first,
                                              std::uint64_t length, Sha256* missing) const {
  if (length == 0)
    return std::vector<Piece>{};
  if (first >= recipe.size || length > recipe.size - first)
    return Errc::kRangeNotSatisfiable;
  // The chunk that holds `first`: the last start <= first.
  auto it = std::upper_bound(recipe.starts.begin(), recipe.starts.end(), first);
  std::size_t i = static_cast<std::size_t>(it - recipe.starts.begin()) - 1;
  std::vector<Piece> pieces;
  std::uint64_t pos = first;
  const std::uint64_t end = first + length;
  for (; pos < end; ++i) {
    const ChunkRef& c = recipe.chunks[i];
    auto loc = chunks_.find(c.id);
    if (!loc) {
      if (missing != nullptr)
        *missing = c.id;
      return loc.error();
    }
    const std::uint64_t within = pos - recipe.starts[i];
    const std::uint64_t n = std::min<std::uint64_t>(c.length - within, end - pos);
    pieces.push_back({std::move(loc->segment), loc->offset + within, n});
    pos += n;
  }
  merge_adjacent(pieces);
  return pieces;
}

Result<bool> BlobStore::put_recipe(const Recipe& recipe, bool pinned) {
  std::uint64_t size = 0;
  std::unordered_set<Sha256, Sha256Hash> seen;
  std::vector<Sha256> needs;  // the commit checks that each is indexed
  Sha256Hasher hasher;
  for (const auto& c : recipe.chunks) {
    if (!pinned) {
      auto body = chunks_.read(c.id);
      if (!body)
        return body.error();
      if (body->size() != c.length)
        return Errc::kChecksumMismatch;
      hasher.update(*body);
    }
    size += c.length;
    if (seen.insert(c.id).second)
      needs.push_back(c.id);
  }
  if (size != recipe.size || (!pinned && hasher.finish() != recipe.id))
    return Errc::kChecksumMismatch;
  std::promise<std::pair<error_code, bool>> p;
  auto f = p.get_future();
  chunks_.async_put_blob(recipe.id, recipe.encode(), std::move(needs), {},
                         [&p](error_code ec, bool inserted) {
                           p.set_value({ec, inserted});
                         });
  const auto [ec, inserted] = f.get();
  if (ec)
    return ec;
  return inserted;
}

Result<std::vector<std::uint8_t>> BlobStore::read(const Sha256& id) const {
  auto r = recipe(id);
  if (!r)
    return r.error();
  std::vector<std::uint8_t> out;
  out.reserve((*r)->size);
  for (const auto& c : (*r)->chunks) {
    auto body = chunks_.read(c.id);
    if (!body)
      return body.error();
    out.insert(out.end(), body->begin(), body->end());
  }
  return out;
}

}  // namespace edge::store
