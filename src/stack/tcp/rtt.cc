// RFC 6298 retransmission timer arithmetic. Integer nanoseconds throughout: the gains 1/8 and 1/4
// are exact in fixed point, so results are reproducible and tests can compute them by hand.
#include "stack/tcp/rtt.hh"

#include <algorithm>

namespace pno::tcp {

namespace {

constexpr Duration kRto3s = std::chrono::seconds(3);  // RFC 6298 §5.7

Duration clamp_rto(Duration rto, Duration lo, Duration hi) {
  // rto_max wins over rto_min if they were configured inverted.
  return std::min(std::max(rto, lo), hi);
}

}  // namespace

RttEstimator::RttEstimator(Duration rto_initial, Duration rto_min, Duration rto_max)
    : rto_initial_(rto_initial),
      rto_min_(rto_min),
      rto_max_(rto_max),
      // RFC 6298 §2.1: before any sample RTO is the initial value (1 s in the RFC, configurable).
      rto_base_(clamp_rto(rto_initial, Duration::zero(), rto_max)) {}

void RttEstimator::sample(Duration rtt) {
  // A negative measurement can only come from a bogus echoed timestamp; treat it as zero
  // rather than letting it drive SRTT below zero.
  if (rtt < Duration::zero()) rtt = Duration::zero();
  if (!has_sample_) {
    // RFC 6298 §2.2: first measurement R: SRTT = R, RTTVAR = R/2.
    srtt_ = rtt;
    rttvar_ = rtt / 2;
    has_sample_ = true;
  } else {
    // RFC 6298 §2.3, alpha = 1/8, beta = 1/4; RTTVAR is updated with the old SRTT.
    const Duration err = srtt_ > rtt ? srtt_ - rtt : rtt - srtt_;
    rttvar_ = (3 * rttvar_ + err) / 4;
    srtt_ = (7 * srtt_ + rtt) / 8;
  }
  // RFC 6298 §2.2/§2.3: RTO = SRTT + max(G, K*RTTVAR), K = 4; §2.4 lower bound (Linux uses
  // 200 ms, configurable), §2.5 upper bound.
  rto_base_ = clamp_rto(srtt_ + std::max(kClockGranularity, 4 * rttvar_), rto_min_, rto_max_);
  // RFC 6298 §5.7 / Karn: a valid sample ends the backoff.
  backoffs_ = 0;
}

void RttEstimator::backoff() {
  // RFC 6298 §5.5: RTO <- RTO * 2 on each expiry. The count keeps growing (the connection uses
  // it to count retries); rto() saturates at rto_max.
  if (backoffs_ < ~0u) ++backoffs_;
}

void RttEstimator::reset_backoff() {
  // §5.7 applies when the configured initial RTO is below 3 s; a larger one is kept.
  if (backoffs_ > 0 && !has_sample_) rto_base_ = std::min(std::max(kRto3s, rto_initial_), rto_max_);
  backoffs_ = 0;
}

Duration RttEstimator::rto() const {
  Duration r = rto_base_;
  // Doubling stops once the cap is reached, so no overflow however many backoffs happened.
  for (unsigned i = 0; i < backoffs_ && r > Duration::zero() && r < rto_max_; ++i) r *= 2;
  return std::min(r, rto_max_);
}

}  // namespace pno::tcp
