// Virtual time for the sans-IO stack. The stack never reads a clock: callers pass `Instant now` in,
// and the stack hands deadlines back. Tests drive it with a scripted clock; the engine with a TSC clock.
#pragma once

#include <chrono>
#include <cstdint>

namespace pno {

/// Tag clock: it has no now(). Instants only come from the caller.
struct StackClock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<StackClock, duration>;
  static constexpr bool is_steady = true;
};

using Duration = StackClock::duration;
using Instant = StackClock::time_point;

/// "No deadline": poll() returns this when nothing is scheduled.
inline constexpr Instant kNever = Instant::max();

inline constexpr Instant instant_from_ns(std::int64_t ns) { return Instant{Duration{ns}}; }
inline constexpr std::int64_t to_ns(Instant t) { return t.time_since_epoch().count(); }

using namespace std::chrono_literals;

}  // namespace pno
