#include "origin-sync/sync_tasks.hpp"

#include <chrono>
#include <thread>

#include "edge/core/clock.hpp"
#include "edge/core/sched.hpp"

#include <spdlog/spdlog.h>

namespace edge::sync {
namespace {

// A receiver's answer that no retry can change (the batch itself is bad). Not 401/403/404:
// those are a wrong token or URL, which the operator fixes; the batch waits for that.
bool refused_for_good(unsigned status) {
  return status == 400 || status == 413 || status == 415 || status == 422;
}

// Well under the receiver's default server.json_body_limit_bytes (1 MiB).
constexpr std::size_t kMaxBatchBytes = 256 << 10;

}  // namespace

// --- Follower -------------------------------------------------------------------------------

Follower::Follower(const api::UpstreamOptions& options, UpstreamSet& upstreams,
                   api::ControlService& control, Fetcher& fetcher, api::SyncMetrics& metrics)
    : options_(options),
      control_(control),
      fetcher_(fetcher),
      metrics_(metrics),
      client_(upstreams, options) {}

Follower::~Follower() {
  stop();
}

void Follower::start() {
  pull_ = named_thread("sync-pull", [this] { pull_loop(); });
}

void Follower::stop() {
  stopper_.stop();
  std::thread push;
  {
    // No push thread starts after this (offer() checks the stopper under mutex_).
    std::lock_guard lock(mutex_);
    push.swap(push_);
  }
  client_.cancel();
  if (pull_.joinable())
    pull_.join();
  if (push.joinable())
    push.join();
}

void Follower::offer(std::vector<store::Change> changes, std::uint64_t upstream_seq) {
  metrics_.pushes_received.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t seen = metrics_.upstream_seq.load();
  while (upstream_seq > seen && !metrics_.upstream_seq.compare_exchange_weak(seen, upstream_seq)) {
  }
  metrics_.last_contact_ms = wall_clock_ms();
  {
    std::lock_guard lock(mutex_);
    if (stopper_.stopped())
      return;
    pushed_.push_back(std::move(changes));
    if (!pushing_) {
      // The previous push thread has left push_loop (it cleared pushing_ under this lock
      // on its way out): joining it takes no longer than its return.
      if (push_.joinable())
        push_.join();
      pushing_ = true;
      push_ = named_thread("sync-pushed", [this] { push_loop(); });
    }
  }
  stopper_.wake();  // a push proves the upstream is back: it cuts a backoff short
}

void Follower::push_loop() {
  while (true) {
    std::vector<store::Change> batch;
    {
      std::lock_guard lock(mutex_);
      if (stopper_.stopped() || pushed_.empty()) {
        pushing_ = false;  // the next offer() starts a thread again
        return;
      }
      batch = std::move(pushed_.front());
      pushed_.pop_front();
    }
    // A push that does not follow the cursor is dropped: the long poll brings it in order.
    (void)apply(batch, "push");
  }
}

void Follower::prefetch_for(const control::ControlState& next) {
  // The recipes the new state pins are trusted before anything is fetched by them.
  fetcher_.trust_recipes(control::pinned_recipes(next));
  // Fetch-then-flip: every blob the new state can send devices to must be whole first.
  const auto started = std::chrono::steady_clock::now();
  const auto got =
      fetcher_.prefetch(control::served_blobs(next),
                        started + std::chrono::milliseconds(options_.prefetch_deadline_ms));
  if (got.fetched == 0)
    return;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  if (got.whole) {
    spdlog::info("prefetch: {} blob(s) whole in {} ms", got.fetched, ms);
  } else {
    metrics_.prefetch_timeouts.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn(
        "prefetch: not every blob is whole after {} ms; applying the change anyway "
        "(devices fill on demand)",
        ms);
  }
}

Follower::Applied Follower::apply(const std::vector<store::Change>& changes, const char* source) {
  std::lock_guard lock(apply_mutex_);
  const std::uint64_t cursor = control_.last_seq();
  std::size_t fresh = 0;
  for (const auto& c : changes) {
    if (c.seq > cursor)
      ++fresh;
  }
  if (fresh == 0)
    return Applied::kOk;
  if (changes.back().seq - fresh + 1 != cursor + 1) {
    spdlog::debug("sync: {} batch does not follow cursor {}", source, cursor);
    return Applied::kGap;
  }
  auto next = control_.preview(changes);
  if (!next) {
    spdlog::error(
        "sync: a {} batch after seq {} holds a document that does not parse; "
        "not applied",
        source, cursor);
    return Applied::kFailed;
  }
  prefetch_for(*next);
  auto seq = control_.apply_changes(changes);
  if (!seq) {
    spdlog::error("sync: applying the {} batch after seq {}: {}", source, cursor,
                  seq.error().message());
    return Applied::kFailed;
  }
  metrics_.changes_applied.fetch_add(fresh, std::memory_order_relaxed);
  spdlog::info("sync: applied {} change(s) from {}, cursor {}", fresh, source, *seq);
  return Applied::kOk;
}

bool Follower::take_snapshot() {
  auto reply = client_.request("GET", "/v1/sync/snapshot");
  if (!reply || reply->status != 200)
    return false;
  std::string error;
  auto snap = api::parse_snapshot(reply->text(), &error);
  if (!snap) {
    spdlog::error("sync: the upstream's snapshot is invalid: {}", error);
    return false;
  }
  std::lock_guard lock(apply_mutex_);
  // Within one epoch, state only moves forward: an older snapshot (an upstream behind us)
  // would roll devices back. A new epoch is a new numbering and is taken as it is.
  if (const auto mine = control_.epoch();
      snap->seq < control_.last_seq() && (snap->epoch.empty() || snap->epoch == mine)) {
    metrics_.upstream_behind = 1;
    spdlog::error(
        "sync: the upstream's snapshot is at seq {}, older than this node's {} (epoch {}); "
        "not applied",
        snap->seq, control_.last_seq(), mine.empty() ? "none" : mine);
    return false;
  }
  auto next = api::ControlService::preview(*snap);
  if (!next) {
    spdlog::error("sync: the upstream's snapshot holds a document that does not parse");
    return false;
  }
  prefetch_for(*next);
  auto seq = control_.apply_snapshot(*snap);
  if (!seq) {
    spdlog::error("sync: applying the snapshot: {}", seq.error().message());
    return false;
  }
  metrics_.snapshots_applied.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("sync: applied a snapshot of {} document(s) at seq {}", snap->docs.size(), *seq);
  return true;
}

bool Follower::follow(const api::ChangesPage& page, std::uint64_t cursor) {
  const std::string mine = control_.epoch();
  if (!page.epoch.empty() && page.epoch != mine) {
    if (mine.empty()) {
      // A fresh edge, or state from before feed epochs (which came from this upstream):
      // it takes the epoch of what it follows.
      if (cursor != 0)
        spdlog::info("sync: following the upstream's feed epoch {}", page.epoch);
      if (auto set = control_.set_epoch(page.epoch); !set)
        return false;
    } else {
      metrics_.epoch_changes.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn(
          "sync: the upstream's feed epoch changed ({} -> {}): its numbering restarted (data "
          "reset or replaced); taking a snapshot instead of trusting cursor {}",
          mine, page.epoch, cursor);
      return take_snapshot();
    }
  }
  if (page.last_seq < cursor) {
    // Same epoch, yet behind us: not a history this node can follow. Keep serving what
    // we have, say so, and look again after a backoff.
    if (metrics_.upstream_behind.exchange(1) == 0) {
      spdlog::error(
          "sync: the upstream's feed ends at seq {}, behind this node's cursor {} in the same "
          "epoch; not following it (was the upstream restored from a backup? give it a new "
          "epoch)",
          page.last_seq, cursor);
    }
    return false;
  }
  metrics_.upstream_behind = 0;
  if (page.snapshot) {
    spdlog::info("sync: cursor {} is older than the upstream's log; taking a snapshot", cursor);
    return take_snapshot();
  }
  if (page.changes.empty())
    return true;
  switch (apply(page.changes, "pull")) {
    case Applied::kOk: return true;
    case Applied::kGap:
      // The page does not start after our cursor: the log we need is not there.
      spdlog::warn("sync: the upstream's page does not follow cursor {}; taking a snapshot",
                   cursor);
      return take_snapshot();
    case Applied::kFailed: break;
  }
  return false;
}

void Follower::pull_loop() {
  unsigned failures = 0;
  unsigned snapshots_in_row = 0;
  while (true) {
    if (stopper_.stopped())
      return;
    const std::uint64_t cursor = control_.last_seq();
    const std::uint64_t snapshots_before = metrics_.snapshots_applied.load();
    // Every upstream of a tier numbers the feed alike (one epoch): the cursor holds whichever
    // one answers, and a switch takes no snapshot. On a fallback the poll is kept short, so
    // that the first upstream is taken back soon after it is healthy again.
    std::string target;
    auto reply = client_.request_shaped("GET", [&](std::size_t position) {
      const std::uint32_t wait =
          position == 0 ? options_.poll_wait_ms : std::min(options_.poll_wait_ms, kFallbackPollMs);
      target =
          "/v1/sync/changes?after=" + std::to_string(cursor) + "&wait_ms=" + std::to_string(wait);
      return std::pair(target, wait + options_.timeout_ms);
    });
    bool ok = false;
    if (reply && reply->status == 200) {
      std::string error;
      auto page = api::parse_changes(reply->text(), &error);
      if (!page) {
        spdlog::error("sync: the upstream's changes page is invalid: {}", error);
      } else {
        metrics_.upstream_seq = page->last_seq;
        metrics_.last_contact_ms = wall_clock_ms();
        ok = follow(*page, cursor);
      }
    } else if (reply) {
      spdlog::warn("sync: GET {}{}: HTTP {} {}", client_.base_url(), target, reply->status,
                   reply->text().substr(0, 200));
    } else if (reply.error() == Errc::kShutdown) {
      return;
    }
    if (ok) {
      metrics_.set_upstream_error({});
      if (!synced_.exchange(true) && on_synced_)
        on_synced_();
      if (failures > 0)
        spdlog::info("sync: upstream {} reachable again", client_.base_url());
      failures = 0;
      // An upstream that asks for a snapshot after every snapshot is broken: back off
      // rather than download its whole state in a tight loop.
      snapshots_in_row =
          metrics_.snapshots_applied.load() != snapshots_before ? snapshots_in_row + 1 : 0;
      if (snapshots_in_row > 1 && !stopper_.sleep_for(std::chrono::milliseconds(backoff_ms(
                                      snapshots_in_row - 2, 500, options_.backoff_max_ms))))
        return;
      continue;
    }
    const auto delay = backoff_ms(failures, 200, options_.backoff_max_ms);
    const std::string why = reply                          ? "HTTP " + std::to_string(reply->status)
                            : client_.last_error().empty() ? reply.error().message()
                                                           : client_.last_error();
    metrics_.set_upstream_error(client_.base_url() + ": " + why);
    if (failures == 0 || failures % 10 == 0)
      spdlog::warn("sync: upstream {} failed ({}); retrying in {} ms", client_.base_url(), why,
                   delay);
    ++failures;
    if (!stopper_.sleep_for(std::chrono::milliseconds(delay)))
      return;
  }
}

// --- Uploader -------------------------------------------------------------------------------

Uploader::Uploader(const api::UpstreamOptions& options, UpstreamSet& upstreams, std::string node_id,
                   store::CheckinStore& checkins, api::SyncMetrics& metrics)
    : options_(options),
      node_id_(std::move(node_id)),
      checkins_(checkins),
      metrics_(metrics),
      client_(upstreams, options) {}

Uploader::~Uploader() {
  stop();
}

void Uploader::start() {
  thread_ = named_thread("upstream-post", [this] { loop(); });
}

void Uploader::stop() {
  stopper_.stop();
  client_.cancel();
  if (thread_.joinable())
    thread_.join();
}

bool Uploader::drain(std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (checkins_.outbox_stats().depth > 0) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

bool Uploader::pause_until(std::chrono::steady_clock::time_point until) {
  if (status_ != nullptr)
    until = std::min(until, status_->due());
  const auto now = std::chrono::steady_clock::now();
  if (until <= now)
    return !stopper_.stopped();
  // Rounded up: a wait of less than a millisecond is not a busy loop.
  return stopper_.sleep_for(std::chrono::ceil<std::chrono::milliseconds>(until - now));
}

void Uploader::loop() {
  using Clock = std::chrono::steady_clock;
  unsigned failures = 0;
  Clock::time_point retry_at{};  // a failed batch is sent again from then on
  while (true) {
    if (stopper_.stopped())
      return;
    if (status_ != nullptr)
      status_->run_due();
    const auto now = Clock::now();
    if (now < retry_at) {
      if (!pause_until(retry_at))
        return;
      continue;
    }
    // Bounded by its encoded size (what the receiver's body limit sees), not the stored one.
    auto batch =
        checkins_.outbox_next(options_.checkin_batch, kMaxBatchBytes, api::encoded_checkin_size);
    if (!batch) {
      spdlog::error("outbox: reading: {}", batch.error().message());
      retry_at = now + std::chrono::seconds(1);
      continue;
    }
    if (batch->checkins.empty()) {
      if (batch->batch_seq != 0) {
        (void)checkins_.outbox_ack(*batch);  // an in-flight batch whose entries were dropped
        continue;
      }
      // Nothing to send. Should the depth say otherwise (an entry that does not decode), do
      // not spin on it.
      if (checkins_.outbox_stats().depth > 0) {
        retry_at = now + std::chrono::milliseconds(200);
      } else {
        auto wait = std::chrono::milliseconds(200);
        if (status_ != nullptr) {
          const auto due = status_->due();
          wait = due <= now
                     ? std::chrono::milliseconds(0)
                     : std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(due - now));
        }
        if (wait.count() > 0)
          (void)checkins_.outbox_wait(wait);
      }
      continue;
    }
    const std::string key =
        api::format_idempotency_key(node_id_, batch->generation, batch->batch_seq);
    auto reply = client_.request("POST", "/v1/checkins", api::encode_checkins(batch->checkins),
                                 {{"Idempotency-Key", key}});
    if (reply && reply->status >= 200 && reply->status < 300) {
      if (auto acked = checkins_.outbox_ack(*batch); !acked) {
        spdlog::error("outbox: deleting batch {}: {}", key, acked.error().message());
      }
      metrics_.checkins_sent.fetch_add(batch->checkins.size(), std::memory_order_relaxed);
      metrics_.checkin_batches_sent.fetch_add(1, std::memory_order_relaxed);
      metrics_.last_contact_ms = wall_clock_ms();
      if (failures > 0)
        spdlog::info("outbox: upstream takes check-ins again");
      failures = 0;
      continue;
    }
    if (!reply && reply.error() == Errc::kShutdown)
      return;
    if (reply && refused_for_good(reply->status)) {
      // The upstream will never take this batch: set it aside rather than block every
      // check-in behind it (it stays readable by the operator, and counted).
      const std::string reason =
          "HTTP " + std::to_string(reply->status) + " " + std::string(reply->text().substr(0, 300));
      if (auto dead = checkins_.outbox_dead_letter(*batch, reason); !dead) {
        spdlog::error("outbox: setting batch {} aside: {}", key, dead.error().message());
      } else {
        spdlog::error(
            "outbox: upstream refused batch {} ({} check-ins) for good: {}; kept as a dead "
            "letter (GET /v1/admin/outbox/dead-letters), the queue moves on",
            key, batch->checkins.size(), reason);
        metrics_.last_contact_ms = wall_clock_ms();
        failures = 0;
        continue;
      }
    }
    const auto delay = backoff_ms(failures, 200, options_.backoff_max_ms);
    if (failures == 0 || failures % 10 == 0) {
      spdlog::warn("outbox: POST /v1/checkins ({}, {} check-ins) failed: {}; retrying in {} ms",
                   key, batch->checkins.size(),
                   reply ? "HTTP " + std::to_string(reply->status) + " " +
                               std::string(reply->text().substr(0, 200))
                         : reply.error().message(),
                   delay);
    }
    ++failures;
    retry_at = Clock::now() + std::chrono::milliseconds(delay);
  }
}

// --- StatusReporter -------------------------------------------------------------------------

StatusReporter::StatusReporter(const api::UpstreamOptions& options, UpstreamSet& upstreams,
                               std::function<std::string()> status, const api::Fleet* children)
    : options_(options),
      status_(std::move(status)),
      children_(children),
      client_(upstreams, options) {}

StatusReporter::~StatusReporter() {
  stop();
}

void StatusReporter::start() {
  if (status_ && options_.status_interval_ms > 0 && !stopped_)
    due_ = std::chrono::steady_clock::now().time_since_epoch().count();
}

void StatusReporter::stop() {
  stopped_ = true;
  due_ = std::chrono::steady_clock::time_point::max().time_since_epoch().count();
  client_.cancel();
  std::lock_guard lock(round_mutex_);  // a round in progress ends (its posts are cancelled)
}

std::chrono::steady_clock::time_point StatusReporter::due() const {
  return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(due_.load()));
}

