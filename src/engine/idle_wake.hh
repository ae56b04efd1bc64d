// What the main loop sleeps on when idle (see Loop::set_idle_wake).
#pragma once

namespace pno::engine {

/// A file descriptor that becomes readable when someone needs the engine, and a check-then-sleep
/// protocol around it.
class IdleWake {
 public:
  virtual ~IdleWake() = default;
  [[nodiscard]] virtual int wait_fd() const = 0;
  /// True when there was work since the last call (the loop must not count the iteration idle).
  virtual bool take_busy() = 0;
  /// About to sleep: publishes "asleep" to the other side, re-checks for work; false = do not sleep.
  virtual bool prepare_sleep() = 0;
  /// Woke up; `fd_ready`: wait_fd() was readable (else the timeout or a signal ended the sleep).
  virtual void woke(bool fd_ready) = 0;
};

}  // namespace pno::engine
