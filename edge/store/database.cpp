#include "edge/store/database.hpp"

#include <charconv>
#include <chrono>
#include <vector>

#include <rocksdb/cache.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>

#include "edge/core/sched.hpp"
#include "edge/store/database_impl.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace edge::store {
namespace {

constexpr std::array<const char*, kCfCount> kCfNames = {
    "default",     "meta",     "chunks",   "segment_chunks", "segments",  "blobs",
    "apps",        "releases", "channels", "devices",        "changelog", "checkins",
    "device_seen", "daily",    "outbox",   "timeline"};

constexpr std::string_view kSchemaKey = "schema_version";
// What RocksDB needs to open: a new WAL, MANIFEST and OPTIONS file (a few hundred KiB).
constexpr std::uint64_t kMinFreeToOpen = 4ULL << 20;

std::uint64_t free_space(const std::filesystem::path& p) {
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0)
    return ~std::uint64_t{0};  // cannot tell: do not stop writes for it
  return std::uint64_t{st.f_bavail} * st.f_frsize;
}

std::filesystem::path reserve_path(const std::filesystem::path& db_dir) {
  return db_dir.parent_path() / "reserve";
}

// Creates the reserve file if it is missing and there is room for it above min_free.
void keep_reserve(const std::filesystem::path& db_dir, const DatabaseOptions& o,
                  std::uint64_t free) {
  if (o.reserve_bytes == 0)
    return;
  const auto path = reserve_path(db_dir);
  std::error_code ec;
  if (std::filesystem::exists(path, ec) || free < o.min_free_bytes + 2 * o.reserve_bytes)
    return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  if (::posix_fallocate(fd, 0, static_cast<off_t>(o.reserve_bytes)) != 0) {
    ::close(fd);
    ::unlink(path.c_str());
    return;
  }
  ::fsync(fd);
  ::close(fd);
}

// Writes resume above this much free space (hysteresis: no flapping at the threshold).
std::uint64_t resume_bytes(const DatabaseOptions& o) {
  return o.min_free_bytes + o.min_free_bytes / 4;
}

}  // namespace

void Database::Impl::mark_full(const std::string& why) {
  if (full.exchange(true))
    return;
  spdlog::error(
      "storage full: {}; writes (uploads, admin writes, check-ins, fills) are refused until {} "
      "bytes are free in {}, reads go on",
      why, resume_bytes(options), path.parent_path().string());
}

boost::system::error_code Database::Impl::refuse() {
  refused.fetch_add(1, std::memory_order_relaxed);
  return make_error_code(Errc::kStorageFull);
}

boost::system::error_code Database::Impl::failed(boost::system::error_code ec) {
  if (ec == boost::system::errc::no_space_on_device)
    ec = make_error_code(Errc::kStorageFull);
  if (ec == Errc::kStorageFull) {
    db_stopped = true;
    mark_full("a write failed for lack of space");
  }
  return ec;
}

boost::system::error_code Database::Impl::write(rocksdb::WriteBatch& wb, bool sync, bool adds) {
  if (adds && full.load(std::memory_order_relaxed))
    return refuse();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  if (auto ec = to_error(db->Write(wo, &wb)))
    return failed(ec);
  return {};
}

void Database::Impl::measure() {
  const std::uint64_t f = free_space(path);
  free_bytes.store(f, std::memory_order_relaxed);
  if (!full.load() && f < options.min_free_bytes) {
    mark_full(std::to_string(f) + " bytes free, below store.min_free (" +
              std::to_string(options.min_free_bytes) + ")");
  } else if (full.load() && f >= resume_bytes(options)) {
    if (db_stopped.load()) {
      // RocksDB stopped writes after an error; it resumes only once told (or by itself).
      if (auto s = db->Resume(); !s.ok()) {
        spdlog::warn("storage: space is back but the index has not resumed yet: {}", s.ToString());
        return;
      }
      db_stopped = false;
    }
    full = false;
    spdlog::info("storage: {} bytes free in {}; writes resume", f, path.parent_path().string());
  }
  if (!full.load())
    keep_reserve(path, options, f);
}

