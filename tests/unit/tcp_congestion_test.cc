// NewReno (RFC 5681, RFC 3465, RFC 6582, RFC 6928) and CUBIC (RFC 9438) window arithmetic.
#include <gtest/gtest.h>

#include <cmath>

#include "stack/tcp/congestion.hh"

using namespace pno;
using namespace pno::tcp;
using namespace std::chrono;

namespace {

constexpr std::uint32_t kMss = 1000;

/// One RTT round of a bulk sender: the cwnd/MSS segments sent at the start of the round are
/// acked by ACKs spread evenly over `rtt`; the window is full when each ACK arrives (flight
/// passed as what remains after the ACK, i.e. cwnd - acked). Returns the time after the round.
template <typename Cc>
Instant ack_round(Cc& cc, Instant now, Duration rtt, std::uint32_t seg_per_ack = 1) {
  const std::uint32_t segs = cc.state().cwnd / kMss;
  const std::uint32_t acks = std::max<std::uint32_t>(1, segs / seg_per_ack);
  const std::uint32_t acked = seg_per_ack * kMss;
  for (std::uint32_t i = 0; i < acks; ++i) {
    now += rtt / acks;
    const std::uint32_t cwnd = cc.state().cwnd;
    cc.on_ack(acked, cwnd > acked ? cwnd - acked : 0, rtt, now);
  }
  return now;
}

/// Puts a controller in congestion avoidance with cwnd = `w` MSS after a loss at `w_at_loss` MSS.
template <typename Cc>
void loss_at(Cc& cc, std::uint32_t w_at_loss, Instant now) {
  cc.set_cwnd(w_at_loss * kMss);
  cc.on_loss(w_at_loss * kMss, now);
  cc.on_recovery_end(now);
}

const Instant t0 = instant_from_ns(1'000'000'000);

}  // namespace

// ------------------------------------------------------------------------------------------
// Initial window

TEST(TcpCongestion, InitialWindowIw10_Rfc6928_2) {
  EXPECT_EQ(initial_window(1460), 14600u);
  EXPECT_EQ(initial_window(536), 5360u);          // 10*MSS smaller than 14600
  EXPECT_EQ(initial_window(9000), 18000u);        // max(2*MSS, 14600) = 18000 < 90000
  EXPECT_EQ(initial_window(1000), 10000u);
  EXPECT_EQ(NewReno(1460).state().cwnd, 14600u);
  EXPECT_EQ(Cubic(1460).state().cwnd, 14600u);
  EXPECT_EQ(NewReno(1460).state().ssthresh, 0x7fffffffu);
}

// ------------------------------------------------------------------------------------------
// NewReno

TEST(TcpCongestion, RenoSlowStartDoublesPerRtt_Rfc5681_3_1) {
  NewReno cc(kMss);
  Instant now = t0;
  std::uint32_t expect = 10 * kMss;
  for (int round = 0; round < 5; ++round) {
    ASSERT_EQ(cc.state().cwnd, expect) << "round " << round;
    now = ack_round(cc, now, 50ms);
    expect *= 2;
  }
}

TEST(TcpCongestion, RenoSlowStartWithDelayedAcksGrowsByAckedBytes_Rfc3465_2_2) {
  NewReno cc(kMss);
  Instant now = t0;
  // One ACK per two segments acks 2*SMSS = L: byte counting still doubles cwnd per RTT.
  now = ack_round(cc, now, 50ms, 2);
  EXPECT_EQ(cc.state().cwnd, 20 * kMss);
  now = ack_round(cc, now, 50ms, 2);
  EXPECT_EQ(cc.state().cwnd, 40 * kMss);
}

TEST(TcpCongestion, RenoSlowStartStretchAckCountsEveryAckedByte_Rfc3465_2_2) {
  // Linux tcp_slow_start counts every packet acked; no per-ACK limit L (RFC 3465 §2.3 allows
  // L up to the acked amount), so a stretch ACK grows cwnd like the ACKs it replaces.
  NewReno cc(kMss);
  cc.on_ack(5 * kMss, 5 * kMss, 50ms, t0);  // stretch ACK of 5 segments
  EXPECT_EQ(cc.state().cwnd, 15 * kMss);
}

TEST(TcpCongestion, RenoSlowStartStretchAckStopsAtSsthreshRestGoesToAvoidance_Rfc5681_3_1) {
  NewReno cc(kMss);
  loss_at(cc, 24, t0);       // ssthresh 12 MSS
  cc.on_rto(24 * kMss, t0);  // cwnd 1 MSS, ssthresh 12 MSS
  cc.on_ack(10 * kMss, 0, 50ms, t0);
  EXPECT_EQ(cc.state().cwnd, 11 * kMss);
  cc.on_ack(13 * kMss, 0, 50ms, t0);  // 1 MSS to reach ssthresh, 12 MSS = one cwnd: +1 MSS
  EXPECT_EQ(cc.state().cwnd, 13 * kMss);
}

TEST(TcpCongestion, RenoCongestionAvoidanceAddsOneMssPerRtt_Rfc5681_3_1) {
  NewReno cc(kMss);
  Instant now = t0;
  loss_at(cc, 20, now);
  ASSERT_EQ(cc.state().ssthresh, 10 * kMss);
  ASSERT_EQ(cc.state().cwnd, 10 * kMss);
  for (std::uint32_t w = 10; w < 20; ++w) {
    ASSERT_EQ(cc.state().cwnd, w * kMss);
    now = ack_round(cc, now, 50ms);
  }
  EXPECT_EQ(cc.state().cwnd, 20 * kMss);
}

TEST(TcpCongestion, RenoCongestionAvoidanceByteCountingWithDelayedAcks_Rfc3465_2_1) {
  NewReno cc(kMss);
  Instant now = t0;
  loss_at(cc, 24, now);  // ssthresh = cwnd = 12 MSS
  now = ack_round(cc, now, 50ms, 2);
  EXPECT_EQ(cc.state().cwnd, 13 * kMss);  // 6 ACKs of 2 MSS = one cwnd acked: +1 MSS
  now = ack_round(cc, now, 50ms, 2);
  EXPECT_EQ(cc.state().cwnd, 13 * kMss);  // 6 ACKs = 12000 < 13000: not yet
  now = ack_round(cc, now, 50ms, 2);
  EXPECT_EQ(cc.state().cwnd, 14 * kMss);
}

TEST(TcpCongestion, RenoSlowStartStopsAtSsthreshThenAvoidsCongestion_Rfc5681_3_1) {
  NewReno cc(kMss);
  loss_at(cc, 30, t0);  // ssthresh 15 MSS
  cc.on_rto(30 * kMss, t0);  // ssthresh 15 MSS, cwnd 1 MSS
  Instant now = t0;
  for (int i = 0; i < 10; ++i) now = ack_round(cc, now, 50ms);
  // Rounds 0-3: 1, 2, 4, 8 -> 15 (capped at ssthresh; the last ACK's excess counts toward
  // congestion avoidance), then rounds 4-9 add 1 MSS each.
  EXPECT_EQ(cc.state().cwnd, 21 * kMss);
}

TEST(TcpCongestion, RenoLossHalvesFlightWithTwoMssFloor_Rfc5681_3_2) {
  NewReno cc(kMss);
  cc.set_cwnd(40 * kMss);
  cc.on_loss(30 * kMss, t0);  // FlightSize, not cwnd
  EXPECT_EQ(cc.state().ssthresh, 15 * kMss);
  EXPECT_EQ(cc.state().cwnd, 15 * kMss);
  cc.on_loss(3 * kMss, t0);
  EXPECT_EQ(cc.state().ssthresh, 2 * kMss);
}

TEST(TcpCongestion, RenoRecoveryExitDeflatesToSsthresh_Rfc6582_3_2) {
  NewReno cc(kMss);
  cc.set_cwnd(20 * kMss);
  cc.on_loss(20 * kMss, t0);
  cc.set_cwnd(cc.state().cwnd + 3 * kMss + 5 * kMss);  // connection inflates during recovery
  cc.on_recovery_end(t0);
  EXPECT_EQ(cc.state().cwnd, 10 * kMss);
}

TEST(TcpCongestion, RenoRtoSetsLossWindowOfOneMss_Rfc5681_3_1) {
  NewReno cc(kMss);
  cc.set_cwnd(40 * kMss);
  cc.on_rto(40 * kMss, t0);
  EXPECT_EQ(cc.state().cwnd, kMss);
  EXPECT_EQ(cc.state().ssthresh, 20 * kMss);
  cc.on_rto(kMss, t0);  // the retransmission timed out again: floor of 2 MSS
  EXPECT_EQ(cc.state().ssthresh, 2 * kMss);
  EXPECT_EQ(cc.state().cwnd, kMss);
}

TEST(TcpCongestion, RenoIdleRestartUsesRestartWindow_Rfc5681_4_1) {
  NewReno cc(kMss);
  cc.set_cwnd(40 * kMss);
  cc.on_idle_restart();
  EXPECT_EQ(cc.state().cwnd, 10 * kMss);           // RW = min(IW, cwnd)
  EXPECT_EQ(cc.state().ssthresh, 0x7fffffffu);     // never lowered
  NewReno small(kMss);
  loss_at(small, 8, t0);  // ssthresh = cwnd = 4 MSS
  small.on_idle_restart();
  EXPECT_EQ(small.state().cwnd, 4 * kMss);         // already below IW
  EXPECT_EQ(small.state().ssthresh, 4 * kMss);
  NewReno ca(kMss);
  loss_at(ca, 60, t0);  // ssthresh = cwnd = 30 MSS
  ca.on_idle_restart();
  EXPECT_EQ(ca.state().cwnd, 10 * kMss);
  EXPECT_EQ(ca.state().ssthresh, 30 * kMss);       // >= 3/4 cwnd: slow start back up (RFC 2861 §3)
}

TEST(TcpCongestion, AppLimitedSenderDoesNotGrowCwnd_Rfc7661_4_3) {
  NewReno cc(kMss);
  // Only 2 segments were ever in flight out of a 10-segment window.
  for (int i = 0; i < 10; ++i) cc.on_ack(kMss, kMss, 50ms, t0);
  EXPECT_EQ(cc.state().cwnd, 10 * kMss);
  cc.on_ack(kMss, 4 * kMss, 50ms, t0);  // 5 of 10 used: validated
  EXPECT_EQ(cc.state().cwnd, 11 * kMss);
}

TEST(TcpCongestion, MssChangeKeepsWindowInSegments) {
  NewReno cc(536);
  EXPECT_EQ(cc.state().cwnd, 5360u);
  cc.set_mss(1460);  // handshake settled a larger MSS: initial window per RFC 6928 for it
  EXPECT_EQ(cc.state().cwnd, 14600u);
  cc.set_cwnd(20 * 1460);
  cc.set_mss(1000);
  EXPECT_EQ(cc.state().cwnd, 20000u);
  EXPECT_EQ(cc.state().mss, 1000u);
}

// ------------------------------------------------------------------------------------------
// CUBIC

TEST(TcpCongestion, CubicSlowStartBelowSsthresh_Rfc9438_4_10) {
  Cubic cc(kMss);
  Instant now = t0;
  now = ack_round(cc, now, 50ms);
  EXPECT_EQ(cc.state().cwnd, 20 * kMss);
  now = ack_round(cc, now, 50ms);
  EXPECT_EQ(cc.state().cwnd, 40 * kMss);
}

TEST(TcpCongestion, CubicLossUsesBetaPointSeven_Rfc9438_4_6) {
  Cubic cc(kMss);
  cc.set_cwnd(100 * kMss);
  cc.on_loss(100 * kMss, t0);
  EXPECT_EQ(cc.state().ssthresh, 70 * kMss);
  EXPECT_EQ(cc.state().cwnd, 70 * kMss);
  EXPECT_DOUBLE_EQ(cc.w_max(), 100.0);
  cc.on_loss(2 * kMss, t0);
  EXPECT_EQ(cc.state().ssthresh, 2 * kMss);  // floor of 2 SMSS
}

TEST(TcpCongestion, CubicFollowsClosedFormWindow_Rfc9438_4_2) {
  // A large window so the cubic curve stays above the Reno-friendly estimate (§4.3).
  Cubic cc(kMss);
  loss_at(cc, 1000, t0);  // W_max = 1000, cwnd = 700
  const Duration rtt = 100ms;
  Instant now = ack_round(cc, t0, rtt);  // the first CA ACK opened the epoch at t0 + rtt/700
  const Instant epoch = t0 + rtt / 700;
  // K = cbrt((W_max - cwnd_epoch) / C) = cbrt(300 / 0.4) = cbrt(750) ~ 9.09 s
  const double k = std::cbrt(750.0);
  EXPECT_NEAR(cc.k(), k, 1e-9);
  const auto closed = [k](double t) { return 0.4 * std::pow(t - k, 3) + 1000.0; };
  for (double check : {1.0, 3.0, 6.0, k, 11.0, 13.0}) {
    while (now - epoch < duration_cast<Duration>(duration<double>(check))) now = ack_round(cc, now, rtt);
    const double t = duration<double>(now - epoch).count();
    const double w = static_cast<double>(cc.state().cwnd) / kMss;
    // cwnd aims one RTT ahead (W_cubic(t+RTT)) and moves in whole MSS steps.
    EXPECT_NEAR(w, closed(t), 3.0) << "t=" << t;
    EXPECT_GT(w, cc.w_est() + 50) << "t=" << t;  // not the Reno-friendly region
  }
}

TEST(TcpCongestion, CubicSmallWindowFollowsMaxOfCubicAndRenoEstimate_Rfc9438_4_3) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);  // W_max = 100, cwnd = 70, K = cbrt(75)
  const Duration rtt = 100ms;
  Instant now = ack_round(cc, t0, rtt);
  const Instant epoch = t0 + rtt / 70;
  for (double check : {2.0, 4.0, 6.0, 7.0, 8.0}) {
    while (now - epoch < duration_cast<Duration>(duration<double>(check))) now = ack_round(cc, now, rtt);
    const double t = duration<double>(now - epoch).count();
    const double w = static_cast<double>(cc.state().cwnd) / kMss;
    EXPECT_NEAR(w, std::max(cc.w_cubic(t), cc.w_est()), 2.5) << "t=" << t;
  }
}

