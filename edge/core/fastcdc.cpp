#include "edge/core/fastcdc.hpp"

#include <algorithm>
#include <array>
#include <bit>

namespace edge {
namespace {

// The gear table: 256 pseudo-random 64-bit values from SplitMix64 with a fixed seed.
// Changing the seed changes every cut point, which would break deduplication against
// chunks already stored: never change it.
constexpr std::array<std::uint64_t, 256> make_gear() {
  std::array<std::uint64_t, 256> gear{};
  std::uint64_t state = 0x62756e646c652d65ULL;  // "bundle-e"
  for (auto& g : gear) {
    state += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    g = z ^ (z >> 31);
  }
  return gear;
}

constexpr auto kGear = make_gear();

// With the hash shifted left once per byte, bit k depends on the last k+1 bytes, so the
// mask takes the top bits: they carry the most context.
constexpr std::uint64_t top_bits(int n) {
  return n <= 0 ? 0 : ~0ULL << (64 - n);
}

}  // namespace

Result<FastCdc> FastCdc::make(FastCdcParams params) noexcept {
  if (params.min_bytes < 64 || params.min_bytes > params.avg_bytes ||
      params.avg_bytes > params.max_bytes || params.max_bytes > kMaxChunkBytes) {
    return Errc::kInvalidArgument;
  }
  return FastCdc(params, 0);
}

FastCdc::FastCdc(FastCdcParams params, int) noexcept : params_(params) {
  // Normalization level 2 (the paper's recommended setting).
  const int bits = std::bit_width(params.avg_bytes) - 1;
  mask_small_ = top_bits(bits + 2);
  mask_large_ = top_bits(std::max(bits - 2, 1));
}

std::size_t FastCdc::cut(std::span<const std::uint8_t> data, bool last) const noexcept {
  const std::size_t size = data.size();
  if (size == 0)
    return 0;
  if (size <= params_.min_bytes)
    return last ? size : 0;
  const std::size_t limit = std::min(size, params_.max_bytes);
  const std::size_t normal = std::min(limit, params_.avg_bytes);
  const std::uint8_t* p = data.data();
  std::uint64_t fp = 0;
  std::size_t i = params_.min_bytes;
  for (; i < normal; ++i) {
    fp = (fp << 1) + kGear[p[i]];
    if ((fp & mask_small_) == 0)
      return i + 1;
  }
  for (; i < limit; ++i) {
    fp = (fp << 1) + kGear[p[i]];
    if ((fp & mask_large_) == 0)
      return i + 1;
  }
  // No cut point inside the bytes we have: the decision is final only at max_bytes or
  // at the end of the stream.
  if (limit == params_.max_bytes || last)
    return limit;
  return 0;
}

}  // namespace edge