Database::Impl::~Impl() {
  {
    std::lock_guard lock(guard_mutex);
    guard_stop = true;
  }
  guard_cv.notify_all();
  if (guard.joinable())
    guard.join();
  if (db) {
    for (auto* h : cf) {
      if (h != nullptr && h != db->DefaultColumnFamily())
        db->DestroyColumnFamilyHandle(h);
    }
    (void)db->Close();
  }
}

Database::Database(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Database::~Database() = default;

const std::filesystem::path& Database::path() const noexcept {
  return impl_->path;
}

bool Database::writable() const noexcept {
  return !impl_->full.load(std::memory_order_relaxed);
}

bool Database::room_for(std::uint64_t bytes) const noexcept {
  auto& im = *impl_;
  if (im.options.min_free_bytes == 0)
    return true;
  if (im.full.load(std::memory_order_relaxed))
    return false;
  const std::uint64_t f = free_space(im.path);
  im.free_bytes.store(f, std::memory_order_relaxed);
  if (f >= im.options.min_free_bytes + bytes)
    return true;
  im.mark_full(std::to_string(f) + " bytes free; writing " + std::to_string(bytes) +
               " more would pass store.min_free (" + std::to_string(im.options.min_free_bytes) +
               ")");
  return false;
}

StorageStatus Database::storage_status() const noexcept {
  StorageStatus s;
  s.full = impl_->full.load(std::memory_order_relaxed);
  s.free_bytes = impl_->free_bytes.load(std::memory_order_relaxed);
  s.min_free_bytes = impl_->options.min_free_bytes;
  s.refused = impl_->refused.load(std::memory_order_relaxed);
  return s;
}

std::unique_ptr<Database> Database::open(const std::filesystem::path& dir,
                                         const DatabaseOptions& options) {
  std::error_code fs_ec;
  std::filesystem::create_directories(dir, fs_ec);
  if (fs_ec) {
    throw StoreError(Errc::kIo, dir.string() + ": cannot create directory: " + fs_ec.message());
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.cache_index_and_filter_blocks = true;
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf_options.OptimizeForPointLookup(options.block_cache_bytes >> 20);
  cf_options.write_buffer_size = options.write_buffer_bytes;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;

  // Logs and rings (keys in write order or scanned by prefix) are never read by key: a
  // memtable bloom there is one more cache miss per put for nothing (a sixth of a new
  // device's check-in went to memtable inserts).
  rocksdb::ColumnFamilyOptions log_options = cf_options;
  log_options.memtable_prefix_bloom_size_ratio = 0;
  log_options.memtable_whole_key_filtering = false;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (std::size_t i = 0; i < kCfNames.size(); ++i) {
    const bool log = i == kCfSegmentChunks || i == kCfChangelog || i == kCfCheckins ||
                     i == kCfOutbox || i == kCfTimeline;
    descriptors.emplace_back(kCfNames[i], log ? log_options : cf_options);
  }
  auto impl = std::make_unique<Impl>();
  impl->path = dir;
  impl->options = options;
  if (options.min_free_bytes > 0) {
    // A start on a full disk: RocksDB must write a little to open (a new log, manifest
    // and options file) and aborts when it cannot, so give back the reserve first.
    std::uint64_t free = free_space(dir);
    const auto reserve = reserve_path(dir);
    if (free < options.min_free_bytes && std::filesystem::exists(reserve, fs_ec)) {
      std::filesystem::remove(reserve, fs_ec);
      spdlog::warn(
          "storage full at start: {} bytes free; deleted the reserve file {} so the "
          "index can open (writes stay refused until space returns)",
          free, reserve.string());
      free = free_space(dir);
    }
    if (free < kMinFreeToOpen) {
      throw StoreError(Errc::kStorageFull,
                       dir.string() + ": only " + std::to_string(free) +
                           " bytes free; opening the index needs at least " +
                           std::to_string(kMinFreeToOpen) +
                           " (free some space, or raise store.reserve for next time)");
    }
    impl->free_bytes = free;
    if (free < options.min_free_bytes) {
      impl->mark_full("at start: " + std::to_string(free) + " bytes free, below store.min_free (" +
                      std::to_string(options.min_free_bytes) + ")");
    }
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir.string(), descriptors, &handles, &raw);
  if (!s.ok()) {
    throw StoreError(
        to_error(s).value() == static_cast<int>(Errc::kCorrupt) ? Errc::kCorrupt : Errc::kDatabase,
        dir.string() + ": cannot open database: " + s.ToString());
  }
  impl->db.reset(raw);
  for (std::size_t i = 0; i < handles.size(); ++i)
    impl->cf[i] = handles[i];

  // Schema version: written on first open, checked on every later one.
  std::string value;
  rocksdb::Status g = impl->db->Get({}, impl->handle(kCfMeta), kSchemaKey, &value);
  if (g.IsNotFound()) {
    const std::string v = std::to_string(kSchemaVersion);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (auto w = impl->db->Put(wo, impl->handle(kCfMeta), kSchemaKey, v); !w.ok()) {
      throw StoreError(Errc::kDatabase,
                       dir.string() + ": cannot write schema version: " + w.ToString());
    }
  } else if (!g.ok()) {
    throw StoreError(Errc::kDatabase,
                     dir.string() + ": cannot read schema version: " + g.ToString());
  } else {
    std::uint32_t found = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), found);
    if (ec != std::errc() || ptr != value.data() + value.size()) {
      throw StoreError(Errc::kCorrupt,
                       dir.string() + ": schema_version is not a number: '" + value + "'");
    }
    if (found != kSchemaVersion) {
      throw StoreError(Errc::kUnsupportedVersion,
                       dir.string() + ": schema version " + value +
                           " is not supported by this build (it reads version " +
                           std::to_string(kSchemaVersion) + "); nothing was changed");
    }
  }
  if (options.min_free_bytes > 0) {
    if (!impl->full)
      keep_reserve(dir, options, impl->free_bytes);
    Impl* im = impl.get();
    im->guard = named_thread("disk-guard", [im] {
      std::unique_lock lock(im->guard_mutex);
      while (!im->guard_cv.wait_for(lock, std::chrono::milliseconds(im->options.check_interval_ms),
                                    [im] { return im->guard_stop; })) {
        lock.unlock();
        im->measure();
        lock.lock();
      }
    });
  }
  return std::unique_ptr<Database>(new Database(std::move(impl)));
}

