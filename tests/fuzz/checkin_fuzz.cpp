// Check-ins carry device-supplied strings upstream: whatever bytes a device sent, a recorded
// (sanitised) check-in must encode to a batch the receiver's parser accepts, and decode to
// the same fields (issue #9 item 1: a field cut inside a UTF-8 character wedged an edge's
// outbox for good).
#include <cstdint>
#include <string_view>

#include "edge/api/sync.hpp"
#include "edge/core/utf8.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  edge::store::Checkin c;
  c.app_id = "com.example.app";
  c.device_id = "d";
  c.action = "updates";
  c.time_ms = 1;
  // The input is split at 0xff bytes into the free-text fields.
  std::string* fields[] = {&c.platform, &c.version_name, &c.version_build, &c.decision,
                           &c.device_id};
  for (std::string* f : fields) {
    const auto cut = text.find('\xff');
    f->assign(text.substr(0, cut));
    text = cut == std::string_view::npos ? std::string_view() : text.substr(cut + 1);
  }
  if (c.device_id.empty())
    c.device_id = "d";
  edge::store::sanitize(c);
  if (c.device_id.empty())
    return 0;  // the device endpoints refuse an empty device id before recording
  for (const std::string* f : fields) {
    if (f->size() > edge::store::kMaxCheckinField || !edge::valid_utf8(*f) ||
        f->find('\0') != std::string::npos)
      __builtin_trap();
  }
  const std::string wire = edge::api::encode_checkins({c});
  if (wire.size() != edge::api::encoded_checkin_size(c) + 15)  // {"checkins":[ ... ]}
    __builtin_trap();
  std::string error;
  auto back = edge::api::parse_checkins(wire, &error);
  if (!back || back->size() != 1)
    __builtin_trap();
  const auto& b = back->front();
  if (b.platform != c.platform || b.version_name != c.version_name ||
      b.version_build != c.version_build || b.decision != c.decision ||
      b.device_id != c.device_id || b.time_ms != c.time_ms)
    __builtin_trap();
  return 0;
}
