#include "edge/store/chunk_store.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <unordered_map>

#include <boost/asio/post.hpp>

#include "edge/core/sched.hpp"
#include "edge/store/database_impl.hpp"
#include "edge/store/direct_append.hpp"
#include "edge/store/record.hpp"
#include "edge/store/uring.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

namespace edge::store {

using boost::system::error_code;

namespace {

constexpr std::string_view kCountersKey = "chunk_counters";
// Background sync: le64 segment, le64 offset: every record before it is durable.
constexpr std::string_view kWatermarkKey = "chunk_sync_watermark";

// pwrite(2) of all `len` bytes at `off` (a write may be cut short), no sync.
Result<void> write_all(int fd, const std::uint8_t* p, std::size_t len, std::uint64_t off) {
  while (len > 0) {
    const ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return error_code(n < 0 ? errno : EIO, boost::system::system_category());
    p += n;
    off += static_cast<std::uint64_t>(n);
    len -= static_cast<std::size_t>(n);
  }
  return {};
}

std::string encode_watermark(std::uint64_t seg, std::uint64_t end) {
  std::string v(16, '\0');
  put_le64(v.data(), seg);
  put_le64(v.data() + 8, end);
  return v;
}
constexpr std::size_t kEntryBytes = 20;        // le64 segment, le64 record offset, le32 length
constexpr std::size_t kSegChunkKeyBytes = 16;  // be64 segment, be64 record offset
constexpr std::size_t kSegChunkValBytes = 36;  // sha256, le32 length
constexpr std::size_t kSegmentValBytes = 25;   // u8 sealed, le64 bytes, live bytes, live chunks
constexpr std::size_t kCounterFields = 6;

std::string encode_entry(const IndexEntry& e) {
  std::string v(kEntryBytes, '\0');
  put_le64(v.data(), e.segment);
  put_le64(v.data() + 8, e.record_offset);
  put_le32(v.data() + 16, e.length);
  return v;
}

std::optional<IndexEntry> decode_entry(std::string_view v) {
  if (v.size() != kEntryBytes)
    return std::nullopt;
  return IndexEntry{get_le64(v.data()), get_le64(v.data() + 8), get_le32(v.data() + 16)};
}

std::string seg_key(std::uint64_t segment) {
  std::string k(8, '\0');
  put_be64(k.data(), segment);
  return k;
}

std::string seg_chunk_key(std::uint64_t segment, std::uint64_t offset) {
  std::string k(kSegChunkKeyBytes, '\0');
  put_be64(k.data(), segment);
  put_be64(k.data() + 8, offset);
  return k;
}

std::string seg_chunk_value(const Sha256& id, std::uint32_t length) {
  std::string v(kSegChunkValBytes, '\0');
  std::memcpy(v.data(), id.bytes.data(), Sha256::kSize);
  put_le32(v.data() + 32, length);
  return v;
}

std::string encode_segment(const detail::SegmentMeta& m) {
  std::string v(kSegmentValBytes, '\0');
  v[0] = m.sealed ? 1 : 0;
  put_le64(v.data() + 1, m.bytes);
  put_le64(v.data() + 9, m.live_bytes);
  put_le64(v.data() + 17, m.live_chunks);
  return v;
}

std::string encode_counters(const detail::Counters& c) {
  std::string v(kCounterFields * 8, '\0');
  const std::uint64_t f[kCounterFields] = {
      c.chunks, c.blobs, c.bytes_live, c.evicted_segments, c.evicted_chunks, c.relocated_chunks};
  for (std::size_t i = 0; i < kCounterFields; ++i)
    put_le64(v.data() + 8 * i, f[i]);
  return v;
}

rocksdb::Slice id_slice(const Sha256& id) {
  return as_slice(id.bytes.data(), Sha256::kSize);
}

std::string errno_text(int err) {
  return std::strerror(err);
}

// Iterates the segment_chunks entries of one segment: f(record_offset, id, length).
template <class F>
Result<void> for_each_in_segment(const Database::Impl& db, std::uint64_t segment, F&& f) {
  const std::string lo = seg_key(segment);
  const std::string hi = seg_key(segment + 1);
  rocksdb::ReadOptions ro;
  const rocksdb::Slice upper(hi);
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator(ro, db.handle(kCfSegmentChunks)));
  for (it->Seek(lo); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    const rocksdb::Slice v = it->value();
    if (k.size() != kSegChunkKeyBytes || v.size() != kSegChunkValBytes)
      continue;
    Sha256 id;
    std::memcpy(id.bytes.data(), v.data(), Sha256::kSize);
    f(get_be64(k.data() + 8), id, get_le32(v.data() + 32));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return {};
}

// Parses "<id>.seg"; 0 if the name is anything else.
std::uint64_t segment_id_of(const std::filesystem::path& p) {
  if (p.extension() != ".seg")
    return 0;
  const std::string stem = p.stem().string();
  std::uint64_t id = 0;
  const auto [ptr, ec] = std::from_chars(stem.data(), stem.data() + stem.size(), id);
  return ec == std::errc() && ptr == stem.data() + stem.size() ? id : 0;
}

void fsync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Completes `done` on `ex`, or inline when `ex` is empty.
template <class Handler, class... Args>
void complete_on(const ChunkStore::Executor& ex, Handler handler, Args... args) {
  if (ex) {
    boost::asio::post(ex, [h = std::move(handler), args...]() mutable { h(std::move(args)...); });
  } else {
    handler(std::move(args)...);
  }
}

}  // namespace

SegmentFile::~SegmentFile() {
  ::close(fd_);
}

bool SegmentFile::cached(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (length == 0)
    return true;
  // cachestat(2), Linux 6.5: the same number on every architecture; Debian 12's headers
  // predate it.
  constexpr long kSysCachestat = 451;
  struct Range {
    std::uint64_t off, len;
  } range{offset, length};
  struct Stat {
    std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } st{};
  static std::atomic<bool> unsupported{false};
  if (!unsupported.load(std::memory_order_relaxed)) {
    if (::syscall(kSysCachestat, fd_, &range, &st, 0) == 0) {
      static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
      const std::uint64_t pages = (offset + length - 1) / page - offset / page + 1;
      return st.nr_cache >= pages;
    }
    if (errno != ENOSYS)
      return false;  // cannot tell: warm it, a read through io_uring never blocks us
    unsupported.store(true, std::memory_order_relaxed);
  }
  char byte;
  iovec iov{&byte, 1};
  const ssize_t r = ::preadv2(fd_, &iov, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  return !(r < 0 && errno == EAGAIN);
}

// One unit of work for the commit thread.
struct ChunkStore::Job {
  enum class Kind { kPut, kBlob, kErase, kBarrier, kEvict, kGarbage, kCompact };
  Kind kind = Kind::kBarrier;
  Sha256 id;
  std::vector<Sha256> blobs;         // kGarbage: recipes to remove (needs: chunks to remove)
  std::uint64_t segment = 0;         // kCompact
  GarbageReport* report = nullptr;   // kGarbage, kCompact: filled before done runs
  SharedBytes bytes;                 // chunk body
  std::string recipe;                // encoded recipe (kBlob)
  std::vector<Sha256> needs;         // chunks a recipe refers to
  std::optional<IndexEntry> expect;  // kErase: only if the index still points here
  std::function<void(error_code, bool)> done;
};

// The staged view of one group commit: a copy of the segment table and counters, the index
// changes not yet committed, and the bytes not yet written. Thrown away if the commit fails.
struct BatchState {
  rocksdb::WriteBatch wb;
  std::map<std::uint64_t, detail::SegmentMeta> segs;
  detail::Counters counters;
  std::uint64_t open_segment = 0;
  std::uint64_t next_segment_id = 1;
  std::unordered_map<Sha256, std::optional<IndexEntry>, Sha256Hash> index;
  std::vector<Sha256> touched;        // ids whose cache entries must be dropped
  std::vector<std::uint8_t> pending;  // bytes for open_segment, starting at pending_offset
  std::uint64_t pending_offset = 0;
  std::unordered_map<Sha256, bool, Sha256Hash> blobs;  // recipes staged in this batch
};

ChunkStore::ChunkStore(Database& db, std::filesystem::path dir, const ChunkStoreOptions& options)
    : db_(db), dir_(std::move(dir)), options_(options), cache_(options.cache_entries) {}

std::unique_ptr<ChunkStore> ChunkStore::open(Database& db, const std::filesystem::path& dir,
                                             const ChunkStoreOptions& options) {
  if (options.segment_bytes < kSegmentHeaderBytes + kRecordHeaderBytes + kMaxRecordBody) {
    throw StoreError(Errc::kInvalidArgument,
                     "store.segment_bytes: must be at least 1 MiB + 96 bytes, got " +
                         std::to_string(options.segment_bytes));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw StoreError(Errc::kIo, dir.string() + ": cannot create directory: " + ec.message());
  std::unique_ptr<ChunkStore> store(new ChunkStore(db, dir, options));
  store->ring_ = std::make_unique<IoRing>(256);
  store->recover();
  store->committer_ = named_thread("chunk-commit", [s = store.get()] { s->commit_loop(); });
  // The syncer thread (sync_in_background) starts with the first sync request.
  return store;
}

ChunkStore::~ChunkStore() {
  if (committer_.joinable()) {
    {
      std::lock_guard lock(queue_mutex_);
      stop_ = true;
    }
    queue_cv_.notify_all();
    committer_.join();
  }
  {
    std::lock_guard lock(sync_mutex_);
    sync_stop_ = true;  // after what the commit thread queued last: the queue drains first
  }
  sync_cv_.notify_all();
  // The commit thread, the only one that starts a syncer, has ended: syncer_ is ours.
  if (syncer_.joinable())
    syncer_.join();
  ring_.reset();
}

std::filesystem::path ChunkStore::segment_path(std::uint64_t id) const {
  return dir_ / (std::to_string(id) + ".seg");
}

// --- recovery ---------------------------------------------------------------------------

void ChunkStore::recover() {
  auto& db = db_.impl();
  // Counters.
  std::string value;
  if (auto s = db.db->Get({}, db.handle(kCfMeta), kCountersKey, &value); s.ok()) {
    if (value.size() == kCounterFields * 8) {
      std::uint64_t* f[kCounterFields] = {&counters_.chunks,         &counters_.blobs,
                                          &counters_.bytes_live,     &counters_.evicted_segments,
                                          &counters_.evicted_chunks, &counters_.relocated_chunks};
      for (std::size_t i = 0; i < kCounterFields; ++i)
        *f[i] = get_le64(value.data() + 8 * i);
    }
  } else if (!s.IsNotFound()) {
    throw StoreError(Errc::kDatabase, "reading chunk counters: " + s.ToString());
  }
  // The segment table.
  {
    std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator({}, db.handle(kCfSegments)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (it->key().size() != 8 || it->value().size() != kSegmentValBytes)
        continue;
      detail::SegmentMeta m;
      const char* v = it->value().data();
      m.sealed = v[0] != 0;
      m.bytes = get_le64(v + 1);
      m.live_bytes = get_le64(v + 9);
      m.live_chunks = get_le64(v + 17);
      segments_[get_be64(it->key().data())] = m;
    }
    if (!it->status().ok())
      throw StoreError(Errc::kDatabase, "reading segments: " + it->status().ToString());
  }
  std::uint64_t max_known = segments_.empty() ? 0 : segments_.rbegin()->first;
  // Background sync: records past this (segment, offset) may be indexed without being
  // durable (a power loss after the index reached the disk): each is re-verified below.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> watermark;
  if (std::string w; db.db->Get({}, db.handle(kCfMeta), kWatermarkKey, &w).ok() && w.size() == 16)
    watermark.emplace(get_le64(w.data()), get_le64(w.data() + 8));

  rocksdb::WriteBatch wb;
  const auto drop_entries = [&](std::uint64_t seg, std::uint64_t keep_below) {
    // Drops index entries of `seg` whose record does not end before `keep_below`.
    std::uint64_t dropped = 0;
    auto r =
        for_each_in_segment(db, seg, [&](std::uint64_t off, const Sha256& id, std::uint32_t len) {
          if (off + kRecordHeaderBytes + len <= keep_below)
            return;
          std::string cur;
          if (db.db->Get({}, db.handle(kCfChunks), id_slice(id), &cur).ok()) {
            if (auto e = decode_entry(cur); e && e->segment == seg && e->record_offset == off) {
              wb.Delete(db.handle(kCfChunks), id_slice(id));
              counters_.chunks -= std::min<std::uint64_t>(counters_.chunks, 1);
              counters_.bytes_live -= std::min<std::uint64_t>(counters_.bytes_live, len);
            }
          }
          wb.Delete(db.handle(kCfSegmentChunks), seg_chunk_key(seg, off));
          auto& m = segments_[seg];
          m.live_bytes -= std::min<std::uint64_t>(m.live_bytes, len);
          m.live_chunks -= std::min<std::uint64_t>(m.live_chunks, 1);
          ++dropped;
        });
    if (!r)
      throw StoreError(Errc::kDatabase,
                       "segment " + std::to_string(seg) + ": " + r.error().message());
    recovery_.entries_dropped += dropped;
    return dropped;
  };

  // The record at `off` if it lies whole before `end` and its header CRC, XXH3 and SHA-256
  // check out (a torn write fails XXH3; the SHA-256 also rejects a record never verified).
  std::vector<std::uint8_t> buf;
  const auto valid_record = [&](int fd, std::uint64_t off,
                                std::uint64_t end) -> std::optional<RecordHeader> {
    std::array<std::uint8_t, kRecordHeaderBytes> hdr{};
    if (off + kRecordHeaderBytes > end || !ring_->read(fd, off, hdr.data(), hdr.size()))
      return std::nullopt;
    auto h = decode_record_header(hdr);
    if (!h || off + kRecordHeaderBytes + h->length > end)
      return std::nullopt;
    buf.resize(h->length);
    if (!ring_->read(fd, off + kRecordHeaderBytes, buf.data(), buf.size()) ||
        !body_matches(*h, buf) || sha256_of(buf) != h->id)
      return std::nullopt;
    return *h;
  };
  // Re-verifies the committed records of `seg` in [off, end): returns the offset of the
  // first one that fails, or `end`.
  const auto verify_committed = [&](int fd, std::uint64_t off, std::uint64_t end) {
    while (const auto h = valid_record(fd, off, end)) {
      recovery_.bytes_reverified += kRecordHeaderBytes + h->length;
      off += kRecordHeaderBytes + h->length;
    }
    return off;
  };

  // Scans records from `off` to the end of the file; indexes the valid ones that are not
  // indexed yet; truncates the file at the first invalid one. Returns the new end.
  const auto scan_tail = [&](std::uint64_t seg, int fd, std::uint64_t off, std::uint64_t size) {
    // Only the uncommitted tail is scanned: its SHA-256 checks cost little.
    while (const auto h = valid_record(fd, off, size)) {
      std::string cur;
      const bool indexed = db.db->Get({}, db.handle(kCfChunks), id_slice(h->id), &cur).ok();
      if (!indexed) {
        const IndexEntry e{seg, off, h->length};
        wb.Put(db.handle(kCfChunks), id_slice(h->id), encode_entry(e));
        wb.Put(db.handle(kCfSegmentChunks), seg_chunk_key(seg, off),
               seg_chunk_value(h->id, h->length));
        auto& m = segments_[seg];
        m.live_bytes += h->length;
        m.live_chunks += 1;
        counters_.chunks += 1;
        counters_.bytes_live += h->length;
        ++recovery_.records_reindexed;
      }
      off += kRecordHeaderBytes + h->length;
    }
    if (off < size) {
      if (::ftruncate(fd, static_cast<off_t>(off)) != 0 || ::fdatasync(fd) != 0) {
        throw StoreError(Errc::kIo, segment_path(seg).string() +
                                        ": cannot truncate torn tail: " + errno_text(errno));
      }
      recovery_.bytes_truncated += size - off;
    }
    return off;
  };

  const auto open_file = [&](std::uint64_t seg, std::string& problem) -> int {
    const auto path = segment_path(seg);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      problem = "segment " + std::to_string(seg) + " (" + path.string() +
                "): cannot open: " + errno_text(errno);
      return -1;
    }
    std::array<std::uint8_t, kSegmentHeaderBytes> hdr{};
    const ssize_t n = ::pread(fd, hdr.data(), hdr.size(), 0);
    auto id = n == static_cast<ssize_t>(hdr.size()) ? decode_segment_header(hdr)
                                                    : Result<std::uint64_t>(Errc::kInvalidArgument);
    if (!id || *id != seg) {
      const std::string why =
          !id ? (id.error() == Errc::kInvalidArgument ? std::string("shorter than its header")
                                                      : id.error().message())
              : "header names segment " + std::to_string(*id);
      ::close(fd);
      const auto bad = path.string() + ".bad";
      std::filesystem::rename(path, bad);
      problem = "segment " + std::to_string(seg) + " (" + path.string() + "): " + why +
                "; moved aside to " + bad;
      return -1;
    }
    return fd;
  };

  // Segments the index knows.
  for (auto& [seg, m] : segments_) {
    ++recovery_.segments_scanned;
    std::string problem;
    const auto path = segment_path(seg);
    if (!std::filesystem::exists(path)) {
      problem = "segment " + std::to_string(seg) + " (" + path.string() + "): file missing";
    }
    const int fd = problem.empty() ? open_file(seg, problem) : -1;
    if (fd < 0) {
      const auto n = drop_entries(seg, 0);
      recovery_.problems.push_back(problem + "; dropped its " + std::to_string(n) +
                                   " index entries");
      m.file.reset();
      continue;
    }
    struct stat st {};
    ::fstat(fd, &st);
    auto size = static_cast<std::uint64_t>(st.st_size);
    if (size < m.bytes) {
      const auto n = drop_entries(seg, size);
      recovery_.problems.push_back("segment " + std::to_string(seg) + " (" + path.string() +
                                   "): truncated to " + std::to_string(size) + " bytes (" +
                                   std::to_string(m.bytes) + " committed); dropped " +
                                   std::to_string(n) + " index entries past the end");
      m.bytes = size;
    }
    if (watermark && seg >= watermark->first) {
      const std::uint64_t from = seg == watermark->first
                                     ? std::max(watermark->second, kSegmentHeaderBytes)
                                     : kSegmentHeaderBytes;
      if (from < m.bytes) {
        const std::uint64_t good = verify_committed(fd, from, m.bytes);
        if (good < m.bytes) {
          const auto n = drop_entries(seg, good);
          if (::ftruncate(fd, static_cast<off_t>(good)) != 0) {
            throw StoreError(Errc::kIo, path.string() + ": cannot truncate unverified records: " +
                                            errno_text(errno));
          }
          recovery_.bytes_truncated += m.bytes - good;
          recovery_.problems.push_back(
              "segment " + std::to_string(seg) + " (" + path.string() + "): records past the " +
              "sync watermark failed verification at offset " + std::to_string(good) +
              "; dropped " + std::to_string(n) + " index entries (a power loss lost them)");
          m.bytes = good;
          size = good;
        }
      }
    }
    if (!m.sealed)
      m.bytes = scan_tail(seg, fd, m.bytes, size);
    m.file = std::make_shared<SegmentFile>(seg, fd, path);
  }
  std::erase_if(segments_, [&](const auto& kv) {
    if (kv.second.file != nullptr)
      return false;
    wb.Delete(db.handle(kCfSegments), seg_key(kv.first));
    return true;
  });

  // Files the index does not know: a segment created just before a crash (newer than all
  // known ones) may hold durable records: adopt it. An older one is the leftover of an
  // eviction that committed but did not unlink: remove it.
  std::error_code ec;
  std::vector<std::uint64_t> orphans;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::uint64_t seg = segment_id_of(entry.path());
    if (seg != 0 && !segments_.contains(seg))
      orphans.push_back(seg);
  }
  std::sort(orphans.begin(), orphans.end());
  for (const std::uint64_t seg : orphans) {
    if (seg <= max_known) {
      std::filesystem::remove(segment_path(seg), ec);
      continue;
    }
    // Created, then the process died before its header was durable: it never held an
    // acknowledged record (those need the header and a committed table row). Not damage.
    if (std::filesystem::file_size(segment_path(seg), ec) < kSegmentHeaderBytes && !ec) {
      std::filesystem::remove(segment_path(seg), ec);
      continue;
    }
    std::string problem;
    const int fd = open_file(seg, problem);
    if (fd < 0) {
      recovery_.problems.push_back(problem);
      continue;
    }
    struct stat st {};
    ::fstat(fd, &st);
    detail::SegmentMeta m;
    m.bytes = kSegmentHeaderBytes;
    segments_[seg] = m;
    segments_[seg].bytes =
        scan_tail(seg, fd, kSegmentHeaderBytes, static_cast<std::uint64_t>(st.st_size));
    segments_[seg].file = std::make_shared<SegmentFile>(seg, fd, segment_path(seg));
    ++recovery_.segments_scanned;
  }
  for (const std::uint64_t seg : orphans)
    max_known = std::max(max_known, seg);

  // Exactly one segment stays open for appends: the newest unsealed one.
  open_segment_ = 0;
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    if (!it->second.sealed && open_segment_ == 0) {
      open_segment_ = it->first;
    } else {
      it->second.sealed = true;
    }
  }
  next_segment_id_ = max_known + 1;

