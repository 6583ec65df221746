#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "edge/api/response.hpp"
#include "edge/api/sync.hpp"
#include "edge/store/blob_store.hpp"

namespace edge::api {

/// A byte range of a blob sent while its chunks fill from upstream (DESIGN §10): the
/// response walks the recipe in order; a chunk already here goes out at once, a missing one
/// is filled (single flight per chunk, so many devices on one blob share every fetch) and
/// goes out once it is verified, from the verified bytes in memory while the store writes
/// them (a stream never waits for the disk, nor reads back what it just filled). Fills run a window
/// of chunks ahead of the one being sent. Only the chunks the range covers are fetched. When a
/// stream that covered the whole blob ends and the recipe is not stored yet, the blob is completed
/// through Filler::fill_blob (which checks the blob's SHA-256 and stores its recipe).
///
/// `recipe` must be trusted (stored, or matching its release's recipe_sha256: see
/// Filler::fill_recipe): chunks are verified one by one, the recipe is what orders them.
/// Thread-safety: next() is called by one connection at a time; fill callbacks arrive on
/// fetch threads; both take the stream's mutex.
class FillStream final : public BodyStream, public std::enable_shared_from_this<FillStream> {
 public:
  FillStream(store::ChunkStore& chunks, store::BlobStore& blobs, Filler& filler,
             std::shared_ptr<const store::Recipe> recipe, std::uint64_t first, std::uint64_t length,
             Route route);
  void next(Ready ready) override;
  Response failure(boost::system::error_code ec) const override;

  static constexpr std::size_t kWindow = 64;  ///< chunks filled ahead of the one being sent
  static constexpr std::size_t kBatch = 16;   ///< chunks handed out by one next() at most

 private:
  enum class State : std::uint8_t { kIdle, kFetching, kReady, kFailed };
  // Chunks [issued_, cursor_ + kWindow) become fills; returns the ones to ask for. Caller
  // holds mutex_.
  std::vector<std::size_t> issue_locked();
  void request(const std::vector<std::size_t>& slots);
  void on_filled(std::size_t slot, boost::system::error_code ec, SharedBytes bytes);

  store::ChunkStore& chunks_;
  store::BlobStore& blobs_;
  Filler& filler_;
  std::shared_ptr<const store::Recipe> recipe_;
  std::uint64_t first_;  ///< first byte of the range
  std::uint64_t end_;    ///< one past its last byte
  std::size_t chunk0_;   ///< the recipe index of the range's first chunk
  Route route_;

  std::mutex mutex_;
  std::vector<State> state_;                      // per chunk of the range; guarded by mutex_
  std::vector<boost::system::error_code> error_;  // guarded by mutex_
  /// Verified bytes of chunks not handed out yet that the store may not have written
  /// (null: read from the store); guarded by mutex_. Dropped once handed out.
  std::vector<SharedBytes> bytes_;
  std::size_t cursor_ = 0;  // next chunk to hand out; mutex_
  std::size_t issued_ = 0;  // chunks looked at for fills; mutex_
  Ready waiting_;           // a next() waiting for the chunk at cursor_; guarded by mutex_
  bool completed_ = false;  // guarded by mutex_
};

/// The answer to a fill that failed with `ec` (`what`: "blob <id>" or "chunk <id>"): 404
/// if upstream lacks it, 503 below store.min_free, 502 verification_failed for bytes that
/// did not hash to their id, 502 upstream_unavailable otherwise.
Response fill_failure(Route route, const std::string& what, boost::system::error_code ec);

}  // namespace edge::api
