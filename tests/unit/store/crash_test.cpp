// Crash test (issue #2): a child process puts random chunks and blobs from several threads
// and reports each id only after the call returned; the parent SIGKILLs it at a random
// moment, reopens the store, and checks that everything acknowledged is present and
// byte-exact and that no index entry points at bad bytes. 30+ kill/reopen rounds.
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "edge/store/blob_store.hpp"

#include "test_util.hpp"
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

// The child of a round: puts from 4 threads until it is killed.
void child_main(const std::filesystem::path& dir, int out_fd, std::uint64_t round,
                const ChunkStoreOptions& options) {
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
        testing::write_ack(out_fd, std::string(1, blob ? 'B' : 'C') + " " + std::to_string(seed) +
                                       " " + std::to_string(size) + "\n");
      }
    });
  }
  for (auto& th : threads)
    th.join();
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
    const std::size_t before = acked.size();
    auto run = testing::run_until_killed(
        [&](int fd) { child_main(tmp.path(), fd, static_cast<std::uint64_t>(round) + 1, options); },
        rng, 400);
    ASSERT_TRUE(run.killed) << "child exited early with status " << run.exit_status;
    parse_lines(run.output, acked);

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
