#include "edge/store/checkin_store.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <unordered_set>

#include <xxhash.h>

#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"
#include "edge/core/utf8.hpp"
#include "edge/store/database_impl.hpp"

#include <spdlog/spdlog.h>

namespace edge::store {
namespace {

// Floor division: times before 1970 land in the right second, hour and day too.
std::int64_t floor_div(std::int64_t t, std::int64_t unit) {
  return t >= 0 ? t / unit : (t + 1) / unit - 1;
}

std::string utc_format(std::int64_t time_ms, const char* format) {
  const std::time_t t = static_cast<std::time_t>(floor_div(time_ms, 1000));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[24];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

constexpr std::int64_t kDayMs = 86'400'000;
constexpr std::int64_t kHourMs = 3'600'000;
constexpr std::int64_t kMinuteMs = 60'000;

// The fields of a check-in in their stored order: the first seven, then the time, then the
// three added later (a record written before them simply ends after the time).
template <typename C>
auto head_fields(C& c) {
  return std::array{&c.app_id,        &c.device_id, &c.platform, &c.version_name,
                    &c.version_build, &c.action,    &c.decision};
}
template <typename C>
auto tail_fields(C& c) {
  return std::array{&c.plugin_version, &c.custom_id, &c.default_channel};
}

// Fields joined by '\0' (none holds NUL: sanitize replaced them), the time after the first
// seven. A device's last check-in (its row in the device index) also ends with its timeline's
// head: "@" and a Link.
//
// A Link names a device's newest timeline record in the raw log (its seq; 0: none), or, for a
// device whose timeline began as a ring in kCfTimeline (before timelines were chained through
// the log), kRingLink with the ring's event count. Rows of that time end with the bare count.
constexpr std::uint64_t kRingLink = 1ULL << 63;

bool is_ring(std::uint64_t link) {
  return (link & kRingLink) != 0;
}

void encode_into(std::string& out, const Checkin& c) {
  out.clear();
  for (const std::string* f : head_fields(c)) {
    out += *f;
    out += '\0';
  }
  char digits[24];
  const auto t = std::to_chars(digits, digits + sizeof digits, c.time_ms);
  out.append(digits, t.ptr);
  for (const std::string* f : tail_fields(c)) {
    out += '\0';
    out += *f;
  }
}

std::string encode(const Checkin& c) {
  std::string out;
  encode_into(out, c);
  return out;
}

// A device row: `record` (an encoded check-in) and its timeline's head.
std::string encode_row(std::string_view record, std::uint64_t head) {
  std::string out;
  out.reserve(record.size() + 24);
  out += record;
  out += '\0';
  out += '@';
  char digits[24];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, head).ptr);
  return out;
}

// An encoded check-in; for a device row, `head` is set to its timeline's head.
std::optional<Checkin> decode(std::string_view v, std::uint64_t* head = nullptr) {
  Checkin c;
  for (std::string* f : head_fields(c)) {
    const auto nul = v.find('\0');
    if (nul == std::string_view::npos)
      return std::nullopt;
    f->assign(v.substr(0, nul));
    v.remove_prefix(nul + 1);
  }
  const auto take = [&v] {
    const auto nul = v.find('\0');
    const std::string_view f = v.substr(0, nul);
    v = nul == std::string_view::npos ? std::string_view() : v.substr(nul + 1);
    return f;
  };
  const bool more = v.find('\0') != std::string_view::npos;
  const std::string_view t = take();
  std::from_chars(t.data(), t.data() + t.size(), c.time_ms);
  if (more) {
    for (std::string* f : tail_fields(c))
      f->assign(take());
    if (head != nullptr && !v.empty()) {
      const std::string_view h = take();
      if (h.starts_with('@')) {
        std::from_chars(h.data() + 1, h.data() + h.size(), *head);
      } else {
        std::uint32_t ring_events = 0;  // a row of before the chain
        std::from_chars(h.data(), h.data() + h.size(), ring_events);
        *head = ring_events > 0 ? kRingLink | ring_events : 0;
      }
    }
  }
  return c;
}

// Raw log keys: be64(seq), and for an event on its device's timeline, be64(seq) then
// be64(seq of the device's previous timeline event, 0 for none): each timeline is a chain
// through the log, newest first, and costs no write of its own.
constexpr std::size_t kLogKey = 8;
constexpr std::size_t kLinkedLogKey = 16;

std::uint64_t device_hash(std::string_view seen_key) {
  const std::uint64_t h = XXH3_64bits(seen_key.data(), seen_key.size());
  return h == 0 ? 1 : h;  // 0 marks an empty slot
}

std::uint32_t version_hash(std::string_view v) {
  return static_cast<std::uint32_t>(XXH3_64bits(v.data(), v.size())) | 1;  // 0: none counted
}

// The value of the last put of `key` into column family `cf` in `wb`, if any.
std::optional<std::string> last_put(const rocksdb::WriteBatch& wb, std::uint32_t cf,
                                    std::string_view key) {
  struct Finder : rocksdb::WriteBatch::Handler {
    std::uint32_t cf = 0;
    std::string_view key;
    std::optional<std::string> value;
    rocksdb::Status PutCF(std::uint32_t id, const rocksdb::Slice& k,
                          const rocksdb::Slice& v) override {
      if (id == cf && k.ToStringView() == key)
        value = v.ToString();
      return rocksdb::Status::OK();
    }
    // Whatever else a batch holds is skipped (the defaults refuse non-default families).
    rocksdb::Status DeleteCF(std::uint32_t, const rocksdb::Slice&) override {
      return rocksdb::Status::OK();
    }
    rocksdb::Status SingleDeleteCF(std::uint32_t, const rocksdb::Slice&) override {
      return rocksdb::Status::OK();
    }
    rocksdb::Status DeleteRangeCF(std::uint32_t, const rocksdb::Slice&,
                                  const rocksdb::Slice&) override {
      return rocksdb::Status::OK();
    }
    rocksdb::Status MergeCF(std::uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
      return rocksdb::Status::OK();
    }
  } finder;
  finder.cf = cf;
  finder.key = key;
  (void)wb.Iterate(&finder);
  return finder.value;
}

}  // namespace

bool names_target_release(std::string_view a) {
  return a.starts_with("download_") || a.ends_with("_fail") || a == "set_next" || a == "delete" ||
         a == "checksum_required" || a == "session_key_required" || a == "insufficient_disk_space";
}

std::string_view analytics_platform(std::string_view platform) {
  if (platform.empty() || platform == "ios" || platform == "android" || platform == "electron")
    return platform;
  return kOtherName;
}

std::string_view analytics_release(std::string_view version_name) {
  return version_name.substr(0, version_name.find(':'));
}

// Buckets written before the cap (or by an older version) read back bounded too, their
// releases without a ':<file>' suffix and their platforms folded (but their targets are not
// checked against the releases: the store cannot see them).
void add_capped(std::map<std::string, std::uint64_t>& m, std::string_view name, std::uint64_t n) {
  auto it = m.find(std::string(name));
  if (it == m.end()) {
    const bool full =
        m.size() - (m.contains(std::string(kOtherName)) ? 1 : 0) >= kMaxAnalyticsNames;
    it = m.try_emplace(std::string(full ? kOtherName : name)).first;
  }
  it->second += n;
}

