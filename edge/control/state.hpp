#pragma once

// The control state in memory: every app's settings, releases, channels and device
// overrides, as immutable snapshots that event-loop threads read without locks while an
// admin write builds the next one. Built from the StateStore's documents and changes.

#include <array>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "edge/control/decision.hpp"
#include "edge/control/model.hpp"

namespace edge::control {

/// Device id -> channel of one app's overrides: a map split into kShards shards shared
/// between snapshots, so that one override write copies one shard (about n/256 entries)
/// and 256 pointers instead of the whole map: a flood of /channel_self writes from old
/// plugins stays cheap at hundreds of thousands of overrides. Copies are cheap; a copy
/// shares every shard until it is written.
class Overrides {
 public:
  using Shard = std::map<std::string, std::string, std::less<>>;
  static constexpr std::size_t kShards = 256;

  /// The channel of `device`, or nullptr.
  const std::string* find(std::string_view device) const;
  bool contains(std::string_view device) const { return find(device) != nullptr; }
  void set(std::string_view device, std::string channel);
  void erase(std::string_view device);
  std::size_t size() const { return size_; }
  /// Calls fn(device, channel) for every override, in no particular order across shards.
  template <class F>
  void for_each(F&& fn) const {
    for (const auto& shard : shards_) {
      if (!shard)
        continue;
      for (const auto& [device, channel] : *shard)
        fn(device, channel);
    }
  }

 private:
  static std::size_t shard_of(std::string_view device);
  static std::shared_ptr<Shard> own(std::shared_ptr<const Shard>& shard);
  std::array<std::shared_ptr<const Shard>, kShards> shards_{};
  std::size_t size_ = 0;
};

/// One app's state. Immutable once published.
struct AppState {
  std::string app_id;
  AppSettings settings;
  std::map<std::string, ReleaseDoc, std::less<>> releases;
  std::map<std::string, Release, std::less<>> release_views;  ///< what decide() reads
  std::map<std::string, Channel, std::less<>> channels;       ///< Channel::name filled
  Overrides overrides;                                        ///< device id -> channel
};

/// AppView over one AppState (valid while the state is).
class AppStateView final : public AppView {
 public:
  explicit AppStateView(const AppState& s) : s_(s) {}
  const Channel* channel(std::string_view name) const override;
  std::vector<const Channel*> channels() const override;
  const Release* release(std::string_view name) const override;
  std::optional<std::string> device_override(std::string_view device_id) const override;

 private:
  const AppState& s_;
};

/// All apps. Copy-on-write per app: applying a change copies the outer map and the one
/// app it touches.
class ControlState {
 public:
  /// The app, or nullptr if unknown (-> 429 on_premise_app for devices).
  std::shared_ptr<const AppState> app(std::string_view app_id) const;
  const std::map<std::string, std::shared_ptr<const AppState>, std::less<>>& apps() const {
    return apps_;
  }

  /// Applies one stored document (kind, app, key, JSON; empty JSON = deleted) and returns
  /// the new state. A document that does not parse is an error naming the field: the store
  /// only holds documents this module wrote, so that means corruption.
  enum class Kind { kApp, kRelease, kChannel, kDevice };
  Parsed<ControlState> apply(Kind kind, std::string_view app_id, std::string_view key,
                             std::string_view json, Unknown unknown = Unknown::kRefuse) const;
  /// The same, changing this state: an app that no other state shares is changed where it
  /// is (so a batch of N changes to one app costs N small edits, not N copies of the app).
  /// On error this state is unchanged.
  std::optional<FieldError> apply_in_place(Kind kind, std::string_view app_id, std::string_view key,
                                           std::string_view json,
                                           Unknown unknown = Unknown::kRefuse);

 private:
  std::map<std::string, std::shared_ptr<const AppState>, std::less<>> apps_;
};

/// The blobs devices can be sent to by `state`: the zip and manifest files of every
/// release a channel points at, its rollout release included (deleted releases excepted).
/// An edge prefetches them and pins their chunks against eviction (DESIGN §6).
std::vector<Sha256> served_blobs(const ControlState& state);

/// Every blob a release of `state` names (zip and manifest files, deleted releases
/// excepted), whether or not a channel points at it: what an edge may fill for devices.
std::vector<Sha256> named_blobs(const ControlState& state);
/// (blob, SHA-256 of its recipe) for every blob a live release pins in recipe_sha256.
std::vector<std::pair<Sha256, Sha256>> pinned_recipes(const ControlState& state);

/// The same for one app's channels only.
std::vector<Sha256> served_blobs(const AppState& app);

}  // namespace edge::control
