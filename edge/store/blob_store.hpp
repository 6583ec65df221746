#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/core/fastcdc.hpp"
#include "edge/core/sha256.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/lru_cache.hpp"

namespace edge::store {

struct ChunkRef {
  Sha256 id;
  std::uint32_t length = 0;
  friend bool operator==(const ChunkRef&, const ChunkRef&) = default;
};

/// A blob's recipe: its chunks in order (DESIGN §2). Immutable once committed.
struct Recipe {
  Sha256 id;
  std::uint64_t size = 0;
  std::vector<ChunkRef> chunks;
  std::vector<std::uint64_t> starts;  ///< starts[i]: offset of chunks[i] within the blob

  /// Binary form stored in the `blobs` column family: u8 version (1), le64 size, le32
  /// count, then count x (sha256, le32 length).
  std::string encode() const;
  /// Parses and checks the binary form (sizes must add up): Errc::kCorrupt otherwise.
  /// Safe on any bytes.
  static Result<Recipe> decode(const Sha256& id, std::string_view bytes);
  /// SHA-256 of encode(): what a release's `recipe_sha256` pins, so that an edge can trust
  /// a recipe it fetched before it streams by it (DESIGN §10).
  Sha256 digest() const;
  /// Builds a recipe and its `starts` from chunk refs.
  static Recipe make(const Sha256& id, std::vector<ChunkRef> chunks);
  friend bool operator==(const Recipe&, const Recipe&) = default;
};

/// A contiguous run of blob bytes in one segment file: send `length` bytes from `offset`
/// of `segment->fd()`.
struct Piece {
  std::shared_ptr<const SegmentFile> segment;  ///< null for a piece in memory
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  /// Set instead of `segment`: bytes [offset, offset + length) of a chunk verified in
  /// memory, which a streaming fill sends before the store has written it (DESIGN §10).
  SharedBytes memory{};
};

/// Merges pieces whose bytes follow each other in the same file, so one sendfile call can
/// move them. (Bodies of consecutive records are separated by their 64-byte headers, so
/// this fires only for pieces split inside one record.)
void merge_adjacent(std::vector<Piece>& pieces);

/// Bytes [offset, offset + length) of one segment file that hold a run of pieces sent one
/// after the other. A blob's consecutive chunks usually follow each other in one segment,
/// 64 bytes of record header apart: one page-cache probe (and, when cold, one io_uring read)
/// then covers the run instead of one per piece.
struct FileStretch {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::size_t pieces = 0;  ///< how many of the pieces, from the first, lie in it
};

/// The stretch that starts with pieces[0]: it takes the next piece while that one is in the
/// same file, starts at or after the end of the stretch, at most `max_gap` bytes past it, and
/// the stretch stays within `max_bytes` (the first piece is always taken whole). A piece in
/// memory (or no pieces) gives an empty stretch.
FileStretch file_stretch(std::span<const Piece> pieces, std::uint64_t max_gap,
                         std::uint64_t max_bytes);

struct BlobInfo {
  Sha256 id;
  std::uint64_t size = 0;
  std::size_t chunks = 0;
  bool inserted = false;  ///< false if the blob already existed
};

class BlobStore;

/// Streams one blob into the store: bytes are cut with FastCDC, each chunk is hashed and
/// handed to ChunkStore::async_put as soon as it is complete, and the recipe is committed
/// last, after every chunk is durable. Memory is bounded by the caller: stop feeding while
/// bytes_in_flight() is high (the server pauses the socket; put() waits).
///
/// Not thread-safe: one producer thread calls write() and finish().
class BlobWriter {
 public:
  using FinishHandler = std::function<void(boost::system::error_code ec, BlobInfo info)>;