namespace {

// `parts` joined by NUL into `out` (replacing what it held).
void join_into(std::string& out, std::initializer_list<std::string_view> parts) {
  out.clear();
  bool first = true;
  for (auto p : parts) {
    if (!first)
      out += '\0';
    out += p;
    first = false;
  }
}

std::string join(std::initializer_list<std::string_view> parts) {
  std::string out;
  join_into(out, parts);
  return out;
}

constexpr std::string_view kInflightKey = "outbox_inflight";   // le64 batch, first, last, gen
constexpr std::string_view kBatchSeqKey = "outbox_batch_seq";  // le64 last batch seq used
constexpr std::string_view kNodeKeyPrefix = "checkin_node:";   // + node [:gen] -> le64 seq
// + be64(batch seq) -> le64 time, le32 reason size, reason, then per check-in le32 size + record
constexpr std::string_view kDeadPrefix = "outbox_dead:";

void put_le32(std::string& out, std::uint32_t v) {
  char b[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
               static_cast<char>(v >> 24)};
  out.append(b, 4);
}

bool take_le32(std::string_view& in, std::uint32_t& v) {
  if (in.size() < 4)
    return false;
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  v = p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t{p[3]} << 24);
  in.remove_prefix(4);
  return true;
}

// A dead letter's header, and its check-ins unless only `records` (their count) is wanted.
std::optional<DeadLetter> decode_dead(std::string_view key, std::string_view v,
                                      std::size_t* records = nullptr) {
  DeadLetter d;
  if (key.size() != kDeadPrefix.size() + 8 || v.size() < 12)
    return std::nullopt;
  d.batch_seq = get_be64(key.data() + kDeadPrefix.size());
  d.time_ms = static_cast<std::int64_t>(get_le64(v.data()));
  v.remove_prefix(8);
  std::uint32_t n = 0;
  if (!take_le32(v, n) || v.size() < n)
    return std::nullopt;
  d.reason.assign(v.substr(0, n));
  v.remove_prefix(n);
  while (!v.empty()) {
    if (!take_le32(v, n) || v.size() < n)
      return std::nullopt;
    if (records != nullptr) {
      ++*records;
    } else if (auto c = decode(v.substr(0, n))) {
      d.checkins.push_back(std::move(*c));
    }
    v.remove_prefix(n);
  }
  return d;
}

std::uint64_t meta_u64(Database::Impl& d, std::string_view key) {
  std::string v;
  if (d.db->Get({}, d.handle(kCfMeta), key, &v).ok() && v.size() == 8)
    return get_le64(v.data());
  return 0;
}

void put_u64(Database::Impl& d, rocksdb::WriteBatch& wb, std::string_view key, std::uint64_t v) {
  char b[8];
  put_le64(b, v);
  wb.Put(d.handle(kCfMeta), key, rocksdb::Slice(b, 8));
}

}  // namespace

/// An open-addressing table keyed by device hash: 32 bytes a slot, at most 70% full.
struct CheckinStore::DeviceTable {
  struct Entry {
    std::uint64_t key = 0;         ///< device_hash; 0: empty
    std::uint64_t head = 0;        ///< the head of its timeline (a Link)
    std::int32_t day = INT32_MIN;  ///< the last day the device was counted (days since 1970)
    std::uint32_t version = 0;     ///< version_hash of the release counted that day
    /// Hash of the last update check's fields but its time (0: the last was not one).
    std::uint32_t last_check = 0;
    /// The minute (since 1970) its row in the device index was last written (0: unknown).
    std::uint32_t row_minute = 0;
  };
  static_assert(sizeof(Entry) == 32);
  std::vector<Entry> slots = std::vector<Entry>(1024);
  std::size_t size = 0;

  Entry& at(std::uint64_t key) {
    if ((size + 1) * 10 > slots.size() * 7)
      grow();
    std::size_t i = key & (slots.size() - 1);
    while (slots[i].key != 0 && slots[i].key != key)
      i = (i + 1) & (slots.size() - 1);
    if (slots[i].key == 0) {
      slots[i].key = key;
      ++size;
    }
    return slots[i];
  }
  void prefetch(std::uint64_t key) const { __builtin_prefetch(&slots[key & (slots.size() - 1)]); }
  void grow() {
    std::vector<Entry> old(slots.size() * 2);
    old.swap(slots);
    for (const Entry& e : old) {
      if (e.key == 0)
        continue;
      std::size_t i = e.key & (slots.size() - 1);
      while (slots[i].key != 0)
        i = (i + 1) & (slots.size() - 1);
      slots[i] = e;
    }
  }
};

CheckinStore::CheckinStore(Database& db, CheckinOptions options)
    : db_(db), options_(options), table_(std::make_unique<DeviceTable>()) {
  auto& d = db_.impl();
  // The device table, from every device's last check-in (about 1 s per million devices).
  {
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDeviceSeen)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::uint64_t head = 0;
      const auto c = decode(it->value().ToStringView(), &head);
      if (!c)
        continue;
      auto& e = table_->at(device_hash(it->key().ToStringView()));
      e.day = static_cast<std::int32_t>(floor_div(c->time_ms, kDayMs));
      e.version = c->version_name.empty() ? 0 : version_hash(c->version_name);
      e.head = head;
      // Sequence numbers never go back, even when retention emptied the log: a chain must
      // not run into another device's record.
      if (!is_ring(head))
        next_seq_ = std::max(next_seq_, head + 1);
    }
    table_size_ = table_->size;
    table_capacity_ = table_->slots.size();
  }
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
  it->SeekToLast();
  if (it->Valid() && it->key().size() >= kLogKey)
    next_seq_ = std::max(next_seq_, get_be64(it->key().data()) + 1);
  // The outbox survives restarts: count what waits, find the next seq and the batch that
  // was in flight.
  std::unique_ptr<rocksdb::Iterator> ob(d.db->NewIterator({}, d.handle(kCfOutbox)));
  for (ob->SeekToFirst(); ob->Valid(); ob->Next()) {
    if (ob->key().size() != 8)
      continue;
    ++outbox_depth_;
    outbox_bytes_ += ob->value().size();
    next_outbox_ = get_be64(ob->key().data()) + 1;
  }
  std::unique_ptr<rocksdb::Iterator> dl(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (dl->Seek(kDeadPrefix); dl->Valid() && dl->key().starts_with(kDeadPrefix); dl->Next()) {
    // Counted from the length prefixes: nothing is decoded at start.
    std::size_t records = 0;
    if (decode_dead(dl->key().ToStringView(), dl->value().ToStringView(), &records)) {
      ++dead_batches_;
      dead_checkins_ += records;
    }
  }
  // A new generation at every start (see OutboxBatch::generation); never 0.
  std::random_device rd;
  while (generation_ == 0)
    generation_ = (std::uint64_t{rd()} << 32) ^ rd();
  std::string v;
  if (d.db->Get({}, d.handle(kCfMeta), kInflightKey, &v).ok() &&
      (v.size() == 24 || v.size() == 32)) {
    OutboxBatch b;
    b.batch_seq = get_le64(v.data());
    b.first = get_le64(v.data() + 8);
    b.last = get_le64(v.data() + 16);
    // The batch keeps the generation it was numbered in: its retry must carry its key.
    b.generation = v.size() == 32 ? get_le64(v.data() + 24) : 0;
    next_outbox_ = std::max(next_outbox_, b.last + 1);
    inflight_ = std::move(b);  // its check-ins are re-read by outbox_next
  }
  // The disk guard's free-space check runs on the writer (a periodic statvfs: no thread of
  // its own for it).
  space_checks_ = db_.host_space_checks().count() > 0;
  writer_ = named_thread("checkin-writer", [this] { run(); });
}

