#include "edge/control/decision.hpp"

#include "edge/core/sha256.hpp"

namespace edge::control {
namespace {

constexpr std::string_view kBuiltin = "builtin";

// A channel is usable unless its current release row is deleted (§5 step 3).
bool usable(const Channel& c, const AppView& app) {
  if (c.release.empty())
    return true;
  const Release* r = app.release(c.release);
  return r != nullptr && !r->deleted;
}

Decision fail(Kind kind, std::string error, std::string message) {
  Decision d;
  d.kind = kind;
  d.error = std::move(error);
  d.message = std::move(message);
  return d;
}

}  // namespace

bool platform_enabled(const Channel& c, Platform p) {
  switch (p) {
    case Platform::kIos: return c.ios;
    case Platform::kAndroid: return c.android;
    case Platform::kElectron: return c.electron;
  }
  return false;
}

std::optional<Platform> parse_platform(std::string_view text) {
  if (text == "ios")
    return Platform::kIos;
  if (text == "android")
    return Platform::kAndroid;
  if (text == "electron")
    return Platform::kElectron;
  return std::nullopt;
}

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kUpdate: return "";
    case Kind::kUpToDate: return "up_to_date";
    case Kind::kBlocked: return "blocked";
    case Kind::kFailed: return "failed";
    case Kind::kRevertToBuiltin: return "";
  }
  return "failed";
}

std::string_view update_package_name(UpdatePackage p) {
  switch (p) {
    case UpdatePackage::kAll: return "all";
    case UpdatePackage::kZip: return "zip";
    case UpdatePackage::kDelta: return "delta";
    case UpdatePackage::kZipFromBuiltin: return "zip_from_builtin";
    case UpdatePackage::kDeltaFromBuiltin: return "delta_from_builtin";
  }
  return "all";
}

std::optional<UpdatePackage> parse_update_package(std::string_view t) {
  for (auto p : {UpdatePackage::kAll, UpdatePackage::kZip, UpdatePackage::kDelta,
                 UpdatePackage::kZipFromBuiltin, UpdatePackage::kDeltaFromBuiltin}) {
    if (t == update_package_name(p))
      return p;
  }
  return std::nullopt;
}

bool supports_manifest(const SemVer& p) {
  switch (p.major) {
    case 5: return at_least(p, 5, 10, 0);
    case 6: return at_least(p, 6, 25, 0);
    case 7: return at_least(p, 7, 0, 35);
    default: return p.major >= 8;
  }
}

bool rollout_selects(std::string_view rollout_id, std::string_view device_id, std::uint32_t bps) {
  if (bps == 0)
    return false;
  if (bps >= 10000)
    return true;
  Sha256Hasher h;
  h.update(rollout_id);
  h.update(std::string_view(":"));
  h.update(device_id);
  return h.finish().leading_u64() % 10000 < bps;
}

std::string_view to_string(ChannelReason reason) {
  switch (reason) {
    case ChannelReason::kOverride: return "override";
    case ChannelReason::kDefaultChannel: return "defaultChannel";
    case ChannelReason::kPublic: return "public";
    case ChannelReason::kNone: break;
  }
  return "none";
}

ResolvedChannel resolve_channel(std::string_view device_id, Platform platform,
                                std::string_view default_channel, const AppView& app) {
  // An override wins; a deleted override falls back.
  if (auto name = app.device_override(device_id)) {
    const Channel* c = app.channel(*name);
    if (c != nullptr && usable(*c, app))
      return {c, ChannelReason::kOverride};
  }
  if (!default_channel.empty()) {
    // No fallback to the public channel when the named one does not qualify.
    const Channel* c = app.channel(default_channel);
    if (c != nullptr && platform_enabled(*c, platform) &&
        (c->is_public || c->allow_device_self_set) && usable(*c, app))
      return {c, ChannelReason::kDefaultChannel};
    return {};
  }
  for (const Channel* c : app.channels()) {
    if (c->is_public && platform_enabled(*c, platform) && usable(*c, app))
      return {c, ChannelReason::kPublic};
  }
  return {};
}

