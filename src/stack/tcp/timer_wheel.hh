// A single-level hashed timer wheel with one entry per owner id, as Linux keeps one timer per
// socket and moves it (sk_reset_timer / mod_timer): schedule() sets, moves or cancels the id's
// entry in O(1), so stale entries cannot pile up and the wheel never holds more entries than ids.
// Ids are dense and chosen by the owner (the TCP layer uses the socket's slot). Entries live in an
// array indexed by id and are doubly linked by index, so scheduling allocates nothing once
// reserve() has made room; a bitmap of non-empty slots keeps expiry and next_deadline() from
// scanning empty slots (and never scans connections).
#pragma once

#include <cstdint>
#include <vector>

#include "base/time.hh"

namespace pno::tcp {

class TimerWheel {
 public:
  /// `slots` is rounded up to a power of two (at least 64).
  explicit TimerWheel(Instant now, Duration tick = std::chrono::milliseconds(1), std::size_t slots = 4096);

  /// Room for ids below `n`. Allocates: call when the owner grows (socket slab), not per event.
  void reserve(std::uint32_t n);
  /// Schedules `id` at `deadline` (rounded up to the tick; a past deadline fires at the next
  /// expire()), moving the entry it already has; kNever cancels. An id beyond reserve() grows the
  /// array (owners reserve ahead, so this does not happen on the hot path).
  void schedule(std::uint32_t id, Instant deadline);
  void cancel(std::uint32_t id) { schedule(id, kNever); }
  /// The deadline `id` is scheduled at, kNever when it has no entry.
  [[nodiscard]] Instant deadline(std::uint32_t id) const {
    return id < pool_.size() ? pool_[id].deadline : kNever;
  }

  /// Fires every entry due at `now`, oldest slot first: f(id, deadline). A fired entry is removed
  /// before f runs; `f` may schedule() or cancel() any id.
  template <typename F>
  void expire(Instant now, F&& f);

  /// A time at or before the earliest entry (kNever if empty). May be early when the nearest
  /// non-empty slot holds only entries of a later revolution; never late.
  [[nodiscard]] Instant next_deadline() const;
  /// Entries scheduled (at most one per id).
  [[nodiscard]] std::size_t size() const { return live_; }

 private:
  static constexpr std::uint32_t kNil = 0xffffffffu;
  /// A link that names a list head (slot, or the spill list of expire()) instead of an entry.
  static constexpr std::uint32_t kHead = 0x80000000u;
  struct Entry {
    std::int64_t tick = 0;
    Instant deadline = kNever;  ///< kNever: not linked
    std::uint32_t next = kNil;
    std::uint32_t prev = kNil;  ///< an entry, or kHead | list
  };
  [[nodiscard]] std::int64_t tick_of_ceil(Instant t) const;
  [[nodiscard]] Instant time_of(std::int64_t tick) const { return Instant{tick_ * tick}; }
  [[nodiscard]] std::size_t slot_of(std::int64_t tick) const { return static_cast<std::size_t>(tick) & mask_; }
  /// Pushes the entry at the front of `list` (a slot, or spill_).
  void push(std::size_t list, std::uint32_t idx);
  /// Takes the entry out of whatever list holds it.
  void unlink(std::uint32_t idx);
  void mark(std::size_t slot, bool nonempty);

  Duration tick_;
  std::size_t mask_;
  std::size_t spill_;   ///< index of the spill list in heads_ (after the slots)
  std::int64_t cur_;    ///< every tick <= cur_ has been processed
  std::vector<std::uint32_t> heads_;
  std::vector<std::uint64_t> bits_;
  std::vector<Entry> pool_;
  std::size_t live_ = 0;
};

template <typename F>
void TimerWheel::expire(Instant now, F&& f) {
  const std::int64_t now_tick = to_ns(now) / tick_.count();
  if (now_tick <= cur_) return;
  const std::int64_t span = now_tick - cur_;
  const std::size_t nslots = mask_ + 1;
  const std::int64_t steps = span >= static_cast<std::int64_t>(nslots) ? static_cast<std::int64_t>(nslots) : span;
  const std::int64_t first = cur_ + 1;
  cur_ = now_tick;  // entries scheduled by f() from here on land after now
  for (std::int64_t t = first; t < first + steps; ++t) {
    const std::size_t slot = slot_of(t);
    if ((bits_[slot >> 6] & (std::uint64_t{1} << (slot & 63))) == 0) continue;
    // One entry at a time from the live list, so whatever f() does to other entries (cancel,
    // move, even into this slot) leaves the walk valid. Entries of a later revolution wait on the
    // spill list (where f() may still cancel or move them) and go back afterwards.
    while (heads_[slot] != kNil) {
      const std::uint32_t i = heads_[slot];
      unlink(i);
      Entry& e = pool_[i];
      if (e.tick > now_tick) {
        push(spill_, i);
        continue;
      }
      const Instant d = e.deadline;
      e.deadline = kNever;
      --live_;
      f(i, d);
    }
    while (heads_[spill_] != kNil) {
      const std::uint32_t i = heads_[spill_];
      unlink(i);
      push(slot_of(pool_[i].tick), i);
    }
  }
}

}  // namespace pno::tcp
