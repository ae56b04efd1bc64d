// Test-only impairment stage of the port layer: random loss, duplication, reordering and delay of
// frames, in the receive and/or transmit direction. It exists because the kernel here has no netem:
// delay, reordering and duplication have to come from the engine side. Off unless asked for.
//
// Frames are opaque handles (rte_mbuf pointers in the engine); the stage never looks inside them and
// allocates nothing per frame: the delay line is a fixed ring of handles, a duplicate is a new mbuf
// obtained through FrameOps::copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/engine_counters.hh"
#include "base/time.hh"

struct rte_mbuf;

namespace pno::engine {

struct ImpairConfig {
  double loss_pct = 0;        ///< % of frames dropped
  double dup_pct = 0;         ///< % of frames sent twice
  double reorder_pct = 0;     ///< % of frames held back until `reorder_gap` later frames passed
  std::uint32_t reorder_gap = 1;
  Duration reorder_max_hold = std::chrono::milliseconds(1);  ///< a held frame leaves after this anyway
  Duration delay{0};          ///< added to every frame
  Duration jitter{0};         ///< plus a uniform random 0..jitter (order is kept: a FIFO delay line)
  bool on_rx = true;
  bool on_tx = true;
  std::uint64_t seed = 1;
  std::size_t delay_slots = 8192;  ///< frames in flight in the delay line; more are dropped (counted)

  [[nodiscard]] bool active() const {
    return loss_pct > 0 || dup_pct > 0 || reorder_pct > 0 || delay.count() > 0 || jitter.count() > 0;
  }
};

/// What the stage does with frames: pass them on, free them, or copy them.
class FrameOps {
 public:
  virtual ~FrameOps() = default;
  virtual void emit(rte_mbuf* m) = 0;
  virtual void drop(rte_mbuf* m) = 0;
  /// A copy of `m`, or nullptr when no buffer is free (the duplicate is then skipped).
  virtual rte_mbuf* copy(rte_mbuf* m) = 0;
};

/// Which counters one stage (rx or tx) increments.
struct ImpairCounterIds {
  EngineCounter loss, dup, reorder, delayed, overflow;
  static ImpairCounterIds rx();
  static ImpairCounterIds tx();
};

class ImpairStage {
 public:
  ImpairStage(const ImpairConfig& cfg, std::uint64_t seed, ImpairCounterIds ids, EngineCounters& counters);
  ImpairStage(const ImpairStage&) = delete;
  ImpairStage& operator=(const ImpairStage&) = delete;

  /// One frame enters the stage; it leaves now, later (poll) or never (dropped).
  void push(rte_mbuf* m, Instant now, FrameOps& ops);
  /// Releases held and delayed frames that are due.
  void poll(Instant now, FrameOps& ops);
  /// When poll() next has something to release (kNever if nothing is held).
  [[nodiscard]] Instant next_release() const;
  /// Frees every frame still held (shutdown).
  void drain(FrameOps& ops);
  [[nodiscard]] std::size_t held() const { return count_ + (held_ != nullptr ? 1 : 0); }

 private:
  bool chance(std::uint64_t threshold);
  std::uint64_t next_random();
  void after_reorder(rte_mbuf* m, Instant now, FrameOps& ops);
  static std::uint64_t threshold_of(double pct);

  struct Slot {
    rte_mbuf* m = nullptr;
    Instant release{};
  };

  ImpairConfig cfg_;
  std::uint64_t loss_t_, dup_t_, reorder_t_;
  std::uint64_t rng_;
  ImpairCounterIds ids_;
  EngineCounters& counters_;
  // Reordering: one frame held until `reorder_gap` later frames overtook it.
  rte_mbuf* held_ = nullptr;
  Instant held_since_{};
  std::uint32_t held_overtaken_ = 0;
  // Delay line: a FIFO ring, sized once.
  std::vector<Slot> ring_;
  std::size_t head_ = 0, count_ = 0;
  Instant last_release_{};
};

}  // namespace pno::engine
