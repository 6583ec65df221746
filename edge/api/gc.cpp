#include "edge/api/gc.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <unordered_map>

#include <boost/json.hpp>

#include <spdlog/spdlog.h>

namespace edge::api {
namespace {

using Clock = std::chrono::system_clock;

std::vector<Sha256> sorted(std::vector<Sha256> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

bool has(const std::vector<Sha256>& sorted_ids, const Sha256& id) {
  return std::binary_search(sorted_ids.begin(), sorted_ids.end(), id);
}

// The start of a pass: its report, and the gate's generation if no writer is inside (else
// the report says why nothing is collected). finish() stamps the time taken.
struct Pass {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  GcReport report;
  std::optional<std::uint64_t> generation;

  Pass(const char* where, bool dry_run, store::BlobGate& gate) {
    report.where = where;
    report.dry_run = dry_run;
    auto g = gate.quiet();
    if (g)
      generation = *g;
    else if (g.error() == Errc::kConflict)
      report.note = "an upload or release write is in progress; nothing was collected";
    else
      report.note = "the gate could not be read: " + g.error().message();
  }
  GcReport finish() {
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
  }
};

// Removes `blobs` then `chunks` in rounds of `round` ids, each through the gate: stops when a
// writer entered since the listing (the rest waits for the next pass) or a round fails.
// `report`'s *_removed and bytes_removed count what the rounds that ran removed; `sizes`
// gives each chunk's bytes.
template <class Remove>
void in_rounds(store::BlobGate& gate, std::uint64_t generation, std::size_t round,
               const std::vector<Sha256>& blobs, const std::vector<Sha256>& chunks,
               const std::unordered_map<Sha256, std::uint64_t, Sha256Hash>& sizes, GcReport& report,
               Remove&& remove) {
  report.blobs_removed = report.chunks_removed = report.bytes_removed = 0;
  std::size_t b = 0, c = 0;
  while (b < blobs.size() || c < chunks.size()) {
    std::vector<Sha256> rb, rc;
    while (b < blobs.size() && rb.size() < round)
      rb.push_back(blobs[b++]);
    while (c < chunks.size() && rb.size() + rc.size() < round)
      rc.push_back(chunks[c++]);
    std::uint64_t bytes = 0;
    for (const auto& id : rc) {
      if (auto it = sizes.find(id); it != sizes.end())
        bytes += it->second;
    }
    const std::size_t nb = rb.size(), nc = rc.size();
    auto ran = gate.exclusive(generation, [&]() -> Result<void> { return remove(rb, rc); });
    if (!ran) {
      report.note = "removing failed: " + ran.error().message();
      return;
    }
    if (!*ran) {
      report.note =
          "an upload or release write started during the pass; the rest waits for "
          "the next pass";
      return;
    }
    report.blobs_removed += nb;
    report.chunks_removed += nc;
    report.bytes_removed += bytes;
  }
  report.complete = true;
}

}  // namespace

std::string GcReport::to_json() const {
  boost::json::object o{{"where", where},
                        {"dry_run", dry_run},
                        {"complete", complete},
                        {"blobs", blobs},
                        {"blobs_referenced", blobs_referenced},
                        {"blobs_young", blobs_young},
                        {"blobs_removed", blobs_removed},
                        {"chunks", chunks},
                        {"chunks_live", chunks_live},
                        {"chunks_young", chunks_young},
                        {"chunks_removed", chunks_removed},
                        {"bytes_removed", bytes_removed},
                        {"segments_compacted", segments_compacted},
                        {"chunks_relocated", chunks_relocated},
                        {"bytes_freed", bytes_freed},
                        {"seconds", seconds}};
  if (!note.empty())
    o["note"] = note;
  return boost::json::serialize(o);
}

GcReport StoreCollector::run(const ReferencedBlobs& referenced, bool dry_run) {
  Pass pass("store", dry_run, gate_);
  GcReport& report = pass.report;
  const auto done = [&] { return pass.finish(); };
  const auto& generation = pass.generation;
  if (!generation)
    return done();
  const auto now = Clock::now();
  const auto cutoff = now - options_.grace;
  const std::int64_t cutoff_s =
      std::chrono::duration_cast<std::chrono::seconds>(cutoff.time_since_epoch()).count();
  // Recipes have no time of their own: only once the gate has remembered every store for a
  // whole grace period can an unremembered one be old.
  const bool recipes_aged = gate_.forget_before(cutoff) <= cutoff;
  auto refs = referenced();
  if (!refs) {
    report.note = "the control state could not be read: " + refs.error().message();
    return done();
  }
  const auto named = sorted(std::move(*refs));

  std::vector<Sha256> dead_blobs, live_chunks;
  bool chunks_known = true;
  auto& chunks = blobs_.chunks();
  auto listed = chunks.for_each_blob([&](const Sha256& id, std::string_view encoded) {
    ++report.blobs;
    bool keep = true;
    if (has(named, id)) {
      ++report.blobs_referenced;
    } else if (!recipes_aged || gate_.last_stored(id).value_or(Clock::time_point{}) >= cutoff) {
      ++report.blobs_young;
    } else {
      keep = false;
      dead_blobs.push_back(id);
    }
    if (!keep)
      return;
    auto recipe = store::Recipe::decode(id, encoded);
    if (!recipe) {
      chunks_known = false;  // its chunks are unknown: none can be proven unreferenced
      spdlog::error("gc: the recipe of blob {} does not decode ({}); chunks are not collected",
                    id.hex(), recipe.error().message());
      return;
    }
    for (const auto& c : recipe->chunks)
      live_chunks.push_back(c.id);
  });
  if (!listed) {
    report.note = "listing recipes failed: " + listed.error().message();
    return done();
  }
  live_chunks = sorted(std::move(live_chunks));

  std::map<std::uint64_t, store::SegmentUse> segs;
  for (const auto& u : chunks.segment_use())
    segs[u.id] = u;
  std::vector<Sha256> dead_chunks;
  std::unordered_map<Sha256, std::uint64_t, Sha256Hash> sizes;
  if (chunks_known) {
    auto walked = chunks.for_each_chunk([&](const Sha256& id, const store::IndexEntry& e) {
      ++report.chunks;
      if (has(live_chunks, id)) {
        ++report.chunks_live;
        return;
      }
      const auto s = segs.find(e.segment);
      if (s == segs.end() || s->second.written_s >= cutoff_s) {
        ++report.chunks_young;
        return;
      }
      dead_chunks.push_back(id);
      sizes[id] = e.length;
      report.bytes_removed += e.length;
    });
    if (!walked) {
      report.note = "listing chunks failed: " + walked.error().message();
      return done();
    }
  }
  report.blobs_removed = dead_blobs.size();
  report.chunks_removed = dead_chunks.size();
  if (dry_run) {
    report.complete = chunks_known;
    if (!chunks_known)
      report.note = "a recipe does not decode: chunks are not collected (see the log)";
    return done();
  }
  in_rounds(gate_, *generation, options_.round, dead_blobs, dead_chunks, sizes, report,
            [&](std::vector<Sha256>& rb, std::vector<Sha256>& rc) -> Result<void> {
              auto r = blobs_.erase_garbage(std::move(rb), std::move(rc));
              if (!r)
                return r.error();
              return {};
            });
  if (!chunks_known && report.note.empty()) {
    report.complete = false;
    report.note = "a recipe does not decode: chunks are not collected (see the log)";
  }
  // Compaction moves live chunks; it removes nothing a writer could rely on, so it runs
  // outside the gate (one segment per store commit, puts go on between them).
  for (const auto& u : chunks.segment_use()) {
    const std::uint64_t body = u.bytes > 64 ? u.bytes - 64 : 0;
    if (!u.sealed || static_cast<double>(u.live_bytes) >= options_.compact_below * body)
      continue;
    auto c = chunks.compact_segment(u.id);
    if (!c && c.error() == Errc::kConflict) {
      report.complete = false;
      report.note = "a backup is copying the segments: compaction waits for the next pass";
      break;
    }
    if (!c) {
      if (c.error() != Errc::kNotFound) {
        report.complete = false;
        report.note =
            "compacting segment " + std::to_string(u.id) + " failed: " + c.error().message();
        break;
      }
      continue;  // evicted or compacted meanwhile
    }
    report.segments_compacted += c->segments;
    report.chunks_relocated += c->relocated;
    report.bytes_freed += c->bytes;
  }
  return done();
}

GcReport BucketCollector::run(const ReferencedBlobs& referenced, bool dry_run) {
  Pass pass("bucket", dry_run, gate_);
  GcReport& report = pass.report;
  const auto done = [&] { return pass.finish(); };
  const auto& generation = pass.generation;
  if (!generation)
    return done();
  const std::int64_t cutoff_s = std::chrono::duration_cast<std::chrono::seconds>(
                                    (Clock::now() - options_.grace).time_since_epoch())
                                    .count();
  auto refs = referenced();
  if (!refs) {
    report.note = "the control state could not be read: " + refs.error().message();
    return done();
  }
  const auto named = sorted(std::move(*refs));

  // Every key under `prefix`, page by page.
  const auto list_all =
      [&](std::string_view prefix,
          const std::function<void(const store::ObjectListing::Entry&)>& f) -> Result<void> {
    std::string next;
    do {
      auto page = objects_.list(prefix, next);
      if (!page)
        return page.error();
      for (const auto& e : page->objects)
        f(e);
      next = page->next;
    } while (!next.empty());
    return {};
  };
  const auto id_of = [](std::string_view key, std::string_view prefix) -> std::optional<Sha256> {
    if (!key.starts_with(prefix))
      return std::nullopt;
    auto id = Sha256::parse(key.substr(prefix.size()));
    return id ? std::optional<Sha256>(*id) : std::nullopt;
  };

  std::vector<Sha256> dead_blobs, kept_blobs, live_chunks;
  auto listed = list_all("recipes/", [&](const store::ObjectListing::Entry& e) {
    const auto id = id_of(e.key, "recipes/");
    if (!id)
      return;  // not ours: left alone
    ++report.blobs;
    if (has(named, *id)) {
      ++report.blobs_referenced;
      kept_blobs.push_back(*id);
    } else if (e.modified_s < 0 || e.modified_s >= cutoff_s) {
      ++report.blobs_young;
      kept_blobs.push_back(*id);
    } else {
      dead_blobs.push_back(*id);
    }
  });
  if (!listed) {
    report.note = "listing recipes failed: " + listed.error().message();
    return done();
  }
  // The chunks of every recipe that stays: from this node's cache, else from the bucket.
  for (const auto& id : kept_blobs) {
    if (auto local = local_.recipe(id)) {
      for (const auto& c : (*local)->chunks)
        live_chunks.push_back(c.id);
      continue;
    }
    auto bytes = objects_.get(store::recipe_key(id.hex()), 64ULL << 20);
    if (bytes && bytes->empty())
      bytes = make_error_code(Errc::kCorrupt);
    Result<store::Recipe> recipe = make_error_code(Errc::kCorrupt);
    if (bytes) {
      recipe = store::Recipe::decode(
          id, std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
    }
    if (!bytes && bytes.error() == Errc::kNotFound)
      continue;  // removed meanwhile (another collector): names nothing any more
    if (!recipe) {
      report.note = "recipe " + id.hex() + " could not be read (" +
                    (bytes ? recipe.error() : bytes.error()).message() + "); nothing was collected";
      return done();
    }
    for (const auto& c : recipe->chunks)
      live_chunks.push_back(c.id);
  }
  live_chunks = sorted(std::move(live_chunks));
  std::vector<Sha256> dead_chunks;
  std::unordered_map<Sha256, std::uint64_t, Sha256Hash> sizes;
  listed = list_all("chunks/", [&](const store::ObjectListing::Entry& e) {
    const auto id = id_of(e.key, "chunks/");
    if (!id)
      return;
    ++report.chunks;
    if (has(live_chunks, *id)) {
      ++report.chunks_live;
    } else if (e.modified_s < 0 || e.modified_s >= cutoff_s) {
      ++report.chunks_young;
    } else {
      dead_chunks.push_back(*id);
      sizes[*id] = e.size;
      report.bytes_removed += e.size;
    }
  });
  if (!listed) {
    report.note = "listing chunks failed: " + listed.error().message();
    return done();
  }
  report.blobs_removed = dead_blobs.size();
  report.chunks_removed = dead_chunks.size();
  if (dry_run) {
    report.complete = true;
    return done();
  }
  in_rounds(gate_, *generation, options_.round, dead_blobs, dead_chunks, sizes, report,
            [&](const std::vector<Sha256>& rb, const std::vector<Sha256>& rc) -> Result<void> {
              // Recipes first: a recipe object never names a chunk that is gone.
              for (const auto& id : rb) {
                if (auto r = objects_.remove(store::recipe_key(id.hex())); !r)
                  return r.error();
              }
              for (const auto& id : rc) {
                if (auto r = objects_.remove(store::chunk_key(id.hex())); !r)
                  return r.error();
              }
              return {};
            });
  return done();
}

GcRunner::GcRunner(StoreCollector* store, BucketCollector* bucket, ReferencedBlobs referenced,
                   std::function<bool()> bucket_here, std::chrono::seconds interval)
    : store_(store),
      bucket_(bucket),
      referenced_(std::move(referenced)),
      bucket_here_(std::move(bucket_here)),
      interval_(interval) {}

GcRunner::~GcRunner() {
  stop();
}

void GcRunner::start() {
  thread_ = std::thread([this] { loop(); });
}

void GcRunner::stop() {
  std::deque<Request> left;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    left.swap(requests_);
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  for (auto& r : left)
    r.done(R"({"error":"shutting_down","message":"the node is stopping; nothing was collected"})");
}

bool GcRunner::run_now(bool dry_run, std::function<void(std::string)> done) {
  {
    std::lock_guard lock(mutex_);
    if (stop_ || requests_.size() >= 8)
      return false;
    requests_.push_back({dry_run, std::move(done)});
  }
  cv_.notify_all();
  return true;
}

std::string GcRunner::pass(bool dry_run) {
  boost::json::object out;
  const auto account = [&](int i, const GcReport& r) {
    if (dry_run)
      return;
    std::lock_guard lock(mutex_);
    auto& t = totals_[i];
    ++t.passes;
    t.blobs += r.blobs_removed;
    t.chunks += r.chunks_removed;
    t.bytes += r.bytes_removed;
    t.freed += r.bytes_freed;
    if (r.complete) {
      t.last_complete_s =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count();
    } else {
      ++t.incomplete;
    }
  };
  const auto log = [](const GcReport& r) {
    spdlog::info(
        "gc ({}{}): {} of {} blobs and {} of {} chunks ({} bytes) removed; {} "
        "segments compacted ({} bytes freed, {} chunks moved) in {:.2f} s{}{}",
        r.where, r.dry_run ? ", dry run: would be" : "", r.blobs_removed, r.blobs, r.chunks_removed,
        r.chunks, r.bytes_removed, r.segments_compacted, r.bytes_freed, r.chunks_relocated,
        r.seconds, r.note.empty() ? "" : "; ", r.note);
  };
  if (store_ != nullptr) {
    const auto r = store_->run(referenced_, dry_run);
    account(0, r);
    log(r);
    out["store"] = boost::json::parse(r.to_json());
  }
  if (bucket_ != nullptr) {
    if (bucket_here_ && !bucket_here_()) {
      out["bucket"] = nullptr;
      out["bucket_note"] =
          "the bucket is collected by the origin holding the tier's singleton "
          "lock, not this one";
    } else {
      const auto r = bucket_->run(referenced_, dry_run);
      account(1, r);
      log(r);
      out["bucket"] = boost::json::parse(r.to_json());
    }
  }
  return boost::json::serialize(out);
}

void GcRunner::loop() {
  auto next = std::chrono::steady_clock::now() + interval_;
  std::unique_lock lock(mutex_);
  while (!stop_) {
    if (requests_.empty()) {
      if (interval_.count() == 0) {
        cv_.wait(lock, [this] { return stop_ || !requests_.empty(); });
      } else {
        cv_.wait_until(lock, next, [this] { return stop_ || !requests_.empty(); });
      }
    }
    if (stop_)
      break;
    if (!requests_.empty()) {
      Request r = std::move(requests_.front());
      requests_.pop_front();
      lock.unlock();
      auto json = pass(r.dry_run);
      r.done(std::move(json));
      lock.lock();
      continue;
    }
    if (interval_.count() != 0 && std::chrono::steady_clock::now() >= next) {
      lock.unlock();
      (void)pass(false);
      lock.lock();
      next = std::chrono::steady_clock::now() + interval_;
    }
  }
}

void GcRunner::render(std::string& out) const {
  std::lock_guard lock(mutex_);
  const auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    for (int i = 0; i < 2; ++i) {
      if ((i == 0 && store_ == nullptr) || (i == 1 && bucket_ == nullptr))
        continue;
      out += std::string(name) + "{where=\"" + (i == 0 ? "store" : "bucket") + "\"} " +
             value(totals_[i]) + "\n";
    }
  };
  const auto n = [](std::uint64_t v) { return std::to_string(v); };
  metric("edge_gc_passes_total", "counter", "Garbage collection passes run (not dry runs).",
         [&](const Totals& t) { return n(t.passes); });
  metric("edge_gc_incomplete_total", "counter",
         "Passes that stopped early (a writer came, an error); the log says why.",
         [&](const Totals& t) { return n(t.incomplete); });
  metric("edge_gc_removed_blobs_total", "counter", "Recipes of unreferenced blobs removed.",
         [&](const Totals& t) { return n(t.blobs); });
  metric("edge_gc_removed_chunks_total", "counter", "Unreferenced chunks removed.",
         [&](const Totals& t) { return n(t.chunks); });
  metric("edge_gc_removed_bytes_total", "counter", "Bytes of the unreferenced chunks removed.",
         [&](const Totals& t) { return n(t.bytes); });
  metric("edge_gc_freed_bytes_total", "counter",
         "Bytes of segment files freed by compaction (store only).",
         [&](const Totals& t) { return n(t.freed); });
  metric("edge_gc_last_complete_seconds", "gauge",
         "When the last complete pass ended (seconds since the epoch; 0: none yet).",
         [&](const Totals& t) {
           char buf[32];
           std::snprintf(buf, sizeof buf, "%.0f", t.last_complete_s);
           return std::string(buf);
         });
}

}  // namespace edge::api