CheckinStore::~CheckinStore() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

std::string utc_day(std::int64_t time_ms) {
  return utc_format(time_ms, "%Y-%m-%d");
}

std::string utc_hour(std::int64_t time_ms) {
  return utc_format(time_ms, "%Y-%m-%dT%H");
}

void sanitize(Checkin& c) {
  for (std::string* f :
       {&c.app_id, &c.device_id, &c.platform, &c.version_name, &c.version_build, &c.action,
        &c.decision, &c.plugin_version, &c.custom_id, &c.default_channel}) {
    // Cutting at a byte count could split a character and make the whole batch invalid
    // UTF-8, which a strict receiver refuses for ever.
    if (f->size() > kMaxCheckinField || !valid_utf8(*f))
      *f = utf8_clamp(*f, kMaxCheckinField);
    std::replace(f->begin(), f->end(), '\0', '?');  // NUL separates fields at rest
  }
}

void CheckinStore::record(Checkin checkin, Durable durable) {
  sanitize(checkin);
  Item item;
  item.checkins.push_back(std::move(checkin));
  const bool urgent = static_cast<bool>(durable);
  if (durable)
    item.done = [d = std::move(durable)](bool ok, bool) { d(ok); };
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(item));
    ++enqueued_;
    urgent_ = urgent_ || urgent;
    // A check-in nobody waits for wakes the writer only to start a batch, or when the
    // batch is full: one wake-up per group commit, not one per check-in.
    wake = urgent || queue_.size() == 1 || queue_.size() >= kPacedBatch;
  }
  if (wake)
    cv_.notify_one();
}

void CheckinStore::record_batch(std::string node, std::string generation, std::uint64_t batch_seq,
                                std::vector<Checkin> checkins, BatchDone done) {
  for (auto& c : checkins)
    sanitize(c);
  Item item{{},       std::move(checkins), std::move(done), std::move(node), std::move(generation),
            batch_seq};
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(item));
    ++enqueued_;
    urgent_ = true;
  }
  cv_.notify_one();
}

void CheckinStore::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = enqueued_;
  urgent_ = true;
  cv_.notify_one();
  flushed_.wait(lock, [&] { return committed_ >= target; });
}

std::uint64_t CheckinStore::committed() const {
  std::lock_guard lock(mutex_);
  return committed_;
}

void CheckinStore::run() {
  std::deque<Item> batch;
  while (true) {
    // Woken by work, once a minute for the retention sweep's clock, or for the free-space
    // check (Database::check_space, every DatabaseOptions::check_interval_ms).
    auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    if (space_checks_)
      until = std::min(until, db_.check_space());
    {
      std::unique_lock lock(mutex_);
      cv_.wait_until(lock, until, [&] { return stop_ || !queue_.empty(); });
      // Nobody waits for these check-ins (an origin's own, answered before the commit):
      // let a batch gather for up to kPacedWait, unless someone starts waiting meanwhile.
      if (!queue_.empty()) {
        cv_.wait_for(lock, kPacedWait,
                     [&] { return stop_ || urgent_ || queue_.size() >= kPacedBatch; });
      }
      if (queue_.empty() && stop_)
        return;
      batch.swap(queue_);
      urgent_ = false;
    }
    if (!batch.empty())
      commit(batch);
    for (auto& item : batch) {
      if (item.task)
        item.task();
    }
    {
      std::lock_guard lock(mutex_);
      committed_ += batch.size();
      table_size_ = table_->size;
      table_capacity_ = table_->slots.size();
    }
    flushed_.notify_all();
    batch.clear();
    if (options_.retention_days > 0) {
      const std::int64_t now = wall_clock_ms();
      if (now - last_sweep_ms_ >= kHourMs) {
        last_sweep_ms_ = now;
        retention_pass(now, kSweepDevices);
      }
    }
  }
}

void CheckinStore::run_on_writer(std::function<void()> fn) {
  Item item;
  item.task = std::move(fn);
  std::unique_lock lock(mutex_);
  queue_.push_back(std::move(item));
  const std::uint64_t target = ++enqueued_;
  urgent_ = true;
  cv_.notify_one();
  flushed_.wait(lock, [&] { return committed_ >= target; });
}

void CheckinStore::sweep_retention(std::int64_t now_ms) {
  run_on_writer([this, now_ms] { retention_pass(now_ms, SIZE_MAX); });
}

std::uint64_t CheckinStore::table_devices() const {
  std::lock_guard lock(mutex_);
  return table_size_;
}

std::uint64_t CheckinStore::table_bytes() const {
  std::lock_guard lock(mutex_);
  return table_capacity_ * sizeof(DeviceTable::Entry);
}

