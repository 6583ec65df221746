#pragma once

// The control state in memory: every app's settings, releases, channels and device
// overrides, as immutable snapshots that event-loop threads read without locks while an
// admin write builds the next one. Built from the StateStore's documents and changes.

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "edge/control/decision.hpp"
#include "edge/control/model.hpp"

namespace edge::control {

/// One app's state. Immutable once published.
struct AppState {
  std::string app_id;
  AppSettings settings;
  std::map<std::string, ReleaseDoc, std::less<>> releases;
  std::map<std::string, Release, std::less<>> release_views;  ///< what decide() reads
  std::map<std::string, Channel, std::less<>> channels;       ///< Channel::name filled
  std::map<std::string, std::string, std::less<>> overrides;  ///< device id -> channel
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
                             std::string_view json) const;

 private:
  std::map<std::string, std::shared_ptr<const AppState>, std::less<>> apps_;
};

/// The blobs devices can be sent to by `state`: the zip and manifest files of every
/// release a channel points at, its rollout release included (deleted releases excepted).
/// An edge prefetches them and pins their chunks against eviction (DESIGN §6).
std::vector<Sha256> served_blobs(const ControlState& state);

/// The same for one app's channels only.
std::vector<Sha256> served_blobs(const AppState& app);

}  // namespace edge::control
