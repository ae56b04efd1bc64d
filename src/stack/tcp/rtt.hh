// Round-trip time estimation and the retransmission timeout, RFC 6298.
#pragma once

#include <cstdint>

#include "base/time.hh"

namespace pno::tcp {

class RttEstimator {
 public:
  RttEstimator(Duration rto_initial, Duration rto_min, Duration rto_max);
  /// A new RTT measurement (never from a retransmitted segment: Karn's rule, §3;
  /// timestamps make every ACK a valid sample, RFC 7323 §4). Resets backoff.
  void sample(Duration rtt);
  /// RTO expired: double the timeout (§5.5), up to rto_max.
  void backoff();
  /// Current RTO including backoff.
  [[nodiscard]] Duration rto() const;
  [[nodiscard]] bool has_sample() const { return has_sample_; }
  [[nodiscard]] Duration srtt() const { return srtt_; }
  [[nodiscard]] Duration rttvar() const { return rttvar_; }
  [[nodiscard]] unsigned backoffs() const { return backoffs_; }
  /// Clears the backoff (e.g. when the handshake completes). If the RTO expired and no sample
  /// was taken yet, the base RTO becomes 3 s (RFC 6298 §5.7; or the initial RTO if that is
  /// larger), capped at rto_max.
  void reset_backoff();
  /// RTO before backoff: the initial RTO until the first sample, then SRTT + max(G, K*RTTVAR)
  /// clamped to [rto_min, rto_max] (RFC 6298 §2).
  [[nodiscard]] Duration rto_base() const { return rto_base_; }

  static constexpr Duration kClockGranularity = std::chrono::milliseconds(1);  ///< G, RFC 6298 §2

 private:
  Duration rto_initial_, rto_min_, rto_max_;
  Duration srtt_{}, rttvar_{}, rto_base_;
  unsigned backoffs_ = 0;
  bool has_sample_ = false;
};

}  // namespace pno::tcp