  for (const auto& [seg, m] : segments_)
    wb.Put(db.handle(kCfSegments), seg_key(seg), encode_segment(m));
  wb.Put(db.handle(kCfMeta), kCountersKey, encode_counters(counters_));
  // Everything verified above is made durable, and the watermark moves to the end.
  for (const auto& [seg, m] : segments_) {
    if (watermark && seg >= watermark->first && m.file != nullptr)
      ::fdatasync(m.file->fd());
  }
  if (open_segment_ != 0) {
    wb.Put(db.handle(kCfMeta), kWatermarkKey,
           encode_watermark(open_segment_, segments_[open_segment_].bytes));
  } else {
    wb.Delete(db.handle(kCfMeta), kWatermarkKey);
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto s = db.db->Write(wo, &wb); !s.ok()) {
    throw StoreError(Errc::kDatabase, "committing recovery: " + s.ToString());
  }
  fsync_dir(dir_);
}

// --- the commit thread ------------------------------------------------------------------

void ChunkStore::enqueue(Job job) {
  {
    std::lock_guard lock(queue_mutex_);
    if (!stop_) {
      queue_.push_back(std::move(job));
      queue_cv_.notify_one();
      return;
    }
  }
  if (job.done)
    job.done(make_error_code(Errc::kShutdown), false);
}

