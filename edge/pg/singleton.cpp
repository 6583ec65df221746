#include "edge/pg/singleton.hpp"

#include "edge/core/sched.hpp"
#include "edge/pg/schema.hpp"

#include <spdlog/spdlog.h>

namespace edge::pg {

Singleton::Singleton(std::string url, std::chrono::milliseconds interval)
    : conn_(std::move(url), "bundle-edge-singleton"), interval_(interval) {}

Singleton::~Singleton() {
  stop();
}

void Singleton::add_task(std::string name, std::chrono::milliseconds period,
                         std::function<void()> fn) {
  tasks_.push_back({std::move(name), period, std::move(fn)});
}

void Singleton::start() {
  if (!thread_.joinable())
    thread_ = named_thread("singleton", [this] { run(); });
}

void Singleton::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  if (held_.exchange(false))
    conn_.reset();  // ends the session: the lock is free for another origin at once
}

void Singleton::run() {
  const std::string key = std::to_string(kLockSingleton);
  std::unique_lock lock(mutex_);
  while (!stop_) {
    lock.unlock();
    if (!held_.load()) {
      auto r = conn_.exec("SELECT pg_try_advisory_lock($1)", {key});
      if (r && r->text(0, 0) == "t") {
        held_ = true;
        session_ = conn_.opens();
        acquired_.fetch_add(1);
        spdlog::info("tier: this origin now runs the singleton work (retention, pushes)");
        for (auto& t : tasks_)
          t.next = std::chrono::steady_clock::now();
      }
    } else if (auto r = conn_.exec("SELECT 1"); !r || conn_.opens() != session_) {
      // The session is gone, and with it the lock: another origin may hold it now.
      held_ = false;
      spdlog::warn("tier: lost the singleton lock ({}); trying to take it again",
                   conn_.last_error());
    }
    if (held_.load()) {
      const auto now = std::chrono::steady_clock::now();
      for (auto& t : tasks_) {
        if (now < t.next)
          continue;
        t.fn();
        t.next = now + t.period;
      }
    }
    lock.lock();
    cv_.wait_for(lock, interval_, [&] { return stop_; });
  }
}

}  // namespace edge::pg