TEST(TcpCongestion, CubicConcaveThenPlateauThenConvex_Rfc9438_4_4_4_5) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);
  Instant now = t0;
  std::vector<std::uint32_t> per_second;
  for (int s = 0; s < 9; ++s) {
    for (int r = 0; r < 10; ++r) now = ack_round(cc, now, 100ms);
    per_second.push_back(cc.state().cwnd / kMss);
  }
  // Growth slows toward W_max = 100 (concave), is smallest around K ~ 4.2 s, then speeds up (convex).
  const auto growth = [&](int s) { return static_cast<int>(per_second[s + 1]) - static_cast<int>(per_second[s]); };
  EXPECT_GT(growth(0), growth(2));
  EXPECT_LE(growth(3), 2);
  EXPECT_GT(growth(7), growth(5));
  EXPECT_GT(per_second[8], 110u);
}

TEST(TcpCongestion, CubicFastConvergenceLowersWmax_Rfc9438_4_7) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);
  EXPECT_DOUBLE_EQ(cc.w_max(), 100.0);
  // Next loss below the previous W_max: W_max = cwnd * (1 + beta) / 2 = 80 * 0.85 = 68.
  loss_at(cc, 80, t0);
  EXPECT_NEAR(cc.w_max(), 68.0, 1e-9);
  EXPECT_EQ(cc.state().ssthresh, 56 * kMss);
  // A loss above W_max sets W_max to cwnd.
  loss_at(cc, 90, t0);
  EXPECT_NEAR(cc.w_max(), 90.0, 1e-9);
}

