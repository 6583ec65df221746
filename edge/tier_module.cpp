// bundle-edge-tier.so: edge::tier's interfaces over the edge::pg and edge::s3 classes
// (edge/tier_loader.hpp). Built as a module the executable dlopens; what it uses of
// edge/core and edge/store comes from the executable.
#include "edge/pg/access.hpp"
#include "edge/pg/blob_gate.hpp"
#include "edge/pg/fleet.hpp"
#include "edge/pg/pause_events.hpp"
#include "edge/pg/singleton.hpp"
#include "edge/tier_loader.hpp"

namespace edge::tier {
namespace {

class PgStateLog final : public StateLog {
 public:
  PgStateLog(std::string url, store::StateStore& mirror) : log_(std::move(url), mirror) {}
  store::ControlLog& log() override { return log_; }
  Result<void> open(std::string* error) override { return log_.open(error); }
  const std::string& where() const override { return log_.where(); }
  Result<std::uint64_t> trim_changelog(std::uint64_t keep) override {
    return log_.trim_changelog(keep);
  }
  pg::StateHealth health() override { return log_.health(); }
  Result<void> import(const store::StateStore::Snapshot& snap,
                      const std::vector<store::Change>& changelog, std::uint64_t log_start,
                      std::string* error) override {
    return log_.import(snap, changelog, log_start, error);
  }

 private:
  pg::StateLog log_;
};

class PgSingleton final : public Singleton {
 public:
  explicit PgSingleton(std::string url) : singleton_(std::move(url)) {}
  void add_task(std::string name, std::chrono::milliseconds period,
                std::function<void()> fn) override {
    singleton_.add_task(std::move(name), period, std::move(fn));
  }
  void start() override { singleton_.start(); }
  void stop() override { singleton_.stop(); }
  bool held() const override { return singleton_.held(); }
  std::uint64_t acquisitions() const override { return singleton_.acquisitions(); }

 private:
  pg::Singleton singleton_;
};

class PgPauseEvents final : public PauseEvents {
 public:
  explicit PgPauseEvents(std::string url) : events_(std::move(url)) {}
  void rewind() override { events_.rewind(); }
  Result<std::size_t> poll(const std::function<void(const store::Checkin&)>& fn) override {
    return events_.poll(fn);
  }
  Result<std::uint64_t> sweep() override { return events_.sweep(); }

 private:
  pg::PauseEvents events_;
};

class PgCheckins final : public Checkins {
 public:
  PgCheckins(std::string url, pg::PgCheckinsOptions options)
      : checkins_(std::move(url), std::move(options)) {}
  store::CheckinIngest& ingest() override { return checkins_; }
  const store::CheckinQueries& queries() const override { return checkins_; }
  void render(std::string& out) const override { checkins_.render(out); }
  Result<void> sweep_retention(std::int64_t now_ms) override {
    return checkins_.sweep_retention(now_ms);
  }

 private:
  pg::PgCheckins checkins_;
};

class TierModule final : public Module {
 public:
  std::unique_ptr<StateLog> state_log(std::string url, store::StateStore& mirror) override {
    return std::make_unique<PgStateLog>(std::move(url), mirror);
  }
  std::unique_ptr<store::AccessBackend> access_table(std::string url,
                                                     std::uint64_t audit_keep) override {
    return std::make_unique<pg::AccessTable>(std::move(url), audit_keep);
  }
  std::unique_ptr<store::FleetBackend> fleet_table(std::string url) override {
    return std::make_unique<pg::FleetTable>(std::move(url));
  }
  std::unique_ptr<Singleton> singleton(std::string url) override {
    return std::make_unique<PgSingleton>(std::move(url));
  }
  std::unique_ptr<PauseEvents> pause_events(std::string url) override {
    return std::make_unique<PgPauseEvents>(std::move(url));
  }
  std::unique_ptr<Checkins> checkins(std::string url, pg::PgCheckinsOptions options) override {
    return std::make_unique<PgCheckins>(std::move(url), std::move(options));
  }
  std::unique_ptr<store::BlobGate> blob_gate(std::string url, std::string origin) override {
    return std::make_unique<pg::PgBlobGate>(std::move(url), std::move(origin));
  }
  std::optional<s3::Credentials> s3_credentials() override { return s3::Credentials::from_env(); }
  std::unique_ptr<store::ObjectStore> s3_client(s3::S3Options options,
                                                s3::Credentials credentials) override {
    return std::make_unique<s3::S3Client>(std::move(options), std::move(credentials));
  }
};

}  // namespace
}  // namespace edge::tier

extern "C" __attribute__((visibility("default"))) edge::tier::Module* bundle_edge_tier_module(
    int abi) {
  static edge::tier::TierModule module;
  return abi == edge::tier::kModuleAbi ? &module : nullptr;
}
