// Version strings arrive in device requests (capgo-protocol.md §1).
#include <cstdint>
#include <string_view>

#include "edge/core/semver.hpp"
#include "edge/core/sha256.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto v = edge::SemVer::parse(text)) {
    // Round trip: the canonical form parses to an equal version.
    auto again = edge::SemVer::parse(v->to_string());
    if (!again || !(*again == *v))
      __builtin_trap();
  }
  (void)edge::Sha256::parse(text);
  return 0;
}
