#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
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

/// What a child process wrote to its pipe, and how it ended (run_until_killed).
struct KilledChild {
  bool killed = false;  ///< ended by the SIGKILL (not on its own)
  int exit_status = 0;  ///< its exit status when it ended on its own
  std::string output;   ///< everything it wrote, including what was in the pipe at the kill
};

/// Forks a child that runs `child(fd)` (it writes a line to `fd` per acknowledged write with
/// write_ack, and runs until killed; an exception ends it with status 2) and SIGKILLs it at a
/// random moment: up to `max_delay_ms` (from `rng`) after its first line, so that the kill lands
/// while writes are in flight however slow start-up is, or after 60 s without one.
KilledChild run_until_killed(const std::function<void(int fd)>& child, std::mt19937& rng,
                             unsigned max_delay_ms);

/// In a run_until_killed child: writes `line` (ending in '\n') to `fd` in one write(), which
/// is atomic on a pipe for a short line, so the parent sees whole lines; exits with status 4
/// if it cannot.
void write_ack(int fd, const std::string& line);

/// Puts `bytes` as a chunk and returns its id (asserting success).
Sha256 put_chunk(ChunkStore& store, const std::vector<std::uint8_t>& bytes);

}  // namespace edge::store::testing
