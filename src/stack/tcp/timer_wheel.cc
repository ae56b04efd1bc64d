#include "stack/tcp/timer_wheel.hh"

#include <bit>

namespace pno::tcp {

TimerWheel::TimerWheel(Instant now, Duration tick, std::size_t slots)
    : tick_(tick.count() > 0 ? tick : Duration{1}),
      mask_(std::bit_ceil(slots < 64 ? std::size_t{64} : slots) - 1),
      spill_(mask_ + 1),
      cur_(to_ns(now) / tick_.count()),
      heads_(mask_ + 2, kNil),
      bits_((mask_ + 1) / 64, 0) {}

void TimerWheel::reserve(std::uint32_t n) {
  if (n > pool_.size()) pool_.resize(n);
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

void TimerWheel::push(std::size_t list, std::uint32_t idx) {
  Entry& e = pool_[idx];
  e.prev = kHead | static_cast<std::uint32_t>(list);
  e.next = heads_[list];
  if (e.next != kNil) pool_[e.next].prev = idx;
  heads_[list] = idx;
  if (list != spill_) mark(list, true);
}

void TimerWheel::unlink(std::uint32_t idx) {
  Entry& e = pool_[idx];
  if (e.next != kNil) pool_[e.next].prev = e.prev;
  if ((e.prev & kHead) != 0) {
    const std::size_t list = e.prev & ~kHead;
    heads_[list] = e.next;
    if (list != spill_ && e.next == kNil) mark(list, false);
  } else {
    pool_[e.prev].next = e.next;
  }
  e.next = e.prev = kNil;
}

void TimerWheel::schedule(std::uint32_t id, Instant deadline) {
  if (id >= pool_.size()) {
    if (deadline == kNever) return;
    pool_.resize(std::size_t{id} + 1);
  }
  Entry& e = pool_[id];
  if (deadline == kNever) {
    if (e.deadline != kNever) {
      unlink(id);
      e.deadline = kNever;
      --live_;
    }
    return;
  }
  std::int64_t tick = tick_of_ceil(deadline);
  if (tick <= cur_) tick = cur_ + 1;
  if (e.deadline != kNever) {
    if (e.tick == tick) {  // same tick: nothing moves
      e.deadline = deadline;
      return;
    }
    unlink(id);
  } else {
    ++live_;
  }
  e.tick = tick;
  e.deadline = deadline;
  push(slot_of(tick), id);
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
