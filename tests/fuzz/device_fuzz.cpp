// Device requests: the /channel_self query string and version strings come from devices.
// (The JSON bodies are parsed by Boost.JSON; the request logic is covered by integration tests.)
#include <cstdint>
#include <string_view>

#include "edge/api/device.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& [k, v] : edge::api::parse_query(text)) {
    if (k.size() > text.size() || v.size() > text.size())
      __builtin_trap();
  }
  if (auto v = edge::api::coerce_version_build(text))
    (void)v->to_string();
  (void)edge::api::encode_path(text);
  (void)edge::api::valid_app_id(text);
  (void)edge::api::valid_device_id(text);
  return 0;
}
