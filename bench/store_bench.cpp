// ChunkStore figures (issue #2):
//  - put MB/s with group commit, next to a plain sequential write + fdatasync of the same
//    bytes at the same durability points, in the same run;
//  - find() lookups/s with 1M chunks indexed (EDGE_BENCH_SMALL=1: 20k, for the ctest run);
//  - recovery time of that store after kill -9 (reported as the counter recovery_ms).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using edge::Sha256;
using edge::store::ChunkStore;
using edge::store::Database;

fs::path bench_dir() {
  static const fs::path dir = [] {
    std::string t = (fs::temp_directory_path() / "edge-bench-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr)
      std::abort();
    return fs::path(t);
  }();
  return dir;
}

std::vector<std::uint8_t> bytes_for(std::uint64_t i, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  std::mt19937_64 rng(i);
  for (std::size_t k = 0; k < n; k += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + k, &v, std::min<std::size_t>(8, n - k));
  }
  return out;
}

// Waits for N async completions.
struct Latch {
  std::mutex m;
  std::condition_variable cv;
  std::size_t left;
  explicit Latch(std::size_t n) : left(n) {}
  void done() {
    std::lock_guard l(m);
    if (--left == 0)
      cv.notify_all();
  }
  void wait() {
    std::unique_lock l(m);
    cv.wait(l, [&] { return left == 0; });
  }
};

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kPerIteration = 256;  // 16 MiB per iteration

void BM_ChunkStorePut(benchmark::State& state) {
  const fs::path dir = bench_dir() / "put";
  fs::remove_all(dir);
  auto db = Database::open(dir / "db");
  auto store = ChunkStore::open(*db, dir / "segments");
  std::uint64_t next = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::vector<std::uint8_t>> bodies;
    std::vector<Sha256> ids;
    for (std::size_t i = 0; i < kPerIteration; ++i) {
      bodies.push_back(bytes_for(++next, kChunk));
      ids.push_back(edge::sha256_of(bodies.back()));
    }
    state.ResumeTiming();
    // The SHA-256 verification inside async_put is part of the measured cost.
    Latch latch(kPerIteration);
    for (std::size_t i = 0; i < kPerIteration; ++i) {
      store->async_put(ids[i], std::move(bodies[i]), {},
                       [&latch](boost::system::error_code ec, bool) {
                         if (ec)
                           std::abort();
                         latch.done();
                       });
    }
    latch.wait();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPerIteration * kChunk));
  store.reset();
  db.reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_ChunkStorePut)->Unit(benchmark::kMillisecond)->UseRealTime();

// Baseline: the same bytes appended to one file with pwrite, one fdatasync per 16 MiB
// (the put benchmark's group commits are at most 16 MiB too).
void BM_PlainSequentialWrite(benchmark::State& state) {
  const fs::path path = bench_dir() / "plain.dat";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    std::abort();
  std::uint64_t next = 0;
  off_t off = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::vector<std::uint8_t>> bodies;
    for (std::size_t i = 0; i < kPerIteration; ++i)
      bodies.push_back(bytes_for(++next, kChunk));
    state.ResumeTiming();
    for (const auto& b : bodies) {
      if (::pwrite(fd, b.data(), b.size(), off) != static_cast<ssize_t>(b.size()))
        std::abort();
      off += static_cast<off_t>(b.size());
    }
    ::fdatasync(fd);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPerIteration * kChunk));
  ::close(fd);
  fs::remove(path);
}
BENCHMARK(BM_PlainSequentialWrite)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- the big store: built by a child that is then SIGKILLed -----------------------------

std::size_t big_count() {
  return std::getenv("EDGE_BENCH_SMALL") != nullptr ? 20000 : 1000000;
}
constexpr std::size_t kSmallChunk = 64;

struct Big {
  std::unique_ptr<Database> db;
  std::unique_ptr<ChunkStore> store;
  std::vector<Sha256> ids;
  double recovery_ms = 0;
};
Big* g_big = nullptr;

void build_big_and_recover() {
  const fs::path dir = bench_dir() / "big";
  const std::size_t n = big_count();
  std::fprintf(stderr, "store_bench: building a store of %zu chunks in a child process...\n", n);
  int fds[2];
  if (::pipe(fds) != 0)
    std::abort();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    auto db = Database::open(dir / "db");
    auto store = ChunkStore::open(*db, dir / "segments");
    constexpr std::size_t kWindow = 8192;
    for (std::size_t base = 0; base < n; base += kWindow) {
      const std::size_t k = std::min(kWindow, n - base);
      Latch latch(k);
      for (std::size_t i = base; i < base + k; ++i) {
        auto b = bytes_for(i, kSmallChunk);
        const auto id = edge::sha256_of(b);
        store->async_put(id, std::move(b), {}, [&latch](boost::system::error_code ec, bool) {
          if (ec)
            _exit(3);
          latch.done();
        });
      }
      latch.wait();
      if ((base / kWindow) % 16 == 0)
        std::fprintf(stderr, "  %zu / %zu\n", base + k, n);
    }
    (void)::write(fds[1], "x", 1);  // every put is acknowledged
    ::pause();                      // and then the process is killed, not closed
    _exit(0);
  }
  ::close(fds[1]);
  char c;
  if (::read(fds[0], &c, 1) != 1)
    std::abort();
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(fds[0]);

  g_big = new Big;
  const auto t0 = std::chrono::steady_clock::now();
  g_big->db = Database::open(dir / "db");
  g_big->store = ChunkStore::open(*g_big->db, dir / "segments");
  g_big->recovery_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "store_bench: recovery after kill -9 with %zu chunks: %.1f ms\n", n,
               g_big->recovery_ms);
  if (g_big->store->stats().chunks != n) {
    std::fprintf(stderr, "store_bench: expected %zu chunks, found %llu\n", n,
                 static_cast<unsigned long long>(g_big->store->stats().chunks));
    std::abort();
  }
  for (std::size_t i = 0; i < n; ++i)
    g_big->ids.push_back(edge::sha256_of(bytes_for(i, kSmallChunk)));
}

void BM_FindWithManyChunks(benchmark::State& state) {
  std::mt19937_64 rng(7);
  const auto& ids = g_big->ids;
  benchmark::IterationCount found = 0;
  for (auto _ : state) {
    auto r = g_big->store->find(ids[rng() % ids.size()]);
    found += r.has_value();
  }
  if (found != state.iterations())
    state.SkipWithError("a lookup missed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["chunks"] = static_cast<double>(ids.size());
  state.counters["recovery_ms"] = g_big->recovery_ms;
}
BENCHMARK(BM_FindWithManyChunks);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  build_big_and_recover();  // before any store thread exists in this process: fork is safe
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_big->store.reset();
  g_big->db.reset();
  fs::remove_all(bench_dir());
  return 0;
}
