// Round-trip time estimation and the retransmission timeout, RFC 6298.
#pragma once

#include <cstdint>

#include "stack/time.hh"

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
  /// After the handshake took retransmissions, RFC 6298 §5.7 resets RTO to 3 s if no sample.
  void reset_backoff() { backoffs_ = 0; }

 private:
  Duration rto_initial_, rto_min_, rto_max_;
  Duration srtt_{}, rttvar_{}, rto_base_;
  unsigned backoffs_ = 0;
  bool has_sample_ = false;
};

}  // namespace pno::tcp
