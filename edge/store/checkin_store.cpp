#include "edge/store/checkin_store.hpp"

#include <algorithm>
#include <ctime>
#include <map>

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

constexpr std::string_view kInflightKey = "outbox_inflight";   // le64 batch, first, last
constexpr std::string_view kBatchSeqKey = "outbox_batch_seq";  // le64 last batch seq used
constexpr std::string_view kNodeKeyPrefix = "checkin_node:";   // + node -> le64 batch seq

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
  std::string v;
  if (d.db->Get({}, d.handle(kCfMeta), kInflightKey, &v).ok() && v.size() == 24) {
    OutboxBatch b;
    b.batch_seq = get_le64(v.data());
    b.first = get_le64(v.data() + 8);
    b.last = get_le64(v.data() + 16);
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
    if (f->size() > kMaxCheckinField)
      f->resize(kMaxCheckinField);
    std::replace(f->begin(), f->end(), '\0', '?');  // NUL separates fields at rest
  }
}

void CheckinStore::record(Checkin checkin, Durable durable) {
  sanitize(checkin);
  Item item;
  item.checkins.push_back(std::move(checkin));
  if (durable)
    item.done = [d = std::move(durable)](bool ok, bool) { d(ok); };
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(item));
    ++enqueued_;
  }
  cv_.notify_one();
}

void CheckinStore::record_batch(std::string node, std::uint64_t batch_seq,
                                std::vector<Checkin> checkins, BatchDone done) {
  for (auto& c : checkins)
    sanitize(c);
  Item item{std::move(checkins), std::move(done), std::move(node), batch_seq};
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(item));
    ++enqueued_;
  }
  cv_.notify_one();
}

void CheckinStore::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = enqueued_;
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
      if (queue_.empty())
        return;
      batch.swap(queue_);
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
  std::vector<bool> duplicate(batch.size(), false);
  std::uint64_t outbox_added = 0;
  std::uint64_t outbox_bytes = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Item& item = batch[i];
    if (!item.node.empty()) {
      const std::string key = std::string(kNodeKeyPrefix) + item.node;
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
      wb.Put(d.handle(kCfDeviceSeen), join({c.app_id, c.device_id}), record);
      const std::string day = day_of(c.time_ms);
      // A device counts once per day: its marker key holds 1.
      counts[join({c.app_id, day, "d", c.device_id})] = 1;
      if (!c.version_name.empty())
        bump(join({c.app_id, day, "r", c.version_name}));
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
  rocksdb::WriteOptions wo;
  wo.sync = true;
  const bool ok = d.db->Write(wo, &wb).ok();
  if (ok && outbox_added > 0) {
    {
      std::lock_guard lock(mutex_);
      outbox_depth_ += outbox_added;
      outbox_bytes_ += outbox_bytes;
    }
    outbox_cv_.notify_all();
    trim_outbox();
  }
  if (!ok)
    next_outbox_ -= outbox_added;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].done)
      batch[i].done(ok, duplicate[i]);
  }
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
  if (dropped == 0 || !d.db->Write({}, &wb).ok())
    return;
  std::lock_guard lock(mutex_);
  outbox_depth_ -= std::min(outbox_depth_, dropped);
  outbox_bytes_ -= std::min(outbox_bytes_, freed);
  outbox_dropped_ += dropped;
}

Result<OutboxBatch> CheckinStore::outbox_next(std::size_t max, std::size_t max_bytes) {
  std::lock_guard olock(outbox_mutex_);
  auto& d = db_.impl();
  OutboxBatch b;
  std::uint64_t until = ~std::uint64_t{0};
  if (inflight_) {
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
    if (!b.checkins.empty() && bytes + it->value().size() > max_bytes)
      break;
    bytes += it->value().size();
    auto c = decode(it->value().ToStringView());
    if (!c)
      continue;  // damaged entry: skipped, and deleted with its batch
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
  rocksdb::WriteBatch wb;
  put_u64(d, wb, kBatchSeqKey, b.batch_seq);
  char v[24];
  put_le64(v, b.batch_seq);
  put_le64(v + 8, b.first);
  put_le64(v + 16, b.last);
  wb.Put(d.handle(kCfMeta), kInflightKey, rocksdb::Slice(v, 24));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto ec = to_error(d.db->Write(wo, &wb)))
    return ec;
  inflight_ = OutboxBatch{b.batch_seq, b.first, b.last, {}};
  return b;
}

Result<void> CheckinStore::outbox_ack(const OutboxBatch& batch) {
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
  }
  wb.Delete(d.handle(kCfMeta), kInflightKey);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto ec = to_error(d.db->Write(wo, &wb)))
    return ec;
  inflight_.reset();
  std::lock_guard lock(mutex_);
  outbox_depth_ -= std::min(outbox_depth_, n);
  outbox_bytes_ -= std::min(outbox_bytes_, bytes);
  return {};
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
    }
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
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
