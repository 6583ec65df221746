#pragma once

// A scripted HTTP server on 127.0.0.1 (port 0) for origin-sync's unit tests: it accepts one
// connection and, for each scripted answer in turn, reads one request head and sends the
// answer's pieces with a pause between them; then closes.

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace edge::sync::test_support {

// Accepts one connection and, for each scripted answer in turn, reads one request head
// and sends the answer's pieces with a pause between them; then closes.
class ScriptedServer {
 public:
  using Answers = std::vector<std::vector<std::string>>;
  explicit ScriptedServer(Answers answers) : answers_(std::move(answers)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }
  /// The head of the last request read.
  std::string last_head() const {
    std::lock_guard lock(mutex_);
    return last_head_;
  }

 private:
  void run() {
    const int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0)
      return;
    std::string in;
    for (const auto& pieces : answers_) {
      while (in.find("\r\n\r\n") == std::string::npos) {
        char buf[4096];
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        in.append(buf, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        last_head_ = in.substr(0, in.find("\r\n\r\n"));
      }
      in.erase(0, in.find("\r\n\r\n") + 4);
      ++requests_;
      for (const auto& piece : pieces) {
        (void)::send(c, piece.data(), piece.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    ::close(c);
  }

  Answers answers_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> requests_{0};
  mutable std::mutex mutex_;
  std::string last_head_;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace edge::sync::test_support
