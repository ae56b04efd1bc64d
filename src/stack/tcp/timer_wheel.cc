#include "stack/tcp/timer_wheel.hh"

#include <bit>

namespace pno::tcp {

TimerWheel::TimerWheel(Instant now, Duration tick, std::size_t slots)
    : tick_(tick.count() > 0 ? tick : Duration{1}),
      mask_(std::bit_ceil(slots < 64 ? std::size_t{64} : slots) - 1),
      cur_(to_ns(now) / tick_.count()),
      heads_(mask_ + 1, kNil),
      bits_((mask_ + 1) / 64, 0) {
  pool_.reserve(1024);
}

std::int64_t TimerWheel::tick_of_ceil(Instant t) const {
  const std::int64_t ns = to_ns(t);
  return ns / tick_.count() + (ns % tick_.count() != 0 ? 1 : 0);
}

void TimerWheel::mark(std::size_t slot, bool nonempty) {
  const std::uint64_t bit = std::uint64_t{1} << (slot & 63);
  if (nonempty) bits_[slot >> 6] |= bit;
  else bits_[slot >> 6] &= ~bit;
}

void TimerWheel::link(std::uint32_t idx) {
  const std::size_t slot = static_cast<std::size_t>(pool_[idx].tick) & mask_;
  pool_[idx].next = heads_[slot];
  heads_[slot] = idx;
  mark(slot, true);
}

std::uint32_t TimerWheel::take(std::size_t slot) {
  const std::uint32_t h = heads_[slot];
  heads_[slot] = kNil;
  mark(slot, false);
  return h;
}

void TimerWheel::schedule(std::uint32_t key, Instant deadline) {
  std::int64_t tick = deadline == kNever ? INT64_MAX / 2 : tick_of_ceil(deadline);
  if (tick <= cur_) tick = cur_ + 1;
  std::uint32_t idx;
  if (free_ != kNil) {
    idx = free_;
    free_ = pool_[idx].next;
  } else {
    idx = static_cast<std::uint32_t>(pool_.size());
    pool_.push_back({});
  }
  pool_[idx] = Entry{tick, deadline, key, kNil};
  link(idx);
  ++live_;
}

Instant TimerWheel::next_deadline() const {
  if (live_ == 0) return kNever;
  const std::size_t nslots = mask_ + 1;
  const std::size_t start = static_cast<std::size_t>(cur_ + 1) & mask_;
  // Walk the bitmap from the slot after cur_, wrapping once.
  for (std::size_t off = 0; off < nslots;) {
    const std::size_t slot = (start + off) & mask_;
    const std::uint64_t word = bits_[slot >> 6] >> (slot & 63);
    if (word != 0) {
      const std::size_t d = off + static_cast<std::size_t>(std::countr_zero(word));
      if (d >= nslots) break;
      return time_of(cur_ + 1 + static_cast<std::int64_t>(d));
    }
    off += 64 - (slot & 63);
  }
  return time_of(cur_ + 1);
}

}  // namespace pno::tcp