void ChunkStore::commit_loop() {
  std::vector<Job> batch;
  while (true) {
    {
      std::unique_lock lock(queue_mutex_);
      if (options_.sync_in_background && unsynced_bytes_ > 0) {
        // Pending bytes are synced within sync_every_ms, busy or idle.
        const auto due = last_sync_ + std::chrono::milliseconds(options_.sync_every_ms);
        if (!queue_cv_.wait_until(lock, due, [this] { return stop_ || !queue_.empty(); }) ||
            std::chrono::steady_clock::now() >= due) {
          lock.unlock();
          sync_watermark();
          continue;
        }
      } else {
        queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      }
      if (queue_.empty()) {
        lock.unlock();
        if (options_.sync_in_background) {
          if (auto [file, end] = open_segment_end(); file != nullptr)
            finish_segment(*file, end);  // a clean stop leaves no padding to cut at open
          sync_watermark();              // nor anything to re-verify
        }
        return;  // stop_ and drained
      }
      std::size_t bytes = 0;
      while (!queue_.empty() && batch.size() < options_.max_batch_jobs &&
             bytes < options_.max_batch_bytes) {
        bytes += queue_.front().bytes.size + queue_.front().recipe.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run_batch(batch);
    batch.clear();
    if (options_.max_bytes > 0)
      evict_over_budget();
    if (options_.sync_in_background && unsynced_bytes_ >= options_.sync_every_bytes)
      sync_watermark();
  }
}

void ChunkStore::sync_watermark() {
  last_sync_ = std::chrono::steady_clock::now();
  if (unsynced_bytes_ == 0)
    return;
  if (auto [file, end] = open_segment_end(); file != nullptr)
    request_sync(std::move(file), open_segment_, end);
  unsynced_bytes_ = 0;
}

std::pair<std::shared_ptr<SegmentFile>, std::uint64_t> ChunkStore::open_segment_end() const {
  std::shared_lock lock(state_mutex_);
  if (auto it = segments_.find(open_segment_); it != segments_.end())
    return {it->second.file, it->second.bytes};
  return {nullptr, 0};
}

void ChunkStore::request_sync(std::shared_ptr<SegmentFile> file, std::uint64_t seg,
                              std::uint64_t end) {
  {
    std::lock_guard lock(sync_mutex_);
    if (!sync_queue_.empty() && sync_queue_.back().seg == seg) {
      sync_queue_.back().end = std::max(sync_queue_.back().end, end);  // one sync covers both
    } else {
      sync_queue_.push_back({std::move(file), seg, end});
    }
    if (!syncing_) {
      // The last syncer has left sync_loop (it cleared syncing_ under this lock on its way
      // out): joining it takes no longer than its return.
      if (syncer_.joinable())
        syncer_.join();
      syncing_ = true;
      syncer_ = named_thread("chunk-sync", [this] { sync_loop(); });
    }
  }
  sync_cv_.notify_one();
}

void ChunkStore::sync_loop() {
  while (true) {
    SyncRequest req;
    {
      std::unique_lock lock(sync_mutex_);
      sync_cv_.wait_for(lock, kSyncLinger, [this] { return sync_stop_ || !sync_queue_.empty(); });
      if (sync_queue_.empty()) {
        syncing_ = false;  // stopped and drained, or idle: the next request starts a syncer
        return;
      }
      req = std::move(sync_queue_.front());
      sync_queue_.pop_front();
    }
    if (::fdatasync(req.file->fd()) != 0) {
      // The watermark stays where it is: open() re-verifies more, nothing is lost.
      spdlog::error("store: background sync of segment {}: {}", req.seg, errno_text(errno));
      continue;
    }
    auto& db = db_.impl();
    rocksdb::WriteBatch wb;
    wb.Put(db.handle(kCfMeta), kWatermarkKey, encode_watermark(req.seg, req.end));
    // Synced: it also makes every index entry written before it durable.
    if (auto ec = db.write(wb, true, false))
      spdlog::error("store: recording the sync watermark: {}", ec.message());
  }
}

Result<std::optional<IndexEntry>> ChunkStore::staged_lookup(BatchState& b, const Sha256& id) const {
  if (auto it = b.index.find(id); it != b.index.end())
    return it->second;
  auto e = find_entry(id);
  if (e)
    return std::optional<IndexEntry>(*e);
  if (e.error() == Errc::kNotFound)
    return std::optional<IndexEntry>();
  return e.error();
}

Result<void> ChunkStore::stage_roll(BatchState& b) {
  if (b.open_segment != 0) {
    if (auto r = flush_pending(b); !r)
      return r;
    b.segs[b.open_segment].sealed = true;
    finish_segment(*b.segs[b.open_segment].file, b.segs[b.open_segment].bytes);
    // The sealed segment is synced (in order, before anything of the next one) off this
    // thread; open() re-verifies every segment from the watermark's on.
    if (options_.sync_in_background) {
      const auto& sealed = b.segs[b.open_segment];
      request_sync(sealed.file, b.open_segment, sealed.bytes);
    }
  }
  const std::uint64_t seg = b.next_segment_id++;
  const auto path = segment_path(seg);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return error_code(errno, boost::system::system_category());
  auto file = std::make_shared<SegmentFile>(seg, fd, path);
  const auto hdr = encode_segment_header(seg);
  if (auto r = ring_->write_sync(fd, 0, hdr.data(), hdr.size()); !r)
    return r;
  fsync_dir(dir_);  // the new name must be durable before records in it are acknowledged
  detail::SegmentMeta m;
  m.bytes = kSegmentHeaderBytes;
  m.file = std::move(file);
  b.segs[seg] = std::move(m);
  b.open_segment = seg;
  b.pending_offset = kSegmentHeaderBytes;
  return {};
}

Result<IndexEntry> ChunkStore::stage_append(BatchState& b, const Sha256& id,
                                            std::span<const std::uint8_t> body) {
  const std::uint64_t size = kRecordHeaderBytes + body.size();
  if (b.open_segment == 0 || b.segs[b.open_segment].bytes + size > options_.segment_bytes) {
    if (auto r = stage_roll(b); !r)
      return r.error();
  }
  auto& m = b.segs[b.open_segment];
  if (b.pending.empty())
    b.pending_offset = m.bytes;
  const IndexEntry e{b.open_segment, m.bytes, static_cast<std::uint32_t>(body.size())};
  const auto hdr = encode_record_header(id, body);
  b.pending.insert(b.pending.end(), hdr.begin(), hdr.end());
  b.pending.insert(b.pending.end(), body.begin(), body.end());
  m.bytes += size;
  m.live_bytes += body.size();
  m.live_chunks += 1;

  auto& db = db_.impl();
  // A chunk that moves (relocation) leaves its old place.
  if (auto old = staged_lookup(b, id); old && old->has_value()) {
    const IndexEntry& o = **old;
    b.wb.Delete(db.handle(kCfSegmentChunks), seg_chunk_key(o.segment, o.record_offset));
    if (auto it = b.segs.find(o.segment); it != b.segs.end()) {
      it->second.live_bytes -= std::min<std::uint64_t>(it->second.live_bytes, o.length);
      it->second.live_chunks -= std::min<std::uint64_t>(it->second.live_chunks, 1);
    }
  } else {
    b.counters.chunks += 1;
    b.counters.bytes_live += body.size();
  }
  b.wb.Put(db.handle(kCfChunks), id_slice(id), encode_entry(e));
  b.wb.Put(db.handle(kCfSegmentChunks), seg_chunk_key(e.segment, e.record_offset),
           seg_chunk_value(id, e.length));
  b.index[id] = e;
  b.touched.push_back(id);
  return e;
}

void ChunkStore::stage_erase(BatchState& b, const Sha256& id, const IndexEntry& e) {
  auto& db = db_.impl();
  b.wb.Delete(db.handle(kCfChunks), id_slice(id));
  b.wb.Delete(db.handle(kCfSegmentChunks), seg_chunk_key(e.segment, e.record_offset));
  if (auto it = b.segs.find(e.segment); it != b.segs.end()) {
    it->second.live_bytes -= std::min<std::uint64_t>(it->second.live_bytes, e.length);
    it->second.live_chunks -= std::min<std::uint64_t>(it->second.live_chunks, 1);
  }
  b.counters.chunks -= std::min<std::uint64_t>(b.counters.chunks, 1);
  b.counters.bytes_live -= std::min<std::uint64_t>(b.counters.bytes_live, e.length);
  b.index[id] = std::nullopt;
  b.touched.push_back(id);
}

Result<void> ChunkStore::flush_pending(BatchState& b) {
  if (b.pending.empty())
    return {};
  const auto& file = b.segs[b.open_segment].file;
  Result<void> r;
  if (options_.sync_in_background) {
    // Not synced: sync_watermark() makes it durable later.
    r = write_unsynced(*file, b.pending.data(), b.pending.size(), b.pending_offset);
    unsynced_bytes_ += b.pending.size();
  } else {
    r = ring_->write_sync(file->fd(), b.pending_offset, b.pending.data(), b.pending.size());
  }
  b.pending_offset += b.pending.size();
  b.pending.clear();
  return r;
}

Result<void> ChunkStore::write_unsynced(const SegmentFile& file, const std::uint8_t* bytes,
                                        std::size_t len, std::uint64_t offset) {
  if (options_.direct_writes && !direct_refused_) {
    if (direct_ == nullptr)
      direct_ = std::make_unique<DirectAppender>();
    auto direct = direct_->write(file.path(), file.fd(), bytes, len, offset);
    if (!direct)
      return direct.error();
    if (*direct) {
      direct_writes_.fetch_add(1, std::memory_order_relaxed);
      return {};
    }
    direct_refused_ = true;
    spdlog::info("store: {} refuses O_DIRECT: chunk data goes through the page cache",
                 dir_.string());
  }
  return write_all(file.fd(), bytes, len, offset);
}

void ChunkStore::finish_segment(const SegmentFile& file, std::uint64_t end) {
  if (direct_ == nullptr)
    return;
  // Padding left would only cost a truncation at the next open: not an error.
  if (auto r = direct_->finish(file.path(), file.fd(), end); !r)
    spdlog::warn("store: trimming segment {}: {}", file.id(), r.error().message());
}

Result<void> ChunkStore::commit(BatchState& b) {
  // Bodies first: the index must never point at bytes that are not durable (DESIGN §3).
  if (auto r = flush_pending(b); !r)
    return r;
  auto& db = db_.impl();
  for (const auto& [seg, m] : b.segs)
    b.wb.Put(db.handle(kCfSegments), seg_key(seg), encode_segment(m));
  b.wb.Put(db.handle(kCfMeta), kCountersKey, encode_counters(b.counters));
  // Puts were refused up front while storage is full; what is left (evictions) frees space.
  // In background mode the index write is not synced either: entries past the watermark
  // are re-verified at open.
  if (auto ec = db.write(b.wb, !options_.sync_in_background, false))
    return ec;
  {
    std::unique_lock lock(state_mutex_);
    segments_ = b.segs;
    counters_ = b.counters;
  }
  open_segment_ = b.open_segment;
  next_segment_id_ = b.next_segment_id;
  for (const auto& id : b.touched)
    cache_.erase(id);
  return {};
}

BatchState ChunkStore::begin_batch() const {
  BatchState b;
  {
    std::shared_lock lock(state_mutex_);
    b.segs = segments_;
    b.counters = counters_;
  }
  b.open_segment = open_segment_;
  b.next_segment_id = next_segment_id_;
  return b;
}

void ChunkStore::run_batch(std::vector<Job>& jobs) {
  BatchState b = begin_batch();
  // One write buffer for every batch: a fresh 16 MiB vector per batch costs a page fault
  // per 4 KiB (and regrowth copies), which showed as a third of a fill's CPU.
  b.pending.swap(write_buffer_);
  b.pending.clear();
  b.pending.reserve(options_.max_batch_bytes + kRecordHeaderBytes + (1U << 20));

  // Each job's outcome before the commit; the commit's error overrides success.
  std::vector<std::pair<error_code, bool>> outcome(jobs.size());
  bool any_write = false;
  error_code batch_ec;
  // Below store.min_free nothing new is written (deletes still are: they free space).
  std::uint64_t incoming = 0;
  for (const Job& job : jobs)
    incoming += job.kind == Job::Kind::kPut ? job.bytes.size + kRecordHeaderBytes : 0;
  const bool writable = db_.writable() && (incoming == 0 || db_.room_for(incoming));
  for (std::size_t i = 0; i < jobs.size() && !batch_ec; ++i) {
    Job& job = jobs[i];
    if (!writable && (job.kind == Job::Kind::kPut || job.kind == Job::Kind::kBlob)) {
      outcome[i] = {db_.impl().refuse(), false};
      continue;
    }
    switch (job.kind) {
      case Job::Kind::kPut: {
        auto cur = staged_lookup(b, job.id);
        if (!cur) {
          outcome[i] = {cur.error(), false};
        } else if (cur->has_value()) {
          outcome[i] = {{}, false};  // already stored: never written twice
        } else if (auto e = stage_append(b, job.id, job.bytes.span()); !e) {
          // An I/O error may have lost bytes staged before this job: fail the whole
          // batch rather than index anything that may not be durable.
          batch_ec = e.error();
        } else {
          outcome[i] = {{}, true};
          any_write = true;
        }
        break;
      }
      case Job::Kind::kBlob: {
        std::string cur;
        auto& db = db_.impl();
        const auto s = db.db->Get({}, db.handle(kCfBlobs), id_slice(job.id), &cur);
        if (s.ok() || b.blobs.contains(job.id)) {
          outcome[i] = {{}, false};
          break;
        }
        error_code ec = s.IsNotFound() ? error_code() : to_error(s);
        for (const auto& need : job.needs) {
          if (ec)
            break;
          auto e = staged_lookup(b, need);
          if (!e)
            ec = e.error();
          else if (!e->has_value())
            ec = make_error_code(Errc::kNotFound);
        }
        if (!ec) {
          b.wb.Put(db.handle(kCfBlobs), id_slice(job.id), job.recipe);
          b.counters.blobs += 1;
          b.blobs[job.id] = true;
          any_write = true;
        }
        outcome[i] = {ec, !ec};
        break;
      }
      case Job::Kind::kErase: {
        auto cur = staged_lookup(b, job.id);
        if (!cur) {
          outcome[i] = {cur.error(), false};
        } else if (!cur->has_value() || (job.expect && **cur != *job.expect)) {
          outcome[i] = {make_error_code(Errc::kNotFound), false};
        } else {
          stage_erase(b, job.id, **cur);
          outcome[i] = {{}, true};
          any_write = true;
        }
        break;
      }
      case Job::Kind::kGarbage: {
        // Collection (DESIGN §12.2): recipes first, then chunks; ids already gone are
        // skipped, so a repeated or overlapping pass changes nothing more.
        auto& db = db_.impl();
        GarbageReport rep;
        error_code ec;
        for (const auto& id : job.blobs) {
          std::string cur;
          const auto s = db.db->Get({}, db.handle(kCfBlobs), id_slice(id), &cur);
          if (s.IsNotFound() || b.blobs.contains(id))
            continue;  // gone already, or stored again in this very batch
          if (!s.ok()) {
            ec = to_error(s);
            break;
          }
          b.wb.Delete(db.handle(kCfBlobs), id_slice(id));
          b.counters.blobs -= std::min<std::uint64_t>(b.counters.blobs, 1);
          ++rep.blobs;
        }
        for (const auto& id : job.needs) {
          if (ec)
            break;
          auto cur = staged_lookup(b, id);
          if (!cur) {
            ec = cur.error();
          } else if (cur->has_value()) {
            rep.bytes += (*cur)->length;
            stage_erase(b, id, **cur);
            ++rep.chunks;
          }
        }
        if (!ec && job.report != nullptr)
          *job.report = rep;
        outcome[i] = {ec, !ec};
        any_write = any_write || (!ec && (rep.blobs > 0 || rep.chunks > 0));
        break;
      }
      case Job::Kind::kCompact:
      case Job::Kind::kEvict:
      case Job::Kind::kBarrier: break;
    }
  }
  // A segment write that failed for lack of space makes storage full (kStorageFull).
  if (batch_ec)
    batch_ec = db_.impl().failed(batch_ec);
  error_code commit_ec = batch_ec;
  if (any_write && !batch_ec) {
    if (auto r = commit(b); !r)
      commit_ec = db_.impl().failed(r.error());
  }
  const bool evict = std::any_of(jobs.begin(), jobs.end(),
                                 [](const Job& j) { return j.kind == Job::Kind::kEvict; });
  if (evict)
    evict_over_budget();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].kind != Job::Kind::kCompact || batch_ec)
      continue;
    auto r = compact_segment_now(jobs[i].segment);
    if (!r)
      outcome[i] = {r.error(), false};
    else if (jobs[i].report != nullptr)
      *jobs[i].report = *r;
    if (r)
      outcome[i] = {{}, true};
  }
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (!jobs[i].done)
      continue;
    auto [ec, inserted] = outcome[i];
    if (batch_ec)
      ec = batch_ec;  // nothing of a failed batch was committed
    if (commit_ec && !ec && inserted)
      ec = commit_ec;
    jobs[i].done(ec, inserted && !ec);
  }
  write_buffer_.swap(b.pending);
}

