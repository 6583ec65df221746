// Admin JSON bodies (apps, releases, channels, devices) arrive over the network.
#include <cstdint>
#include <string_view>

#include "edge/control/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)edge::control::parse_app(text);
  (void)edge::control::parse_device(text);
  if (auto r = edge::control::parse_release(text);
      std::holds_alternative<edge::control::ReleaseDoc>(r)) {
    const std::string text = edge::control::to_json(std::get<edge::control::ReleaseDoc>(r));
    const auto again = edge::control::parse_release(text);
    if (!std::holds_alternative<edge::control::ReleaseDoc>(again) ||
        edge::control::to_json(std::get<edge::control::ReleaseDoc>(again)) != text)
      __builtin_trap();
  }
  if (auto c = edge::control::parse_channel(text);
      std::holds_alternative<edge::control::Channel>(c)) {
    // Round trip: what we write, we read back.
    const auto again =
        edge::control::parse_channel(edge::control::to_json(std::get<edge::control::Channel>(c)));
    if (!std::holds_alternative<edge::control::Channel>(again))
      __builtin_trap();
  }
  return 0;
}
