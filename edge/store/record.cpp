#include "edge/store/record.hpp"

#include <cstring>

#include "edge/core/crc32c.hpp"

namespace edge::store {
namespace {

constexpr char kSegmentMagic[8] = {'B', 'E', 'S', 'E', 'G', 'M', 'N', 'T'};

template <class T>
void store_le(std::uint8_t* p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);  // x86-64 and aarch64 are little-endian
}
template <class T>
T load_le(const std::uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

std::array<std::uint8_t, kRecordHeaderBytes> encode_record_header(
    const Sha256& id, std::span<const std::uint8_t> body, std::uint16_t flags) noexcept {
  std::array<std::uint8_t, kRecordHeaderBytes> h{};
  store_le<std::uint32_t>(h.data(), kRecordMagic);
  store_le<std::uint16_t>(h.data() + 4, kRecordVersion);
  store_le<std::uint16_t>(h.data() + 6, flags);
  std::memcpy(h.data() + 8, id.bytes.data(), Sha256::kSize);
  store_le<std::uint32_t>(h.data() + 40, static_cast<std::uint32_t>(body.size()));
  store_le<std::uint64_t>(h.data() + 48, xxh3_64(body));
  store_le<std::uint32_t>(h.data() + 56, crc32c(h.data(), 56));
  return h;
}

Result<RecordHeader> decode_record_header(std::span<const std::uint8_t> bytes) noexcept {
  if (bytes.size() < kRecordHeaderBytes)
    return Errc::kInvalidArgument;
  const std::uint8_t* p = bytes.data();
  if (load_le<std::uint32_t>(p) != kRecordMagic)
    return Errc::kBadMagic;
  if (load_le<std::uint32_t>(p + 56) != crc32c(p, 56))
    return Errc::kCorrupt;
  if (load_le<std::uint16_t>(p + 4) != kRecordVersion)
    return Errc::kUnsupportedVersion;
  RecordHeader h;
  std::memcpy(h.id.bytes.data(), p + 8, Sha256::kSize);
  h.flags = load_le<std::uint16_t>(p + 6);
  h.length = load_le<std::uint32_t>(p + 40);
  h.xxh3 = load_le<std::uint64_t>(p + 48);
  if (h.length > kMaxRecordBody)
    return Errc::kCorrupt;
  return h;
}

bool body_matches(const RecordHeader& header, std::span<const std::uint8_t> body) noexcept {
  return body.size() == header.length && xxh3_64(body) == header.xxh3;
}

std::array<std::uint8_t, kSegmentHeaderBytes> encode_segment_header(std::uint64_t id) noexcept {
  std::array<std::uint8_t, kSegmentHeaderBytes> h{};
  std::memcpy(h.data(), kSegmentMagic, sizeof kSegmentMagic);
  store_le<std::uint16_t>(h.data() + 8, kSegmentVersion);
  store_le<std::uint64_t>(h.data() + 16, id);
  store_le<std::uint32_t>(h.data() + 24, crc32c(h.data(), 24));
  return h;
}

Result<std::uint64_t> decode_segment_header(std::span<const std::uint8_t> bytes) noexcept {
  if (bytes.size() < kSegmentHeaderBytes)
    return Errc::kInvalidArgument;
  const std::uint8_t* p = bytes.data();
  if (std::memcmp(p, kSegmentMagic, sizeof kSegmentMagic) != 0)
    return Errc::kBadMagic;
  if (load_le<std::uint32_t>(p + 24) != crc32c(p, 24))
    return Errc::kCorrupt;
  if (load_le<std::uint16_t>(p + 8) != kSegmentVersion)
    return Errc::kUnsupportedVersion;
  return load_le<std::uint64_t>(p + 16);
}

}  // namespace edge::store