// --- eviction ---------------------------------------------------------------------------

void ChunkStore::evict_over_budget() {
  std::shared_ptr<const PinSet> pins;
  {
    std::shared_lock lock(state_mutex_);
    pins = pins_;
  }
  // Only segments older than the open one at the start are candidates: relocated chunks
  // land in newer segments, so a store full of pinned chunks cannot loop forever.
  const std::uint64_t horizon = open_segment_;
  while (true) {
    BatchState b = begin_batch();
    std::uint64_t on_disk = 0;
    for (const auto& [seg, m] : b.segs)
      on_disk += m.bytes;
    if (options_.max_bytes == 0 || on_disk <= options_.max_bytes)
      return;
    auto victim = std::find_if(b.segs.begin(), b.segs.end(), [&](const auto& kv) {
      return kv.second.sealed && kv.first < horizon;
    });
    if (victim == b.segs.end())
      return;
    const std::uint64_t seg = victim->first;
    const auto file = victim->second.file;
    auto& db = db_.impl();

    std::vector<std::tuple<std::uint64_t, Sha256, std::uint32_t>> records;
    if (!for_each_in_segment(db, seg, [&](std::uint64_t off, const Sha256& id, std::uint32_t len) {
          records.emplace_back(off, id, len);
        })) {
      return;  // a database error; the next commit retries
    }
    std::uint64_t relocated = 0;
    std::uint64_t evicted = 0;
    for (const auto& [off, id, len] : records) {
      const IndexEntry e{seg, off, len};
      if (pins && pins->pinned(id)) {
        // Copy forward: read the record (checked), append it to the open segment.
        if (auto body = read_record(*file, e, id); body && stage_append(b, id, *body)) {
          ++relocated;
          continue;
        }
      }
      stage_erase(b, id, e);
      ++evicted;
    }
    b.wb.Delete(db.handle(kCfSegments), seg_key(seg));
    b.segs.erase(seg);
    b.counters.evicted_segments += 1;
    b.counters.evicted_chunks += evicted;
    b.counters.relocated_chunks += relocated;
    if (!commit(b))
      return;
    // The index no longer points into the segment: unlink it. Readers that hold its
    // SegmentFile keep a valid descriptor until they drop it.
    ::unlink(segment_path(seg).c_str());
  }
}

