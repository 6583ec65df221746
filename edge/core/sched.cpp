#include "edge/core/sched.hpp"

#include <cerrno>
#include <cstdint>

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace edge {
namespace {

// struct sched_attr as sched_setattr(2) documents it (SCHED_ATTR_SIZE_VER0, 48 bytes);
// glibc 2.36 declares neither the struct nor the calls.
struct SchedAttr {
  std::uint32_t size = sizeof(SchedAttr);
  std::uint32_t sched_policy = 0;
  std::uint64_t sched_flags = 0;
  std::int32_t sched_nice = 0;
  std::uint32_t sched_priority = 0;
  std::uint64_t sched_runtime = 0;  // fair policies, Linux 6.12+: the custom slice in ns
  std::uint64_t sched_deadline = 0;
  std::uint64_t sched_period = 0;
};
static_assert(sizeof(SchedAttr) == 48);

boost::system::error_code os_error() noexcept {
  return {errno, boost::system::system_category()};
}

Result<SchedAttr> current() noexcept {
  SchedAttr attr;
  if (::syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0)
    return os_error();
  return attr;
}

bool fair(std::uint32_t policy) noexcept {
  return policy == SCHED_OTHER || policy == SCHED_BATCH || policy == SCHED_IDLE;
}

}  // namespace

Result<void> set_thread_slice(std::chrono::microseconds slice) noexcept {
  if (slice.count() != 0 && (slice < kMinThreadSlice || slice > kMaxThreadSlice))
    return Errc::kInvalidArgument;
  auto attr = current();
  if (!attr)
    return attr.error();
  if (!fair(attr->sched_policy))
    return boost::system::errc::make_error_code(boost::system::errc::operation_not_supported);
  // Policy and nice as they are (sched_setattr sets both); only the slice changes.
  SchedAttr next;
  next.sched_policy = attr->sched_policy;
  next.sched_nice = attr->sched_nice;
  next.sched_runtime = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(slice).count());
  if (::syscall(SYS_sched_setattr, 0, &next, 0) != 0)
    return os_error();
  return {};
}

Result<std::chrono::microseconds> thread_slice() noexcept {
  auto attr = current();
  if (!attr)
    return attr.error();
  if (!fair(attr->sched_policy))
    return std::chrono::microseconds{0};
  return std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::nanoseconds{attr->sched_runtime});
}

void set_thread_name(std::string_view name) noexcept {
  char buf[16] = {};  // TASK_COMM_LEN, with its terminating zero
  name.copy(buf, sizeof buf - 1);
  (void)::pthread_setname_np(::pthread_self(), buf);
}

}  // namespace edge
