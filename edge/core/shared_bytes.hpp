#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace edge {

/// Bytes shared read-only between threads: `size` bytes at `data`, kept alive by `owner`.
/// A fill receives a run of chunks into one buffer, hashes each chunk in place, streams it
/// and stores it from there: slices share the buffer instead of copying it (DESIGN §10).
struct SharedBytes {
  std::shared_ptr<const void> owner;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;

  explicit operator bool() const noexcept { return owner != nullptr; }
  std::span<const std::uint8_t> span() const noexcept { return {data, size}; }
  /// Bytes [offset, offset + n) of these, sharing their owner.
  SharedBytes slice(std::size_t offset, std::size_t n) const noexcept {
    return {owner, data + offset, n};
  }
  /// Takes `bytes` over.
  static SharedBytes of(std::vector<std::uint8_t> bytes);
  /// `n` bytes of new memory that is not zero-filled (whoever fills it writes through
  /// `writable` before sharing the result).
  static SharedBytes uninitialized(std::size_t n, std::uint8_t*& writable);
};

}  // namespace edge
