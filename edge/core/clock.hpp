#pragma once

#include <chrono>
#include <cstdint>

namespace edge {

/// Wall-clock time in milliseconds since the Unix epoch: what check-ins, audit records and
/// status reports carry (never used to measure durations: steady_clock does that).
inline std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace edge