Decision decide(const UpdateRequest& req, const AppView& app) {
  // Step 2: v4 plugins are no longer served.
  if (req.plugin_version.major == 4) {
    return fail(Kind::kFailed, "unsupported_plugin_version",
                "Plugin version " + req.plugin_version.to_string() +
                    " (v4) is no longer supported. Please upgrade to v5.10.0 or later.");
  }

  // Step 3: channel resolution.
  const ResolvedChannel resolved =
      resolve_channel(req.device_id, req.platform, req.default_channel, app);
  const Channel* channel = resolved.channel;
  const bool via_override = resolved.reason == ChannelReason::kOverride;
  if (channel == nullptr)
    return fail(Kind::kFailed, "no_channel", "no default channel or override");

  // Step 4: rollout.
  std::string target = channel->release;
  bool via_rollout = false;
  if (const auto& r = channel->rollout; r && r->enabled && !r->release.empty()) {
    const Release* rr = app.release(r->release);
    const bool available = rr != nullptr && !rr->deleted;
    bool selected = false;
    if (req.version_name == r->release) {
      selected = true;  // already on the rollout: stays, even while paused
    } else if (!r->paused && r->bps > 0) {
      selected = rollout_selects(r->id, req.device_id, r->bps);
    }
    if (selected && available) {
      target = r->release;
      via_rollout = true;
    }
  }
  const bool builtin = target.empty() || target == kBuiltin;
  const Release* release = builtin ? nullptr : app.release(target);
  const std::string target_name = builtin ? std::string(kBuiltin) : target;

  Decision d;
  d.channel = channel;
  d.release = release;
  d.via_override = via_override;
  d.via_rollout = via_rollout;
  const auto blocked = [&](std::string error, std::string message, std::string old,
                           bool major = false, Kind kind = Kind::kBlocked) {
    d.kind = kind;
    d.error = std::move(error);
    d.message = std::move(message);
    d.version = target_name;
    d.old = std::move(old);
    d.major = major;
    return d;
  };

  // Step 5: a release with nothing to download.
  if (!builtin && (release == nullptr || (!release->has_zip && release->manifest_entries == 0))) {
    return fail(Kind::kFailed, "no_bundle", "Cannot get bundle");
  }
  // Step 6: encryption key mismatch (plugins after 8.40.7 send key_id).
  if (release != nullptr && !release->key_id.empty() && !req.key_id.empty() &&
      release->key_id != req.key_id && !(req.plugin_version < *SemVer::parse("8.40.8"))) {
    Decision k = fail(Kind::kBlocked, "key_id_mismatch",
                      "Device encryption key does not match bundle encryption key. The device "
                      "cannot decrypt this bundle.");
    k.device_key_id = req.key_id;
    k.bundle_key_id = release->key_id;
    return k;
  }
  // Step 7: already there (string equality, before any policy).
  if (req.version_name == target_name) {
    return fail(Kind::kUpToDate, "no_new_version_available", "No new version available");
  }

  // Step 8: channel policy, against the native version_build.
  const std::string build = req.version_build.to_string();
  switch (req.platform) {
    case Platform::kIos:
      if (!channel->ios)
        return blocked("disabled_platform_ios", "Cannot update, ios it's disabled",
                       req.version_name);
      break;
    case Platform::kAndroid:
      if (!channel->android) {
        return blocked("disabled_platform_android", "Cannot update, android is disabled",
                       req.version_name);
      }
      break;
    case Platform::kElectron:
      if (!channel->electron) {
        return blocked("disabled_platform_electron", "Cannot update, electron is disabled",
                       req.version_name);
      }
      break;
  }
  // Version checks are skipped for builtin and for names that are not SemVer.
  const auto target_version =
      builtin ? Result<SemVer>(Errc::kInvalidArgument) : SemVer::parse(target_name);
  const SemVer& nb = req.version_build;
  const auto policy = channel->disable_auto_update;
  if (target_version && policy == AutoUpdatePolicy::kMajor && target_version->major > nb.major) {
    return blocked("disable_auto_update_to_major", "Cannot upgrade major version", build, true);
  }
  if (!channel->allow_device_self_set && !channel->is_public && !via_override) {
    return fail(Kind::kBlocked, "cannot_update_via_private_channel",
                "Cannot update via a private channel (" + channel->name +
                    "). Set the channel public, allow device self-assignment, or pin the device "
                    "to it; defaultChannel was '" +
                    req.default_channel + "'.");
  }
  if (target_version) {
    const SemVer& t = *target_version;
    if (policy == AutoUpdatePolicy::kMinor && (t.major != nb.major || t.minor != nb.minor)) {
      return blocked("disable_auto_update_to_minor", "Cannot upgrade minor version", build, true);
    }
    if (policy == AutoUpdatePolicy::kPatch &&
        (t.major != nb.major || t.minor != nb.minor || t.patch != nb.patch)) {
      return blocked("disable_auto_update_to_patch", "Cannot upgrade patch version", build, true);
    }
    if (policy == AutoUpdatePolicy::kVersionNumber) {
      const auto min = release->min_update_version.empty()
                           ? Result<SemVer>(Errc::kInvalidArgument)
                           : SemVer::parse(release->min_update_version);
      if (!min) {
        return blocked("misconfigured_channel", "Channel " + channel->name + " is misconfigured",
                       build, false, Kind::kFailed);
      }
      if (nb < *min) {
        return blocked("disable_auto_update_to_metadata",
                       "Cannot upgrade version, min update version > current version", build, true);
      }
    }
    if (channel->disable_auto_update_under_native && t < nb) {
      return blocked("disable_auto_update_under_native", "Cannot revert under native version",
                     req.version_name);
    }
  }
  if (!channel->allow_prod && req.is_prod) {
    return blocked("disable_prod_build", "Cannot update, prod build is disabled", req.version_name);
  }
  if (!channel->allow_dev && !req.is_prod) {
    return blocked("disable_dev_build", "Cannot update, dev build is disabled", req.version_name);
  }
  if (!channel->allow_device && !req.is_emulator) {
    return blocked("disable_device", "Cannot update, device is disabled", req.version_name);
  }
  if (!channel->allow_emulator && req.is_emulator) {
    return blocked("disable_emulator", "Cannot update, emulator is disabled", req.version_name);
  }

  // Step 9: builtin target. A device on an OTA bundle is sent back to the store build
  // (§9.1, plugins >= 6.2.0); one already there is up to date.
  if (builtin) {
    if (!at_least(req.plugin_version, 6, 2, 0)) {
      return fail(Kind::kFailed, "revert_to_builtin_plugin_version_too_old",
                  "revert_to_builtin used, but plugin version is too old");
    }
    if (req.on_builtin) {
      Decision b = fail(Kind::kUpToDate, "already_on_builtin", "Already on builtin");
      b.version = std::string(kBuiltin);
      return b;
    }
    d.kind = Kind::kRevertToBuiltin;
    d.version = std::string(kBuiltin);
    return d;
  }
  // Step 10: an update in the channel's download format (§9.4); the endpoint builds url and
  // manifest from the release.
  UpdatePackage format = channel->update_package;
  if (format == UpdatePackage::kZipFromBuiltin)
    format = req.on_builtin ? UpdatePackage::kZip : UpdatePackage::kAll;
  if (format == UpdatePackage::kDeltaFromBuiltin)
    format = req.on_builtin ? UpdatePackage::kDelta : UpdatePackage::kAll;
  const bool manifest_ok = release->manifest_entries > 0 && supports_manifest(req.plugin_version);
  d.send_zip = release->has_zip && format != UpdatePackage::kDelta;
  d.send_manifest = manifest_ok && format != UpdatePackage::kZip;
  if (format == UpdatePackage::kZip && !d.send_zip)
    return fail(Kind::kFailed, "no_bundle_url", "Cannot get bundle url");
  if (!d.send_zip && !d.send_manifest)
    return fail(Kind::kFailed, "no_url_or_manifest", "No url or manifest");
  d.kind = Kind::kUpdate;
  return d;
}

}  // namespace edge::control