TEST(TcpCongestion, CubicRenoFriendlyRegionDominatesWithTinyRtt_Rfc9438_4_3) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);  // cwnd 70, W_max 100, cwnd_prior 100
  const Duration rtt = 1ms;
  Instant now = t0;
  for (int r = 0; r < 10; ++r) now = ack_round(cc, now, rtt);
  // W_est grows by alpha_cubic = 3*0.3/1.7 MSS per RTT while below cwnd_prior.
  EXPECT_NEAR(Cubic::kAlpha, 0.9 / 1.7, 1e-12);
  EXPECT_NEAR(cc.w_est(), 70.0 + 10 * Cubic::kAlpha, 0.1);
  for (int r = 0; r < 90; ++r) now = ack_round(cc, now, rtt);
  // After 0.1 s W_cubic is still ~72 MSS, but Reno-friendly growth (alpha -> 1 past
  // cwnd_prior = 100) has taken cwnd far above it: cwnd tracks W_est.
  const double t = duration<double>(now - t0).count();
  const double w = static_cast<double>(cc.state().cwnd) / kMss;
  EXPECT_LT(cc.w_cubic(t), 73.0);
  EXPECT_GT(w, 120.0);
  EXPECT_NEAR(w, cc.w_est(), 1.0);
}

TEST(TcpCongestion, CubicRtoRestartsEpochWithZeroK_Rfc9438_4_8) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);
  cc.on_rto(60 * kMss, t0);
  EXPECT_EQ(cc.state().cwnd, kMss);
  EXPECT_EQ(cc.state().ssthresh, 42 * kMss);  // 0.7 * flight
  Instant now = t0;
  while (cc.state().cwnd < cc.state().ssthresh) now = ack_round(cc, now, 10ms);
  now = ack_round(cc, now, 10ms);
  // First CA stage after the timeout: K = 0, W_max = cwnd at its start (42 MSS).
  EXPECT_EQ(cc.k(), 0.0);
  EXPECT_NEAR(cc.w_max(), 42.0, 1e-9);
}