  /// Feeds the next bytes of the blob. Errors (a failed chunk put) surface in finish().
  void write(std::span<const std::uint8_t> data);
  /// Ends the blob. If `expected` is set and differs from the SHA-256 of the bytes,
  /// completes with Errc::kChecksumMismatch and commits no recipe. Call once.
  void finish(std::optional<Sha256> expected, const ChunkStore::Executor& ex,
              FinishHandler handler);
  /// Chunk bytes handed to the store that are not durable yet.
  std::uint64_t bytes_in_flight() const;
  /// Calls `handler` on `ex` once bytes_in_flight() <= limit (at once if it already is).
  /// One waiter at a time: the event-loop way to pause reading an upload.
  void async_wait_in_flight_below(std::uint64_t limit, const ChunkStore::Executor& ex,
                                  std::function<void()> handler);
  /// Blocks until bytes_in_flight() <= limit. For threads that may block.
  void wait_in_flight_below(std::uint64_t limit) const;
  std::uint64_t size() const noexcept { return size_; }

 private:
  friend class BlobStore;
  struct State;
  BlobWriter(ChunkStore& chunks, const FastCdc& cdc);
  void put_chunk(std::span<const std::uint8_t> chunk);

  ChunkStore& store_;
  ChunkStream stream_;
  Sha256Hasher hasher_;
  std::uint64_t size_ = 0;
  std::vector<ChunkRef> chunks_;
  std::shared_ptr<State> state_;
};

/// Blobs on top of a ChunkStore: streaming puts, recipe lookup (cached), and the mapping
/// of a byte range to file pieces for sendfile.
///
/// Thread-safety: all methods may be called from any thread.
class BlobStore {
 public:
  explicit BlobStore(ChunkStore& chunks, FastCdc cdc = {}, std::size_t recipe_cache = 4096);

  /// Starts a streaming put.
  std::unique_ptr<BlobWriter> begin();
  /// Blocking puts for tools and tests. Memory stays bounded (at most ~64 MiB in flight).
  Result<BlobInfo> put(std::span<const std::uint8_t> bytes,
                       std::optional<Sha256> expected = std::nullopt);
  Result<BlobInfo> put(std::istream& in, std::optional<Sha256> expected = std::nullopt);

  /// Stores a recipe that came from elsewhere (an edge's fill from upstream, DESIGN §6)
  /// after checking it: every chunk must be stored, and their bytes in order must hash to
  /// the blob id (Errc::kChecksumMismatch otherwise; nothing is stored then). Blocking;
  /// returns whether the recipe was new.
  ///
  /// `pinned`: the recipe hashes to the recipe_sha256 its release pins (DESIGN §10). The
  /// origin made that recipe from the blob it hashed when it chunked it, and every chunk
  /// was verified when it was stored, so the bytes are not read back and hashed again
  /// (that read-back was a third of an edge's CPU per filled MiB); the chunks must still
  /// all be stored and their lengths add up.
  Result<bool> put_recipe(const Recipe& recipe, bool pinned = false);

  /// The recipe of blob `id`: Errc::kNotFound if unknown, kCorrupt if undecodable.
  Result<std::shared_ptr<const Recipe>> recipe(const Sha256& id) const;

  /// Maps bytes [first, first + length) of the blob to file pieces, in order, merged where
  /// adjacent. Errc::kRangeNotSatisfiable if the range leaves the blob; Errc::kNotFound if a
  /// chunk is not stored (then `*missing` names it: an edge fills it and retries).
  Result<std::vector<Piece>> resolve(const Recipe& recipe, std::uint64_t first,
                                     std::uint64_t length, Sha256* missing = nullptr) const;

  /// ChunkStore::erase_garbage, and the removed recipes leave the recipe cache (a lookup
  /// that raced the removal does not put one back). Blocking.
  Result<GarbageReport> erase_garbage(std::vector<Sha256> blobs, std::vector<Sha256> chunks);

  /// Reads the whole blob (verified chunk by chunk). For tests and tools.
  Result<std::vector<std::uint8_t>> read(const Sha256& id) const;

  ChunkStore& chunks() noexcept { return chunks_; }

 private:
  ChunkStore& chunks_;
  FastCdc cdc_;
  mutable LruCache<Sha256, std::shared_ptr<const Recipe>, Sha256Hash> cache_;
};

}  // namespace edge::store
