#include "test_util.hpp"

#include <chrono>
#include <cstring>
#include <optional>

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace edge::store::testing {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "edge-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> out(n);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i)
    out[i] = static_cast<std::uint8_t>(rng());
  return out;
}

ChunkStoreOptions Node::small_segments() {
  ChunkStoreOptions o;
  o.segment_bytes = 2ULL << 20;  // small segments so tests seal and roll them
  return o;
}

Node::Node(const std::filesystem::path& d, ChunkStoreOptions o) : dir(d), options(o) {
  reopen();
}

void Node::close() {
  blobs.reset();
  chunks.reset();
  db.reset();
}

void Node::reopen() {
  close();
  db = Database::open(dir / "db");
  chunks = ChunkStore::open(*db, dir / "segments", options);
  blobs = std::make_unique<BlobStore>(*chunks);
}

KilledChild run_until_killed(const std::function<void(int fd)>& child, std::mt19937& rng,
                             unsigned max_delay_ms) {
  KilledChild out;
  int fds[2];
  if (::pipe(fds) != 0)
    throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    try {
      child(fds[1]);
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  ::close(fds[1]);
  char chunk[4096];
  const auto start = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> deadline;
  while (!deadline || std::chrono::steady_clock::now() < *deadline) {
    if (!deadline && std::chrono::steady_clock::now() - start > std::chrono::seconds(60))
      break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 5) > 0) {
      const ssize_t k = ::read(fds[0], chunk, sizeof chunk);
      if (k <= 0)
        break;
      out.output.append(chunk, static_cast<std::size_t>(k));
      if (!deadline && out.output.find('\n') != std::string::npos) {
        deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % max_delay_ms);
      }
    }
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.killed = WIFSIGNALED(status);
  out.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
  // Lines already in the pipe were acknowledged before the kill.
  ssize_t k;
  while ((k = ::read(fds[0], chunk, sizeof chunk)) > 0)
    out.output.append(chunk, static_cast<std::size_t>(k));
  ::close(fds[0]);
  return out;
}

void write_ack(int fd, const std::string& line) {
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    _exit(4);
}

Sha256 put_chunk(ChunkStore& store, const std::vector<std::uint8_t>& bytes) {
  const Sha256 id = sha256_of(bytes);
  auto r = store.put(id, bytes);
  EXPECT_TRUE(r) << (r ? "" : r.error().message());
  return id;
}

}  // namespace edge::store::testing
