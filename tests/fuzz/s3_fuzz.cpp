// S3 answers are bytes from the network: a ListObjectsV2 page and the <Code> of an error body
// (DESIGN §12.2), parsed by edge/s3.
#include <cstdint>
#include <string_view>

#include "edge/s3/s3_client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)edge::s3::parse_listing(text);
  (void)edge::s3::parse_timestamp(text);
  (void)edge::s3::error_code_of(text);
  (void)edge::s3::parse_endpoint(text);
  return 0;
}