void CheckinStore::retention_pass(std::int64_t now_ms, std::size_t max_devices) {
  if (options_.retention_days == 0)
    return;
  auto& d = db_.impl();
  const std::int64_t cutoff_ms = now_ms - std::int64_t{options_.retention_days} * kDayMs;
  const std::string cutoff_day = utc_day(cutoff_ms);
  rocksdb::WriteBatch wb;
  // Buckets and day markers before the cutoff day: one range per app (keys are app \0
  // bucket..., and "\x01" app \0 day ... for markers).
  {
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDaily)));
    it->SeekToFirst();
    while (it->Valid()) {
      const std::string_view k = it->key().ToStringView();
      const auto nul = k.find('\0');
      if (nul == std::string_view::npos) {
        it->Next();
        continue;
      }
      const std::string app(k.substr(0, nul + 1));  // with its NUL
      wb.DeleteRange(d.handle(kCfDaily), app, app + cutoff_day);
      std::string next = app;
      next.back() = '\x01';  // past every key of this app
      it->Seek(next);
    }
    if (auto ec = to_error(it->status()); ec)
      spdlog::warn("retention: reading the aggregates: {}", ec.message());
  }
  // The raw log, which is in arrival order: the first record not older than the cutoff,
  // by bisection over its sequence numbers (arrival and event time agree but for late
  // relayed batches, which then stay a little longer).
  {
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
    it->SeekToFirst();
    if (it->Valid() && it->key().size() >= kLogKey) {
      std::uint64_t lo = get_be64(it->key().data());
      std::uint64_t hi = next_seq_;  // first seq known to be kept (none yet)
      const std::uint64_t first = lo;
      while (lo < hi) {
        const std::uint64_t mid = lo + (hi - lo) / 2;
        char k[8];
        put_be64(k, mid);
        it->Seek(rocksdb::Slice(k, 8));
        const auto c = it->Valid() ? decode(it->value().ToStringView()) : std::nullopt;
        if (!it->Valid() || (c && c->time_ms >= cutoff_ms))
          hi = mid;
        else
          lo = mid + 1;
      }
      if (lo > first) {
        char from[8], to[8];
        put_be64(from, first);
        put_be64(to, lo);
        wb.DeleteRange(d.handle(kCfCheckins), rocksdb::Slice(from, 8), rocksdb::Slice(to, 8));
      }
    }
  }
  // Timelines are chains through the raw log, so they go with it. The rings written before
  // that (kCfTimeline, read only now) go with their device: those of devices not seen since
  // the cutoff, a slice of the devices per pass, while there are any.
  std::unique_ptr<rocksdb::Iterator> ring(d.db->NewIterator({}, d.handle(kCfTimeline)));
  ring->SeekToFirst();
  if (ring->Valid()) {
    // Point deletes of the ring's slots, not a range per device: thousands of range
    // tombstones would slow every read of the timeline family.
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDeviceSeen)));
    it->Seek(timeline_cursor_);
    std::size_t n = 0;
    for (; it->Valid() && n < max_devices; it->Next(), ++n) {
      const auto c = decode(it->value().ToStringView());
      if (c && c->time_ms < cutoff_ms) {
        const std::string prefix = it->key().ToString() + '\0';
        for (ring->Seek(prefix); ring->Valid() && ring->key().starts_with(prefix); ring->Next())
          wb.Delete(d.handle(kCfTimeline), ring->key());
      }
    }
    timeline_cursor_ = it->Valid() ? it->key().ToString() : std::string();
  }
  if (wb.Count() > 0) {
    if (auto ec = d.write(wb, false, false))
      spdlog::warn("retention: deleting data older than {}: {}", cutoff_day, ec.message());
  }
}