TEST(TcpCongestion, CubicIdleRestartStartsNewEpoch_Rfc5681_4_1) {
  Cubic cc(kMss);
  loss_at(cc, 100, t0);
  Instant now = ack_round(cc, t0, 100ms);
  const double k_before = cc.k();
  cc.on_idle_restart();
  EXPECT_EQ(cc.state().cwnd, 10 * kMss);
  EXPECT_GE(cc.state().ssthresh, 70 * kMss * 3 / 4);
  // Slow start back to ssthresh, then a fresh epoch: K from the current distance to W_max.
  now += 10s;
  while (cc.state().cwnd < cc.state().ssthresh) now = ack_round(cc, now, 100ms);
  now = ack_round(cc, now, 100ms);
  EXPECT_NEAR(cc.k(), k_before, 1e-9);  // same W_max and cwnd at the epoch start
  const double w = static_cast<double>(cc.state().cwnd) / kMss;
  EXPECT_LT(w, 100.0);  // the idle 10 s did not count as epoch time (would be ~220 MSS)
}

// ------------------------------------------------------------------------------------------
// Dispatch

TEST(TcpCongestion, ControllerDispatchesToChosenAlgorithm) {
  CongestionControl reno(CongestionAlgo::new_reno, kMss), cubic(CongestionAlgo::cubic, kMss);
  EXPECT_EQ(reno.algo(), CongestionAlgo::new_reno);
  EXPECT_EQ(cubic.algo(), CongestionAlgo::cubic);
  for (auto* cc : {&reno, &cubic}) {
    EXPECT_EQ(cc->cwnd(), 10 * kMss);
    cc->set_cwnd(100 * kMss);
    cc->on_loss(100 * kMss, t0);
  }
  EXPECT_EQ(reno.ssthresh(), 50 * kMss);   // 1/2
  EXPECT_EQ(cubic.ssthresh(), 70 * kMss);  // beta_cubic
  reno.on_rto(10 * kMss, t0);
  EXPECT_EQ(reno.cwnd(), kMss);
}
