#include "edge/store/state_store.hpp"

#include <cstring>

#include "edge/store/database_impl.hpp"

namespace edge::store {
namespace {

constexpr std::string_view kLastSeqKey = "state_last_seq";

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
  auto& d = db_.impl();
  std::lock_guard lock(write_mutex_);
  rocksdb::WriteBatch wb;
  std::uint64_t seq = last_seq_;
  for (auto& c : batch.changes_) {
    c.seq = ++seq;
    const std::string k = key_of(c.kind, c.app_id, c.key);
    if (c.deleted) {
      wb.Delete(d.handle(cf_of(c.kind)), k);
    } else {
      wb.Put(d.handle(cf_of(c.kind)), k, c.value);
    }
    char sk[8];
    put_be64(sk, c.seq);
    wb.Put(d.handle(kCfChangelog), rocksdb::Slice(sk, 8), encode_change(c));
  }
  char last[8];
  put_le64(last, seq);
  wb.Put(d.handle(kCfMeta), kLastSeqKey, rocksdb::Slice(last, 8));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (auto ec = to_error(d.db->Write(wo, &wb)))
    return ec;
  last_seq_ = seq;
  return seq;
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

Result<std::vector<Change>> StateStore::changes_after(std::uint64_t after,
                                                      std::size_t limit) const {
  auto& d = db_.impl();
  std::vector<Change> out;
  char from[8];
  put_be64(from, after + 1);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfChangelog)));
  for (it->Seek(rocksdb::Slice(from, 8)); it->Valid() && out.size() < limit; it->Next()) {
    if (it->key().size() != 8)
      return Errc::kCorrupt;
    auto c = decode_change(get_be64(it->key().data()), it->value().ToStringView());
    if (!c)
      return Errc::kCorrupt;
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