void StatusReporter::run_due() {
  if (std::chrono::steady_clock::now() < due())
    return;
  std::lock_guard lock(round_mutex_);
  if (stopped_)
    return;
  const auto wait = round();
  if (!stopped_)
    due_ = (std::chrono::steady_clock::now() + wait).time_since_epoch().count();
}

std::chrono::milliseconds StatusReporter::round() {
  while (!stopped_) {
    const std::vector<api::NodeStatus> below =
        children_ != nullptr ? children_->nodes(wall_clock_ms()) : std::vector<api::NodeStatus>{};
    std::uint32_t wait = options_.status_interval_ms;
    bool again = false;
    bool failed = false;
    bool no_route = false;
    // Every post starts with this node's own status, so each part is attributed to it.
    for (const auto& body :
         api::encode_status_reports(status_(), below, max_bytes_, api::kMaxReportNodes)) {
      auto reply = client_.request("POST", "/v1/sync/status", body);
      if (reply && reply->status == 413 && max_bytes_ > kMinReportBytes) {
        max_bytes_ = std::max(max_bytes_ / 2, kMinReportBytes);
        spdlog::info("status: the upstream refused {} bytes (413); posting at most {} at once",
                     body.size(), max_bytes_);
        again = true;
        break;
      }
      if (reply && reply->status == 404) {
        if (!warned_)
          spdlog::info(
              "status: the upstream keeps no fleet status (an older node); asking again "
              "once a minute");
        no_route = true;
        wait = std::max<std::uint32_t>(wait, 60'000);
        break;
      }
      if (!reply || reply->status != 200) {
        if (!reply && reply.error() == Errc::kShutdown)
          break;
        if (!warned_ && !failed) {
          spdlog::warn("status: POST {}/v1/sync/status failed ({})", client_.base_url(),
                       reply ? "HTTP " + std::to_string(reply->status) : client_.last_error());
        }
        failed = true;
        if (!reply)
          break;   // unreachable: the next round tries again
        continue;  // one refused part does not hold back the others
      }
    }
    if (again)
      continue;
    warned_ = failed || no_route;  // warn again only after a round that went through
    return std::chrono::milliseconds(wait);
  }
  return std::chrono::milliseconds(0);
}

// --- Pusher ---------------------------------------------------------------------------------

struct Pusher::Target {
  Target(std::string url, std::string token, std::uint32_t timeout_ms, const std::string& ca_file)
      : client(std::move(url), std::move(token), timeout_ms, ca_file) {}
  HttpClient client;
  std::uint64_t sent = 0;
  std::thread thread;
};

Pusher::Pusher(std::vector<std::string> targets, std::string token, std::string ca_file,
               std::uint32_t timeout_ms, store::StateStore& state, api::SyncMetrics& metrics)
    : state_(state), metrics_(metrics) {
  for (auto& url : targets)
    targets_.push_back(std::make_unique<Target>(std::move(url), token, timeout_ms, ca_file));
}

Pusher::~Pusher() {
  stop();
}

void Pusher::start() {
  seq_ = state_.last_seq();
  for (auto& t : targets_) {
    t->sent = seq_;
    t->thread = named_thread("push-out", [this, target = t.get()] { loop(*target); });
  }
}

void Pusher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : targets_) {
    t->client.cancel();
    if (t->thread.joinable())
      t->thread.join();
  }
}

