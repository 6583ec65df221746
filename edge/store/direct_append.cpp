#include "edge/store/direct_append.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace edge::store {
namespace {

using boost::system::error_code;

error_code sys_error(int err) {
  return {err, boost::system::system_category()};
}

}  // namespace

void DirectAppender::FreeAligned::operator()(std::uint8_t* p) const noexcept {
  std::free(p);  // NOLINT(cppcoreguidelines-no-malloc): from std::aligned_alloc
}

DirectAppender::~DirectAppender() {
  close_file();
}

void DirectAppender::close_file() {
  if (direct_fd_ >= 0)
    ::close(direct_fd_);
  direct_fd_ = -1;
  path_.clear();
  tail_end_ = UINT64_MAX;
}

Result<bool> DirectAppender::write(const std::filesystem::path& path, int fd,
                                   const std::uint8_t* bytes, std::size_t len,
                                   std::uint64_t offset) {
  if (path != path_) {
    close_file();
    direct_fd_ = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (direct_fd_ < 0)
      return errno == EINVAL ? Result<bool>(false) : Result<bool>(sys_error(errno));
    path_ = path;
  }
  const std::uint64_t base = offset / kBlock * kBlock;
  const auto head = static_cast<std::size_t>(offset - base);
  if (tail_end_ != offset) {
    // Not where the last write ended (a new file, or a batch that was thrown away): the
    // head of the block is read back once.
    tail_.resize(head);
    std::size_t got = 0;
    while (got < head) {
      const ssize_t n = ::pread(fd, tail_.data() + got, head - got, static_cast<off_t>(base + got));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return sys_error(n < 0 ? errno : EIO);
      got += static_cast<std::size_t>(n);
    }
  }
  const std::size_t total = (head + len + kBlock - 1) / kBlock * kBlock;
  if (capacity_ < total) {
    // Grown, never shrunk: a reused buffer is memory the guest already has.
    buffer_.reset(static_cast<std::uint8_t*>(std::aligned_alloc(kBlock, total)));
    capacity_ = buffer_ != nullptr ? total : 0;
    if (buffer_ == nullptr)
      return sys_error(ENOMEM);
  }
  std::uint8_t* buf = buffer_.get();
  if (head > 0)
    std::memcpy(buf, tail_.data(), head);
  if (len > 0)
    std::memcpy(buf + head, bytes, len);
  std::memset(buf + head + len, 0, total - head - len);
  for (std::size_t done = 0; done < total;) {
    const ssize_t n =
        ::pwrite(direct_fd_, buf + done, total - done, static_cast<off_t>(base + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return sys_error(n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
    if (done < total && done % kBlock != 0)
      return sys_error(EIO);  // a short write off a block boundary cannot go on aligned
  }
  const std::uint64_t end = offset + len;
  const std::uint64_t last = end / kBlock * kBlock;
  tail_.assign(buf + (last - base), buf + (end - base));
  tail_end_ = end;
  return true;
}

Result<void> DirectAppender::finish(const std::filesystem::path& path, int fd, std::uint64_t end) {
  if (path != path_)
    return {};
  close_file();
  if (::ftruncate(fd, static_cast<off_t>(end)) != 0)
    return sys_error(errno);
  return {};
}

}  // namespace edge::store