void CheckinStore::commit(std::deque<Item>& batch) {
  auto& d = db_.impl();
  if (!db_.writable()) {
    // Below store.min_free: refused before anything is read or staged (callers answer 503).
    for (auto& item : batch) {
      if (item.task)
        continue;
      (void)d.refuse();
      if (item.done)
        item.done(false, false);
    }
    return;
  }
  rocksdb::WriteBatch wb;
  // Counters touched by this batch, read once from the database, written once.
  std::map<std::string, std::uint64_t> counts;
  // The key is built in one reused buffer: a counter this batch already touched costs a
  // lookup, not an allocation.
  std::string key;
  // The counter named by `key`, read from the database at its first touch in this batch; a
  // counter that does not exist yet is created only with `create` (else nullptr).
  const auto counter = [&](bool create) -> std::uint64_t* {
    auto it = counts.find(key);
    if (it != counts.end())
      return &it->second;
    std::string v;
    if (d.db->Get({}, d.handle(kCfDaily), key, &v).ok() && v.size() == 8)
      return &counts.emplace(key, get_le64(v.data())).first->second;
    return create ? &counts.emplace(key, 0).first->second : nullptr;
  };
  const auto bump = [&](std::initializer_list<std::string_view> parts) {
    join_into(key, parts);
    ++*counter(true);
  };
  // The names each counter map touched by a new name holds (by the map's key prefix), read
  // once per batch: at most kMaxAnalyticsNames, found with as many seeks (a target map's
  // keys are <release> \0 <action>: one seek per release).
  std::map<std::string, std::set<std::string, std::less<>>, std::less<>> map_names;
  const auto names_of = [&](const std::string& prefix) -> std::set<std::string, std::less<>>& {
    auto it = map_names.find(prefix);
    if (it != map_names.end())
      return it->second;
    std::set<std::string, std::less<>> names;
    std::unique_ptr<rocksdb::Iterator> scan(d.db->NewIterator({}, d.handle(kCfDaily)));
    scan->Seek(prefix);
    while (scan->Valid() && scan->key().starts_with(prefix) && names.size() < kMaxAnalyticsNames) {
      const std::string_view rest = scan->key().ToStringView().substr(prefix.size());
      const auto nul = rest.find('\0');
      const std::string_view name = rest.substr(0, nul);
      if (name != kOtherName)
        names.emplace(name);
      if (nul == std::string_view::npos) {
        scan->Next();
      } else {
        scan->Seek(prefix + std::string(name) + '\x01');  // past this release's actions
      }
    }
    return map_names.emplace(prefix, std::move(names)).first->second;
  };
  // The name `name` counts under in the map at `prefix`: itself while the map holds it or
  // has room for it, else kOtherName.
  const auto admit = [&](const std::string& prefix, std::string_view name) -> std::string_view {
    if (name == kOtherName)
      return name;
    auto& names = names_of(prefix);
    if (names.contains(name))
      return name;
    if (names.size() >= kMaxAnalyticsNames)
      return kOtherName;
    names.emplace(name);
    return name;
  };
  // Bumps the counter of `name` in the map <app> \0 <bucket> \0 <kind> (and, with an
  // `action`, of `action` in the name's own map below it), capped: a name that is not yet
  // a key of a full map counts under kOtherName.
  std::string prefix;
  const auto bump_name = [&](std::string_view app, std::string_view bucket, std::string_view kind,
                             std::string_view name,
                             std::optional<std::string_view> action = std::nullopt) {
    if (name.empty())
      name = kOtherName;
    if (action)
      join_into(key, {app, bucket, kind, name, *action});
    else
      join_into(key, {app, bucket, kind, name});
    if (std::uint64_t* n = counter(false)) {
      ++*n;
      return;
    }
    join_into(prefix, {app, bucket, kind, ""});
    const std::string_view kept = admit(prefix, name);
    std::string_view kept_action;
    if (action) {
      prefix.append(kept);
      prefix += '\0';
      kept_action = admit(prefix, *action);
    }
    if (kept == name && (!action || kept_action == *action)) {
      ++counts.emplace(key, 0).first->second;  // a new name with room: `key` still names it
    } else if (action) {
      bump({app, bucket, kind, kept, kept_action});
    } else {
      bump({app, bucket, kind, kept});
    }
  };
  std::map<std::string, std::uint64_t> node_seq;  // highest applied batch per child node
  // One strftime per hour of event time, not per check-in.
  std::int64_t hour_number = INT64_MIN;
  std::string hour, day;
  char one_bytes[8];
  put_le64(one_bytes, 1);
  const rocksdb::Slice one(one_bytes, 8);
  // Hashes of the day markers this batch puts (a late event must not count a device twice
  // before the batch is written).
  std::unordered_set<std::uint64_t> markers;
  // A day marker says a device was counted that day, for late events. The device's current
  // day is in the device table, so its marker is only written once the device moves past
  // it (or a late event counts it): a new device costs one put fewer.
  const auto marker_of = [](const Checkin& c, const std::string& day_text) {
    return join({"\x01" + c.app_id, day_text, c.device_id});
  };
  const auto put_marker = [&](const std::string& marker) {
    markers.insert(device_hash(marker));
    wb.Put(d.handle(kCfDaily), marker, one);
  };
  // Counts a device for `day_text` (and the release it runs); `late`: an event of an
  // earlier day than the device's current one, counted only if its marker says it was not.
  // Per-release usage names (usage_name), each (app, release) asked of the control snapshot
  // once per run: a batch's check-ins mostly name the same few.
  std::string memo_app;
  std::string memo_release;
  bool memo_known = false;
  const auto usage = [&](const Checkin& c,
                         std::string_view version) -> std::optional<std::string_view> {
    const std::string_view name = usage_name(version, c.version_build, [&](std::string_view r) {
      if (!options_.is_release)
        return true;
      if (r != memo_release || c.app_id != memo_app) {
        memo_known = options_.is_release(c.app_id, r);
        memo_app = c.app_id;
        memo_release = std::string(r);
      }
      return memo_known;
    });
    return name.empty() ? std::nullopt : std::optional(name);
  };
  const auto count_day = [&](const Checkin& c, const std::string& day_text,
                             const std::string& version, bool late) {
    const std::string marker = marker_of(c, day_text);
    if (late) {
      std::string v;
      if (markers.contains(device_hash(marker)))
        return;  // this batch counted it already
      if (d.db->Get({}, d.handle(kCfDaily), marker, &v).ok())
        return;  // counted that day already (its release too, but for a change of release)
      put_marker(marker);
    }
    bump({c.app_id, day_text, "D", ""});
    if (const auto name = usage(c, version))
      bump_name(c.app_id, day_text, "v", *name);
  };
  // The version each device of this batch runs, as this batch leaves it.
  // Appended per event (no map: a node and a key copy per check-in were ~4% of the
  // writer), searched from the newest back by the rare events that ask (target-naming and
  // late ones).
  struct Running {
    std::uint64_t hash;  // device_hash of app \0 device
    const Checkin* checkin;
    std::string version;
  };
  std::vector<Running> running;
  const auto find_running = [&](std::uint64_t hash, const Checkin& c) -> const Running* {
    for (auto it = running.rbegin(); it != running.rend(); ++it) {
      if (it->hash == hash && it->checkin->device_id == c.device_id &&
          it->checkin->app_id == c.app_id)
        return &*it;
    }
    return nullptr;
  };
  const auto running_version = [&](std::uint64_t hash, const Checkin& c,
                                   const std::string& key) -> std::string {
    if (const Running* r = find_running(hash, c))
      return r->version;
    std::string v;
    std::string version;
    if (d.db->Get({}, d.handle(kCfDeviceSeen), key, &v).ok()) {
      if (auto prev = decode(v))
        version = prev->version_name;
    }
    running.push_back({hash, &c, version});
    return version;
  };
  std::vector<bool> duplicate(batch.size(), false);
  std::uint64_t outbox_added = 0;
  std::uint64_t outbox_bytes = 0;
  const std::uint32_t ring = options_.timeline_events;
  std::vector<DeviceTable::Entry> undo;
  std::vector<std::string> seen_keys;  // per check-in of an item: app \0 device
  std::vector<std::uint64_t> hashes;   // and its device_hash
  std::string record;                  // the check-in being written, encoded
  std::string check_text;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Item& item = batch[i];
    if (item.task)
      continue;
    if (!item.node.empty()) {
      std::string key = std::string(kNodeKeyPrefix) + item.node;
      if (!item.generation.empty())
        key += ":" + item.generation;
      auto it = node_seq.find(key);
      if (it == node_seq.end())
        it = node_seq.emplace(key, meta_u64(d, key)).first;
      if (item.batch_seq <= it->second) {
        duplicate[i] = true;
        continue;
      }
      it->second = item.batch_seq;
      put_u64(d, wb, key, item.batch_seq);
    }
    // Each device's key and hash first: the device table is a cache miss per check-in with
    // many devices, so the loop asks for a later check-in's entry ahead (a hint; entries
    // may move if the table grows).
    seen_keys.clear();
    hashes.clear();
    for (const auto& c : item.checkins) {
      seen_keys.push_back(join({c.app_id, c.device_id}));
      hashes.push_back(device_hash(seen_keys.back()));
    }
    for (std::size_t j = 0; j < item.checkins.size(); ++j) {
      const Checkin& c = item.checkins[j];
      if (j + 4 < hashes.size())
        table_->prefetch(hashes[j + 4]);
      encode_into(record, c);
      const std::string& seen_key = seen_keys[j];
      const std::int64_t h = floor_div(c.time_ms, kHourMs);
      if (h != hour_number) {
        hour_number = h;
        hour = utc_hour(c.time_ms);
        day = hour.substr(0, 10);
      }
      // A target-naming event names the bundle being fetched or installed: the device still
      // runs the version it ran before (§9.5), and the event counts against the target.
      const bool target = names_target_release(c.action);
      const std::string version = target ? running_version(hashes[j], c, seen_key) : c.version_name;
      DeviceTable::Entry& e = table_->at(hashes[j]);
      undo.push_back(e);  // restored if the write fails
      // An update check that repeats the device's previous event (the same fields but the
      // time: same versions, same answer) adds nothing to its timeline: an app checks at
      // every start.
      std::uint32_t check = 0;
      if (c.action == "updates") {
        join_into(check_text, {c.platform, c.version_name, c.version_build, c.decision,
                               c.plugin_version, c.custom_id, c.default_channel});
        check = version_hash(check_text);
      }
      const bool repeat = check != 0 && check == e.last_check;
      const bool to_timeline = ring > 0 && !repeat;
      e.last_check = check;
      // The raw log's record; on the timeline, linked to the device's previous one.
      const std::uint64_t seq = next_seq_++;
      char log_key[kLinkedLogKey];
      put_be64(log_key, seq);
      put_be64(log_key + kLogKey, e.head);
      wb.Put(d.handle(kCfCheckins), rocksdb::Slice(log_key, to_timeline ? kLinkedLogKey : kLogKey),
             record);
      if (to_timeline)
        e.head = seq;
      // A late event (an earlier day than the device's current one: relayed by an edge that
      // was cut off) goes to the timeline and the counters of its own hour and day, but the
      // device's row keeps its newest state; only the timeline's head in it moves on (a
      // restart resumes the chain from it, and the device table's day from its time).
      const auto dn = static_cast<std::int32_t>(floor_div(c.time_ms, kDayMs));
      const bool late = e.day != INT32_MIN && dn < e.day;
      // The minute of the event: a device that repeats its update check keeps its row (its
      // last check-in, the same but for the time) for the rest of the minute it was written
      // in, then the next repeat refreshes it. The same day only: the row's day is the
      // device's day in the device table, rebuilt from the rows at a start.
      const auto minute = static_cast<std::uint32_t>(
          std::clamp<std::int64_t>(floor_div(c.time_ms, kMinuteMs), 1, UINT32_MAX));
      const bool fresh_row = repeat && dn == e.day && minute == e.row_minute;
      if (late) {
        if (to_timeline) {
          // The row as this batch left it (rare: the device wrote earlier in the batch),
          // else as stored.
          std::optional<std::string> row;
          if (find_running(hashes[j], c) != nullptr)
            row = last_put(wb, d.handle(kCfDeviceSeen)->GetID(), seen_key);
          if (std::string v; !row && d.db->Get({}, d.handle(kCfDeviceSeen), seen_key, &v).ok())
            row = std::move(v);
          if (auto newest = row ? decode(*row) : std::nullopt)
            wb.Put(d.handle(kCfDeviceSeen), seen_key, encode_row(encode(*newest), e.head));
        }
      } else if (target) {
        Checkin seen = c;
        seen.version_name = version;
        wb.Put(d.handle(kCfDeviceSeen), seen_key, encode_row(encode(seen), e.head));
        e.row_minute = minute;
      } else {
        if (!fresh_row) {
          wb.Put(d.handle(kCfDeviceSeen), seen_key, encode_row(record, e.head));
          e.row_minute = minute;
        }
        running.push_back({hashes[j], &c, c.version_name});
      }
      if (!c.version_name.empty()) {
        const std::string_view release = analytics_release(c.version_name);
        if (target) {
          const bool known = release == "builtin" || !options_.is_release ||
                             (!release.empty() && options_.is_release(c.app_id, release));
          bump_name(c.app_id, hour, "t", known ? release : kOtherName, c.action);
        } else if (const auto name = usage(c, c.version_name)) {
          bump_name(c.app_id, hour, "r", *name);
          if (c.action == "set")
            bump_name(c.app_id, hour, "i", *name);
        }
      }
      // Distinct devices per day (and per release that day), from the device table: a
      // device's first event of a day counts it, and leaves its marker for late events.
      const std::uint32_t vh = version.empty() ? 0 : version_hash(version);
      if (late) {
        count_day(c, day, version, true);
      } else if (dn > e.day) {
        if (e.day != INT32_MIN) {
          // Leaving the day the device was counted on: its marker, for late events of it.
          put_marker(marker_of(c, utc_day(std::int64_t{e.day} * kDayMs)));
        }
        e.day = dn;
        e.version = vh;
        count_day(c, day, version, false);
      } else if (vh != 0 && vh != e.version) {
        e.version = vh;  // the same day, another release
        if (const auto name = usage(c, version))
          bump_name(c.app_id, day, "v", *name);
      }
      bump_name(c.app_id, hour, "a", c.action);
      if (!c.platform.empty())
        bump_name(c.app_id, hour, "p", analytics_platform(c.platform));
      if (options_.outbox) {
        char ok[8];
        put_be64(ok, next_outbox_++);
        wb.Put(d.handle(kCfOutbox), rocksdb::Slice(ok, 8), record);
        ++outbox_added;
        outbox_bytes += record.size();
      }
    }
  }
  for (const auto& [key, value] : counts) {
    char v[8];
    put_le64(v, value);
    wb.Put(d.handle(kCfDaily), key, rocksdb::Slice(v, 8));
  }
  // Counted before the write: the uploader can send and acknowledge an entry as soon as it
  // is written, and its acknowledgement must find it counted (else the depth would stay
  // one too high for ever, and the uploader spin on an outbox it thinks is not empty).
  if (outbox_added > 0) {
    std::lock_guard lock(mutex_);
    outbox_depth_ += outbox_added;
    outbox_bytes_ += outbox_bytes;
  }
  // Synced when someone was told, or will be told, that these check-ins are kept (an
  // edge's device, a child's batch, an outbox entry); an origin's own device check-ins are
  // answered before their commit, so a sync per batch would buy them nothing.
  bool sync = options_.outbox;
  for (const auto& item : batch)
    sync = sync || static_cast<bool>(item.done) || !item.node.empty();
  const bool ok = !d.write(wb, sync, true);
  if (ok && outbox_added > 0) {
    outbox_cv_.notify_all();
    trim_outbox();
  }
  if (!ok) {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it)
      table_->at(it->key) = *it;
  }
  if (!ok && outbox_added > 0) {
    next_outbox_ -= outbox_added;
    std::lock_guard lock(mutex_);
    outbox_depth_ -= std::min(outbox_depth_, outbox_added);
    outbox_bytes_ -= std::min(outbox_bytes_, outbox_bytes);
  }
  if (ok && observer_) {
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!duplicate[i] && !batch[i].task) {
        for (const auto& c : batch[i].checkins)
          observer_(c);
      }
    }
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].done)
      batch[i].done(ok, duplicate[i]);
  }
}

