#include "test_util.hpp"

#include <cstring>

#include <gtest/gtest.h>

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

Sha256 put_chunk(ChunkStore& store, const std::vector<std::uint8_t>& bytes) {
  const Sha256 id = sha256_of(bytes);
  auto r = store.put(id, bytes);
  EXPECT_TRUE(r) << (r ? "" : r.error().message());
  return id;
}

}  // namespace edge::store::testing
