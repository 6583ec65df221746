#include "edge/store/checkin_store.hpp"

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

}  // namespace

CheckinStore::CheckinStore(Database& db) : db_(db) {
  auto& d = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfCheckins)));
  it->SeekToLast();
  if (it->Valid() && it->key().size() == 8)
    next_seq_ = get_be64(it->key().data()) + 1;
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

void CheckinStore::record(Checkin checkin) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(checkin));
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
  std::deque<Checkin> batch;
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

void CheckinStore::commit(std::deque<Checkin>& batch) {
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
  for (const auto& c : batch) {
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
  }
  for (const auto& [key, value] : counts) {
    char v[8];
    put_le64(v, value);
    wb.Put(d.handle(kCfDaily), key, rocksdb::Slice(v, 8));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  // A failed write loses this batch; there is no caller to tell, so the error stays local.
  (void)d.db->Write(wo, &wb);
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
