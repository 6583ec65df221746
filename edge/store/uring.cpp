#include "edge/store/uring.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>

#include <liburing.h>

#include "edge/core/sched.hpp"
#include "edge/store/database.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace edge::store {

struct IoRing::Op {
  enum class Kind { kRead, kWriteSync, kWake };
  Kind kind;
  int fd;
  std::uint64_t offset;
  std::uint8_t* buf;
  std::size_t len;
  std::size_t done = 0;  // bytes transferred so far
  int pending_cqes = 0;  // a write+fsync link produces two
  int write_res = 0;
  int sync_res = 0;
  Handler handler;
};

namespace {
// The low bit of user_data tells the fsync half of a linked write+fsync from the write.
constexpr std::uintptr_t kFsyncTag = 1;
}  // namespace

IoRing::IoRing(unsigned entries) : ring_(new io_uring), capacity_(entries) {
  if (const int rc = io_uring_queue_init(entries, ring_, 0); rc < 0) {
    delete ring_;
    throw StoreError(Errc::kIo, "io_uring_queue_init(" + std::to_string(entries) +
                                    ") failed: " + std::strerror(-rc) +
                                    " (the store needs io_uring: Linux >= 5.10 without a "
                                    "seccomp filter that blocks it)");
  }
  // The reaper sleeps in read(2) on an eventfd the kernel signals per completion, rather
  // than inside io_uring_enter: tools that serialise threads (valgrind) know read blocks.
  event_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0 || io_uring_register_eventfd(ring_, event_fd_) < 0) {
    io_uring_queue_exit(ring_);
    delete ring_;
    throw StoreError(Errc::kIo,
                     std::string("io_uring eventfd registration failed: ") + std::strerror(errno));
  }
  // The reaper starts with the first submission.
}

IoRing::~IoRing() {
  // A NOP wakes the reaper (or starts one); it exits once everything in flight has
  // completed.
  submit(new Op{Op::Kind::kWake, -1, 0, nullptr, 0, 0, 0, 0, 0, {}});
  std::thread reaper;
  {
    std::lock_guard lock(mutex_);
    reaper.swap(reaper_);
  }
  reaper.join();
  io_uring_queue_exit(ring_);
  ::close(event_fd_);
  delete ring_;
}

void IoRing::async_read(int fd, std::uint64_t offset, void* buf, std::size_t len, Handler handler) {
  submit(new Op{Op::Kind::kRead, fd, offset, static_cast<std::uint8_t*>(buf), len, 0, 0, 0, 0,
                std::move(handler)});
}

void IoRing::async_write_sync(int fd, std::uint64_t offset, const void* buf, std::size_t len,
                              Handler handler) {
  submit(new Op{Op::Kind::kWriteSync, fd, offset,
                const_cast<std::uint8_t*>(static_cast<const std::uint8_t*>(buf)), len, 0, 0, 0, 0,
                std::move(handler)});
}

void IoRing::start_reaper_locked() {
  if (reaping_)
    return;
  // The last reaper has left reap_loop (it cleared reaping_ under mutex_ on its way out):
  // joining it takes no longer than its return.
  if (reaper_.joinable())
    reaper_.join();
  reaping_ = true;
  reaper_ = named_thread("uring-reaper", [this] {
    // The default slice, as when the store opened it: whoever submits first (a storage
    // thread with server.background_slice_us) does not pass on its own.
    (void)set_thread_slice(std::chrono::microseconds{0});
    reap_loop();
  });
}

void IoRing::submit(Op* op) {
  std::lock_guard lock(mutex_);
  start_reaper_locked();
  const unsigned need = op->kind == Op::Kind::kWriteSync ? 2 : 1;
  if (in_flight_ + need > capacity_ || !waiting_.empty()) {
    waiting_.push_back(op);
    return;
  }
  prepare_locked(op);
  io_uring_submit(ring_);
}

void IoRing::prepare_locked(Op* op) {
  const std::size_t rest = op->len - op->done;
  // A single read/write moves at most 2 GiB - 4 KiB on Linux; the loop covers the rest.
  const unsigned n = static_cast<unsigned>(std::min<std::size_t>(rest, 1U << 30));
  io_uring_sqe* sqe = io_uring_get_sqe(ring_);
  switch (op->kind) {
    case Op::Kind::kWake:
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, op);
      op->pending_cqes = 1;
      in_flight_ += 1;
      break;
    case Op::Kind::kRead:
      io_uring_prep_read(sqe, op->fd, op->buf + op->done, n, op->offset + op->done);
      io_uring_sqe_set_data(sqe, op);
      op->pending_cqes = 1;
      in_flight_ += 1;
      break;
    case Op::Kind::kWriteSync: {
      io_uring_prep_write(sqe, op->fd, op->buf + op->done, n, op->offset + op->done);
      io_uring_sqe_set_data(sqe, op);
      sqe->flags |= IOSQE_IO_LINK;  // the fsync runs only if the write completed in full
      io_uring_sqe* sync = io_uring_get_sqe(ring_);
      io_uring_prep_fsync(sync, op->fd, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data(
          sync, reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(op) | kFsyncTag));
      op->pending_cqes = 2;
      in_flight_ += 2;
      break;
    }
  }
}