// --- collection ------------------------------------------------------------------------

Result<GarbageReport> ChunkStore::compact_segment_now(std::uint64_t seg) {
  std::unique_lock files(files_mutex_, std::try_to_lock);
  if (!files.owns_lock())
    return make_error_code(Errc::kConflict);  // a backup copies the segments now
  BatchState b = begin_batch();
  const auto it = b.segs.find(seg);
  if (it == b.segs.end() || !it->second.sealed || seg == b.open_segment)
    return make_error_code(Errc::kNotFound);
  const auto file = it->second.file;
  const std::uint64_t size = it->second.bytes;
  auto& db = db_.impl();
  std::vector<std::tuple<std::uint64_t, Sha256, std::uint32_t>> records;
  if (auto r = for_each_in_segment(db, seg,
                                   [&](std::uint64_t off, const Sha256& id, std::uint32_t len) {
                                     records.emplace_back(off, id, len);
                                   });
      !r) {
    return r.error();
  }
  GarbageReport rep;
  std::uint64_t moved = 0;
  for (const auto& [off, id, len] : records) {
    const IndexEntry e{seg, off, len};
    auto body = read_record(*file, e, id);
    if (!body) {
      if (body.error() != Errc::kCorrupt)
        return body.error();  // an I/O error: the segment stays as it was
      // Damaged bytes are never copied forward (scrub would have dropped them).
      spdlog::error("store: compacting segment {}: chunk {} is damaged; dropped from the index",
                    seg, id.hex());
      stage_erase(b, id, e);
      ++rep.chunks;
      continue;
    }
    if (auto a = stage_append(b, id, *body); !a)
      return a.error();
    moved += kRecordHeaderBytes + body->size();
    ++rep.relocated;
    // Bound the staged bytes: write them out (the index commits once, at the end).
    if (b.pending.size() >= options_.max_batch_bytes) {
      if (auto f = flush_pending(b); !f)
        return f.error();
    }
  }
  b.wb.Delete(db.handle(kCfSegments), seg_key(seg));
  b.segs.erase(seg);
  if (auto c = commit(b); !c)
    return c.error();
  // The index no longer points into the segment. Readers holding its SegmentFile finish on
  // their descriptor.
  ::unlink(segment_path(seg).c_str());
  rep.segments = 1;
  rep.bytes = size > moved ? size - moved : 0;
  return rep;
}

