#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "edge/pg/connection.hpp"
#include "edge/store/blob_gate.hpp"

namespace edge::pg {

/// The blob gate of a tier of origins (store::BlobGate; DESIGN §12.2): writers on any origin
/// and the collector on the singleton holder meet in PostgreSQL. enter() bumps
/// be_blob_gate.generation (waiting while a collector's round holds that row) and inserts a
/// lease; leave() deletes it. quiet() refuses while an unexpired lease exists; exclusive()
/// runs a round inside a transaction holding the row, if the generation is unchanged. A
/// lease of an origin killed mid-write expires after `lease` (collection waits until then).
///
/// Thread-safety: any thread; writers share one connection (one lock), the collector has
/// its own.
class PgBlobGate final : public store::BlobGate {
 public:
  PgBlobGate(std::string url, std::string origin,
             std::chrono::seconds lease = std::chrono::hours(6));

  Result<std::uint64_t> enter() override;
  void leave(std::uint64_t ticket, std::span<const Sha256> stored) override;
  Result<std::uint64_t> quiet() override;
  Result<bool> exclusive(std::uint64_t generation,
                         const std::function<Result<void>()>& round) override;

 private:
  std::string origin_;
  std::chrono::seconds lease_;
  std::mutex writers_mutex_;
  Connection writers_;  // guarded by writers_mutex_
  std::mutex collector_mutex_;
  Connection collector_;  // guarded by collector_mutex_
};

}  // namespace edge::pg
