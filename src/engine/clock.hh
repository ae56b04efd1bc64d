// The engine's clock: the TSC, converted to the stack's Instant. Instants share their epoch with
// CLOCK_MONOTONIC so engine logs line up with other tools' timestamps.
#pragma once

#include <cstdint>

#include "base/time.hh"

namespace pno::engine {

class TscClock {
 public:
  /// Reads the TSC frequency from DPDK (EAL must be initialised).
  TscClock();
  [[nodiscard]] Instant now() const;
  [[nodiscard]] std::uint64_t hz() const { return hz_; }

 private:
  std::uint64_t tsc0_ = 0;
  std::int64_t mono0_ns_ = 0;
  std::uint64_t hz_ = 0;
  // ns = (delta * mult_) >> 32: one multiply per reading instead of a division.
  unsigned __int128 mult_ = 0;
};

}  // namespace pno::engine