Result<GarbageReport> ChunkStore::run_collection_job(Job job) {
  std::promise<error_code> p;
  auto f = p.get_future();
  GarbageReport rep;
  job.report = &rep;
  job.done = [&p](error_code ec, bool) { p.set_value(ec); };
  enqueue(std::move(job));
  if (auto ec = f.get())
    return ec;
  return rep;
}

Result<GarbageReport> ChunkStore::erase_garbage(std::vector<Sha256> blobs,
                                                std::vector<Sha256> chunks) {
  Job job;
  job.kind = Job::Kind::kGarbage;
  job.blobs = std::move(blobs);
  job.needs = std::move(chunks);
  return run_collection_job(std::move(job));
}

Result<GarbageReport> ChunkStore::compact_segment(std::uint64_t id) {
  Job job;
  job.kind = Job::Kind::kCompact;
  job.segment = id;
  return run_collection_job(std::move(job));
}

std::vector<SegmentUse> ChunkStore::segment_use() const {
  std::vector<SegmentUse> out;
  std::shared_lock lock(state_mutex_);
  for (const auto& [seg, m] : segments_) {
    SegmentUse u;
    u.id = seg;
    u.sealed = m.sealed && seg != open_segment_;
    u.bytes = m.bytes;
    u.live_bytes = m.live_bytes;
    struct stat st {};
    if (m.file != nullptr && ::fstat(m.file->fd(), &st) == 0)
      u.written_s = st.st_mtim.tv_sec;
    out.push_back(u);
  }
  return out;
}

