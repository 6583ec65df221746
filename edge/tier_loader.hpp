#pragma once

// The origin tier's engines (edge/pg over libpq, edge/s3 over libcurl) live in a module of
// their own, bundle-edge-tier.so next to the executable, loaded only by a node whose config
// asks for them ([state] backend = "postgres", [blobs] backend = "s3") and by `bundle-edge
// migrate`: every other process (an edge, an embedded origin) never maps libpq, libcurl and
// the ~27 libraries they bring (Kerberos, LDAP, GnuTLS, ...): 4 MiB of RSS on an idle edge
// (bench/load/edge-idle-rss.py).
//
// main.cpp sees the tier through the interfaces below; the module implements them over the
// edge::pg and edge::s3 classes and resolves what it uses of edge/core and edge/store from the
// executable, which exports just those symbols (cmake/tier_exports.cmake): their code and
// static state (edge_category(), ...) exist once; spdlog and fmt are shared libraries of both.
// The headers of edge/pg and edge/s3 are included here for their option structs only.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edge/core/errc.hpp"
#include "edge/pg/checkins.hpp"
#include "edge/pg/state_log.hpp"
#include "edge/s3/s3_client.hpp"
#include "edge/store/access_backend.hpp"
#include "edge/store/blob_gate.hpp"
#include "edge/store/checkin_backend.hpp"
#include "edge/store/control_log.hpp"
#include "edge/store/fleet_backend.hpp"
#include "edge/store/object_store.hpp"
#include "edge/store/state_store.hpp"

namespace edge::tier {

/// The module's file name; it is looked for in the executable's directory.
inline constexpr std::string_view kModuleFile = "bundle-edge-tier.so";
/// Bumped whenever an interface below changes: a module built for another version refuses
/// to load (its extern "C" entry point is the only symbol looked up by name).
inline constexpr int kModuleAbi = 2;

/// edge::pg::StateLog: the control state shared by the origins of a tier.
class StateLog {
 public:
  virtual ~StateLog() = default;
  /// The log the ControlService commits to and follows (lives as long as this object).
  virtual store::ControlLog& log() = 0;
  virtual Result<void> open(std::string* error) = 0;
  virtual const std::string& where() const = 0;
  virtual Result<std::uint64_t> trim_changelog(std::uint64_t keep) = 0;
  virtual pg::StateHealth health() = 0;
  virtual Result<void> import(const store::StateStore::Snapshot& snap,
                              const std::vector<store::Change>& changelog, std::uint64_t log_start,
                              std::string* error) = 0;
};

/// edge::pg::Singleton: the tier's work done by one origin at a time.
class Singleton {
 public:
  virtual ~Singleton() = default;
  virtual void add_task(std::string name, std::chrono::milliseconds period,
                        std::function<void()> fn) = 0;
  virtual void start() = 0;
  virtual void stop() = 0;
  virtual bool held() const = 0;
  virtual std::uint64_t acquisitions() const = 0;
};

/// edge::pg::PauseEvents: the tier's check-in events that rollout auto-pause counts.
class PauseEvents {
 public:
  virtual ~PauseEvents() = default;
  virtual void rewind() = 0;
  virtual Result<std::size_t> poll(const std::function<void(const store::Checkin&)>& fn) = 0;
  virtual Result<std::uint64_t> sweep() = 0;
};

/// edge::pg::PgCheckins: the tier's check-ins. Destroying it commits what is queued.
class Checkins {
 public:
  virtual ~Checkins() = default;
  virtual store::CheckinIngest& ingest() = 0;
  virtual const store::CheckinQueries& queries() const = 0;
  virtual void render(std::string& out) const = 0;
  virtual Result<void> sweep_retention(std::int64_t now_ms) = 0;
};

/// What the module makes; each call does what the edge::pg / edge::s3 constructor it names
/// does (and throws what it throws).
class Module {
 public:
  virtual std::unique_ptr<StateLog> state_log(std::string url, store::StateStore& mirror) = 0;
  virtual std::unique_ptr<store::AccessBackend> access_table(std::string url,
                                                             std::uint64_t audit_keep) = 0;
  virtual std::unique_ptr<store::FleetBackend> fleet_table(std::string url) = 0;
  virtual std::unique_ptr<Singleton> singleton(std::string url) = 0;
  virtual std::unique_ptr<PauseEvents> pause_events(std::string url) = 0;
  virtual std::unique_ptr<Checkins> checkins(std::string url, pg::PgCheckinsOptions options) = 0;
  /// edge::pg::PgBlobGate: garbage collection's gate across the tier.
  virtual std::unique_ptr<store::BlobGate> blob_gate(std::string url, std::string origin) = 0;
  /// edge::s3::Credentials::from_env().
  virtual std::optional<s3::Credentials> s3_credentials() = 0;
  /// An edge::s3::S3Client; throws std::invalid_argument naming a bad option.
  virtual std::unique_ptr<store::ObjectStore> s3_client(s3::S3Options options,
                                                        s3::Credentials credentials) = 0;

 protected:
  ~Module() = default;  // the module's own object, never deleted
};

/// Where the module is looked for: kModuleFile in the directory of /proc/self/exe.
std::filesystem::path module_path();

/// The module, loaded on the first call (later calls return the same one; it is never
/// unloaded). `needed_for` says what wants it ("state.backend = \"postgres\""). Throws
/// std::runtime_error naming `needed_for`, the path looked at and why it did not load.
Module& load(std::string_view needed_for);

}  // namespace edge::tier

/// The module's entry point: its Module, or nullptr if `abi` is not kModuleAbi.
extern "C" edge::tier::Module* bundle_edge_tier_module(int abi);