Result<std::size_t> CheckinStore::scan_back(std::int64_t since_ms, std::size_t max_records,
                                            const std::function<void(const Checkin&)>& fn) const {
  const auto& d = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
  std::size_t n = 0;
  for (it->SeekToLast(); it->Valid() && n < max_records; it->Prev()) {
    ++n;
    auto c = decode(it->value().ToStringView());
    if (!c)
      continue;
    // Check-ins relayed by edges arrive late: the log is in arrival order, not time
    // order, so the scan goes on for 10 minutes of event time past the cutoff.
    if (c->time_ms < since_ms) {
      if (c->time_ms < since_ms - 600'000)
        break;
      continue;
    }
    fn(*c);
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return n;
}

void CheckinStore::trim_outbox() {
  {
    std::lock_guard lock(mutex_);
    if (outbox_bytes_ <= options_.outbox_max_bytes)
      return;
  }
  std::lock_guard olock(outbox_mutex_);
  auto& d = db_.impl();
  std::uint64_t excess = 0;
  {
    std::lock_guard lock(mutex_);
    excess =
        outbox_bytes_ > options_.outbox_max_bytes ? outbox_bytes_ - options_.outbox_max_bytes : 0;
  }
  rocksdb::WriteBatch wb;
  std::uint64_t dropped = 0;
  std::uint64_t freed = 0;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfOutbox)));
  for (it->SeekToFirst(); it->Valid() && freed < excess; it->Next()) {
    const std::uint64_t seq = get_be64(it->key().data());
    if (inflight_ && seq >= inflight_->first && seq <= inflight_->last)
      continue;  // the batch on the wire stays whole
    wb.Delete(d.handle(kCfOutbox), it->key());
    ++dropped;
    freed += it->value().size();
  }
  if (dropped == 0 || d.write(wb, false, false))
    return;
  std::lock_guard lock(mutex_);
  outbox_depth_ -= std::min(outbox_depth_, dropped);
  outbox_bytes_ -= std::min(outbox_bytes_, freed);
  outbox_dropped_ += dropped;
}