Result<void> ChunkStore::for_each_blob(
    const std::function<void(const Sha256&, std::string_view)>& f) const {
  auto& db = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator({}, db.handle(kCfBlobs)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != Sha256::kSize)
      continue;
    Sha256 id;
    std::memcpy(id.bytes.data(), it->key().data(), Sha256::kSize);
    f(id, std::string_view(it->value().data(), it->value().size()));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return {};
}

Result<void> ChunkStore::for_each_chunk(
    const std::function<void(const Sha256&, const IndexEntry&)>& f) const {
  auto& db = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator({}, db.handle(kCfChunks)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != Sha256::kSize)
      continue;
    const auto e = decode_entry(std::string_view(it->value().data(), it->value().size()));
    if (!e)
      continue;
    Sha256 id;
    std::memcpy(id.bytes.data(), it->key().data(), Sha256::kSize);
    f(id, *e);
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return {};
}

// --- public API -------------------------------------------------------------------------

void ChunkStore::async_put(const Sha256& id, std::vector<std::uint8_t> bytes, const Executor& ex,
                           PutHandler handler) {
  if (bytes.size() > kMaxRecordBody) {
    complete_on(ex, std::move(handler), make_error_code(Errc::kTooLarge), false);
    return;
  }
  if (sha256_of(bytes) != id) {
    complete_on(ex, std::move(handler), make_error_code(Errc::kChecksumMismatch), false);
    return;
  }
  async_put_verified(id, SharedBytes::of(std::move(bytes)), ex, std::move(handler));
}

void ChunkStore::async_put_verified(const Sha256& id, SharedBytes bytes, const Executor& ex,
                                    PutHandler handler) {
  if (!bytes || bytes.size > kMaxRecordBody) {
    complete_on(ex, std::move(handler), make_error_code(Errc::kTooLarge), false);
    return;
  }
  if (find_entry(id)) {  // fast path: dedup without a trip through the commit thread
    complete_on(ex, std::move(handler), error_code(), false);
    return;
  }
  Job job;
  job.kind = Job::Kind::kPut;
  job.id = id;
  job.bytes = std::move(bytes);
  job.done = [ex, h = std::move(handler)](error_code ec, bool inserted) mutable {
    complete_on(ex, std::move(h), ec, inserted);
  };
  enqueue(std::move(job));
}

Result<bool> ChunkStore::put(const Sha256& id, std::span<const std::uint8_t> bytes) {
  std::promise<std::pair<error_code, bool>> p;
  auto f = p.get_future();
  async_put(id, std::vector<std::uint8_t>(bytes.begin(), bytes.end()), {},
            [&p](error_code ec, bool inserted) {
              p.set_value({ec, inserted});
            });
  auto [ec, inserted] = f.get();
  if (ec)
    return ec;
  return inserted;
}

Result<IndexEntry> ChunkStore::find_entry(const Sha256& id) const {
  if (auto hit = cache_.get(id))
    return *hit;
  const std::uint64_t epoch = cache_.epoch(id);
  auto& db = db_.impl();
  rocksdb::PinnableSlice value;
  const auto s = db.db->Get({}, db.handle(kCfChunks), id_slice(id), &value);
  if (!s.ok())
    return to_error(s);
  auto e = decode_entry(value.ToStringView());
  if (!e)
    return Errc::kCorrupt;
  cache_.insert(id, *e, epoch);
  return *e;
}

std::shared_ptr<SegmentFile> ChunkStore::segment_file(std::uint64_t id) const {
  std::shared_lock lock(state_mutex_);
  auto it = segments_.find(id);
  return it == segments_.end() ? nullptr : it->second.file;
}

Result<ChunkLocation> ChunkStore::find(const Sha256& id) const {
  auto e = find_entry(id);
  if (!e)
    return e.error();
  auto file = segment_file(e->segment);
  if (!file)
    return Errc::kNotFound;  // evicted between the lookup and now
  return ChunkLocation{std::move(file), e->record_offset + kRecordHeaderBytes, e->length};
}

Result<std::vector<std::uint8_t>> ChunkStore::read_record(const SegmentFile& file,
                                                          const IndexEntry& e,
                                                          const Sha256& id) const {
  std::vector<std::uint8_t> buf(kRecordHeaderBytes + e.length);
  if (auto r = ring_->read(file.fd(), e.record_offset, buf.data(), buf.size()); !r)
    return r.error();
  auto h = decode_record_header(buf);
  if (!h || h->id != id || !body_matches(*h, std::span(buf).subspan(kRecordHeaderBytes))) {
    return Errc::kCorrupt;
  }
  buf.erase(buf.begin(), buf.begin() + kRecordHeaderBytes);
  return buf;
}

void ChunkStore::async_read(const Sha256& id, const Executor& ex, ReadHandler handler) const {
  auto e = find_entry(id);
  auto file = e ? segment_file(e->segment) : nullptr;
  if (!e || !file) {
    complete_on(ex, std::move(handler), e ? make_error_code(Errc::kNotFound) : e.error(),
                std::vector<std::uint8_t>());
    return;
  }
  auto buf = std::make_shared<std::vector<std::uint8_t>>(kRecordHeaderBytes + e->length);
  auto* data = buf->data();
  const std::size_t size = buf->size();
  ring_->async_read(
      file->fd(), e->record_offset, data, size,
      [ex, id, file, buf, h = std::move(handler)](error_code ec, std::size_t) mutable {
        if (!ec) {
          auto hdr = decode_record_header(*buf);
          if (!hdr || hdr->id != id ||
              !body_matches(*hdr, std::span(*buf).subspan(kRecordHeaderBytes))) {
            ec = make_error_code(Errc::kCorrupt);
          }
        }
        std::vector<std::uint8_t> body;
        if (!ec)
          body.assign(buf->begin() + kRecordHeaderBytes, buf->end());
        complete_on(ex, std::move(h), ec, std::move(body));
      });
}

