// Crash test (issue #2): a child process puts random chunks and blobs from several threads
// and reports each id only after the call returned; the parent SIGKILLs it at a random
// moment, reopens the store, and checks that everything acknowledged is present and
// byte-exact and that no index entry points at bad bytes. 30+ kill/reopen rounds.
#include <chrono>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "edge/store/blob_store.hpp"

#include "test_util.hpp"
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace edge::store {
namespace {

using testing::Node;
using testing::random_bytes;
using testing::TempDir;

struct Acked {
  char kind;  // 'C' chunk, 'B' blob
  std::uint64_t seed;
  std::size_t size;
};

[[noreturn]] void child_main(const std::filesystem::path& dir, int out_fd, std::uint64_t round,
                             const ChunkStoreOptions& options) {
  try {
    Node n(dir, options);
    std::vector<std::thread> threads;
    for (std::uint64_t t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(round * 1000 + t);
        for (std::uint64_t i = 0;; ++i) {
          const std::uint64_t seed = (round << 32) | (t << 24) | i;
          const bool blob = rng() % 4 == 0;
          const std::size_t size = blob ? rng() % (600 * 1024) : 1 + rng() % (80 * 1024);
          const auto bytes = random_bytes(size, seed);
          bool ok = false;
          if (blob) {
            ok = n.blobs->put(bytes).has_value();
          } else {
            ok = n.chunks->put(sha256_of(bytes), bytes).has_value();
          }
          if (!ok)
            _exit(3);
          // One write() of a short line is atomic on a pipe: the parent sees whole lines.
          const std::string line = std::string(1, blob ? 'B' : 'C') + " " + std::to_string(seed) +
                                   " " + std::to_string(size) + "\n";
          if (::write(out_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
            _exit(4);
        }
      });
    }
    for (auto& th : threads)
      th.join();
  } catch (...) {
    _exit(2);
  }
  _exit(0);
}

void parse_lines(std::string& buffer, std::vector<Acked>& acked) {
  std::size_t nl;
  while ((nl = buffer.find('\n')) != std::string::npos) {
    std::istringstream line(buffer.substr(0, nl));
    buffer.erase(0, nl + 1);
    Acked a{};
    line >> a.kind >> a.seed >> a.size;
    acked.push_back(a);
  }
}

void verify(Node& n, const Acked& a) {
  const auto bytes = random_bytes(a.size, a.seed);
  const auto id = sha256_of(bytes);
  if (a.kind == 'C') {
    auto r = n.chunks->read(id);
    ASSERT_TRUE(r) << "acknowledged chunk " << id.hex() << " lost";
    ASSERT_EQ(*r, bytes);
  } else {
    auto r = n.blobs->read(id);
    ASSERT_TRUE(r) << "acknowledged blob " << id.hex() << " lost";
    ASSERT_EQ(*r, bytes);
  }
}

// `kRounds` kill -9 rounds of the child against a store opened with `options`.
void kill_rounds(const ChunkStoreOptions& options, const int kRounds) {
  TempDir tmp;
  std::vector<Acked> acked;
  std::mt19937 rng(20261126);
  std::size_t max_reindexed = 0;
  std::uint64_t max_reverified = 0;
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_main(tmp.path(), fds[1], static_cast<std::uint64_t>(round) + 1, options);
    }
    ::close(fds[1]);
    // The kill comes at a random moment after the child's first acknowledgement, so that it
    // lands while puts are in flight however slow start-up is (sanitizers, a busy machine).
    std::string buffer;
    const std::size_t before = acked.size();
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
        buffer.append(chunk, static_cast<std::size_t>(k));
        if (!deadline && buffer.find('\n') != std::string::npos) {
          deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % 400);
        }
      }
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << WEXITSTATUS(status);
    // Lines already in the pipe were acknowledged before the kill.
    ssize_t k;
    while ((k = ::read(fds[0], chunk, sizeof chunk)) > 0)
      buffer.append(chunk, static_cast<std::size_t>(k));
    ::close(fds[0]);
    parse_lines(buffer, acked);

    Node n(tmp.path(), options);
    max_reindexed = std::max<std::size_t>(max_reindexed, n.chunks->recovery().records_reindexed);
    max_reverified = std::max(max_reverified, n.chunks->recovery().bytes_reverified);
    EXPECT_TRUE(n.chunks->recovery().problems.empty())
        << (n.chunks->recovery().problems.empty() ? "" : n.chunks->recovery().problems[0]);
    for (std::size_t i = before; i < acked.size(); ++i)
      verify(n, acked[i]);
    auto bad = n.chunks->verify_index();
    ASSERT_TRUE(bad);
    ASSERT_TRUE(bad->empty()) << bad->size() << " index entries point at bad bytes";
    if (round == kRounds - 1) {
      for (const auto& a : acked)
        verify(n, a);  // and nothing older was lost later
    }
    if (::testing::Test::HasFatalFailure())
      return;
  }
  EXPECT_GE(acked.size(), static_cast<std::size_t>(kRounds)) << "every round acknowledged puts";
  std::printf(
      "crash test (%s sync): %zu acknowledged puts over %d kills; max records re-indexed in "
      "one recovery: %zu; max bytes re-verified past the watermark: %llu\n",
      options.sync_in_background ? "background" : "always", acked.size(), kRounds, max_reindexed,
      static_cast<unsigned long long>(max_reverified));
}

TEST(Crash, KillNineLosesNothingAcknowledged) {
  kill_rounds(Node::small_segments(), 32);
}

// Edge durability as a cache (DESIGN §10): chunks synced in the background. kill -9 keeps
// the page cache, so nothing acknowledged is lost either; every record past the watermark
// is re-verified at open.
TEST(Crash, KillNineLosesNothingWithBackgroundSync) {
  auto options = Node::small_segments();
  options.sync_in_background = true;
  options.sync_every_bytes = 4ULL << 20;
  options.sync_every_ms = 200;
  kill_rounds(options, 12);
}

}  // namespace
}  // namespace edge::store