Result<OutboxBatch> CheckinStore::outbox_next(std::size_t max, std::size_t max_bytes,
                                              const Cost& cost) {
  std::lock_guard olock(outbox_mutex_);
  auto& d = db_.impl();
  OutboxBatch b;
  std::uint64_t until = ~std::uint64_t{0};
  if (inflight_) {
    b.generation = inflight_->generation;
    b.batch_seq = inflight_->batch_seq;
    b.first = inflight_->first;
    until = inflight_->last;
    max = ~std::size_t{0};
    max_bytes = ~std::size_t{0};
  }
  std::size_t bytes = 0;
  char from[8];
  put_be64(from, b.first);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfOutbox)));
  for (it->Seek(rocksdb::Slice(from, 8)); it->Valid() && b.checkins.size() < max; it->Next()) {
    if (it->key().size() != 8)
      continue;
    const std::uint64_t seq = get_be64(it->key().data());
    if (seq > until)
      break;
    auto c = decode(it->value().ToStringView());
    if (!c)
      continue;  // damaged entry: skipped, and deleted with its batch
    const std::size_t n = cost ? cost(*c) : it->value().size() + 256;
    if (!b.checkins.empty() && bytes + n > max_bytes)
      break;
    bytes += n;
    if (b.checkins.empty() && !inflight_)
      b.first = seq;
    b.last = seq;
    b.checkins.push_back(std::move(*c));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  if (inflight_) {
    b.last = inflight_->last;
    return b;
  }
  if (b.checkins.empty())
    return b;
  // Number the batch and remember its bounds before it leaves: a retry after a crash must
  // carry the same key and the same check-ins.
  b.batch_seq = meta_u64(d, kBatchSeqKey) + 1;
  b.generation = generation_;
  rocksdb::WriteBatch wb;
  put_u64(d, wb, kBatchSeqKey, b.batch_seq);
  char v[32];
  put_le64(v, b.batch_seq);
  put_le64(v + 8, b.first);
  put_le64(v + 16, b.last);
  put_le64(v + 24, b.generation);
  wb.Put(d.handle(kCfMeta), kInflightKey, rocksdb::Slice(v, 32));
  // Never refused while storage is full: sending and acknowledging batches is what
  // empties the outbox.
  if (auto ec = d.write(wb, true, false))
    return ec;
  inflight_ = OutboxBatch{b.generation, b.batch_seq, b.first, b.last, {}};
  return b;
}

Result<void> CheckinStore::outbox_ack(const OutboxBatch& batch) {
  return outbox_remove(batch, nullptr);
}

Result<void> CheckinStore::outbox_dead_letter(const OutboxBatch& batch, std::string_view reason) {
  const std::int64_t now = wall_clock_ms();
  std::string value(8, '\0');
  put_le64(value.data(), static_cast<std::uint64_t>(now));
  const std::string why = utf8_clamp(reason, 1024);
  put_le32(value, static_cast<std::uint32_t>(why.size()));
  value += why;
  return outbox_remove(batch, &value);
}

Result<void> CheckinStore::outbox_remove(const OutboxBatch& batch, std::string* dead) {
  std::lock_guard olock(outbox_mutex_);
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  std::uint64_t n = 0;
  std::uint64_t bytes = 0;
  char from[8];
  put_be64(from, batch.first);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfOutbox)));
  for (it->Seek(rocksdb::Slice(from, 8)); it->Valid(); it->Next()) {
    if (it->key().size() != 8 || get_be64(it->key().data()) > batch.last)
      break;
    wb.Delete(d.handle(kCfOutbox), it->key());
    ++n;
    bytes += it->value().size();
    if (dead != nullptr) {
      put_le32(*dead, static_cast<std::uint32_t>(it->value().size()));
      dead->append(it->value().data(), it->value().size());
    }
  }
  if (auto ec = to_error(it->status()))
    return ec;
  if (dead != nullptr) {
    char key[kDeadPrefix.size() + 8];
    std::copy(kDeadPrefix.begin(), kDeadPrefix.end(), key);
    put_be64(key + kDeadPrefix.size(), batch.batch_seq);
    wb.Put(d.handle(kCfMeta), rocksdb::Slice(key, sizeof key), *dead);
  }
  wb.Delete(d.handle(kCfMeta), kInflightKey);
  // Never refused while storage is full: sending and acknowledging batches is what
  // empties the outbox.
  if (auto ec = d.write(wb, true, false))
    return ec;
  inflight_.reset();
  std::lock_guard lock(mutex_);
  outbox_depth_ -= std::min(outbox_depth_, n);
  outbox_bytes_ -= std::min(outbox_bytes_, bytes);
  if (dead != nullptr) {
    ++dead_batches_;
    dead_checkins_ += n;
  }
  return {};
}

Result<std::vector<DeadLetter>> CheckinStore::dead_letters(std::size_t limit) const {
  auto& d = db_.impl();
  std::vector<DeadLetter> out;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->Seek(kDeadPrefix);
       it->Valid() && it->key().starts_with(kDeadPrefix) && out.size() < limit; it->Next()) {
    if (auto dead = decode_dead(it->key().ToStringView(), it->value().ToStringView()))
      out.push_back(std::move(*dead));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

bool CheckinStore::outbox_wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return outbox_cv_.wait_for(lock, timeout, [&] { return outbox_depth_ > 0 || stop_; }) &&
         outbox_depth_ > 0;
}

OutboxStats CheckinStore::outbox_stats() const {
  OutboxStats s;
  {
    std::lock_guard lock(mutex_);
    s.depth = outbox_depth_;
    s.bytes = outbox_bytes_;
    s.dropped = outbox_dropped_;
    s.dead_batches = dead_batches_;
    s.dead_checkins = dead_checkins_;
  }
  if (s.depth > 0) {
    auto& d = db_.impl();
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfOutbox)));
    it->SeekToFirst();
    if (it->Valid()) {
      if (auto c = decode(it->value().ToStringView()))
        s.oldest_ms = c->time_ms;
    }
  }
  return s;
}

