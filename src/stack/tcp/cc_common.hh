// Pieces shared by the congestion controllers (internal to congestion*.cc).
#pragma once

#include <algorithm>
#include <cstdint>

#include "stack/tcp/congestion.hh"

namespace pno::tcp::cc {

/// RFC 7661 §4.3: cwnd is validated (may grow) while the sender used at least half of it.
/// flight + acked is the flight when the ACK arrived, whichever way the caller counted it.
inline bool cwnd_validated(const CcState& s, std::uint32_t acked, std::uint32_t flight) {
  return 2 * (std::uint64_t{flight} + acked) >= s.cwnd;
}

/// Slow start with byte counting (RFC 3465 §2.2): cwnd += acked, never past ssthresh. Like Linux's
/// tcp_slow_start, which counts every packet an ACK covers, there is no per-ACK limit L: a stretch
/// ACK (GRO, ACK thinning, ACK loss) grows cwnd as much as the ACKs it replaces, so a receiver that
/// ACKs rarely does not slow the sender down. Returns the part of the increase left over once cwnd
/// reached ssthresh, which the caller feeds to congestion avoidance.
inline std::uint32_t slow_start(CcState& s, std::uint32_t acked) {
  const std::uint32_t inc = acked;
  const std::uint32_t room = s.ssthresh > s.cwnd ? s.ssthresh - s.cwnd : 0;
  if (inc <= room) {
    s.cwnd = std::min(s.cwnd + inc, kMaxCwnd);
    return 0;
  }
  s.cwnd = std::min(s.ssthresh, kMaxCwnd);
  return inc - room;
}

/// RFC 5681 §4.1 restart window RW = min(IW, cwnd). ssthresh keeps at least 3/4 of the old cwnd
/// so the sender slow-starts back toward it (RFC 2861 §3, as Linux's tcp_cwnd_restart).
inline void idle_restart(CcState& s) {
  const std::uint32_t rw = std::min(initial_window(s.mss), s.cwnd);
  s.ssthresh = std::max(s.ssthresh, static_cast<std::uint32_t>(std::uint64_t{s.cwnd} * 3 / 4));
  s.cwnd = std::max(rw, s.mss);
}

/// A new MSS: cwnd keeps its size in segments (Linux counts cwnd in packets); a window still at
/// its initial value is recomputed with RFC 6928's formula for the new MSS.
inline void change_mss(CcState& s, std::uint32_t mss) {
  if (mss == 0 || mss == s.mss) return;
  if (s.cwnd == initial_window(s.mss)) {
    s.cwnd = initial_window(mss);
  } else {
    const std::uint64_t segs = std::max<std::uint64_t>(1, (std::uint64_t{s.cwnd} + s.mss / 2) / s.mss);
    s.cwnd = static_cast<std::uint32_t>(std::min<std::uint64_t>(segs * mss, kMaxCwnd));
  }
  if (s.ssthresh < 0x7fffffff) {
    const std::uint64_t segs = (std::uint64_t{s.ssthresh} + s.mss / 2) / s.mss;
    s.ssthresh = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(segs * mss, 2ull * mss, 0x7fffffff));
  }
  s.mss = mss;
}

}  // namespace pno::tcp::cc
