#include "edge/store/access_store.hpp"

#include <optional>

#include "edge/store/database_impl.hpp"

namespace edge::store {
namespace {

constexpr std::string_view kTokenPrefix = "access_token:";  // + name -> JSON
constexpr std::string_view kAuditPrefix = "access_audit:";  // + be64(n) -> JSON
// Refusals: a range of their own, so they never count against the audit log's bound.
constexpr std::string_view kRefusalPrefix = "access_refusal:";  // + caller's key -> JSON

std::string refusal_key(std::string_view key) {
  std::string k(kRefusalPrefix);
  k += key;
  return k;
}

// The "time_ms" of a stored audit document: the caller writes it as a top-level number.
// Inside a JSON string a '"' is escaped, so the quoted key cannot match inside a value.
std::optional<std::int64_t> time_of(std::string_view doc) {
  constexpr std::string_view kField = "\"time_ms\":";
  const auto at = doc.find(kField);
  if (at == std::string_view::npos)
    return std::nullopt;
  std::int64_t v = 0;
  std::size_t i = at + kField.size(), digits = 0;
  for (; i < doc.size() && doc[i] >= '0' && doc[i] <= '9' && digits < 18; ++i, ++digits)
    v = v * 10 + (doc[i] - '0');
  if (digits == 0)
    return std::nullopt;
  return v;
}

std::string token_key(std::string_view name) {
  std::string k(kTokenPrefix);
  k += name;
  return k;
}

std::string audit_key(std::uint64_t n) {
  std::string k(kAuditPrefix);
  for (int shift = 56; shift >= 0; shift -= 8)
    k.push_back(static_cast<char>((n >> shift) & 0xff));
  return k;
}

std::uint64_t audit_number(std::string_view key) {
  std::uint64_t n = 0;
  for (const char c : key.substr(kAuditPrefix.size()))
    n = (n << 8) | static_cast<unsigned char>(c);
  return n;
}

}  // namespace

AccessStore::AccessStore(Database& db, std::uint64_t audit_keep)
    : db_(db), audit_keep_(audit_keep) {
  auto& d = db_.impl();
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  // The last audit record: the first key past the prefix range, one step back.
  it->Seek(audit_key(~std::uint64_t{0}));
  if (it->Valid())
    it->Prev();
  else
    it->SeekToLast();
  if (it->Valid() && it->key().starts_with(kAuditPrefix) &&
      it->key().size() == kAuditPrefix.size() + 8) {
    next_audit_ = audit_number(it->key().ToStringView()) + 1;
  }
}

Result<void> AccessStore::put_token(std::string_view name, std::string_view doc) {
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  wb.Put(d.handle(kCfMeta), token_key(name), rocksdb::Slice(doc.data(), doc.size()));
  if (auto ec = d.write(wb, true, true))
    return ec;
  return {};
}

Result<void> AccessStore::erase_token(std::string_view name) {
  auto& d = db_.impl();
  std::string v;
  const auto s = d.db->Get({}, d.handle(kCfMeta), token_key(name), &v);
  if (s.IsNotFound())
    return Errc::kNotFound;
  if (auto ec = to_error(s))
    return ec;
  rocksdb::WriteBatch wb;
  wb.Delete(d.handle(kCfMeta), token_key(name));
  if (auto ec = d.write(wb, true, false))
    return ec;
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> AccessStore::tokens() const {
  const auto& d = db_.impl();
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->Seek(kTokenPrefix); it->Valid() && it->key().starts_with(kTokenPrefix); it->Next()) {
    out.emplace_back(std::string(it->key().ToStringView().substr(kTokenPrefix.size())),
                     it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<std::uint64_t> AccessStore::append_audit(std::string_view doc) {
  auto& d = db_.impl();
  std::lock_guard lock(audit_mutex_);
  const std::uint64_t n = next_audit_;
  rocksdb::WriteBatch wb;
  wb.Put(d.handle(kCfMeta), audit_key(n), rocksdb::Slice(doc.data(), doc.size()));
  if (audit_keep_ != 0 && n > audit_keep_)
    wb.Delete(d.handle(kCfMeta), audit_key(n - audit_keep_));
  if (auto ec = d.write(wb, true, true))
    return ec;
  ++next_audit_;
  return n;
}

Result<std::vector<std::pair<std::uint64_t, std::string>>> AccessStore::audit_after(
    std::uint64_t after, std::size_t limit) const {
  const auto& d = db_.impl();
  std::vector<std::pair<std::uint64_t, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->Seek(audit_key(after + 1));
       it->Valid() && it->key().starts_with(kAuditPrefix) && out.size() < limit; it->Next()) {
    out.emplace_back(audit_number(it->key().ToStringView()), it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<std::vector<std::pair<std::uint64_t, std::string>>> AccessStore::audit_before(
    std::uint64_t before, std::size_t limit) const {
  const auto& d = db_.impl();
  std::vector<std::pair<std::uint64_t, std::string>> out;
  if (before == 0)
    return out;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->SeekForPrev(audit_key(before - 1));
       it->Valid() && it->key().starts_with(kAuditPrefix) && out.size() < limit; it->Prev()) {
    if (it->key().size() != kAuditPrefix.size() + 8)
      continue;
    out.emplace_back(audit_number(it->key().ToStringView()), it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<void> AccessStore::put_refusal(std::string_view key, std::string_view doc) {
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  wb.Put(d.handle(kCfMeta), refusal_key(key), rocksdb::Slice(doc.data(), doc.size()));
  if (auto ec = d.write(wb, false, true))
    return ec;
  return {};
}

Result<void> AccessStore::erase_refusal(std::string_view key) {
  auto& d = db_.impl();
  rocksdb::WriteBatch wb;
  wb.Delete(d.handle(kCfMeta), refusal_key(key));
  if (auto ec = d.write(wb, false, false))
    return ec;
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> AccessStore::refusals() const {
  const auto& d = db_.impl();
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->Seek(kRefusalPrefix); it->Valid() && it->key().starts_with(kRefusalPrefix); it->Next()) {
    out.emplace_back(std::string(it->key().ToStringView().substr(kRefusalPrefix.size())),
                     it->value().ToString());
  }
  if (auto ec = to_error(it->status()))
    return ec;
  return out;
}

Result<std::size_t> AccessStore::prune_audit(std::int64_t before_ms) {
  auto& d = db_.impl();
  std::lock_guard lock(audit_mutex_);
  rocksdb::WriteBatch wb;
  std::size_t n = 0;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator({}, d.handle(kCfMeta)));
  for (it->Seek(kAuditPrefix); it->Valid() && it->key().starts_with(kAuditPrefix); it->Next()) {
    const auto t = time_of(it->value().ToStringView());
    if (!t || *t >= before_ms)
      break;
    wb.Delete(d.handle(kCfMeta), it->key());
    ++n;
  }
  if (auto ec = to_error(it->status()))
    return ec;
  if (n == 0)
    return n;
  if (auto ec = d.write(wb, true, false))
    return ec;
  return n;
}

}  // namespace edge::store
