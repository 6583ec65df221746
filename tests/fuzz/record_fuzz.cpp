// Segment records and recipes come off the disk (and, for recipes, from upstream later):
// their parsers must accept any bytes without crashing.
#include <cstdint>
#include <string_view>

#include "edge/store/blob_store.hpp"
#include "edge/store/record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  if (auto h = edge::store::decode_record_header(bytes)) {
    if (size >= edge::store::kRecordHeaderBytes) {
      (void)edge::store::body_matches(*h, bytes.subspan(edge::store::kRecordHeaderBytes));
    }
  }
  (void)edge::store::decode_segment_header(bytes);
  (void)edge::store::Recipe::decode(edge::Sha256{},
                                    std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
