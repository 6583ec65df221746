#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "edge/core/errc.hpp"

namespace edge {

/// A SHA-256 digest: the address of every chunk and blob (DESIGN §2). 32 raw bytes; the
/// text form is 64 lower-case hex characters.
struct Sha256 {
  static constexpr std::size_t kSize = 32;
  std::array<std::uint8_t, kSize> bytes{};

  /// Parses exactly 64 hex characters. Upper-case digits are accepted (they name the same
  /// digest); anything else, or another length, is Errc::kInvalidArgument.
  static Result<Sha256> parse(std::string_view hex) noexcept;
  /// Builds a digest from 32 raw bytes; other lengths are Errc::kInvalidArgument.
  static Result<Sha256> from_bytes(std::span<const std::uint8_t> raw) noexcept;

  /// 64 lower-case hex characters.
  std::string hex() const;
  std::span<const std::uint8_t, kSize> span() const noexcept { return bytes; }
  /// The first 8 bytes as a big-endian integer: a uniform number for bucketing.
  std::uint64_t leading_u64() const noexcept;

  friend bool operator==(const Sha256&, const Sha256&) = default;
  friend auto operator<=>(const Sha256&, const Sha256&) = default;
};

/// Hash functor for unordered containers: the first 8 bytes of a SHA-256 are already
/// uniformly distributed, but we run XXH3 over all 32 so that chosen ids cannot collide
/// buckets cheaply.
struct Sha256Hash {
  std::size_t operator()(const Sha256& id) const noexcept;
};

/// Streaming SHA-256 (OpenSSL EVP). Not thread-safe; one per stream. Cheap to move.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(Sha256Hasher&& other) noexcept;
  Sha256Hasher& operator=(Sha256Hasher&& other) noexcept;
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void update(std::span<const std::uint8_t> data) noexcept;
  void update(std::string_view data) noexcept;
  /// Returns the digest of everything fed so far and resets the hasher for a new stream.
  Sha256 finish() noexcept;

 private:
  void* ctx_;  // EVP_MD_CTX*, kept opaque so OpenSSL headers stay out of ours
};

/// One-shot SHA-256 of a buffer.
Sha256 sha256_of(std::span<const std::uint8_t> data) noexcept;
Sha256 sha256_of(std::string_view data) noexcept;

/// XXH3-64 of a buffer (record checksums at rest, in-memory hashing).
std::uint64_t xxh3_64(std::span<const std::uint8_t> data) noexcept;
std::uint64_t xxh3_64(const void* data, std::size_t size) noexcept;

/// The value of one hex digit (either case), or -1.
int hex_value(char c) noexcept;

/// Lower-case hex of any bytes.
std::string to_hex(std::span<const std::uint8_t> data);

}  // namespace edge
