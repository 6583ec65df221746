#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string_view>

#include <boost/beast/http/message.hpp>

#include "edge/api/response.hpp"
#include "edge/control/state.hpp"
#include "edge/store/blob_store.hpp"
#include "edge/store/checkin_store.hpp"
#include "edge/store/state_store.hpp"

namespace edge::api {

/// The admin API for apps, releases, channels and device overrides (issue #4), and the
/// in-memory control state the device endpoints read.
///
/// Reads (snapshot()) are lock-free for event-loop threads; writes are serialised, validated,
/// committed to the StateStore (one synced batch with their changelog entries), then
/// published as a new snapshot. A write blocks its thread for one RocksDB sync: admin
/// writes are rare, and the device path never waits for them.
class ControlService {
 public:
  /// Loads every document from the StateStore. Throws StoreError if one does not parse.
  ControlService(store::StateStore& state, store::BlobStore& blobs);

  std::shared_ptr<const control::ControlState> snapshot() const { return state_.load(); }

  /// Serves GET .../stats and the devices' last check-in from this store (may be null).
  void set_checkins(const store::CheckinStore* checkins) { checkins_ = checkins; }

  /// Sets (channel) or removes (nullopt) a device override, as old plugins' /channel_self
  /// does. False if the write failed (logged by the caller as a 200 override_not_allowed).
  bool set_device_override(std::string_view app_id, std::string_view device_id,
                           const std::optional<std::string>& channel);

  /// Routes under /v1/admin/apps (the caller checked the token).
  Response handle(const boost::beast::http::request_header<>& req, std::string_view path,
                  std::string_view body);

 private:
  Response put_app(const std::string& app_id, std::string_view body);
  Response put_release(const control::AppState& app, const std::string& name,
                       std::string_view body);
  Response delete_release(const control::AppState& app, const std::string& name);
  Response put_channel(const control::AppState& app, const std::string& name,
                       std::string_view body);
  Response put_device(const control::AppState& app, const std::string& device,
                      std::string_view body);
  /// Commits a batch and publishes the state that results from it.
  Response commit(store::StateStore::Batch& batch, unsigned status, std::string body);

  store::StateStore& store_;
  store::BlobStore& blobs_;
  const store::CheckinStore* checkins_ = nullptr;
  std::mutex write_mutex_;
  std::atomic<std::shared_ptr<const control::ControlState>> state_;
};

/// Capgo's app id rule: reverse-domain, `/^[a-z0-9]+(\.[\w-]+)+$/i`.
bool valid_app_id(std::string_view id);
/// A lower-case UUID as the plugin sends (`8-4-4-4-12` hex).
bool valid_device_id(std::string_view id);

}  // namespace edge::api
