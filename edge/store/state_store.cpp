#include "edge/store/state_store.hpp"

#include <algorithm>
#include <cstring>
#include <map>

#include "edge/store/database_impl.hpp"

#include <spdlog/spdlog.h>

namespace edge::store {
namespace {

constexpr std::string_view kLastSeqKey = "state_last_seq";
constexpr std::string_view kEpochKey = "state_feed_epoch";
// What changes_after counts for a change beyond its fields (its seq, kind and framing).
constexpr std::size_t kChangeFraming = 128;
constexpr std::string_view kLogStartKey = "state_log_start";
// Per-channel history (channel_history): + app, NUL, name, NUL, be64(seq) -> encode_change.
// The range ends before kHistoryEnd (':' + 1), and the ready marker sorts outside it.
constexpr std::string_view kHistoryPrefix = "state_channel_history:";
constexpr std::string_view kHistoryEnd = "state_channel_history;";
constexpr std::string_view kHistoryReadyKey = "state_channel_history_ready";
constexpr StateKind kKinds[] = {StateKind::kApp, StateKind::kRelease, StateKind::kChannel,
                                StateKind::kDevice};

Cf cf_of(StateKind kind) {
  switch (kind) {
    case StateKind::kApp: return kCfApps;
    case StateKind::kRelease: return kCfReleases;
    case StateKind::kChannel: return kCfChannels;
    case StateKind::kDevice: return kCfDevices;
  }
  return kCfApps;
}

// Apps are keyed by id; the rest by app id, NUL, name: prefix scans list one app.
std::string key_of(StateKind kind, std::string_view app_id, std::string_view key) {
  std::string k(app_id);
  if (kind != StateKind::kApp) {
    k += '\0';
    k += key;
  }
  return k;
}

// Changelog value: u8 kind, u8 deleted, le32 len(app), app, le32 len(key), key, value.
std::string encode_change(const Change& c) {
  std::string out;
  out.reserve(10 + c.app_id.size() + c.key.size() + c.value.size());
  out += static_cast<char>(c.kind);
  out += static_cast<char>(c.deleted ? 1 : 0);
  char len[4];
  put_le32(len, static_cast<std::uint32_t>(c.app_id.size()));
  out.append(len, 4).append(c.app_id);
  put_le32(len, static_cast<std::uint32_t>(c.key.size()));
  out.append(len, 4).append(c.key);
  out += c.value;
  return out;
}

std::optional<Change> decode_change(std::uint64_t seq, std::string_view v) {
  Change c;
  c.seq = seq;
  if (v.size() < 10)
    return std::nullopt;
  const auto kind = static_cast<std::uint8_t>(v[0]);
  if (kind < 1 || kind > 4)
    return std::nullopt;
  c.kind = static_cast<StateKind>(kind);
  c.deleted = v[1] != 0;
  std::size_t pos = 2;
  for (std::string* field : {&c.app_id, &c.key}) {
    if (v.size() < pos + 4)
      return std::nullopt;
    const std::uint32_t n = get_le32(v.data() + pos);
    pos += 4;
    if (v.size() - pos < n)
      return std::nullopt;
    field->assign(v.substr(pos, n));
    pos += n;
  }
  c.value.assign(v.substr(pos));
  return c;
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

void put_meta_u64(Database::Impl& d, rocksdb::WriteBatch& wb, std::string_view key,
                  std::uint64_t v) {
  char b[8];
  put_le64(b, v);
  wb.Put(d.handle(kCfMeta), key, rocksdb::Slice(b, 8));
}

void stage_doc(Database::Impl& d, rocksdb::WriteBatch& wb, const Change& c) {
  const std::string k = key_of(c.kind, c.app_id, c.key);
  if (c.deleted) {
    wb.Delete(d.handle(cf_of(c.kind)), k);
  } else {
    wb.Put(d.handle(cf_of(c.kind)), k, c.value);
  }
}

void stage_log(Database::Impl& d, rocksdb::WriteBatch& wb, const Change& c) {
  char sk[8];
  put_be64(sk, c.seq);
  wb.Put(d.handle(kCfChangelog), rocksdb::Slice(sk, 8), encode_change(c));
}

std::string history_prefix(std::string_view app_id, std::string_view name) {
  std::string k(kHistoryPrefix);
  k.append(app_id).push_back('\0');
  k.append(name).push_back('\0');
  return k;
}

std::string history_key(std::string_view prefix, std::uint64_t seq) {
  std::string k(prefix);
  char b[8];
  put_be64(b, seq);
  k.append(b, 8);
  return k;
}

// Stages the new versions of each channel in `added` (prefix -> seqs, ascending, all newer
// than what is stored) and deletes what falls beyond the newest `keep` of each.
void stage_history(Database::Impl& d, rocksdb::WriteBatch& wb,
                   const std::map<std::string, std::vector<const Change*>>& added,
                   std::size_t keep) {
  for (const auto& [prefix, changes] : added) {
    std::vector<std::string> keys;
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
      keys.push_back(it->key().ToString());
    for (const Change* c : changes) {
      keys.push_back(history_key(prefix, c->seq));
      wb.Put(d.handle(kCfMeta), keys.back(), encode_change(*c));
    }
    // A Delete after a Put of the same key in one batch wins: a batch of more than `keep`
    // versions of one channel keeps only its newest.
    for (std::size_t i = 0; i + keep < keys.size(); ++i)
      wb.Delete(d.handle(kCfMeta), keys[i]);
  }
}

Result<void> write_synced(Database::Impl& d, rocksdb::WriteBatch& wb) {
  if (auto ec = d.write(wb, true, true))
    return ec;
  return {};
}

}  // namespace

std::string_view state_kind_name(StateKind kind) {
  switch (kind) {
    case StateKind::kApp: return "app";
    case StateKind::kRelease: return "release";
    case StateKind::kChannel: return "channel";
    case StateKind::kDevice: return "device";
  }
  return "unknown";
}

StateStore::StateStore(Database& db) : db_(db) {
  auto& d = db_.impl();
  std::string v;
  const auto s = d.db->Get({}, d.handle(kCfMeta), kLastSeqKey, &v);
  if (s.ok()) {
    if (v.size() != 8)
      throw StoreError(Errc::kCorrupt, "meta/state_last_seq has " + std::to_string(v.size()) +
                                           " bytes, expected 8");
    last_seq_ = get_le64(v.data());
  } else if (!s.IsNotFound()) {
    throw StoreError(Errc::kDatabase, "reading meta/state_last_seq: " + s.ToString());
  }
  log_start_ = 1;
  if (d.db->Get({}, d.handle(kCfMeta), kLogStartKey, &v).ok() && v.size() == 8)
    log_start_ = get_le64(v.data());
  if (d.db->Get({}, d.handle(kCfMeta), kEpochKey, &v).ok() && valid_epoch(v))
    epoch_ = v;
  if (!d.db->Get({}, d.handle(kCfMeta), kHistoryReadyKey, &v).ok())
    backfill_channel_history();
}

void StateStore::backfill_channel_history() {
  // Data from before the per-channel history: the retained changelog is the history there
  // is. Read in pages; only channel changes are kept, at most history_keep_ per channel.
  std::map<std::string, std::vector<Change>> by_channel;
  for (std::uint64_t after = log_start_ > 0 ? log_start_ - 1 : 0;;) {
    auto page = changes_after(after, 10'000, 16 << 20);
    if (!page) {
      spdlog::error("channel history: cannot read the changelog to fill it: {}",
                    page.error().message());
      return;  // tried again at the next start
    }
    if (page->empty())
      break;
    for (auto& c : *page) {
      if (c.kind != StateKind::kChannel)
        continue;
      auto& versions = by_channel[history_prefix(c.app_id, c.key)];
      versions.push_back(std::move(c));
      if (versions.size() > 2 * history_keep_)
        versions.erase(versions.begin(), versions.end() - history_keep_);
    }
    after = page->back().seq;
  }
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  for (auto& [prefix, versions] : by_channel) {
    const std::size_t skip = versions.size() > history_keep_ ? versions.size() - history_keep_ : 0;
    for (std::size_t i = skip; i < versions.size(); ++i)
      wb.Put(d.handle(kCfMeta), history_key(prefix, versions[i].seq), encode_change(versions[i]));
  }
  wb.Put(d.handle(kCfMeta), kHistoryReadyKey, "1");
  // A full disk at start must not stop the node: the history is filled at a later start.
  if (auto r = write_synced(d, wb); !r)
    spdlog::error("channel history: cannot store it: {}", r.error().message());
}

void StateStore::set_channel_history_keep(std::size_t versions) {
  std::lock_guard lock(write_mutex_);
  history_keep_ = std::max<std::size_t>(versions, 1);
}

std::size_t StateStore::channel_history_keep() const {
  std::lock_guard lock(write_mutex_);
  return history_keep_;
}

Result<std::vector<Change>> StateStore::channel_history(std::string_view app_id,
                                                        std::string_view name,
                                                        std::size_t limit) const {
  std::vector<Change> out;
  if (has_nul(app_id) || has_nul(name) || limit == 0)
    return out;
  auto& d = db_.impl();
  const std::string prefix = history_prefix(app_id, name);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  // Newest first: from the end of this channel's range backwards.
  it->SeekForPrev(history_key(prefix, ~std::uint64_t{0}));
  for (; it->Valid() && it->key().starts_with(prefix) && out.size() < limit; it->Prev()) {
    if (it->key().size() != prefix.size() + 8)
      return Errc::kCorrupt;
    auto c = decode_change(get_be64(it->key().data() + prefix.size()), it->value().ToStringView());
    if (!c)
      return Errc::kCorrupt;
    out.push_back(std::move(*c));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

bool StateStore::valid_epoch(std::string_view epoch) {
  if (epoch.empty() || epoch.size() > 32)
    return false;
  return std::all_of(epoch.begin(), epoch.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string StateStore::epoch() const {
  std::lock_guard lock(write_mutex_);
  return epoch_;
}

Result<void> StateStore::set_epoch(const std::string& epoch) {
  if (!valid_epoch(epoch))
    return Errc::kInvalidArgument;
  std::lock_guard lock(write_mutex_);
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  wb.Put(d.handle(kCfMeta), kEpochKey, epoch);
  if (auto r = write_synced(d, wb); !r) {
    if (r.error() == Errc::kStorageFull) {
      epoch_ = epoch;  // written with the next change the disk takes
      epoch_unwritten_ = true;
    }
    return r.error();
  }
  epoch_ = epoch;
  epoch_unwritten_ = false;
  return {};
}

Result<void> StateStore::while_writes_held(
    const std::function<Result<void>(std::uint64_t last_seq, const std::string& epoch)>& fn) {
  std::lock_guard lock(write_mutex_);
  return fn(last_seq_, epoch_);
}

void StateStore::set_log_retention(std::uint64_t entries) {
  std::lock_guard lock(write_mutex_);
  retention_ = entries;
}

std::uint64_t StateStore::log_start() const {
  std::lock_guard lock(write_mutex_);
  return std::min(log_start_, last_seq_ + 1);
}

void StateStore::Batch::put(StateKind kind, std::string_view app_id, std::string_view key,
                            std::string value) {
  changes_.push_back({0, kind, false, std::string(app_id), std::string(key), std::move(value)});
}

void StateStore::Batch::erase(StateKind kind, std::string_view app_id, std::string_view key) {
  changes_.push_back({0, kind, true, std::string(app_id), std::string(key), {}});
}

Result<std::uint64_t> StateStore::commit(Batch& batch) {
  if (batch.changes_.empty())
    return Errc::kInvalidArgument;
  for (const auto& c : batch.changes_) {
    if (has_nul(c.app_id) || has_nul(c.key))
      return Errc::kInvalidArgument;
  }
  std::lock_guard lock(write_mutex_);
  std::uint64_t seq = last_seq_;
  for (auto& c : batch.changes_)
    c.seq = ++seq;
  return write_changes_locked(batch.changes_);
}

Result<std::uint64_t> StateStore::write_changes_locked(const std::vector<Change>& changes) {
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  std::uint64_t seq = last_seq_;
  std::map<std::string, std::vector<const Change*>> history;
  for (const auto& c : changes) {
    if (c.seq <= last_seq_)
      continue;
    stage_doc(d, wb, c);
    stage_log(d, wb, c);
    if (c.kind == StateKind::kChannel)
      history[history_prefix(c.app_id, c.key)].push_back(&c);
    seq = c.seq;
  }
  stage_history(d, wb, history, history_keep_);
  put_meta_u64(d, wb, kLastSeqKey, seq);
  if (epoch_unwritten_)
    wb.Put(d.handle(kCfMeta), kEpochKey, epoch_);
  // Retention: drop the oldest entries in the same batch.
  std::uint64_t start = log_start_;
  if (retention_ > 0 && seq >= retention_ && seq - retention_ + 1 > start) {
    const std::uint64_t new_start = seq - retention_ + 1;
    char from[8];
    char to[8];
    put_be64(from, start);
    put_be64(to, new_start);
    wb.DeleteRange(d.handle(kCfChangelog), rocksdb::Slice(from, 8), rocksdb::Slice(to, 8));
    put_meta_u64(d, wb, kLogStartKey, new_start);
    start = new_start;
  }
  if (auto r = write_synced(d, wb); !r)
    return r.error();
  last_seq_ = seq;
  log_start_ = start;
  epoch_unwritten_ = false;
  return seq;
}

Result<std::uint64_t> StateStore::apply(const std::vector<Change>& changes) {
  std::lock_guard lock(write_mutex_);
  std::uint64_t expect = last_seq_ + 1;
  for (const auto& c : changes) {
    if (has_nul(c.app_id) || has_nul(c.key))
      return Errc::kInvalidArgument;
    if (c.seq < expect)
      continue;
    if (c.seq != expect)
      return Errc::kInvalidArgument;  // a gap: the follower must pull or take a snapshot
    ++expect;
  }
  if (expect == last_seq_ + 1)
    return last_seq_;
  return write_changes_locked(changes);
}

Result<std::vector<Change>> StateStore::list_all_locked() const {
  std::vector<Change> docs;
  auto& d = db_.impl();
  for (const StateKind kind : kKinds) {
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(cf_of(kind))));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      Change c;
      c.kind = kind;
      const std::string k = it->key().ToString();
      if (kind == StateKind::kApp) {
        c.app_id = k;
      } else {
        const auto nul = k.find('\0');
        if (nul == std::string::npos)
          return Errc::kCorrupt;
        c.app_id = k.substr(0, nul);
        c.key = k.substr(nul + 1);
      }
      c.value = it->value().ToString();
      docs.push_back(std::move(c));
    }
    if (auto ec = to_error(it->status()))
      return ec;
  }
  return docs;
}

Result<StateStore::Snapshot> StateStore::snapshot() const {
  std::lock_guard lock(write_mutex_);
  auto docs = list_all_locked();
  if (!docs)
    return docs.error();
  return Snapshot{last_seq_, std::move(*docs), epoch_};
}

Result<std::uint64_t> StateStore::replace(const Snapshot& snap) {
  for (const auto& c : snap.docs) {
    if (has_nul(c.app_id) || has_nul(c.key) || c.deleted)
      return Errc::kInvalidArgument;
  }
  std::lock_guard lock(write_mutex_);
  auto current = list_all_locked();
  if (!current)
    return current.error();
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  for (const auto& c : *current)
    wb.Delete(d.handle(cf_of(c.kind)), key_of(c.kind, c.app_id, c.key));
  for (const auto& c : snap.docs)
    wb.Put(d.handle(cf_of(c.kind)), key_of(c.kind, c.app_id, c.key), c.value);
  char from[8];
  char to[8];
  put_be64(from, 0);
  put_be64(to, ~std::uint64_t{0});
  wb.DeleteRange(d.handle(kCfChangelog), rocksdb::Slice(from, 8), rocksdb::Slice(to, 8));
  // The history's numbers belong to the feed being replaced.
  wb.DeleteRange(d.handle(kCfMeta), kHistoryPrefix, kHistoryEnd);
  put_meta_u64(d, wb, kLastSeqKey, snap.seq);
  put_meta_u64(d, wb, kLogStartKey, snap.seq + 1);
  const bool new_epoch = valid_epoch(snap.epoch);
  if (new_epoch)
    wb.Put(d.handle(kCfMeta), kEpochKey, snap.epoch);
  if (auto r = write_synced(d, wb); !r)
    return r.error();
  last_seq_ = snap.seq;
  log_start_ = snap.seq + 1;
  if (new_epoch) {
    epoch_ = snap.epoch;
    epoch_unwritten_ = false;
  }
  return snap.seq;
}

Result<std::uint64_t> StateStore::put(StateKind kind, std::string_view app_id, std::string_view key,
                                      std::string value) {
  Batch b;
  b.put(kind, app_id, key, std::move(value));
  return commit(b);
}

Result<std::uint64_t> StateStore::erase(StateKind kind, std::string_view app_id,
                                        std::string_view key) {
  Batch b;
  b.erase(kind, app_id, key);
  return commit(b);
}

Result<std::optional<std::string>> StateStore::get(StateKind kind, std::string_view app_id,
                                                   std::string_view key) const {
  auto& d = db_.impl();
  std::string v;
  const auto s = d.db->Get({}, d.handle(cf_of(kind)), key_of(kind, app_id, key), &v);
  if (s.IsNotFound())
    return std::optional<std::string>();
  if (auto ec = to_error(s))
    return ec;
  return std::optional<std::string>(std::move(v));
}

Result<std::vector<std::pair<std::string, std::string>>> StateStore::list(
    StateKind kind, std::string_view app_id) const {
  auto& d = db_.impl();
  std::vector<std::pair<std::string, std::string>> out;
  const std::string prefix = kind == StateKind::kApp ? std::string() : key_of(kind, app_id, "");
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(cf_of(kind))));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    out.emplace_back(it->key().ToString().substr(prefix.size()), it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> StateStore::list_after(
    StateKind kind, std::string_view app_id, std::string_view after, std::size_t limit) const {
  if (kind == StateKind::kApp || has_nul(app_id) || has_nul(after))
    return Errc::kInvalidArgument;
  auto& d = db_.impl();
  std::vector<std::pair<std::string, std::string>> out;
  const std::string prefix = key_of(kind, app_id, "");
  std::string from = key_of(kind, app_id, after);
  if (!after.empty())
    from += '\0';  // the first key past `after`
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(cf_of(kind))));
  for (it->Seek(from); it->Valid() && it->key().starts_with(prefix) && out.size() < limit;
       it->Next()) {
    out.emplace_back(it->key().ToString().substr(prefix.size()), it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<std::vector<Change>> StateStore::changes_after(std::uint64_t after, std::size_t limit,
                                                      std::size_t max_bytes) const {
  auto& d = db_.impl();
  std::vector<Change> out;
  std::size_t bytes = 0;
  char from[8];
  put_be64(from, after + 1);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfChangelog)));
  for (it->Seek(rocksdb::Slice(from, 8)); it->Valid() && out.size() < limit; it->Next()) {
    if (it->key().size() != 8)
      return Errc::kCorrupt;
    auto c = decode_change(get_be64(it->key().data()), it->value().ToStringView());
    if (!c)
      return Errc::kCorrupt;
    bytes += c->app_id.size() + c->key.size() + c->value.size() + kChangeFraming;
    if (!out.empty() && bytes > max_bytes)
      break;
    out.push_back(std::move(*c));
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

std::uint64_t StateStore::last_seq() const {
  std::lock_guard lock(write_mutex_);
  return last_seq_;
}

}  // namespace edge::store
