// The factories edge/api/upstream.hpp declares: origin-sync's pieces behind edge's
// interfaces, so that main.cpp wires them without including this directory.
#include <optional>

#include "edge/api/upstream.hpp"
#include "origin-sync/fetcher.hpp"
#include "origin-sync/http_client.hpp"
#include "origin-sync/sync_tasks.hpp"
#include "origin-sync/upstream_set.hpp"

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

class EdgeUpstream final : public UpstreamClient {
 public:
  EdgeUpstream(const UpstreamOptions& options, UpstreamDeps deps)
      : checkins_(deps.checkins),
        upstreams_(options, &deps.metrics),
        fetcher_(options, upstreams_, deps.chunks, deps.blobs, deps.metrics),
        follower_(options, upstreams_, deps.control, fetcher_, deps.metrics),
        uploader_(options, upstreams_, std::move(deps.node_id), deps.checkins, deps.metrics),
        reporter_(options, upstreams_, std::move(deps.status), deps.children) {
    // What the state this edge starts with pins; each change adds its own (prefetch_for).
    fetcher_.trust_recipes(control::pinned_recipes(*deps.control.snapshot()));
    // Status reports go on the uploader's thread (both are periodic POSTs upstream).
    uploader_.set_status(&reporter_);
  }
  ~EdgeUpstream() override { stop(std::chrono::milliseconds(0)); }

  Filler& filler() override { return fetcher_; }
  PushSink& push_sink() override { return follower_; }
  void set_on_synced(std::function<void()> fn) override { follower_.set_on_synced(std::move(fn)); }
  void start() override {
    upstreams_.start();
    follower_.start();
    reporter_.start();
    uploader_.start();
  }
  void stop(std::chrono::milliseconds drain) override {
    if (stopped_)
      return;
    stopped_ = true;
    reporter_.stop();
    fetcher_.stop();
    follower_.stop();
    checkins_.flush();
    if (checkins_.outbox_stats().depth > 0 && !uploader_.drain(drain)) {
      spdlog::warn("{} check-in(s) stay in the outbox for the next start",
                   checkins_.outbox_stats().depth);
    }
    uploader_.stop();
    upstreams_.stop();
  }

 private:
  store::CheckinStore& checkins_;
  sync::UpstreamSet upstreams_;  // first: everything below sends through it
  sync::Fetcher fetcher_;
  sync::Follower follower_;
  sync::Uploader uploader_;
  sync::StatusReporter reporter_;
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<UpstreamClient> make_upstream_client(const UpstreamOptions& options,
                                                     UpstreamDeps deps) {
  return std::make_unique<EdgeUpstream>(options, std::move(deps));
}

std::unique_ptr<ChangePusher> make_change_pusher(std::vector<std::string> targets,
                                                 std::string token, std::string ca_file,
                                                 std::uint32_t timeout_ms, store::StateStore& state,
                                                 SyncMetrics& metrics) {
  return std::make_unique<sync::Pusher>(std::move(targets), std::move(token), std::move(ca_file),
                                        timeout_ms, state, metrics);
}

std::optional<NodeReply> post_to_node(const std::string& base_url, const std::string& token,
                                      std::string_view path, std::string_view json,
                                      std::uint32_t timeout_ms, std::string* error) {
  sync::HttpClient client(base_url, token, timeout_ms);
  auto r = client.request("POST", path, json, {{"Content-Type", "application/json"}});
  if (!r) {
    if (error != nullptr)
      *error = client.last_error();
    return std::nullopt;
  }
  return NodeReply{r->status, std::string(r->text())};
}

}  // namespace edge::api
