#include "edge/store/control_log.hpp"

namespace edge::store {

bool LocalControlLog::wait_change(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return interrupted_; });
  return false;
}

void LocalControlLog::interrupt() {
  {
    std::lock_guard lock(mutex_);
    interrupted_ = true;
  }
  cv_.notify_all();
}

}  // namespace edge::store
