#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edge/pg/connection.hpp"

namespace edge::pg {

/// Work that one origin of the tier does for all (DESIGN §12.2: retention sweeps, pushes,
/// auto-pause evaluation): it runs on the origin that holds a PostgreSQL advisory lock
/// (session level, on a connection of its own). When that origin dies, its session ends,
/// the server releases the lock, and another origin takes it at its next try (every
/// `interval`, default 1 s): takeover within about two intervals plus the time the server
/// needs to notice a dead client (TCP keepalives: about 10 s for a machine that vanished,
/// at once for a killed process).
class Singleton {
 public:
  explicit Singleton(std::string url, std::chrono::milliseconds interval = std::chrono::seconds(1));
  ~Singleton();
  Singleton(const Singleton&) = delete;
  Singleton& operator=(const Singleton&) = delete;

  /// Runs `fn` every `period` while this origin holds the lock (on the singleton's thread,
  /// so tasks must not block for long). Add before start().
  void add_task(std::string name, std::chrono::milliseconds period, std::function<void()> fn);
  void start();
  void stop();
  /// True while this origin holds the lock (as of the last check).
  bool held() const { return held_.load(std::memory_order_relaxed); }
  /// Times this origin took the lock.
  std::uint64_t acquisitions() const { return acquired_.load(std::memory_order_relaxed); }

 private:
  void run();

  struct Task {
    std::string name;
    std::chrono::milliseconds period;
    std::function<void()> fn;
    std::chrono::steady_clock::time_point next{};
  };
  Connection conn_;
  std::chrono::milliseconds interval_;
  std::vector<Task> tasks_;
  std::atomic<bool> held_{false};
  std::uint64_t session_ = 0;  ///< conn_.opens() when the lock was taken
  std::atomic<std::uint64_t> acquired_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace edge::pg
