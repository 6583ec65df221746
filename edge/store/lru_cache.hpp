#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace edge::store {

/// A sharded LRU cache for index entries in front of RocksDB. Each shard has its own mutex,
/// so event-loop threads rarely contend. Values are copied out.
///
/// Stale fills are prevented with a per-shard epoch: a reader takes `epoch(key)` before it
/// reads the database, and `insert(key, value, epoch)` is dropped if an `erase` of that
/// shard happened in between (the writer invalidates after its commit).
template <class K, class V, class Hash>
class LruCache {
 public:
  static constexpr std::size_t kShards = 16;

  explicit LruCache(std::size_t capacity)
      : per_shard_(std::max<std::size_t>(1, capacity / kShards)) {}

  std::optional<V> get(const K& key) {
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end())
      return std::nullopt;
    s.order.splice(s.order.begin(), s.order, it->second);
    return it->second->second;
  }

  std::uint64_t epoch(const K& key) {
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    return s.epoch;
  }

  void insert(const K& key, V value, std::uint64_t epoch) {
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    if (s.epoch != epoch)
      return;
    if (auto it = s.map.find(key); it != s.map.end()) {
      it->second->second = std::move(value);
      s.order.splice(s.order.begin(), s.order, it->second);
      return;
    }
    s.order.emplace_front(key, std::move(value));
    s.map.emplace(key, s.order.begin());
    if (s.map.size() > per_shard_) {
      s.map.erase(s.order.back().first);
      s.order.pop_back();
    }
  }

  void erase(const K& key) {
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    ++s.epoch;
    if (auto it = s.map.find(key); it != s.map.end()) {
      s.order.erase(it->second);
      s.map.erase(it);
    }
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::list<std::pair<K, V>> order;  // most recent first
    std::unordered_map<K, typename std::list<std::pair<K, V>>::iterator, Hash> map;
    std::uint64_t epoch = 0;
  };
  Shard& shard(const K& key) { return shards_[Hash{}(key) % kShards]; }

  std::size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace edge::store
