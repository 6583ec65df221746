// Throughput of the hashing and chunking primitives (issue #2): SHA-256, XXH3, FastCDC.
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "edge/core/fastcdc.hpp"
#include "edge/core/sha256.hpp"

namespace {

std::vector<std::uint8_t> data(std::size_t n) {
  std::mt19937_64 rng(1);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out)
    b = static_cast<std::uint8_t>(rng());
  return out;
}

void BM_Sha256(benchmark::State& state) {
  const auto buf = data(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state)
    benchmark::DoNotOptimize(edge::sha256_of(buf));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Sha256)->Arg(64 << 10)->Arg(1 << 20);

void BM_Xxh3(benchmark::State& state) {
  const auto buf = data(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state)
    benchmark::DoNotOptimize(edge::xxh3_64(buf));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3)->Arg(64 << 10)->Arg(1 << 20);

void BM_FastCdc(benchmark::State& state) {
  const auto buf = data(16 << 20);
  std::size_t chunks = 0;
  for (auto _ : state) {
    edge::ChunkStream stream;
    auto on = [&](std::span<const std::uint8_t>) { ++chunks; };
    stream.update(buf, on);
    stream.finish(on);
  }
  benchmark::DoNotOptimize(chunks);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * buf.size()));
}
BENCHMARK(BM_FastCdc)->Unit(benchmark::kMillisecond);

}  // namespace
