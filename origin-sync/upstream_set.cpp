#include "origin-sync/upstream_set.hpp"

#include <algorithm>
#include <tuple>

#include "edge/core/sched.hpp"

#include <spdlog/spdlog.h>

namespace edge::sync {

namespace {

using Clock = std::chrono::steady_clock;

// The probe thread's shortest sleep (a backoff just over) and longest (nothing to probe).
constexpr std::chrono::milliseconds kMinProbeSleep{25};
constexpr std::chrono::milliseconds kMaxProbeSleep{1000};

}  // namespace

UpstreamSet::UpstreamSet(const api::UpstreamOptions& options, api::SyncMetrics* metrics)
    : urls_(options.urls),
      backoff_max_ms_(std::max<std::uint32_t>(options.backoff_max_ms, 100)),
      metrics_(metrics),
      health_(options.urls.size()),
      probe_timeout_ms_(std::min<std::uint32_t>(options.timeout_ms, 5000)) {
  if (urls_.size() > 1) {
    for (const auto& url : urls_)
      probes_.push_back(
          std::make_unique<HttpClient>(url, std::string(), probe_timeout_ms_, options.ca_file));
  }
  std::lock_guard lock(mutex_);
  publish_locked();
}

UpstreamSet::~UpstreamSet() {
  stop();
}

std::vector<std::size_t> UpstreamSet::order() const {
  std::vector<std::size_t> out;
  out.reserve(urls_.size());
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < health_.size(); ++i) {
    if (health_[i].up)
      out.push_back(i);
  }
  for (std::size_t i = 0; i < health_.size(); ++i) {
    if (!health_[i].up)
      out.push_back(i);
  }
  return out;
}

std::size_t UpstreamSet::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

void UpstreamSet::succeeded(std::size_t i) {
  std::lock_guard lock(mutex_);
  auto& h = health_[i];
  h.failures = 0;
  if (h.up)
    return;
  h.up = true;
  if (urls_.size() > 1)
    spdlog::info("upstream {} answers again", urls_[i]);
  choose_locked("it answers again");
  publish_locked();
}

void UpstreamSet::failed(std::size_t i, const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    auto& h = health_[i];
    const auto now = Clock::now();
    if (!h.up && now < h.retry_at)
      return;  // known to be down: this outage's backoff is already running
    const std::uint32_t delay =
        backoff_ms(h.failures, std::min(kProbeBaseMs, backoff_max_ms_), backoff_max_ms_);
    ++h.failures;
    h.retry_at = now + std::chrono::milliseconds(delay);
    const bool was_up = h.up;
    h.up = false;
    if (urls_.size() > 1 && was_up) {
      spdlog::warn("upstream {} failed ({}); requests go to the others; probing it again in {} ms",
                   urls_[i], why, delay);
    }
    if (was_up) {
      choose_locked(urls_[i] + " failed");
      publish_locked();
    }
  }
  stopper_.wake();  // the probe thread recomputes when to look again
}

void UpstreamSet::choose_locked(std::string_view why) {
  std::size_t next = current_;
  for (std::size_t i = 0; i < health_.size(); ++i) {
    if (health_[i].up) {
      next = i;
      break;
    }
  }
  if (next == current_)
    return;
  spdlog::warn("upstream: now using {} ({} of {}) instead of {}: {}", urls_[next], next + 1,
               urls_.size(), urls_[current_], why);
  current_ = next;
  if (metrics_ != nullptr)
    metrics_->upstream_switches.fetch_add(1, std::memory_order_relaxed);
}

void UpstreamSet::publish_locked() {
  if (metrics_ == nullptr)
    return;
  std::vector<api::SyncMetrics::Upstream> list;
  list.reserve(urls_.size());
  for (std::size_t i = 0; i < urls_.size(); ++i)
    list.push_back({urls_[i], health_[i].up, i == current_});
  metrics_->set_upstreams(std::move(list));
}

void UpstreamSet::start() {
  if (probes_.empty() || thread_.joinable())
    return;
  thread_ = named_thread("upstream-probe", [this] { probe_loop(); });
}

void UpstreamSet::stop() {
  stopper_.stop();
  for (auto& p : probes_)
    p->cancel();
  if (thread_.joinable())
    thread_.join();
}

