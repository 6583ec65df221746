#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "edge/core/errc.hpp"

namespace edge::store {

/// Appends to one file at a time with O_DIRECT (DESIGN §10): bytes go from a reused,
/// aligned buffer straight to the disk, without filling the page cache. A cache that grows
/// through the page cache pays for every new page, and on a VM with free page reporting a
/// page the guest has not used lately is a host fault: half of an edge's CPU during fills.
///
/// O_DIRECT writes whole blocks: the bytes before `offset` in its block (the end of the
/// previous append) are kept in memory, or read back once, and written again in front of
/// the new bytes; the last block is padded with zeros past the end. So the file can be up to
/// a block longer than what was appended: finish() cuts it back. Readers of the file through
/// an ordinary descriptor see every appended byte once write() returned (the kernel drops
/// cached pages of the range).
///
/// Not thread-safe: one writer thread.
class DirectAppender {
 public:
  static constexpr std::size_t kBlock = 4096;

  DirectAppender() = default;
  ~DirectAppender();
  DirectAppender(const DirectAppender&) = delete;
  DirectAppender& operator=(const DirectAppender&) = delete;

  /// Writes `len` bytes at `offset` of the file at `path` (opened with O_DIRECT on first
  /// use; `fd` is an ordinary descriptor of the same file, for reading back the head of the
  /// first block). Bytes of the file past `offset + len` in its last block become zeros.
  /// False if the filesystem refuses O_DIRECT (nothing written: the caller writes through
  /// the page cache instead); errors as open(2)'s, pread(2)'s and pwrite(2)'s.
  Result<bool> write(const std::filesystem::path& path, int fd, const std::uint8_t* bytes,
                     std::size_t len, std::uint64_t offset);
  /// Done with the file at `path`: it is cut to `end` bytes (the padding goes) through
  /// `fd`, and the O_DIRECT descriptor is closed. A no-op for a file this never wrote.
  Result<void> finish(const std::filesystem::path& path, int fd, std::uint64_t end);

 private:
  struct FreeAligned {
    void operator()(std::uint8_t* p) const noexcept;
  };
  void close_file();

  int direct_fd_ = -1;
  std::filesystem::path path_;
  std::vector<std::uint8_t> tail_;       // bytes [tail_end_ rounded down to kBlock, tail_end_)
  std::uint64_t tail_end_ = UINT64_MAX;  // UINT64_MAX: unknown, read back on the next write
  std::unique_ptr<std::uint8_t, FreeAligned> buffer_;
  std::size_t capacity_ = 0;
};

}  // namespace edge::store
