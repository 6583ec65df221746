#include "edge/store/blob_gate.hpp"

namespace edge::store {

Result<std::uint64_t> LocalBlobGate::enter() {
  std::lock_guard round(round_mutex_);
  std::lock_guard lock(mutex_);
  ++generation_;
  ++inside_;
  return ++next_ticket_;
}

void LocalBlobGate::leave(std::uint64_t, std::span<const Sha256> stored) {
  std::lock_guard lock(mutex_);
  if (inside_ > 0)
    --inside_;
  const auto now = Clock::now();
  for (const auto& id : stored) {
    if (recent_.size() >= max_recent_ && !recent_.contains(id)) {
      complete_since_ = now;  // one was not remembered: recipes wait a grace period
      continue;
    }
    recent_[id] = now;
  }
}

Result<std::uint64_t> LocalBlobGate::quiet() {
  std::lock_guard lock(mutex_);
  if (inside_ > 0)
    return make_error_code(Errc::kConflict);
  return generation_;
}

Result<bool> LocalBlobGate::exclusive(std::uint64_t generation,
                                      const std::function<Result<void>()>& round) {
  std::lock_guard hold(round_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (generation != generation_ || inside_ > 0)
      return false;
  }
  if (auto r = round(); !r)
    return r.error();
  return true;
}

std::optional<LocalBlobGate::Clock::time_point> LocalBlobGate::last_stored(const Sha256& id) const {
  std::lock_guard lock(mutex_);
  if (auto it = recent_.find(id); it != recent_.end())
    return it->second;
  return std::nullopt;
}

LocalBlobGate::Clock::time_point LocalBlobGate::forget_before(Clock::time_point t) {
  std::lock_guard lock(mutex_);
  std::erase_if(recent_, [t](const auto& kv) { return kv.second < t; });
  return complete_since_;
}

}  // namespace edge::store
