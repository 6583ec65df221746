#include "edge/core/sched.hpp"

#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

namespace {

using std::chrono::microseconds;

// Each case runs on a thread of its own: the test binary's main thread keeps its slice.
template <class F>
void on_thread(F&& f) {
  std::thread(std::forward<F>(f)).join();
}

// The slice the kernel reports with none set; 0 when it reports none (Linux < 6.12).
microseconds default_slice() {
  microseconds slice{0};
  on_thread([&] {
    auto s = edge::thread_slice();
    ASSERT_TRUE(s) << s.error().message();
    slice = *s;
  });
  return slice;
}

TEST(ThreadSlice, SetsTheCallingThreadsSliceWhichNewThreadsInheritAndZeroResets) {
  const microseconds fallback = default_slice();
  if (fallback.count() == 0)
    GTEST_SKIP() << "this kernel reports no custom slices (Linux < 6.12): the call is accepted "
                    "and changes nothing";
  on_thread([&] {
    ASSERT_TRUE(edge::set_thread_slice(microseconds{200}));
    EXPECT_EQ(*edge::thread_slice(), microseconds{200});
    on_thread([] { EXPECT_EQ(*edge::thread_slice(), microseconds{200}); });
    ASSERT_TRUE(edge::set_thread_slice(microseconds{0}));
    EXPECT_EQ(*edge::thread_slice(), fallback);
  });
  // The slice was the thread's own: a new thread of the test starts with the default.
  EXPECT_EQ(default_slice(), fallback);
}

TEST(ThreadSlice, RefusesSlicesTheKernelWouldClampAndChangesNothing) {
  on_thread([] {
    const auto before = edge::thread_slice();
    ASSERT_TRUE(before);
    for (const microseconds bad :
         {microseconds{1}, microseconds{99}, microseconds{100'001}, microseconds{10'000'000}}) {
      const auto r = edge::set_thread_slice(bad);
      ASSERT_FALSE(r) << bad.count();
      EXPECT_EQ(r.error(), edge::make_error_code(edge::Errc::kInvalidArgument));
      EXPECT_EQ(*edge::thread_slice(), *before);
    }
    EXPECT_TRUE(edge::set_thread_slice(edge::kMinThreadSlice));
    EXPECT_TRUE(edge::set_thread_slice(edge::kMaxThreadSlice));
  });
}

TEST(ThreadSlice, KeepsTheThreadsPolicyAndNiceValue) {
  on_thread([] {
    const auto tid = static_cast<id_t>(::gettid());
    ASSERT_EQ(::setpriority(PRIO_PROCESS, tid, 7), 0);
    ASSERT_TRUE(edge::set_thread_slice(microseconds{300}));
    EXPECT_EQ(::getpriority(PRIO_PROCESS, tid), 7);
    EXPECT_EQ(::sched_getscheduler(0), SCHED_OTHER);
  });
}

TEST(ThreadName, NamesTheCallingThreadCutToTheKernelsFifteenBytes) {
  const auto comm = [] {
    std::string name;
    std::getline(std::ifstream("/proc/thread-self/comm"), name);
    return name;
  };
  on_thread([&] {
    edge::set_thread_name("chunk-commit");
    EXPECT_EQ(comm(), "chunk-commit");
    edge::set_thread_name("a-name-longer-than-fifteen-bytes");
    EXPECT_EQ(comm(), "a-name-longer-t");
  });
}

}  // namespace
