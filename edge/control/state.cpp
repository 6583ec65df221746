#include "edge/control/state.hpp"

#include <algorithm>

namespace edge::control {

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
  const auto it = s_.overrides.find(device_id);
  if (it == s_.overrides.end())
    return std::nullopt;
  return it->second;
}

std::shared_ptr<const AppState> ControlState::app(std::string_view app_id) const {
  const auto it = apps_.find(app_id);
  return it == apps_.end() ? nullptr : it->second;
}

Parsed<ControlState> ControlState::apply(Kind kind, std::string_view app_id, std::string_view key,
                                         std::string_view json) const {
  ControlState next = *this;
  const auto it = next.apps_.find(app_id);
  if (kind == Kind::kApp && json.empty()) {
    if (it != next.apps_.end())
      next.apps_.erase(it);
    return next;
  }
  auto app = it == next.apps_.end() ? std::make_shared<AppState>()
                                    : std::make_shared<AppState>(*it->second);
  app->app_id = std::string(app_id);
  const std::string k(key);
  switch (kind) {
    case Kind::kApp: {
      auto p = parse_app(json);
      if (auto* e = std::get_if<FieldError>(&p))
        return *e;
      app->settings = std::get<AppSettings>(p);
      break;
    }
    case Kind::kRelease:
      if (json.empty()) {
        app->releases.erase(k);
        app->release_views.erase(k);
      } else {
        auto p = parse_release(json);
        if (auto* e = std::get_if<FieldError>(&p))
          return *e;
        app->release_views[k] = to_release(k, std::get<ReleaseDoc>(p));
        app->releases[k] = std::move(std::get<ReleaseDoc>(p));
      }
      break;
    case Kind::kChannel:
      if (json.empty()) {
        app->channels.erase(k);
      } else {
        auto p = parse_channel(json);
        if (auto* e = std::get_if<FieldError>(&p))
          return *e;
        Channel c = std::move(std::get<Channel>(p));
        c.name = k;
        app->channels[k] = std::move(c);
      }
      break;
    case Kind::kDevice:
      if (json.empty()) {
        app->overrides.erase(k);
      } else {
        auto p = parse_device(json);
        if (auto* e = std::get_if<FieldError>(&p))
          return *e;
        app->overrides[k] = std::get<DeviceOverride>(p).channel;
      }
      break;
  }
  next.apps_[std::string(app_id)] = std::move(app);
  return next;
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
