#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "edge/core/errc.hpp"
#include "edge/core/sha256.hpp"

namespace edge::store {

/// Segment file layout (DESIGN §3). All integers little-endian.
///
/// File header, 32 bytes:
///   0 magic "BESEGMNT" (8)  8 version u16  10 reserved u16  12 reserved u32
///  16 segment id u64        24 crc32c of bytes [0,24) u32    28 zero u32
///
/// Record, 64-byte header + body:
///   0 magic u32 0x43524542 ("BERC")  4 version u16  6 flags u16
///   8 sha256 of the body (32)       40 body length u32  44 reserved u32
///  48 xxh3_64 of the body u64       56 crc32c of bytes [0,56) u32  60 zero u32
/// The key is inside the record, so the index can be rebuilt from segments alone.
inline constexpr std::size_t kSegmentHeaderBytes = 32;
inline constexpr std::size_t kRecordHeaderBytes = 64;
inline constexpr std::uint16_t kSegmentVersion = 1;
inline constexpr std::uint16_t kRecordVersion = 1;
inline constexpr std::uint32_t kRecordMagic = 0x43524542;
inline constexpr std::uint32_t kMaxRecordBody = 1024 * 1024;  ///< a chunk is 1 MiB at most

struct RecordHeader {
  Sha256 id;
  std::uint32_t length = 0;
  std::uint64_t xxh3 = 0;
  std::uint16_t flags = 0;
};

/// Encodes the header of a record holding `body` named `id`.
std::array<std::uint8_t, kRecordHeaderBytes> encode_record_header(
    const Sha256& id, std::span<const std::uint8_t> body, std::uint16_t flags = 0) noexcept;

/// Parses and checks a record header: kBadMagic, kUnsupportedVersion, kCorrupt (crc or a
/// length above kMaxRecordBody), kInvalidArgument (fewer than 64 bytes). Safe on any bytes.
Result<RecordHeader> decode_record_header(std::span<const std::uint8_t> bytes) noexcept;

/// True if `body` matches the header's length and XXH3.
bool body_matches(const RecordHeader& header, std::span<const std::uint8_t> body) noexcept;

std::array<std::uint8_t, kSegmentHeaderBytes> encode_segment_header(std::uint64_t id) noexcept;

/// Parses a segment file header; returns its segment id. kBadMagic, kUnsupportedVersion,
/// kCorrupt, kInvalidArgument as for records.
Result<std::uint64_t> decode_segment_header(std::span<const std::uint8_t> bytes) noexcept;

}  // namespace edge::store
