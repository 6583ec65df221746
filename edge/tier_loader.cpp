#include "edge/tier_loader.hpp"

#include <mutex>
#include <stdexcept>
#include <system_error>

#include <dlfcn.h>

namespace edge::tier {

std::filesystem::path module_path() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec)
    return std::filesystem::path(kModuleFile);  // no /proc: the working directory's
  return exe.parent_path() / kModuleFile;
}

Module& load(std::string_view needed_for) {
  static std::mutex mutex;
  static Module* loaded = nullptr;
  std::lock_guard lock(mutex);
  if (loaded != nullptr)
    return *loaded;
  const auto path = module_path();
  const auto fail = [&](std::string why) -> Module& {
    throw std::runtime_error(std::string(needed_for) + " needs the tier module " + path.string() +
                             ", which did not load: " + why +
                             " (it is built and installed next to the bundle-edge executable)");
  };
  // RTLD_NOW: a module that does not fit this executable fails here, not at its first call.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = ::dlerror();
    return fail(err != nullptr ? err : "dlopen failed");
  }
  using Entry = Module* (*)(int);
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, "bundle_edge_tier_module"));
  if (entry == nullptr)
    return fail("it has no bundle_edge_tier_module entry point");
  Module* m = entry(kModuleAbi);
  if (m == nullptr)
    return fail("it was built for another version of bundle-edge");
  loaded = m;
  return *m;
}

}  // namespace edge::tier
