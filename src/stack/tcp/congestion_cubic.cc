// CUBIC congestion control, RFC 9438. Windows are kept in MSS units as doubles internally (as
// the RFC writes them); cwnd and ssthresh are bytes outward.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "stack/tcp/cc_common.hh"
#include "stack/tcp/congestion.hh"

namespace pno::tcp {

namespace {
double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

Cubic::Cubic(std::uint32_t mss) {
  s_.mss = std::max<std::uint32_t>(mss, 1);
  s_.cwnd = initial_window(s_.mss);
}

double Cubic::w_cubic(double t) const {
  // RFC 9438 §4.2, Figure 1.
  const double d = t - k_;
  return kC * d * d * d + w_max_;
}

void Cubic::start_epoch(Instant now) {
  const double cwnd = static_cast<double>(s_.cwnd) / s_.mss;
  epoch_start_ = now;
  epoch_valid_ = true;
  acked_accum_ = 0;
  if (w_max_ > cwnd) {
    // RFC 9438 §4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C).
    k_ = std::cbrt((w_max_ - cwnd) / kC);
  } else {
    // No reduction to recover from (first epoch, after an RTO (§4.8), or cwnd already past
    // W_max): the plateau is here, K = 0, and growth is convex from the start.
    k_ = 0;
    w_max_ = cwnd;
  }
  // RFC 9438 §4.3: W_est starts at cwnd at the beginning of the congestion-avoidance stage.
  w_est_ = cwnd;
}

void Cubic::on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now) {
  if (acked_bytes == 0 || !cc::cwnd_validated(s_, acked_bytes, bytes_in_flight)) return;
  if (s_.cwnd < s_.ssthresh) {
    // RFC 9438 §4.10: standard slow start below ssthresh.
    acked_bytes = cc::slow_start(s_, acked_bytes);
    if (acked_bytes == 0) return;
  }
  if (!epoch_valid_) start_epoch(now);

  const double mss = s_.mss;
  const double cwnd = s_.cwnd / mss;
  const double t = seconds(now - epoch_start_);
  const double rtt = std::max(0.0, seconds(srtt));

  // RFC 9438 §4.3: W_est += alpha_cubic * segments_acked / cwnd; alpha_cubic becomes 1 once
  // W_est reached the window at the last reduction (cwnd_prior).
  const double alpha = w_est_ >= cwnd_prior_ ? 1.0 : kAlpha;
  w_est_ += alpha * (acked_bytes / mss) / cwnd;

  if (w_cubic(t) < w_est_) {
    // Reno-friendly region (§4.3): cwnd follows W_est.
    const double w = std::min(w_est_ * mss, static_cast<double>(kMaxCwnd));
    s_.cwnd = std::max(s_.cwnd, static_cast<std::uint32_t>(w));
    acked_accum_ = 0;
    return;
  }

  // Concave (§4.4) and convex (§4.5) regions: target = W_cubic(t + RTT), clamped to
  // [cwnd, 1.5*cwnd] (§4.2), and cwnd grows by (target - cwnd) / cwnd per SMSS acked.
  const double target = std::clamp(w_cubic(t + rtt), cwnd, 1.5 * cwnd);
  if (target <= cwnd) return;
  // Bytes to be acked for one SMSS of growth; applied in whole SMSS steps as Linux does.
  const double per_mss = mss * cwnd / (target - cwnd);
  acked_accum_ += acked_bytes;
  if (acked_accum_ >= per_mss) {
    const double steps = std::floor(acked_accum_ / per_mss);
    acked_accum_ -= static_cast<std::uint32_t>(steps * per_mss);
    const double w = std::min(s_.cwnd + steps * mss, static_cast<double>(kMaxCwnd));
    s_.cwnd = static_cast<std::uint32_t>(w);
  }
}

void Cubic::on_loss(std::uint32_t bytes_in_flight, Instant) {
  const double cwnd = static_cast<double>(s_.cwnd) / s_.mss;
  // RFC 9438 §4.7 fast convergence: a flow whose W_max keeps shrinking releases bandwidth.
  w_max_ = cwnd < w_max_ ? cwnd * (1.0 + kBeta) / 2.0 : cwnd;
  cwnd_prior_ = cwnd;
  // RFC 9438 §4.6: ssthresh = flight_size * beta_cubic, cwnd = max(ssthresh, 2 SMSS).
  s_.ssthresh = std::max(static_cast<std::uint32_t>(bytes_in_flight * kBeta), 2 * s_.mss);
  s_.cwnd = s_.ssthresh;
  epoch_valid_ = false;
}

void Cubic::on_recovery_end(Instant) {
  // Leave recovery at ssthresh (RFC 6582 §3.2 step 3 / RFC 6675); the epoch starts at the next
  // congestion-avoidance ACK (RFC 9438 §4.2: t counts from the start of that stage).
  s_.cwnd = s_.ssthresh;
  epoch_valid_ = false;
}

void Cubic::on_rto(std::uint32_t bytes_in_flight, Instant) {
  // RFC 9438 §4.8: cwnd as standard TCP (1 SMSS, RFC 5681 §3.1), ssthresh with beta_cubic;
  // the next congestion-avoidance stage uses K = 0 and W_max = cwnd at its start.
  cwnd_prior_ = static_cast<double>(s_.cwnd) / s_.mss;
  s_.ssthresh = std::max(static_cast<std::uint32_t>(bytes_in_flight * kBeta), 2 * s_.mss);
  s_.cwnd = s_.mss;
  w_max_ = 0;
  epoch_valid_ = false;
}

void Cubic::on_idle_restart() {
  // RFC 5681 §4.1 restart window; the cubic epoch must not count the idle time (RFC 9438 §5.8
  // application-limited), so a new one starts with the next congestion-avoidance ACK.
  cc::idle_restart(s_);
  epoch_valid_ = false;
}

void Cubic::set_mss(std::uint32_t mss) { cc::change_mss(s_, mss); }

}  // namespace pno::tcp
