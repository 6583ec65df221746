#include "edge/control/state.hpp"

#include <algorithm>

namespace edge::control {

std::size_t Overrides::shard_of(std::string_view device) {
  // FNV-1a: device ids are UUIDs or custom ids, any spread will do.
  std::uint32_t h = 2166136261U;
  for (const char c : device)
    h = (h ^ static_cast<unsigned char>(c)) * 16777619U;
  return h % kShards;
}

const std::string* Overrides::find(std::string_view device) const {
  const auto& shard = shards_[shard_of(device)];
  if (!shard)
    return nullptr;
  const auto it = shard->find(device);
  return it == shard->end() ? nullptr : &it->second;
}

// A shard only this Overrides holds is changed where it is (loading, and the writes of
// one batch); a shared one is copied first.
std::shared_ptr<Overrides::Shard> Overrides::own(std::shared_ptr<const Shard>& shard) {
  if (!shard)
    return std::make_shared<Shard>();
  if (shard.use_count() == 1)
    return std::const_pointer_cast<Shard>(shard);
  return std::make_shared<Shard>(*shard);
}

void Overrides::set(std::string_view device, std::string channel) {
  auto& shard = shards_[shard_of(device)];
  auto next = own(shard);
  auto [it, fresh] = next->insert_or_assign(std::string(device), std::move(channel));
  size_ += fresh ? 1 : 0;
  shard = std::move(next);
}

void Overrides::erase(std::string_view device) {
  auto& shard = shards_[shard_of(device)];
  if (!shard)
    return;
  const auto it = shard->find(device);
  if (it == shard->end())
    return;
  auto next = own(shard);
  next->erase(std::string(device));
  --size_;
  shard = std::move(next);
}

const Channel* AppStateView::channel(std::string_view name) const {
  const auto it = s_.channels.find(name);
  return it == s_.channels.end() ? nullptr : &it->second;
}

std::vector<const Channel*> AppStateView::channels() const {
  std::vector<const Channel*> out;
  out.reserve(s_.channels.size());
  for (const auto& [name, c] : s_.channels)
    out.push_back(&c);
  return out;
}

const Release* AppStateView::release(std::string_view name) const {
  const auto it = s_.release_views.find(name);
  return it == s_.release_views.end() ? nullptr : &it->second;
}

std::optional<std::string> AppStateView::device_override(std::string_view device_id) const {
  const std::string* channel = s_.overrides.find(device_id);
  if (channel == nullptr)
    return std::nullopt;
  return *channel;
}

std::shared_ptr<const AppState> ControlState::app(std::string_view app_id) const {
  const auto it = apps_.find(app_id);
  return it == apps_.end() ? nullptr : it->second;
}

Parsed<ControlState> ControlState::apply(Kind kind, std::string_view app_id, std::string_view key,
                                         std::string_view json, Unknown unknown) const {
  ControlState next = *this;
  if (auto e = next.apply_in_place(kind, app_id, key, json, unknown))
    return *e;
  return next;
}

std::optional<FieldError> ControlState::apply_in_place(Kind kind, std::string_view app_id,
                                                       std::string_view key, std::string_view json,
                                                       Unknown unknown) {
  const auto it = apps_.find(app_id);
  if (kind == Kind::kApp && json.empty()) {
    if (it != apps_.end())
      apps_.erase(it);
    return std::nullopt;
  }
  // Parse before touching anything, so that an error leaves the state as it was.
  std::optional<AppSettings> settings;
  std::optional<ReleaseDoc> release;
  std::optional<Channel> channel;
  std::optional<DeviceOverride> device;
  if (!json.empty()) {
    const auto take = [](auto parsed, auto& out) -> std::optional<FieldError> {
      if (auto* e = std::get_if<FieldError>(&parsed))
        return *e;
      out = std::move(std::get<0>(parsed));
      return std::nullopt;
    };
    std::optional<FieldError> e;
    switch (kind) {
      case Kind::kApp: e = take(parse_app(json, unknown), settings); break;
      case Kind::kRelease: e = take(parse_release(json, unknown), release); break;
      case Kind::kChannel: e = take(parse_channel(json, unknown), channel); break;
      case Kind::kDevice: e = take(parse_device(json, unknown), device); break;
    }
    if (e)
      return e;
  }
  // Shared with a published state: copy it (its maps; override shards stay shared).
  // Owned by this state alone: change it where it is.
  std::shared_ptr<AppState> app;
  if (it == apps_.end()) {
    app = std::make_shared<AppState>();
  } else if (it->second.use_count() == 1) {
    app = std::const_pointer_cast<AppState>(it->second);
  } else {
    app = std::make_shared<AppState>(*it->second);
  }
  app->app_id = std::string(app_id);
  const std::string k(key);
  switch (kind) {
    case Kind::kApp: app->settings = std::move(*settings); break;
    case Kind::kRelease:
      if (!release) {
        app->releases.erase(k);
        app->release_views.erase(k);
      } else {
        app->release_views[k] = to_release(k, *release);
        app->releases[k] = std::move(*release);
      }
      break;
    case Kind::kChannel:
      if (!channel) {
        app->channels.erase(k);
      } else {
        channel->name = k;
        app->channels[k] = std::move(*channel);
      }
      break;
    case Kind::kDevice:
      if (!device) {
        app->overrides.erase(k);
      } else {
        app->overrides.set(k, std::move(device->channel));
      }
      break;
  }
  if (it == apps_.end()) {
    apps_.emplace(std::string(app_id), std::move(app));
  } else {
    it->second = std::move(app);
  }
  return std::nullopt;
}

std::vector<Sha256> served_blobs(const AppState& app) {
  std::vector<Sha256> out;
  const auto add_release = [&](const std::string& name) {
    const auto it = app.releases.find(name);
    if (name.empty() || it == app.releases.end() || it->second.deleted)
      return;
    if (it->second.zip)
      out.push_back(*it->second.zip);
    for (const auto& m : it->second.manifest)
      out.push_back(m.blob);
  };
  for (const auto& [name, channel] : app.channels) {
    add_release(channel.release);
    if (channel.rollout && channel.rollout->enabled)
      add_release(channel.rollout->release);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<Sha256> named_blobs(const ControlState& state) {
  std::vector<Sha256> out;
  for (const auto& [id, app] : state.apps()) {
    for (const auto& [name, release] : app->releases) {
      if (release.deleted)
        continue;
      if (release.zip)
        out.push_back(*release.zip);
      for (const auto& m : release.manifest)
        out.push_back(m.blob);
    }
  }
  return out;
}

std::vector<std::pair<Sha256, Sha256>> pinned_recipes(const ControlState& state) {
  std::vector<std::pair<Sha256, Sha256>> out;
  for (const auto& [id, app] : state.apps()) {
    for (const auto& [name, release] : app->releases) {
      if (!release.deleted)
        out.insert(out.end(), release.recipe_sha256.begin(), release.recipe_sha256.end());
    }
  }
  return out;
}

std::vector<Sha256> served_blobs(const ControlState& state) {
  std::vector<Sha256> out;
  for (const auto& [id, app] : state.apps()) {
    auto blobs = served_blobs(*app);
    out.insert(out.end(), blobs.begin(), blobs.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace edge::control
