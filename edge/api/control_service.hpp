#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/beast/http/message.hpp>

#include "edge/api/response.hpp"
#include "edge/control/state.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_backend.hpp"
#include "edge/store/control_log.hpp"
#include "edge/store/state_store.hpp"

namespace edge::api {

class Access;

/// The admin API for apps, releases, channels and device overrides (issue #4), and the
/// in-memory control state the device endpoints read.
///
/// Reads (snapshot()) are lock-free for event-loop threads; writes are serialised, validated,
/// committed to the StateStore (one synced batch with their changelog entries), then
/// published as a new snapshot. A write blocks its thread for one RocksDB sync: admin
/// writes are rare, and the device path never waits for them.
/// One version of a channel document as the changelog holds it (newest first in history).
struct ChannelVersion {
  std::uint64_t seq = 0;
  bool deleted = false;
  std::string doc;  ///< the channel document (empty when deleted)
};

class ControlService {
 public:
  /// Loads every document from the StateStore. Throws StoreError if one does not parse.
  ControlService(store::StateStore& state, store::BlobStore& blobs);

  std::shared_ptr<const control::ControlState> snapshot() const { return state_.load(); }

  /// Commits admin writes to `log` instead of the local StateStore (which stays where every
  /// read comes from): the PostgreSQL tier's shared log. Set before serving; `log` must
  /// outlive this service. A shared log is followed into the local store by follow().
  void set_log(store::ControlLog& log) { log_ = &log; }
  /// Follows a shared log on a thread of its own (woken by ControlLog::wait_change, else
  /// every second): other origins' writes reach the local store, the published state, long
  /// polls and pushes as an edge's would. No-op for an unshared log. stop_following() ends it.
  void start_following();
  void stop_following();
  /// Applies what the log holds beyond the local cursor (changes or a snapshot), once.
  /// Errc::kUnavailable while the backend is down.
  Result<void> catch_up();
  /// True while the shared log's backend answered the last follow or write.
  bool log_available() const { return log_available_.load(std::memory_order_relaxed); }

  /// Serves GET .../stats and the devices' last check-in from this store (may be null).
  void set_checkins(const store::CheckinQueries* checkins) { checkins_ = checkins; }

  ~ControlService();  ///< finishes the override writes queued (drain())
  /// Finishes the override writes queued and stops the writer thread (their `done` runs
  /// before this returns). Call before the server goes away. Idempotent.
  void drain();
  ControlService(const ControlService&) = delete;
  ControlService& operator=(const ControlService&) = delete;

  /// Sets (channel) or removes (nullopt) a device override, as old plugins' /channel_self
  /// does, off the caller's thread: the write is queued for this service's writer thread,
  /// which commits every write waiting in one synced batch (so a flood of them costs one
  /// fsync per batch, and never an event-loop thread's time). `done(ok)` runs once on the
  /// writer thread; false if the write failed (an edge, storage full, a store error).
  void async_set_device_override(std::string app_id, std::string device_id,
                                 std::optional<std::string> channel,
                                 std::function<void(bool ok)> done);

  /// Edges: admin writes answer 409 (publish to the origin) and device overrides from
  /// /channel_self are refused; state changes only through apply_changes/apply_snapshot.
  void set_read_only(bool read_only) { read_only_ = read_only; }
  bool read_only() const { return read_only_; }

  /// Called after every commit (admin write or applied changes) with the new last seq, on
  /// the committing thread: wakes long polls and pushes. Set before serving.
  void set_on_commit(std::function<void(std::uint64_t seq)> fn) { on_commit_ = std::move(fn); }

  /// Applies changes numbered upstream (DESIGN §6): each document is validated against the
  /// state first (Errc::kInvalidArgument and nothing written if one does not parse), then
  /// stored with the cursor in one batch (StateStore::apply), then published. Changes at
  /// or below the cursor are skipped; a gap is Errc::kInvalidArgument. Returns the cursor.
  Result<std::uint64_t> apply_changes(const std::vector<store::Change>& changes);
  /// The state `changes` would produce (changes at or below the cursor skipped), or
  /// nullptr if one does not parse. Nothing is written. For prefetch before a flip.
  std::shared_ptr<const control::ControlState> preview(
      const std::vector<store::Change>& changes) const;
  /// The state a snapshot would produce, or nullptr.
  static std::shared_ptr<const control::ControlState> preview(
      const store::StateStore::Snapshot& snap);
  /// Replaces the whole state with a snapshot from upstream (validated first).
  Result<std::uint64_t> apply_snapshot(const store::StateStore::Snapshot& snap);
  /// The sequence number of the newest applied change (an edge's cursor).
  std::uint64_t last_seq() const { return store_.last_seq(); }
  /// The feed epoch this node's state belongs to (StateStore::epoch).
  std::string epoch() const { return store_.epoch(); }
  Result<void> set_epoch(const std::string& epoch) { return store_.set_epoch(epoch); }

