#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/store/database.hpp"

namespace edge::store {

/// The kinds of control state (DESIGN §5). Values are stable: they are in the changelog.
enum class StateKind : std::uint8_t { kApp = 1, kRelease = 2, kChannel = 3, kDevice = 4 };
std::string_view state_kind_name(StateKind kind);

/// One entry of the changelog: what an admin write did, with its sequence number. The sync
/// feed streams these to edges in order. `value` is the new JSON document, empty
/// for a deletion.
struct Change {
  std::uint64_t seq = 0;
  StateKind kind = StateKind::kApp;
  bool deleted = false;
  std::string app_id;
  std::string key;  ///< release/channel name or device id; empty for an app
  std::string value;
  friend bool operator==(const Change&, const Change&) = default;
};

/// Apps, releases, channels and device overrides, stored as JSON documents that the control
/// module defines, plus the changelog (DESIGN §3, §5). Every write gets the next sequence
/// number, and the document, its changelog entry and the new last sequence number are
/// committed in one synced RocksDB batch: a write is either wholly there with its number or
/// not at all.
///
/// Thread-safety: all methods may be called from any thread; writes are serialised.
class StateStore {
 public:
  /// Reads the last sequence number. Throws StoreError if the meta entry is damaged.
  explicit StateStore(Database& db);

  /// A group of writes committed atomically, each with its own sequence number (for
  /// example "make this channel public" and "demote the other public one").
  class Batch {
   public:
    void put(StateKind kind, std::string_view app_id, std::string_view key, std::string value);
    void erase(StateKind kind, std::string_view app_id, std::string_view key);
    bool empty() const { return changes_.empty(); }
    /// The staged changes (seq is 0 until committed).
    const std::vector<Change>& changes() const { return changes_; }

   private:
    friend class StateStore;
    std::vector<Change> changes_;
  };

  /// Commits a batch; returns the sequence number of its last change. Errc::kInvalidArgument
  /// for an app id or key containing a NUL byte, or an empty batch.
  Result<std::uint64_t> commit(Batch& batch);
  /// One-write conveniences.
  Result<std::uint64_t> put(StateKind kind, std::string_view app_id, std::string_view key,
                            std::string value);
  Result<std::uint64_t> erase(StateKind kind, std::string_view app_id, std::string_view key);

  /// The document, or nullopt if absent.
  Result<std::optional<std::string>> get(StateKind kind, std::string_view app_id,
                                         std::string_view key) const;
  /// Every (key, document) of one app and kind, ordered by key. For kApp: every app,
  /// (app_id, document), and `app_id` is ignored.
  Result<std::vector<std::pair<std::string, std::string>>> list(StateKind kind,
                                                                std::string_view app_id) const;
  /// Up to `limit` (key, document) of one app and kind (not kApp) with key > `after`,
  /// ordered by key: a page of list() that costs its own size, not the app's.
  Result<std::vector<std::pair<std::string, std::string>>> list_after(StateKind kind,
                                                                      std::string_view app_id,
                                                                      std::string_view after,
                                                                      std::size_t limit) const;
  /// Up to `limit` changes with seq > `after`, in order, and no more than about
  /// `max_bytes` of them, each counted as its fields plus 128 bytes of framing (always at
  /// least one). Check log_start() first: changes
  /// older than the retained log are gone.
  Result<std::vector<Change>> changes_after(std::uint64_t after, std::size_t limit,
                                            std::size_t max_bytes = SIZE_MAX) const;
  /// The newest sequence number (0 before the first write).
  std::uint64_t last_seq() const;
  /// Runs `fn(last_seq, epoch)` while every write of this store waits (a backup's checkpoint
  /// of the database: its control state is exactly the one of that sequence number).
  Result<void> while_writes_held(
      const std::function<Result<void>(std::uint64_t last_seq, const std::string& epoch)>& fn);
  /// The oldest sequence number still in the changelog (last_seq()+1 when it is empty): a
  /// follower whose cursor is below log_start()-1 must take a snapshot.
  std::uint64_t log_start() const;