void ChunkStore::async_warm(std::shared_ptr<const SegmentFile> file, std::uint64_t offset,
                            std::uint64_t length, const Executor& ex,
                            std::function<void(error_code)> handler) const {
  constexpr std::uint64_t kMaxWarm = 2 << 20;
  auto buf = std::make_shared<std::vector<std::uint8_t>>(std::min(length, kMaxWarm));
  auto* data = buf->data();
  const std::size_t size = buf->size();
  const int fd = file->fd();
  ring_->async_read(fd, offset, data, size,
                    [ex, file = std::move(file), buf, h = std::move(handler)](
                        error_code ec, std::size_t) mutable { complete_on(ex, std::move(h), ec); });
}

Result<std::vector<std::uint8_t>> ChunkStore::read(const Sha256& id) const {
  auto e = find_entry(id);
  if (!e)
    return e.error();
  auto file = segment_file(e->segment);
  if (!file)
    return Errc::kNotFound;
  return read_record(*file, *e, id);
}

Result<void> ChunkStore::erase(const Sha256& id) {
  std::promise<error_code> p;
  auto f = p.get_future();
  Job job;
  job.kind = Job::Kind::kErase;
  job.id = id;
  job.done = [&p](error_code ec, bool) { p.set_value(ec); };
  enqueue(std::move(job));
  if (auto ec = f.get())
    return ec;
  return {};
}

void ChunkStore::async_put_blob(const Sha256& id, std::string encoded_recipe,
                                std::vector<Sha256> needs, const Executor& ex, PutHandler handler) {
  Job job;
  job.kind = Job::Kind::kBlob;
  job.id = id;
  job.recipe = std::move(encoded_recipe);
  job.needs = std::move(needs);
  job.done = [ex, h = std::move(handler)](error_code ec, bool inserted) mutable {
    complete_on(ex, std::move(h), ec, inserted);
  };
  enqueue(std::move(job));
}

Result<std::string> ChunkStore::get_blob(const Sha256& id) const {
  auto& db = db_.impl();
  std::string value;
  const auto s = db.db->Get({}, db.handle(kCfBlobs), id_slice(id), &value);
  if (!s.ok())
    return to_error(s);
  return value;
}

void ChunkStore::set_pin_set(std::shared_ptr<const PinSet> pins) {
  std::unique_lock lock(state_mutex_);
  pins_ = std::move(pins);
}

void ChunkStore::flush() {
  std::promise<void> p;
  auto f = p.get_future();
  Job job;
  job.kind = Job::Kind::kBarrier;
  job.done = [&p](error_code, bool) { p.set_value(); };
  enqueue(std::move(job));
  f.get();
}

Result<void> ChunkStore::evict_now() {
  std::promise<error_code> p;
  auto f = p.get_future();
  Job job;
  job.kind = Job::Kind::kEvict;
  job.done = [&p](error_code ec, bool) { p.set_value(ec); };
  enqueue(std::move(job));
  if (auto ec = f.get())
    return ec;
  return {};
}

std::vector<std::uint64_t> ChunkStore::sealed_segments() const {
  std::shared_lock lock(state_mutex_);
  std::vector<std::uint64_t> out;
  for (const auto& [seg, m] : segments_) {
    if (m.sealed)
      out.push_back(seg);
  }
  return out;
}

Result<ScrubReport> ChunkStore::scrub_segment(std::uint64_t seg) {
  auto file = segment_file(seg);
  if (!file)
    return Errc::kNotFound;
  std::vector<std::tuple<std::uint64_t, Sha256, std::uint32_t>> records;
  if (auto r = for_each_in_segment(db_.impl(), seg,
                                   [&](std::uint64_t off, const Sha256& id, std::uint32_t len) {
                                     records.emplace_back(off, id, len);
                                   });
      !r) {
    return r.error();
  }
  ScrubReport report;
  report.segments = 1;
  for (const auto& [off, id, len] : records) {
    const IndexEntry e{seg, off, len};
    ++report.records;
    report.bytes += kRecordHeaderBytes + len;
    auto body = read_record(*file, e, id);
    if (body)
      continue;
    if (body.error() != Errc::kCorrupt && body.error() != Errc::kIo)
      return body.error();
    // Erase only if the index still points at this record (a concurrent re-put may have
    // moved it).
    std::promise<error_code> p;
    auto f = p.get_future();
    Job job;
    job.kind = Job::Kind::kErase;
    job.id = id;
    job.expect = e;
    job.done = [&p](error_code ec, bool) { p.set_value(ec); };
    enqueue(std::move(job));
    if (!f.get())
      report.erased.push_back(id);
  }
  return report;
}

Result<ScrubReport> ChunkStore::scrub(std::uint64_t bytes_per_second) {
  ScrubReport total;
  const auto start = std::chrono::steady_clock::now();
  for (const std::uint64_t seg : sealed_segments()) {
    auto r = scrub_segment(seg);
    if (!r) {
      if (r.error() == Errc::kNotFound)
        continue;  // evicted meanwhile
      return r.error();
    }
    total.segments += r->segments;
    total.records += r->records;
    total.bytes += r->bytes;
    total.erased.insert(total.erased.end(), r->erased.begin(), r->erased.end());
    if (bytes_per_second > 0) {
      // Bounded rate: sleep until the bytes read so far fit the budget.
      const auto due = start + std::chrono::microseconds(total.bytes * 1000000 / bytes_per_second);
      std::this_thread::sleep_until(due);
    }
  }
  return total;
}

Result<std::vector<Sha256>> ChunkStore::verify_index() const {
  auto& db = db_.impl();
  std::vector<Sha256> bad;
  std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator({}, db.handle(kCfChunks)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto id = Sha256::from_bytes(
        std::span(reinterpret_cast<const std::uint8_t*>(it->key().data()), it->key().size()));
    auto e = decode_entry(it->value().ToStringView());
    if (!id || !e) {
      bad.push_back(id ? *id : Sha256{});
      continue;
    }
    auto file = segment_file(e->segment);
    auto body =
        file ? read_record(*file, *e, *id) : Result<std::vector<std::uint8_t>>(Errc::kNotFound);
    if (!body || sha256_of(*body) != *id)
      bad.push_back(*id);
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return bad;
}

StoreStats ChunkStore::stats() const {
  std::shared_lock lock(state_mutex_);
  StoreStats s;
  s.chunks = counters_.chunks;
  s.blobs = counters_.blobs;
  s.bytes_live = counters_.bytes_live;
  s.evicted_segments = counters_.evicted_segments;
  s.evicted_chunks = counters_.evicted_chunks;
  s.relocated_chunks = counters_.relocated_chunks;
  s.segments = segments_.size();
  for (const auto& [seg, m] : segments_)
    s.bytes_on_disk += m.bytes;
  s.direct_writes = direct_writes_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace edge::store