Result<Analytics> CheckinStore::analytics(const std::string& app_id, std::int64_t from_ms,
                                          std::int64_t to_ms) const {
  auto& d = db_.impl();
  Analytics out;
  const std::string prefix = app_id + '\0';
  const std::string first_hour = utc_hour(from_ms);
  const std::string last_hour = utc_hour(to_ms);
  // Days that had a "D" counter: older data (before the counter) counts its markers.
  std::map<std::string, std::uint64_t> legacy_markers;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDaily)));
  // Past every key of the last day: its day keys (day \0 ...) and hours (day T ...).
  const std::string end = prefix + last_hour.substr(0, 10) + 'U';
  for (it->Seek(prefix + first_hour.substr(0, 10));
       it->Valid() && it->key().ToStringView() < std::string_view(end); it->Next()) {
    std::string_view rest = it->key().ToStringView().substr(prefix.size());
    const auto p1 = rest.find('\0');
    if (p1 == std::string_view::npos || it->value().size() != 8)
      continue;
    const std::string_view bucket = rest.substr(0, p1);
    rest.remove_prefix(p1 + 1);
    const auto p2 = rest.find('\0');
    if (p2 == std::string_view::npos)
      continue;
    const std::string_view kind = rest.substr(0, p2);
    const std::string_view name = rest.substr(p2 + 1);
    const std::uint64_t n = get_le64(it->value().data());
    if (bucket.size() == 10) {
      // Day-level keys: distinct devices, and counters written before hourly buckets
      // existed (they count in the day's first hour).
      if (kind == "D") {
        out.days[std::string(bucket)].devices = n;
        continue;
      }
      if (kind == "v") {
        add_capped(out.days[std::string(bucket)].by_release, analytics_release(name), n);
        continue;
      }
      if (kind == "d") {
        ++legacy_markers[std::string(bucket)];
        continue;
      }
    }
    std::string h(bucket);
    if (h.size() == 10)
      h += "T00";
    if (h < first_hour || h > last_hour)
      continue;
    HourStats& s = out.hours[h];
    if (kind == "a") {
      add_capped(s.actions, name, n);
    } else if (kind == "p") {
      add_capped(s.platforms, analytics_platform(name), n);
    } else if (kind == "r") {
      add_capped(s.releases, analytics_release(name), n);
    } else if (kind == "i") {
      add_capped(s.installs, analytics_release(name), n);
    } else if (kind == "t") {
      const auto p3 = name.find('\0');
      if (p3 == std::string_view::npos)
        continue;
      std::string release(analytics_release(name.substr(0, p3)));
      if (!s.targets.contains(release) &&
          s.targets.size() - (s.targets.contains(std::string(kOtherName)) ? 1 : 0) >=
              kMaxAnalyticsNames)
        release = kOtherName;
      add_capped(s.targets[release], name.substr(p3 + 1), n);
    }
  }
  if (auto ec = to_error(it->status()))
    return ec;
  for (const auto& [day, n] : legacy_markers) {
    if (out.days[day].devices == 0)
      out.days[day].devices = n;
  }
  return out;
}

Result<std::vector<TimelineEntry>> CheckinStore::timeline(const std::string& app_id,
                                                          const std::string& device_id,
                                                          std::size_t limit) const {
  auto& d = db_.impl();
  std::vector<TimelineEntry> out;
  const std::string seen_key = join({app_id, device_id});
  std::string v;
  const auto s = d.db->Get({}, d.handle(kCfDeviceSeen), seen_key, &v);
  if (s.IsNotFound() || options_.timeline_events == 0)
    return out;
  if (auto ec = to_error(s))
    return ec;
  std::uint64_t link = 0;
  if (!decode(v, &link))
    return out;
  const std::uint32_t ring = options_.timeline_events;
  // The chain through the raw log, from the newest. It ends at a record that links to
  // nothing, or to the ring the device's timeline began in (before the chain), or at one the
  // retention sweep deleted (then so were the older ones), or that is not the device's
  // (never expected: sequence numbers are not reused).
  {
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
    while (link != 0 && !is_ring(link) && out.size() < ring) {
      char k[kLogKey];
      put_be64(k, link);
      it->Seek(rocksdb::Slice(k, kLogKey));
      auto c = it->Valid() && it->key().size() == kLinkedLogKey &&
                       it->key().starts_with(rocksdb::Slice(k, kLogKey))
                   ? decode(it->value().ToStringView())
                   : std::nullopt;
      if (!c || c->app_id != app_id || c->device_id != device_id) {
        link = 0;
        break;
      }
      link = get_be64(it->key().data() + kLogKey);
      out.push_back(std::move(*c));
    }
    if (auto ec = to_error(it->status()))
      return ec;
  }
  if (is_ring(link) && out.size() < ring) {
    // The ring's slots, read in one pass, then walked back from the newest.
    std::map<std::uint32_t, Checkin> slots;
    const std::string prefix = seen_key + '\0';
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfTimeline)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const std::string_view k = it->key().ToStringView().substr(prefix.size());
      if (k.size() != 4)
        continue;
      const auto* b = reinterpret_cast<const unsigned char*>(k.data());
      const std::uint32_t slot = (std::uint32_t{b[0]} << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
      if (auto c = decode(it->value().ToStringView()))
        slots.emplace(slot, std::move(*c));
    }
    if (auto ec = to_error(it->status()))
      return ec;
    const auto events = static_cast<std::uint32_t>(link & ~kRingLink);
    const std::uint32_t n = std::min<std::uint32_t>(events, ring);
    for (std::uint32_t k = 0; k < n && out.size() < ring; ++k) {
      const auto found = slots.find((events - 1 - k) % ring);
      if (found != slots.end())
        out.push_back(found->second);
    }
  }
  // In arrival order; events relayed by an edge arrive late: newest event first.
  std::stable_sort(out.begin(), out.end(),
                   [](const Checkin& a, const Checkin& b) { return a.time_ms > b.time_ms; });
  if (out.size() > limit)
    out.resize(limit);
  return out;
}

Result<std::map<std::string, std::uint64_t>> CheckinStore::native_builds(
    const std::string& app_id, std::size_t max_devices) const {
  auto& d = db_.impl();
  std::map<std::string, std::uint64_t> out;
  const std::string prefix = app_id + '\0';
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDeviceSeen)));
  std::size_t n = 0;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix) && n < max_devices;
       it->Next(), ++n) {
    if (auto c = decode(it->value().ToStringView()); c && !c->version_build.empty())
      ++out[c->version_build];
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<DevicePage> CheckinStore::devices(const std::string& app_id, const std::string& after,
                                         std::size_t limit, std::size_t max_scan,
                                         const std::function<bool(const Checkin&)>& keep) const {
  auto& d = db_.impl();
  DevicePage page;
  const std::string prefix = app_id + '\0';
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDeviceSeen)));
  it->Seek(prefix + after);
  if (!after.empty() && it->Valid() && it->key().ToStringView() == prefix + after)
    it->Next();  // the cursor names the last device of the previous page
  std::size_t scanned = 0;
  std::string last_id;
  for (; it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (page.devices.size() == limit || scanned == max_scan) {
      page.next = last_id;  // more may follow
      break;
    }
    ++scanned;
    last_id = std::string(it->key().ToStringView().substr(prefix.size()));
    auto c = decode(it->value().ToStringView());
    if (c && keep(*c))
      page.devices.push_back(std::move(*c));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return page;
}

Result<std::optional<Checkin>> CheckinStore::last(const std::string& app_id,
                                                  const std::string& device_id) const {
  auto& d = db_.impl();
  std::string v;
  const auto s = d.db->Get({}, d.handle(kCfDeviceSeen), join({app_id, device_id}), &v);
  if (s.IsNotFound())
    return std::optional<Checkin>();
  if (auto ec = to_error(s))
    return ec;
  return decode(v);
}

}  // namespace edge::store
