// The engine's main loop for one port queue and one stack:
//   rx burst -> Stack::on_frame for each frame (mbuf freed at once) -> services -> Stack::poll(now)
//   -> services again if poll raised events -> tx flush
// Busy-polls while traffic flows; after a short run of empty iterations (yielding the core to any
// other runnable task meanwhile: the core may be shared) it sleeps in ppoll on the host doorbells and
// the port's rx socket, so a frame or a host command wakes it at once; the timeout is the stack's
// next deadline. A port without a pollable rx fd falls back to progressively longer timed sleeps
// (up to max_sleep). An idle engine costs little CPU either way.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>

#include "engine/clock.hh"
#include "engine/engine_counters.hh"
#include "engine/idle_wake.hh"
#include "engine/port.hh"
#include "engine/services.hh"
#include "stack/stack.hh"

namespace pno::engine {

/// Set from signal handlers; the only process-wide mutable state of the engine.
struct SignalFlags {
  volatile std::sig_atomic_t stop = 0;
  volatile std::sig_atomic_t dump_stats = 0;
};

struct LoopConfig {
  bool busy_poll = false;
  std::uint32_t spin_iterations = 2000;  ///< at most this many empty iterations before sleeping
  Duration spin_time = std::chrono::microseconds(50);  ///< and at most this long
  bool yield_when_spinning = false;      ///< sched_yield() in each empty spin iteration
  unsigned rx_bursts_per_iteration = 8;  ///< rx bursts taken per iteration while they come full
  Duration min_sleep = std::chrono::microseconds(20);  ///< timed back-off (no pollable rx fd)
  Duration max_sleep = std::chrono::milliseconds(1);
  Duration max_sleep_rx_wake = std::chrono::milliseconds(10);  ///< sleep cap when frames wake the loop
  Duration stats_interval{0};            ///< 0: no periodic stats
  Duration client_linger = std::chrono::milliseconds(500);  ///< after clients finish, for FIN/ACKs
};

class Loop final : private FrameHandler {
 public:
  using StatsFn = std::function<void(const char* why)>;
  Loop(const LoopConfig& cfg, Port& port, Stack& stack, Services& services, const TscClock& clock,
       EngineCounters& counters, SignalFlags& signals, StatsFn stats);

  /// Runs until a stop signal, or until all clients finished (plus linger).
  void run();
  /// One iteration; returns whether it did any work (frames in or out, events). For tests/benchmarks.
  bool run_once(Instant now);
  /// Idle sleeps wait on `w`'s fd (doorbells, attach and control sockets) instead of plain timers,
  /// so host processes wake the engine at once; still never past the stack's next deadline.
  void set_idle_wake(IdleWake* w) { wake_ = w; }

 private:
  void on_frame(ByteSpan frame, const RxMeta& meta) override;
  void idle_wait(Instant now);

  LoopConfig cfg_;
  Port& port_;
  Stack& stack_;
  Services& services_;
  const TscClock& clock_;
  EngineCounters& counters_;
  SignalFlags& signals_;
  StatsFn stats_;
  Instant now_{};
  Instant next_deadline_ = kNever;
  static constexpr std::size_t kMaxRxWaitFds = kMaxRxQueues;
  std::uint32_t idle_iters_ = 0;
  Instant idle_since_ = kNever;
  Duration sleep_{0};
  IdleWake* wake_ = nullptr;
};

}  // namespace pno::engine