void Pusher::notify(std::uint64_t seq) {
  {
    std::lock_guard lock(mutex_);
    seq_ = std::max(seq_, seq);
  }
  cv_.notify_all();
}

void Pusher::loop(Target& t) {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || seq_ > t.sent; });
      if (stopping_)
        return;
    }
    auto changes = state_.changes_after(t.sent, api::kFeedPageChanges, api::kFeedPageBytes);
    if (!changes || changes->empty()) {
      t.sent = state_.last_seq();  // compacted or unreadable: the edge will pull
      continue;
    }
    api::ChangesPage page;
    page.last_seq = changes->back().seq;
    page.epoch = state_.epoch();
    page.changes = std::move(*changes);
    auto reply = t.client.request("POST", "/v1/sync/changes", api::encode_changes(page));
    if (reply && reply->status == 200) {
      metrics_.pushes_sent.fetch_add(1, std::memory_order_relaxed);
    } else {
      if (!reply && reply.error() == Errc::kShutdown)
        return;
      metrics_.push_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("push: POST {}/v1/sync/changes failed ({}); the edge will pull",
                   t.client.base_url(),
                   reply ? "HTTP " + std::to_string(reply->status) : t.client.last_error());
    }
    t.sent = page.last_seq;  // pushes are a hint: never retried, the edge's pull is the truth
  }
}

}  // namespace edge::sync