std::chrono::milliseconds Database::host_space_checks() {
  Impl& im = *impl_;
  if (im.options.min_free_bytes == 0)
    return std::chrono::milliseconds(0);
  {
    std::lock_guard lock(im.guard_mutex);
    im.guard_stop = true;
  }
  im.guard_cv.notify_all();
  if (im.guard.joinable())
    im.guard.join();
  std::lock_guard lock(im.guard_mutex);
  im.next_check =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(im.options.check_interval_ms);
  return std::chrono::milliseconds(im.options.check_interval_ms);
}

std::chrono::steady_clock::time_point Database::check_space() {
  Impl& im = *impl_;
  if (im.options.min_free_bytes == 0)
    return std::chrono::steady_clock::time_point::max();
  // One check at a time, should two stores host it.
  std::lock_guard lock(im.guard_mutex);
  const auto now = std::chrono::steady_clock::now();
  if (now >= im.next_check) {
    im.measure();
    im.next_check = now + std::chrono::milliseconds(im.options.check_interval_ms);
  }
  return im.next_check;
}

Result<void> Database::checkpoint(const std::filesystem::path& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  if (auto s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw); !s.ok())
    return to_error(s);
  const std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  if (auto s = cp->CreateCheckpoint(dir.string(), /*log_size_for_flush=*/0); !s.ok())
    return to_error(s);
  return {};
}

}  // namespace edge::store