  /// Keeps at most `entries` changelog entries: each commit deletes the older ones in the
  /// same batch (0 = keep everything, the default).
  void set_log_retention(std::uint64_t entries);

  /// The versions of channel `name` of `app_id`, newest first, at most `limit`: each
  /// channel write (commit or apply) also stores its change in a per-channel history that
  /// keeps the newest channel_history_keep() versions of that channel, apart from the
  /// changelog. Changelog retention never shortens it, so however many other changes come
  /// (a flood of device overrides), rollback and channel history still see the channel's
  /// past. A data directory from before this history existed has it filled from its
  /// retained changelog when it is first opened. replace() empties it (a snapshot carries
  /// no history).
  Result<std::vector<Change>> channel_history(std::string_view app_id, std::string_view name,
                                              std::size_t limit) const;
  /// Versions kept per channel (default kChannelHistoryKeep; at least 1). Applies from the
  /// next write of each channel on.
  void set_channel_history_keep(std::size_t versions);
  std::size_t channel_history_keep() const;
  static constexpr std::size_t kChannelHistoryKeep = 200;

  /// Applies changes numbered upstream (an edge following its upstream, DESIGN §6): their
  /// documents, their changelog entries and the new last seq in one synced batch, so the
  /// follower's cursor (last_seq()) moves atomically with the state. Changes at or below
  /// last_seq() are skipped (already applied); the rest must be contiguous from
  /// last_seq()+1, else Errc::kInvalidArgument and nothing is written. Returns last_seq().
  Result<std::uint64_t> apply(const std::vector<Change>& changes);

  /// The whole state with its sequence number, read consistently (GET /v1/sync/snapshot).
  /// Each document comes as a Change with seq 0.
  struct Snapshot {
    std::uint64_t seq = 0;
    std::vector<Change> docs;
    std::string epoch;  ///< the feed's epoch (see epoch()); empty from older nodes
  };
  Result<Snapshot> snapshot() const;
  /// Replaces every document with `snap.docs`, sets last_seq() to `snap.seq` and empties the
  /// changelog (log_start() becomes snap.seq+1), and takes snap.epoch (when not empty), in
  /// one synced batch.
  Result<std::uint64_t> replace(const Snapshot& snap);

  /// The epoch of this node's feed: which numbering its sequence numbers belong to. The
  /// origin picks one at random when its state is first created; an edge takes its
  /// upstream's (and so serves its children the same one). A follower that sees another
  /// epoch than the one it followed knows the numbering restarted (the upstream's data was
  /// reset or replaced) and takes a snapshot instead of trusting its cursor. Empty: none
  /// yet (a fresh edge, or data from before epochs existed).
  std::string epoch() const;
  /// Sets the epoch (synced). Errc::kInvalidArgument unless 1-32 of [0-9a-f]. On a full disk
  /// (Errc::kStorageFull) the epoch is adopted anyway and written with the next commit.
  Result<void> set_epoch(const std::string& epoch);
  /// True if `epoch` is 1-32 lower-case hex digits.
  static bool valid_epoch(std::string_view epoch);

 private:
  Result<std::vector<Change>> list_all_locked() const;
  Result<std::uint64_t> write_changes_locked(const std::vector<Change>& changes);
  /// Fills the per-channel history from the retained changelog, once (older data dirs).
  void backfill_channel_history();

  Database& db_;
  mutable std::mutex write_mutex_;
  std::uint64_t last_seq_ = 0;                      // guarded by write_mutex_
  std::uint64_t log_start_ = 1;                     // guarded by write_mutex_
  std::uint64_t retention_ = 0;                     // guarded by write_mutex_
  std::string epoch_;                               // guarded by write_mutex_
  std::size_t history_keep_ = kChannelHistoryKeep;  // guarded by write_mutex_
  bool epoch_unwritten_ = false;  // set_epoch met a full disk; guarded by write_mutex_
};

}  // namespace edge::store