  /// Routes under /v1/admin/apps (the caller checked the token).
  Response handle(const boost::beast::http::request_header<>& req, std::string_view path,
                  std::string_view body);

  /// Channel history names who made each change and when from `access`'s audit log.
  void set_access(const Access* access) { access_ = access; }
  /// The versions of channel `name` of `app_id` in the store's per-channel history
  /// (StateStore::channel_history: the newest sync.channel_history_keep versions, whatever
  /// the changelog retains), newest first, at most `limit`.
  std::vector<ChannelVersion> channel_history(const std::string& app_id, const std::string& name,
                                              std::size_t limit) const;

 private:
  Response put_app(const std::string& app_id, std::string_view body);
  /// `floor_warning`: native_floor_warning, computed by the caller before the write lock.
  Response put_release(const control::AppState& app, const std::string& name, std::string_view body,
                       const std::optional<std::string>& floor_warning);
  Response delete_release(const control::AppState& app, const std::string& name);
  Response put_channel(const control::AppState& app, const std::string& name,
                       std::string_view body);
  Response put_device(const control::AppState& app, const std::string& device,
                      std::string_view body);
  /// A warning when `version` sorts at or below the native version_build some of the app's
  /// devices report, and channels with disable_auto_update_under_native would block it.
  /// Reads the check-in store: call it outside write_mutex_.
  std::optional<std::string> native_floor_warning(const std::string& app_id,
                                                  const std::string& version) const;
  /// Commits a batch and publishes the state that results from it.
  Response commit(store::StateStore::Batch& batch, unsigned status, std::string body);

  const Access* access_ = nullptr;
  Response device_index(const control::AppState& app, std::string_view query) const;
  /// GET .../devices?cursor=&limit=: the app's overrides by device id, a page at a time.
  Response override_page(const control::AppState& app, std::string_view query) const;
  /// GET .../releases/<name>/files[?base=<release>]: the release's files with their sizes
  /// and chunk counts, and how many of its distinct chunks (and bytes) it shares with `base`
  /// (default: the highest live release with files below it), i.e. what an edge that has
  /// `base` must still move. `base=` (empty) compares with nothing.
  Response release_files(const control::AppState& app, const std::string& name,
                         std::string_view query) const;
  Response channel_action(const control::AppState& app, const std::string& name,
                          std::string_view action, boost::beast::http::verb method,
                          std::string_view body);
  store::StateStore& store_;
  store::BlobStore& blobs_;
  store::LocalControlLog local_log_{store_};
  store::ControlLog* log_ = &local_log_;
  std::thread follow_thread_;
  std::atomic<bool> follow_stop_{false};
  std::atomic<bool> log_available_{true};
  std::mutex catch_up_mutex_;
  Response handle_once(const boost::beast::http::request_header<>& req, std::string_view path,
                       std::string_view body);
  const store::CheckinQueries* checkins_ = nullptr;
  void committed(std::uint64_t seq) const;

  struct OverrideWrite {
    std::string app_id;
    std::string device_id;
    std::optional<std::string> channel;
    std::function<void(bool)> done;
  };
  void override_writer();

  std::mutex write_mutex_;
  std::mutex override_mutex_;
  std::condition_variable override_cv_;
  std::vector<OverrideWrite> override_queue_;  // guarded by override_mutex_
  bool override_stop_ = false;                 // guarded by override_mutex_
  std::thread override_thread_;
  bool read_only_ = false;
  std::function<void(std::uint64_t)> on_commit_;
  std::atomic<std::shared_ptr<const control::ControlState>> state_;
};

/// 409 "this node is an edge; publish to the origin": admin writes on an edge.
Response edge_refusal();

/// Capgo's app id rule: reverse-domain, `/^[a-z0-9]+(\.[\w-]+)+$/i`.
bool valid_app_id(std::string_view id);
/// A lower-case UUID as the plugin sends (`8-4-4-4-12` hex).
bool valid_device_id(std::string_view id);

}  // namespace edge::api
