#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "edge/core/errc.hpp"

namespace edge {

/// The custom slices Linux accepts (6.12 and later, the EEVDF fair scheduler): 0.1-100 ms.
inline constexpr std::chrono::microseconds kMinThreadSlice{100};
inline constexpr std::chrono::microseconds kMaxThreadSlice{100'000};

/// Sets the calling thread's time slice under the fair scheduler: sched_setattr(2) with the
/// thread's own policy (SCHED_OTHER, SCHED_BATCH or SCHED_IDLE) and nice value, and
/// sched_runtime = slice. A thread with a short slice runs at most about that long before a
/// runnable thread of its core gets the CPU; its share of the CPU does not change. Threads it
/// creates afterwards inherit the slice. 0: the kernel's default slice again.
///
/// Kernels before 6.12 accept the call and keep their default: thread_slice() then reads 0.
/// Fails, changing nothing, with kInvalidArgument for a slice outside 0 or
/// [kMinThreadSlice, kMaxThreadSlice], with operation_not_supported for a thread under a
/// real-time or deadline policy, and with the OS's error otherwise (ENOSYS, or EPERM under a
/// seccomp filter).
Result<void> set_thread_slice(std::chrono::microseconds slice) noexcept;

/// The calling thread's slice as the kernel reports it (sched_getattr(2)): the custom slice
/// on 6.12 and later (the default one when none was set), 0 on kernels that report none.
Result<std::chrono::microseconds> thread_slice() noexcept;

/// Names the calling thread (pthread_setname_np; top -H, ps -L, /proc/<pid>/task/*/comm),
/// cut to the kernel's 15 bytes. Best effort: a failure leaves the inherited name.
void set_thread_name(std::string_view name) noexcept;

/// A thread that names itself `name` (set_thread_name) and then runs `fn`.
template <class Fn>
std::thread named_thread(std::string name, Fn&& fn) {
  return std::thread([name = std::move(name), fn = std::forward<Fn>(fn)]() mutable {
    set_thread_name(name);
    fn();
  });
}

}  // namespace edge
