// Upstream replies (DESIGN §6, §10): an edge reads whatever its upstream (or whoever holds
// the upstream's address) answers: the header through Beast, a sized body straight into
// its own buffer. Each input is sent as the whole reply by a server on 127.0.0.1 that then
// closes; the call must end (the close bounds it), and a body it returns is never longer
// than the limit asked for nor than what was sent.
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "origin-sync/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

constexpr std::uint64_t kLimit = 64 * 1024;

// Accepts connections one at a time; each gets the current reply after its request head.
struct ReplyServer {
  int fd = -1;
  std::uint16_t port = 0;
  std::mutex mutex;
  std::string reply;  // guarded by mutex

  ReplyServer() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0)
      __builtin_trap();
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    std::thread([this] { serve(); }).detach();  // lives for the process, as libFuzzer does
  }
  void serve() {
    while (true) {
      const int c = ::accept(fd, nullptr, nullptr);
      if (c < 0)
        continue;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0)
          break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      std::string out;
      {
        std::lock_guard lock(mutex);
        out = reply;
      }
      for (std::size_t sent = 0; sent < out.size();) {
        const ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n <= 0)
          break;
        sent += static_cast<std::size_t>(n);
      }
      ::close(c);
    }
  }
};

ReplyServer& server() {
  static ReplyServer* s = new ReplyServer();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& s = server();
  {
    std::lock_guard lock(s.mutex);
    s.reply.assign(reinterpret_cast<const char*>(data), size);
  }
  edge::sync::HttpClient client("http://127.0.0.1:" + std::to_string(s.port), "", 2000);
  auto r = client.request("GET", "/v1/chunks/x", {}, {}, 0, kLimit);
  if (r && (r->body.size > kLimit || r->body.size > size))
    __builtin_trap();
  return 0;
}
