#include "engine/impair.hh"

#include <algorithm>
#include <cmath>

namespace pno::engine {

ImpairCounterIds ImpairCounterIds::rx() {
  return {EngineCounter::impair_rx_loss, EngineCounter::impair_rx_dup, EngineCounter::impair_rx_reorder,
          EngineCounter::impair_rx_delayed, EngineCounter::impair_rx_overflow};
}

ImpairCounterIds ImpairCounterIds::tx() {
  return {EngineCounter::impair_tx_loss, EngineCounter::impair_tx_dup, EngineCounter::impair_tx_reorder,
          EngineCounter::impair_tx_delayed, EngineCounter::impair_tx_overflow};
}

std::uint64_t ImpairStage::threshold_of(double pct) {
  // A frame is hit when a uniform 64-bit draw falls below the threshold.
  if (!(pct > 0)) return 0;
  if (pct >= 100) return UINT64_MAX;
  return static_cast<std::uint64_t>(std::ldexp(pct / 100.0, 64));
}

ImpairStage::ImpairStage(const ImpairConfig& cfg, std::uint64_t seed, ImpairCounterIds ids,
                         EngineCounters& counters)
    : cfg_(cfg),
      loss_t_(threshold_of(cfg.loss_pct)),
      dup_t_(threshold_of(cfg.dup_pct)),
      reorder_t_(threshold_of(cfg.reorder_pct)),
      rng_(seed),
      ids_(ids),
      counters_(counters),
      ring_(std::max<std::size_t>(cfg.delay_slots, 1)) {
  if (cfg_.reorder_gap == 0) cfg_.reorder_gap = 1;
}

std::uint64_t ImpairStage::next_random() {
  // splitmix64: tiny, fast, and the sequence is fixed by the seed so a failing run can be replayed.
  std::uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

bool ImpairStage::chance(std::uint64_t threshold) {
  if (threshold == 0) return false;
  if (threshold == UINT64_MAX) return true;
  return next_random() < threshold;
}

void ImpairStage::push(rte_mbuf* m, Instant now, FrameOps& ops) {
  if (chance(loss_t_)) {
    counters_.inc(ids_.loss);
    ops.drop(m);
    return;
  }
  rte_mbuf* dup = nullptr;
  if (chance(dup_t_)) {
    dup = ops.copy(m);
    if (dup != nullptr) counters_.inc(ids_.dup);
  }
  for (rte_mbuf* f : {m, dup}) {
    if (f == nullptr) continue;
    if (held_ != nullptr) {
      after_reorder(f, now, ops);
      if (++held_overtaken_ >= cfg_.reorder_gap) {
        rte_mbuf* h = held_;
        held_ = nullptr;
        after_reorder(h, now, ops);
      }
    } else if (chance(reorder_t_)) {
      counters_.inc(ids_.reorder);
      held_ = f;
      held_since_ = now;
      held_overtaken_ = 0;
    } else {
      after_reorder(f, now, ops);
    }
  }
}

void ImpairStage::after_reorder(rte_mbuf* m, Instant now, FrameOps& ops) {
  if (cfg_.delay.count() <= 0 && cfg_.jitter.count() <= 0) {
    ops.emit(m);
    return;
  }
  if (count_ == ring_.size()) {
    counters_.inc(ids_.overflow);
    ops.drop(m);
    return;
  }
  Duration extra{0};
  if (cfg_.jitter.count() > 0) {
    extra = Duration{static_cast<std::int64_t>(next_random() % static_cast<std::uint64_t>(cfg_.jitter.count() + 1))};
  }
  // FIFO: a frame never leaves before the one ahead of it, so jitter alone does not reorder.
  const Instant release = std::max(now + cfg_.delay + extra, last_release_);
  last_release_ = release;
  ring_[(head_ + count_) % ring_.size()] = {m, release};
  ++count_;
  counters_.inc(ids_.delayed);
}

void ImpairStage::poll(Instant now, FrameOps& ops) {
  if (held_ != nullptr && now - held_since_ >= cfg_.reorder_max_hold) {
    rte_mbuf* h = held_;
    held_ = nullptr;
    after_reorder(h, now, ops);
  }
  while (count_ > 0 && ring_[head_].release <= now) {
    rte_mbuf* m = ring_[head_].m;
    ring_[head_].m = nullptr;
    head_ = (head_ + 1) % ring_.size();
    --count_;
    ops.emit(m);
  }
}

Instant ImpairStage::next_release() const {
  Instant t = kNever;
  if (held_ != nullptr) t = held_since_ + cfg_.reorder_max_hold;
  if (count_ > 0) t = std::min(t, ring_[head_].release);
  return t;
}

void ImpairStage::drain(FrameOps& ops) {
  if (held_ != nullptr) {
    ops.drop(held_);
    held_ = nullptr;
  }
  while (count_ > 0) {
    ops.drop(ring_[head_].m);
    ring_[head_].m = nullptr;
    head_ = (head_ + 1) % ring_.size();
    --count_;
  }
}

}  // namespace pno::engine
