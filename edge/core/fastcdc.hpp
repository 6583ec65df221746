#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge {

/// FastCDC sizes. Defaults are DESIGN §2's: min 16 KiB, average 64 KiB, max 256 KiB.
struct FastCdcParams {
  std::size_t min_bytes = 16 * 1024;
  std::size_t avg_bytes = 64 * 1024;
  std::size_t max_bytes = 256 * 1024;
};

/// Content-defined chunking after Xia et al., "FastCDC" (USENIX ATC '16): a gear rolling
/// hash, cut-point skipping below `min_bytes`, and normalized chunking (a stricter mask
/// before `avg_bytes`, a looser one after) so that sizes cluster around the average.
/// Deterministic: the same bytes always cut at the same places, on every machine and build,
/// because the gear table is a fixed function of a fixed seed.
class FastCdc {
 public:
  /// Largest chunk the store accepts (DESIGN §2), so the largest max_bytes allowed.
  static constexpr std::size_t kMaxChunkBytes = 1024 * 1024;

  /// Checks 64 <= min <= avg <= max <= kMaxChunkBytes; Errc::kInvalidArgument otherwise.
  static Result<FastCdc> make(FastCdcParams params) noexcept;
  FastCdc() noexcept : FastCdc(FastCdcParams{}, 0) {}

  /// Length of the chunk that starts at data[0]. Returns 0 when more bytes are needed to
  /// decide (no cut found and data is shorter than max_bytes, and `last` is false). With
  /// `last` true, the tail is a chunk of its own even below min_bytes.
  std::size_t cut(std::span<const std::uint8_t> data, bool last) const noexcept;

  const FastCdcParams& params() const noexcept { return params_; }

 private:
  FastCdc(FastCdcParams params, int) noexcept;
  FastCdcParams params_;
  std::uint64_t mask_small_;  // more bits set: harder to match before the average
  std::uint64_t mask_large_;  // fewer bits set: easier to match after it
};

/// Streaming front end of FastCdc: feed bytes in pieces of any size, receive chunks.
/// The chunk boundaries equal those of FastCdc over the concatenated stream. Buffers at
/// most max_bytes plus one input piece. Not thread-safe.
class ChunkStream {
 public:
  explicit ChunkStream(FastCdc cdc = {}) : cdc_(cdc) {}

  /// Appends bytes and calls `on_chunk(std::span<const std::uint8_t>)` for every chunk
  /// that is now complete. The span is valid only during the call.
  template <class OnChunk>
  void update(std::span<const std::uint8_t> data, OnChunk&& on_chunk) {
    buffer_.insert(buffer_.end(), data.begin(), data.end());
    drain(false, on_chunk);
  }

  /// Emits the remaining bytes as the last chunk(s); the stream can then be reused.
  template <class OnChunk>
  void finish(OnChunk&& on_chunk) {
    drain(true, on_chunk);
    buffer_.clear();
    pos_ = 0;
  }

 private:
  template <class OnChunk>
  void drain(bool last, OnChunk& on_chunk) {
    while (pos_ < buffer_.size()) {
      const std::span<const std::uint8_t> rest(buffer_.data() + pos_, buffer_.size() - pos_);
      // Decide only with a full window (or at the end): scanning a growing buffer again
      // on every small update would be quadratic.
      if (!last && rest.size() < cdc_.params().max_bytes)
        break;
      const std::size_t n = cdc_.cut(rest, last);
      if (n == 0)
        break;
      on_chunk(rest.first(n));
      pos_ += n;
    }
    // Compact once the consumed prefix dominates, so copying stays O(1) per byte.
    if (pos_ > 0 && pos_ * 2 >= buffer_.size()) {
      buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
      pos_ = 0;
    }
  }

  FastCdc cdc_;
  std::vector<std::uint8_t> buffer_;
  std::size_t pos_ = 0;
};

}  // namespace edge
