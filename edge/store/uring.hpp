#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "edge/core/errc.hpp"

struct io_uring;  // liburing's ring, kept out of this header

namespace edge::store {

/// One io_uring (liburing) with one reaper thread: the store's disk engine (DESIGN §4).
/// Any thread may submit; completions run on the reaper thread, so handlers must be short
/// (the ChunkStore posts them on to the caller's executor). Submissions beyond the ring's
/// capacity wait in a queue instead of failing with ENOBUFS.
///
/// The reaper thread exists while there is work: the first submission starts it, and it
/// exits once nothing was in flight for kReaperLinger (an idle store keeps none). It runs
/// with the kernel's default scheduler slice whichever thread started it.
///
/// The constructor throws StoreError(kIo) if the kernel refuses io_uring.
class IoRing {
 public:
  /// `ec` is empty on success; `bytes` is the count transferred.
  using Handler = std::function<void(boost::system::error_code ec, std::size_t bytes)>;

  explicit IoRing(unsigned entries = 256);
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  /// Reads exactly `len` bytes at `offset` (short reads are resubmitted). End of file
  /// first completes with Errc::kIo and the count read so far. `buf` must stay valid
  /// until the handler runs.
  void async_read(int fd, std::uint64_t offset, void* buf, std::size_t len, Handler handler);

  /// Writes `len` bytes at `offset`, then fdatasync()s the file: one linked submission.
  /// The handler sees success only when both the bytes and the sync are done.
  void async_write_sync(int fd, std::uint64_t offset, const void* buf, std::size_t len,
                        Handler handler);

  /// Blocking forms, for threads that may block (the commit thread, tools, tests).
  /// Never call them from the reaper thread (i.e. from inside a Handler).
  Result<void> read(int fd, std::uint64_t offset, void* buf, std::size_t len);
  Result<void> write_sync(int fd, std::uint64_t offset, const void* buf, std::size_t len);

  /// How long the reaper waits with nothing in flight before it exits.
  static constexpr std::chrono::seconds kReaperLinger{10};

 private:
  struct Op;
  void submit(Op* op);
  void prepare_locked(Op* op);
  /// Starts the reaper thread unless it runs; mutex_ held.
  void start_reaper_locked();
  void reap_loop();
  void on_complete(Op* op, int res, bool fsync_part);

  io_uring* ring_;
  int event_fd_ = -1;  // registered with the ring: one count per completion
  unsigned capacity_;
  std::mutex mutex_;         // guards the SQ side and the overflow queue
  std::deque<Op*> waiting_;  // ops that did not fit the ring yet
  unsigned in_flight_ = 0;   // SQEs submitted and not yet reaped
  bool stopping_ = false;    // set by the reaper when it sees the destructor's wake-up NOP
  bool reaping_ = false;     // the reaper thread runs (or is about to); mutex_
  std::thread reaper_;       // the last reaper thread (joined before the next); mutex_
};

}  // namespace edge::store
