#pragma once

// Garbage collection of blobs against the writers that rely on blobs being there
// (DESIGN §12.2). An upload may reuse chunks it found stored, and a release write checks its
// blobs before it commits; a collector that lists what is unreferenced must not remove any of
// that meanwhile. Writers enter and leave the gate; the collector removes things only in
// rounds run with the gate shut, and only if no writer entered since it listed. The store
// layer declares it; LocalBlobGate serves one process, edge/pg one for a tier of origins.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>

#include "edge/core/errc.hpp"
#include "edge/core/sha256.hpp"

namespace edge::store {

class BlobGate {
 public:
  virtual ~BlobGate() = default;
  /// A writer starts: waits while a collection round runs. The ticket is for leave().
  /// Errc::kUnavailable if the gate's backend cannot be reached (the write must fail).
  virtual Result<std::uint64_t> enter() = 0;
  /// The writer is done, acknowledged or not. `stored`: blobs it stored or found stored;
  /// their grace period starts now.
  virtual void leave(std::uint64_t ticket, std::span<const Sha256> stored) = 0;
  /// The collector, before it lists: the gate's generation if no writer is inside;
  /// Errc::kConflict while one is (try later).
  virtual Result<std::uint64_t> quiet() = 0;
  /// Runs `round` with writers held at enter(), if none entered since quiet() gave
  /// `generation`. False (nothing ran) if one did: what the collector listed may be stale.
  virtual Result<bool> exclusive(std::uint64_t generation,
                                 const std::function<Result<void>()>& round) = 0;
};

/// The gate of one process. It also remembers when each blob was last stored by a writer
/// (what a recipe's age is, since recipes carry no time), for at most `max_recent` blobs.
class LocalBlobGate final : public BlobGate {
 public:
  using Clock = std::chrono::system_clock;
  explicit LocalBlobGate(std::size_t max_recent = 1U << 20) : max_recent_(max_recent) {}

  Result<std::uint64_t> enter() override;
  void leave(std::uint64_t ticket, std::span<const Sha256> stored) override;
  Result<std::uint64_t> quiet() override;
  Result<bool> exclusive(std::uint64_t generation,
                         const std::function<Result<void>()>& round) override;

  /// When a writer last stored `id` (since this process started), if it is remembered.
  std::optional<Clock::time_point> last_stored(const Sha256& id) const;
  /// Forgets blobs stored before `t`. Returns the time since which every store is
  /// remembered: the gate's start, or the last time the table was full and one was not.
  Clock::time_point forget_before(Clock::time_point t);

 private:
  // Held through a round: enter() waits on it; leave() does not (a writer may finish on the
  // store's thread while a round waits for that thread).
  std::mutex round_mutex_;
  mutable std::mutex mutex_;  // the figures below
  std::uint64_t generation_ = 0;
  std::uint64_t inside_ = 0;
  std::uint64_t next_ticket_ = 0;
  std::size_t max_recent_;
  std::unordered_map<Sha256, Clock::time_point, Sha256Hash> recent_;
  Clock::time_point complete_since_ = Clock::now();
};

}  // namespace edge::store
