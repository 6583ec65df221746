#include "edge/api/fill_stream.hpp"

#include <algorithm>
#include <iterator>

#include "edge/core/errc.hpp"

namespace edge::api {

Response fill_failure(Route route, const std::string& what, boost::system::error_code ec) {
  if (ec == Errc::kNotFound)
    return error_response(404, "not_found", "no " + what + " on this node or its upstream", route);
  if (ec == Errc::kStorageFull)
    return storage_full_response(503, "storing " + what, route);
  if (ec == Errc::kChecksumMismatch) {
    return error_response(502, "verification_failed",
                          "bytes of " + what + " from upstream failed SHA-256 verification", route);
  }
  return error_response(502, "upstream_unavailable",
                        "fetching " + what + " from upstream failed: " + ec.message(), route);
}

FillStream::FillStream(store::ChunkStore& chunks, store::BlobStore& blobs, Filler& filler,
                       std::shared_ptr<const store::Recipe> recipe, std::uint64_t first,
                       std::uint64_t length, Route route)
    : chunks_(chunks),
      blobs_(blobs),
      filler_(filler),
      recipe_(std::move(recipe)),
      first_(first),
      end_(first + length),
      route_(route) {
  const auto& starts = recipe_->starts;
  // The chunks [chunk0_, last] cover [first_, end_): the last start <= first_, and every
  // chunk that starts before end_.
  chunk0_ = static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), first_) -
                                     starts.begin());
  chunk0_ = chunk0_ == 0 ? 0 : chunk0_ - 1;
  const auto last = static_cast<std::size_t>(std::lower_bound(starts.begin(), starts.end(), end_) -
                                             starts.begin());
  const std::size_t n = length == 0 ? 0 : last - chunk0_;
  state_.assign(n, State::kIdle);
  error_.assign(n, {});
  bytes_.assign(n, {});
}

std::vector<std::size_t> FillStream::issue_locked() {
  std::vector<std::size_t> fills;
  const std::size_t until = std::min(state_.size(), cursor_ + kWindow);
  for (; issued_ < until; ++issued_) {
    const auto& c = recipe_->chunks[chunk0_ + issued_];
    if (chunks_.find(c.id)) {
      state_[issued_] = State::kReady;
    } else {
      state_[issued_] = State::kFetching;
      fills.push_back(issued_);
    }
  }
  return fills;
}

void FillStream::request(const std::vector<std::size_t>& slots) {
  if (slots.empty())
    return;
  const Filler::RunDone done = [self = shared_from_this(), base = chunk0_](
                                   std::size_t index, boost::system::error_code ec,
                                   SharedBytes bytes) {
    self->on_filled(index - base, ec, std::move(bytes));
  };
  // The filler groups adjacent chunks into Range requests; the range's first chunk goes
  // alone, so that its bytes (the response's first) wait for nothing else.
  std::vector<std::size_t> indexes;
  for (const std::size_t slot : slots) {
    if (slot == 0)
      filler_.fill_chunks(recipe_, {chunk0_}, done);
    else
      indexes.push_back(chunk0_ + slot);
  }
  filler_.fill_chunks(recipe_, indexes, done);
}

void FillStream::on_filled(std::size_t slot, boost::system::error_code ec, SharedBytes bytes) {
  Ready resume;
  {
    std::lock_guard lock(mutex_);
    state_[slot] = ec ? State::kFailed : State::kReady;
    error_[slot] = ec;
    bytes_[slot] = ec ? SharedBytes{} : std::move(bytes);
    if (waiting_ && slot == cursor_)
      resume = std::move(waiting_);
  }
  if (resume)
    next(std::move(resume));
}

void FillStream::next(Ready ready) {
  std::vector<std::size_t> fills;
  boost::system::error_code failed;
  std::size_t from = 0, to = 0;  // chunks [from, to) of the range go out now
  bool end = false;
  bool parked = false;
  bool complete_blob = false;
  std::vector<SharedBytes> memory;  // per chunk of [from, to): verified bytes, or null
  {
    std::lock_guard lock(mutex_);
    fills = issue_locked();
    if (cursor_ == state_.size()) {
      end = true;
      complete_blob = !completed_ && first_ == 0 && end_ == recipe_->size;
      completed_ = true;
    } else if (state_[cursor_] == State::kFailed) {
      failed = error_[cursor_];
    } else if (state_[cursor_] == State::kReady) {
      from = cursor_;
      while (cursor_ < state_.size() && state_[cursor_] == State::kReady && cursor_ - from < kBatch)
        ++cursor_;
      to = cursor_;
      memory.reserve(to - from);
      for (std::size_t slot = from; slot < to; ++slot)
        memory.push_back(std::move(bytes_[slot]));
      // What was handed out makes room in the window.
      auto more = issue_locked();
      fills.insert(fills.end(), more.begin(), more.end());
    } else {
      waiting_ = std::move(ready);  // on_filled resumes it
      parked = true;
    }
  }
  request(fills);
  if (complete_blob && !blobs_.recipe(recipe_->id)) {
    // Every chunk is here now: the blob is checked and its recipe stored (fill_blob finds
    // nothing to fetch), so the next request for it is a plain hit.
    filler_.fill_blob(recipe_->id, [](boost::system::error_code) {});
  }
  if (parked)
    return;
  if (end)
    return ready({}, {});
  if (failed)
    return ready(failed, {});
  // Bytes of the range in chunks [from, to): verified bytes from memory, the rest read from
  // the store's index (a chunk evicted since it was found is a failure: the client
  // resumes), in runs of stored chunks.
  const auto& starts = recipe_->starts;
  const auto& chunks = recipe_->chunks;
  const auto lo_of = [&](std::size_t slot) { return std::max(first_, starts[chunk0_ + slot]); };
  const auto hi_of = [&](std::size_t slot) {
    return std::min(end_, starts[chunk0_ + slot] + chunks[chunk0_ + slot].length);
  };
  std::vector<store::Piece> pieces;
  for (std::size_t slot = from; slot < to;) {
    if (memory[slot - from]) {
      const std::uint64_t lo = lo_of(slot);
      pieces.push_back(
          {nullptr, lo - starts[chunk0_ + slot], hi_of(slot) - lo, std::move(memory[slot - from])});
      ++slot;
      continue;
    }
    std::size_t run = slot + 1;
    while (run < to && !memory[run - from])
      ++run;
    auto stored = blobs_.resolve(*recipe_, lo_of(slot), hi_of(run - 1) - lo_of(slot));
    if (!stored)
      return ready(stored.error(), {});
    std::move(stored->begin(), stored->end(), std::back_inserter(pieces));
    slot = run;
  }
  ready({}, std::move(pieces));
}

Response FillStream::failure(boost::system::error_code ec) const {
  return fill_failure(route_, "blob " + recipe_->id.hex(), ec);
}

}  // namespace edge::api
