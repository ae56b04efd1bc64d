// The engine's main loop for one port queue and one stack:
//   rx burst -> Stack::on_frame for each frame (mbuf freed at once) -> services -> Stack::poll(now)
//   -> services again if poll raised events -> tx flush
// Busy-polls while traffic flows; after a run of empty iterations it sleeps, progressively longer
// (up to max_sleep) but never past the stack's next deadline, so an idle engine costs little CPU.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>

#include "engine/clock.hh"
#include "engine/engine_counters.hh"
#include "engine/host_service.hh"
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
  std::uint32_t spin_iterations = 2000;  ///< empty iterations before the first sleep
  Duration min_sleep = std::chrono::microseconds(20);
  Duration max_sleep = std::chrono::milliseconds(1);
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
  std::uint32_t idle_iters_ = 0;
  Duration sleep_{0};
  IdleWake* wake_ = nullptr;
};

}  // namespace pno::engine
