#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "edge/store/blob_store.hpp"
#include "edge/store/chunk_store.hpp"
#include "edge/store/database.hpp"

namespace edge::store::testing {

/// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed);

/// Database + ChunkStore + BlobStore over one directory, reopenable.
struct Node {
  explicit Node(const std::filesystem::path& dir, ChunkStoreOptions options = small_segments());
  void reopen();
  void close();
  static ChunkStoreOptions small_segments();

  std::filesystem::path dir;
  ChunkStoreOptions options;
  std::unique_ptr<Database> db;
  std::unique_ptr<ChunkStore> chunks;
  std::unique_ptr<BlobStore> blobs;
};

/// Puts `bytes` as a chunk and returns its id (asserting success).
Sha256 put_chunk(ChunkStore& store, const std::vector<std::uint8_t>& bytes);

}  // namespace edge::store::testing
