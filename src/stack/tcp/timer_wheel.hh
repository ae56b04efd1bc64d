// A single-level hashed timer wheel with lazy cancellation (the gVisor/VPP way): an entry is never
// removed when a connection's deadline moves; the owner compares the fired entry with its current
// deadline and ignores stale ones. Entries live in an index-linked pool, so scheduling allocates
// nothing once the pool has grown to the working set; a bitmap of non-empty slots keeps expiry
// and next_deadline() from scanning empty slots (and never scans connections).
#pragma once

#include <cstdint>
#include <vector>

#include "base/time.hh"

namespace pno::tcp {

class TimerWheel {
 public:
  /// `slots` is rounded up to a power of two (at least 64).
  explicit TimerWheel(Instant now, Duration tick = std::chrono::milliseconds(1), std::size_t slots = 4096);

  /// Adds an entry firing at `deadline` (rounded up to the tick; a past deadline fires at the
  /// next expire()). `key` is the owner's handle, `deadline` is handed back unchanged.
  void schedule(std::uint32_t key, Instant deadline);

  /// Fires every entry due at `now`, oldest slot first: f(key, deadline). `f` may schedule().
  template <typename F>
  void expire(Instant now, F&& f);

  /// A time at or before the earliest entry (kNever if empty). May be early when the nearest
  /// non-empty slot holds only entries of a later revolution or stale ones; never late.
  [[nodiscard]] Instant next_deadline() const;
  [[nodiscard]] std::size_t size() const { return live_; }

 private:
  static constexpr std::uint32_t kNil = 0xffffffffu;
  struct Entry {
    std::int64_t tick;
    Instant deadline;
    std::uint32_t key;
    std::uint32_t next;
  };
  [[nodiscard]] std::int64_t tick_of_ceil(Instant t) const;
  [[nodiscard]] Instant time_of(std::int64_t tick) const { return Instant{tick_ * tick}; }
  void link(std::uint32_t idx);
  void mark(std::size_t slot, bool nonempty);
  /// Detaches the list of `slot`, returns its head.
  std::uint32_t take(std::size_t slot);

  Duration tick_;
  std::size_t mask_;
  std::int64_t cur_;  ///< every tick <= cur_ has been processed
  std::vector<std::uint32_t> heads_;
  std::vector<std::uint64_t> bits_;
  std::vector<Entry> pool_;
  std::uint32_t free_ = kNil;
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
    const std::size_t slot = static_cast<std::size_t>(t) & mask_;
    if ((bits_[slot >> 6] & (std::uint64_t{1} << (slot & 63))) == 0) continue;
    std::uint32_t i = take(slot);
    while (i != kNil) {
      const std::uint32_t next = pool_[i].next;
      if (pool_[i].tick <= now_tick) {
        const Entry e = pool_[i];
        pool_[i].next = free_;
        free_ = i;
        --live_;
        f(e.key, e.deadline);
      } else {
        link(i);  // a later revolution: back into its slot
      }
      i = next;
    }
  }
}

}  // namespace pno::tcp