void UpstreamSet::probe_loop() {
  while (!stopper_.stopped()) {
    std::vector<std::size_t> due;
    auto wake = Clock::now() + kMaxProbeSleep;
    {
      std::lock_guard lock(mutex_);
      const auto now = Clock::now();
      for (std::size_t i = 0; i < health_.size(); ++i) {
        if (health_[i].up)
          continue;
        if (health_[i].retry_at <= now)
          due.push_back(i);
        else
          wake = std::min(wake, health_[i].retry_at);
      }
    }
    for (const std::size_t i : due) {
      // Not the sync token: /readyz is public, and a probe proves only that the node is up
      // and in sync (an edge that is still starting answers 503).
      auto reply = probes_[i]->request("GET", "/readyz", {}, {}, probe_timeout_ms_, 64 << 10);
      if (!reply && reply.error() == Errc::kShutdown)
        return;
      if (reply && reply->status == 200) {
        std::lock_guard lock(mutex_);
        auto& h = health_[i];
        if (!h.up) {
          // Healthy, yet its backoff is kept until a real request gets an answer: an
          // upstream that is ready but fails requests is not taken back every second.
          h.up = true;
          spdlog::info("upstream {} is healthy again (GET /readyz)", urls_[i]);
          choose_locked(urls_[i] + " is healthy again");
          publish_locked();
        }
      } else {
        failed(i, reply ? "GET /readyz: HTTP " + std::to_string(reply->status)
                        : probes_[i]->last_error());
      }
    }
    if (!due.empty())
      continue;  // recompute: a probe may have taken a while
    const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now());
    if (!stopper_.sleep_for(std::clamp(d, kMinProbeSleep, kMaxProbeSleep)))
      return;
  }
}

// --- FailoverClient -------------------------------------------------------------------------

FailoverClient::FailoverClient(UpstreamSet& set, const api::UpstreamOptions& options)
    : set_(set),
      token_(options.token),
      ca_file_(options.ca_file),
      timeout_ms_(options.timeout_ms),
      clients_(set.size()),
      last_(set.current()) {}

HttpClient& FailoverClient::client(std::size_t i) {
  std::lock_guard lock(mutex_);
  if (clients_[i] == nullptr) {
    // Made when first used: most of an edge's threads only ever talk to the first upstream
    // (an https:// client holds a TLS context with its CA store).
    clients_[i] = std::make_unique<HttpClient>(set_.url(i), token_, timeout_ms_, ca_file_);
    if (cancelled_)
      clients_[i]->cancel();
  }
  return *clients_[i];
}

void FailoverClient::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  for (auto& c : clients_) {
    if (c != nullptr)
      c->cancel();
  }
}

Result<HttpReply> FailoverClient::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers, std::uint32_t timeout_ms,
    std::uint64_t max_body_bytes) {
  return send(method, nullptr, target, body, headers, timeout_ms, max_body_bytes);
}

Result<HttpReply> FailoverClient::request_shaped(std::string_view method, const Shape& shape) {
  return send(method, &shape, {}, {}, {}, 0, 0);
}

Result<HttpReply> FailoverClient::send(
    std::string_view method, const Shape* shape, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers, std::uint32_t timeout_ms,
    std::uint64_t max_body_bytes) {
  Result<HttpReply> result = Errc::kIo;
  std::string shaped;
  for (const std::size_t i : set_.order()) {
    last_ = i;
    if (shape != nullptr) {
      std::tie(shaped, timeout_ms) = (*shape)(i);
      target = shaped;
    }
    HttpClient& http = client(i);
    result = http.request(method, target, body, headers, timeout_ms, max_body_bytes);
    if (!result && (result.error() == Errc::kShutdown || result.error() == Errc::kTooLarge)) {
      last_error_ = http.last_error();
      return result;
    }
    if (result && result->status < 500) {
      last_error_.clear();
      set_.succeeded(i);
      return result;
    }
    last_error_ = result ? "HTTP " + std::to_string(result->status) : http.last_error();
    if (last_error_.empty())
      last_error_ = result.error().message();
    set_.failed(i, std::string(method) + " " + std::string(target.substr(0, target.find('?'))) +
                       ": " + last_error_);
  }
  return result;
}

}  // namespace edge::sync
