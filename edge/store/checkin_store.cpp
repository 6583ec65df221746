#include "edge/store/checkin_store.hpp"

#include <algorithm>
#include <ctime>
#include <map>
#include <random>

#include "edge/core/clock.hpp"
#include "edge/core/utf8.hpp"
#include "edge/store/database_impl.hpp"

namespace edge::store {
namespace {

std::string day_of(std::int64_t time_ms) {
  const std::time_t t = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// Fields joined by '\0' (none may contain NUL: the endpoints validate them), time last.
std::string encode(const Checkin& c) {
  std::string out;
  for (const std::string* f : {&c.app_id, &c.device_id, &c.platform, &c.version_name,
                               &c.version_build, &c.action, &c.decision}) {
    out += *f;
    out += '\0';
  }
  out += std::to_string(c.time_ms);
  return out;
}

std::optional<Checkin> decode(std::string_view v) {
  Checkin c;
  std::string* fields[] = {&c.app_id,        &c.device_id, &c.platform, &c.version_name,
                           &c.version_build, &c.action,    &c.decision};
  for (std::string* f : fields) {
    const auto nul = v.find('\0');
    if (nul == std::string_view::npos)
      return std::nullopt;
    f->assign(v.substr(0, nul));
    v.remove_prefix(nul + 1);
  }
  c.time_ms = std::strtoll(std::string(v).c_str(), nullptr, 10);
  return c;
}

}  // namespace

bool names_target_release(std::string_view a) {
  return a.starts_with("download_") || a.ends_with("_fail") || a == "set_next" || a == "delete" ||
         a == "checksum_required" || a == "session_key_required" || a == "insufficient_disk_space";
}

namespace {

std::string join(std::initializer_list<std::string_view> parts) {
  std::string out;
  bool first = true;
  for (auto p : parts) {
    if (!first)
      out += '\0';
    out += p;
    first = false;
  }
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

CheckinStore::CheckinStore(Database& db, CheckinOptions options) : db_(db), options_(options) {
  auto& d = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
  it->SeekToLast();
  if (it->Valid() && it->key().size() == 8)
    next_seq_ = get_be64(it->key().data()) + 1;
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
  writer_ = std::thread([this] { run(); });
}

CheckinStore::~CheckinStore() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

void sanitize(Checkin& c) {
  for (std::string* f : {&c.app_id, &c.device_id, &c.platform, &c.version_name, &c.version_build,
                         &c.action, &c.decision}) {
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
  Item item{std::move(checkins), std::move(done), std::move(node), std::move(generation),
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
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      // Nobody waits for these check-ins (an origin's own, answered before the commit):
      // let a batch gather for up to kPacedWait, unless someone starts waiting meanwhile.
      cv_.wait_for(lock, kPacedWait,
                   [&] { return stop_ || urgent_ || queue_.size() >= kPacedBatch; });
      if (queue_.empty())
        return;
      batch.swap(queue_);
      urgent_ = false;
    }
    commit(batch);
    {
      std::lock_guard lock(mutex_);
      committed_ += batch.size();
    }
    flushed_.notify_all();
    batch.clear();
  }
}

void CheckinStore::commit(std::deque<Item>& batch) {
  auto& d = db_.impl();
  if (!db_.writable()) {
    // Below store.min_free: refused before anything is read or staged (callers answer 503).
    for (auto& item : batch) {
      (void)d.refuse();
      if (item.done)
        item.done(false, false);
    }
    return;
  }
  rocksdb::WriteBatch wb;
  // Counters touched by this batch, read once from the database, written once.
  std::map<std::string, std::uint64_t> counts;
  const auto bump = [&](const std::string& key) {
    auto it = counts.find(key);
    if (it == counts.end()) {
      std::string v;
      std::uint64_t current = 0;
      if (d.db->Get({}, d.handle(kCfDaily), key, &v).ok() && v.size() == 8)
        current = get_le64(v.data());
      it = counts.emplace(key, current).first;
    }
    ++it->second;
  };
  std::map<std::string, std::uint64_t> node_seq;  // highest applied batch per child node
  constexpr std::int64_t kDayMs = 86'400'000;
  std::int64_t day_number = INT64_MIN;
  std::string day;
  char one_bytes[8];
  put_le64(one_bytes, 1);
  const rocksdb::Slice one(one_bytes, 8);
  // The version each device of this batch runs, as this batch leaves it.
  std::map<std::string, std::string> running;
  const auto running_version = [&](const std::string& key) -> std::string {
    auto it = running.find(key);
    if (it != running.end())
      return it->second;
    std::string v;
    std::string version;
    if (d.db->Get({}, d.handle(kCfDeviceSeen), key, &v).ok()) {
      if (auto prev = decode(v))
        version = prev->version_name;
    }
    return running.emplace(key, version).first->second;
  };
  std::vector<bool> duplicate(batch.size(), false);
  std::uint64_t outbox_added = 0;
  std::uint64_t outbox_bytes = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Item& item = batch[i];
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
    for (const auto& c : item.checkins) {
      char seq[8];
      put_be64(seq, next_seq_++);
      const std::string record = encode(c);
      wb.Put(d.handle(kCfCheckins), rocksdb::Slice(seq, 8), record);
      const std::string seen_key = join({c.app_id, c.device_id});
      // One strftime per day, not per check-in (floor division: times before 1970 too).
      const std::int64_t n = c.time_ms >= 0 ? c.time_ms / kDayMs : (c.time_ms + 1) / kDayMs - 1;
      if (n != day_number) {
        day_number = n;
        day = day_of(c.time_ms);
      }
      if (names_target_release(c.action)) {
        // The event names the bundle being fetched or installed: the device still runs the
        // version it ran before (§9.5), and the event counts against the target.
        Checkin seen = c;
        seen.version_name = running_version(seen_key);
        wb.Put(d.handle(kCfDeviceSeen), seen_key, encode(seen));
        if (!c.version_name.empty())
          bump(join({c.app_id, day, "t", c.version_name, c.action}));
      } else {
        wb.Put(d.handle(kCfDeviceSeen), seen_key, record);
        running[seen_key] = c.version_name;
        if (!c.version_name.empty())
          bump(join({c.app_id, day, "r", c.version_name}));
      }
      // A device counts once per day: its marker key holds 1 (written again if it comes
      // back the same day: the same value).
      wb.Put(d.handle(kCfDaily), join({c.app_id, day, "d", c.device_id}), one);
      bump(join({c.app_id, day, "a", c.action}));
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
  if (!ok && outbox_added > 0) {
    next_outbox_ -= outbox_added;
    std::lock_guard lock(mutex_);
    outbox_depth_ -= std::min(outbox_depth_, outbox_added);
    outbox_bytes_ -= std::min(outbox_bytes_, outbox_bytes);
  }
  if (ok && observer_) {
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!duplicate[i]) {
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

Result<std::map<std::string, DayStats>> CheckinStore::stats(const std::string& app_id) const {
  auto& d = db_.impl();
  std::map<std::string, DayStats> out;
  const std::string prefix = app_id + '\0';
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfDaily)));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    std::string_view rest = it->key().ToStringView().substr(prefix.size());
    const auto p1 = rest.find('\0');
    if (p1 == std::string_view::npos)
      continue;
    const std::string day(rest.substr(0, p1));
    rest.remove_prefix(p1 + 1);
    const auto p2 = rest.find('\0');
    if (p2 == std::string_view::npos || it->value().size() != 8)
      continue;
    const std::string_view kind = rest.substr(0, p2);
    const std::string name(rest.substr(p2 + 1));
    const std::uint64_t n = get_le64(it->value().data());
    DayStats& s = out[day];
    if (kind == "d") {
      s.devices += 1;
    } else if (kind == "r") {
      s.releases[name] = n;
    } else if (kind == "a") {
      s.actions[name] = n;
    } else if (kind == "t") {
      const auto p3 = name.find('\0');
      if (p3 != std::string::npos)
        s.targets[name.substr(0, p3)][name.substr(p3 + 1)] = n;
    }
  }
  if (auto ec = to_error(it->status()))
    return ec;
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

Result<CheckinStore::DevicePage> CheckinStore::devices(
    const std::string& app_id, const std::string& after, std::size_t limit, std::size_t max_scan,
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
