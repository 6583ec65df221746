#include "edge/store/database.hpp"

#include <charconv>
#include <vector>

#include <rocksdb/cache.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include "edge/store/database_impl.hpp"

namespace edge::store {
namespace {

constexpr std::array<const char*, kCfCount> kCfNames = {
    "default",   "meta",     "chunks",      "segment_chunks", "segments",
    "blobs",     "apps",     "releases",    "channels",       "devices",
    "changelog", "checkins", "device_seen", "daily",          "outbox"};

constexpr std::string_view kSchemaKey = "schema_version";

}  // namespace

Database::Impl::~Impl() {
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

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const char* name : kCfNames)
    descriptors.emplace_back(name, cf_options);
  auto impl = std::make_unique<Impl>();
  impl->path = dir;
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
  return std::unique_ptr<Database>(new Database(std::move(impl)));
}

}  // namespace edge::store
