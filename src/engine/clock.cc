#include "engine/clock.hh"

#include <rte_cycles.h>

#include <ctime>

namespace pno::engine {

TscClock::TscClock() {
  hz_ = rte_get_tsc_hz();
  if (hz_ == 0) hz_ = 1'000'000'000;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  tsc0_ = rte_get_tsc_cycles();
  mono0_ns_ = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  mult_ = (static_cast<unsigned __int128>(1'000'000'000) << 32) / hz_;
}

Instant TscClock::now() const {
  const std::uint64_t delta = rte_get_tsc_cycles() - tsc0_;
  const auto ns = static_cast<std::int64_t>((static_cast<unsigned __int128>(delta) * mult_) >> 32);
  return instant_from_ns(mono0_ns_ + ns);
}

}  // namespace pno::engine