void IoRing::reap_loop() {
  while (true) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(ring_, &cqe) != 0 || cqe == nullptr) {
      // Nothing ready: sleep until the kernel signals the eventfd. A completion posted
      // after the peek increments it, so no wake-up is lost.
      pollfd pfd{event_fd_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(kReaperLinger.count() * 1000));
      if (ready == 0) {
        // Idle for kReaperLinger: leave if nothing is in flight (the next submit() starts
        // a reaper again; it decides under the same lock, so nothing is left unreaped).
        std::lock_guard lock(mutex_);
        if (in_flight_ == 0 && waiting_.empty() && !stopping_) {
          reaping_ = false;
          return;
        }
        continue;
      }
      std::uint64_t count = 0;
      if (ready < 0 || (::read(event_fd_, &count, sizeof count) < 0 && errno != EINTR)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      continue;
    }
    const auto data = reinterpret_cast<std::uintptr_t>(io_uring_cqe_get_data(cqe));
    const int res = cqe->res;
    io_uring_cqe_seen(ring_, cqe);
    auto* op = reinterpret_cast<Op*>(data & ~kFsyncTag);
    const bool wake = op->kind == Op::Kind::kWake;
    on_complete(op, res, (data & kFsyncTag) != 0);
    {
      std::lock_guard lock(mutex_);
      --in_flight_;
      bool submitted = false;
      while (!waiting_.empty()) {
        Op* next = waiting_.front();
        const unsigned need = next->kind == Op::Kind::kWriteSync ? 2 : 1;
        if (in_flight_ + need > capacity_)
          break;
        waiting_.pop_front();
        prepare_locked(next);
        submitted = true;
      }
      if (submitted)
        io_uring_submit(ring_);
      if (wake)
        stopping_ = true;
      if (stopping_ && in_flight_ == 0 && waiting_.empty())
        return;
    }
  }
}

void IoRing::on_complete(Op* op, int res, bool fsync_part) {
  if (op->kind == Op::Kind::kWake) {
    delete op;
    return;
  }
  if (fsync_part) {
    op->sync_res = res;
  } else {
    op->write_res = res;
  }
  if (--op->pending_cqes > 0)
    return;

  boost::system::error_code ec;
  const int primary = op->kind == Op::Kind::kRead ? res : op->write_res;
  if (primary < 0) {
    ec.assign(-primary, boost::system::system_category());
  } else if (primary == 0 && op->len > op->done) {
    ec = make_error_code(Errc::kIo);  // end of file before the requested bytes
  } else {
    op->done += static_cast<std::size_t>(primary);
    if (op->done < op->len) {
      // Short transfer: queue the rest (a cancelled fsync is re-issued with it); the reap
      // loop submits it as soon as the ring has room.
      std::lock_guard lock(mutex_);
      waiting_.push_front(op);
      return;
    }
    if (op->kind == Op::Kind::kWriteSync && op->sync_res < 0) {
      ec.assign(-op->sync_res, boost::system::system_category());
    }
  }
  Handler h = std::move(op->handler);
  const std::size_t done = op->done;
  delete op;
  h(ec, done);
}

Result<void> IoRing::read(int fd, std::uint64_t offset, void* buf, std::size_t len) {
  std::promise<boost::system::error_code> done;
  auto f = done.get_future();
  async_read(fd, offset, buf, len,
             [&done](boost::system::error_code ec, std::size_t) { done.set_value(ec); });
  if (auto ec = f.get())
    return ec;
  return {};
}

Result<void> IoRing::write_sync(int fd, std::uint64_t offset, const void* buf, std::size_t len) {
  std::promise<boost::system::error_code> done;
  auto f = done.get_future();
  async_write_sync(fd, offset, buf, len,
                   [&done](boost::system::error_code ec, std::size_t) { done.set_value(ec); });
  if (auto ec = f.get())
    return ec;
  return {};
}

}  // namespace edge::store
