// RFC 6298 retransmission timeout: expected values are computed by hand in each test.
#include <gtest/gtest.h>

#include "stack/tcp/rtt.hh"

using namespace pno;
using namespace std::chrono;
using pno::tcp::RttEstimator;

namespace {
RttEstimator linux_like() { return RttEstimator(1s, 200ms, 120s); }
}  // namespace

TEST(TcpRtt, InitialRtoBeforeAnySample_Rfc6298_2_1) {
  auto r = linux_like();
  EXPECT_FALSE(r.has_sample());
  EXPECT_EQ(r.rto(), 1s);
}

TEST(TcpRtt, FirstSampleSetsSrttAndHalfRttvar_Rfc6298_2_2) {
  auto r = linux_like();
  r.sample(100ms);
  EXPECT_TRUE(r.has_sample());
  EXPECT_EQ(r.srtt(), 100ms);
  EXPECT_EQ(r.rttvar(), 50ms);
  // RTO = SRTT + max(G, 4*RTTVAR) = 100 + 200 = 300 ms
  EXPECT_EQ(r.rto(), 300ms);
}

TEST(TcpRtt, LaterSamplesUseAlphaEighthBetaQuarter_Rfc6298_2_3) {
  auto r = linux_like();
  r.sample(100ms);
  r.sample(200ms);
  // RTTVAR = 3/4*50 + 1/4*|100-200| = 37.5 + 25 = 62.5 ms (uses the old SRTT)
  // SRTT   = 7/8*100 + 1/8*200 = 87.5 + 25 = 112.5 ms
  // RTO    = 112.5 + 4*62.5 = 362.5 ms
  EXPECT_EQ(r.rttvar(), microseconds(62500));
  EXPECT_EQ(r.srtt(), microseconds(112500));
  EXPECT_EQ(r.rto(), microseconds(362500));
  r.sample(50ms);
  // RTTVAR = 3/4*62.5 + 1/4*|112.5-50| = 46.875 + 15.625 = 62.5 ms
  // SRTT   = 7/8*112.5 + 1/8*50 = 98.4375 + 6.25 = 104.6875 ms
  EXPECT_EQ(r.rttvar(), microseconds(62500));
  EXPECT_EQ(r.srtt(), microseconds(104687) + nanoseconds(500));
  EXPECT_EQ(r.rto(), microseconds(104687) + nanoseconds(500) + 250ms);
}

TEST(TcpRtt, RtoClampedToMinimum_Rfc6298_2_4) {
  auto r = linux_like();
  r.sample(10ms);  // 10 + 4*5 = 30 ms, below the 200 ms floor
  EXPECT_EQ(r.rto(), 200ms);
  RttEstimator low(1s, 50ms, 120s);  // configurable floor
  low.sample(10ms);
  EXPECT_EQ(low.rto(), 50ms);
}

TEST(TcpRtt, ClockGranularityBoundsVarianceTerm_Rfc6298_2) {
  RttEstimator r(1s, 0ms, 120s);
  r.sample(1ms);
  EXPECT_EQ(r.rto(), 3ms);  // 1 + max(1, 4*0.5)
  for (int i = 0; i < 30; ++i) r.sample(1ms);
  // RTTVAR decays by 3/4 per sample: 4*RTTVAR is far below G, so RTO = SRTT + G.
  EXPECT_LT(4 * r.rttvar(), RttEstimator::kClockGranularity);
  EXPECT_EQ(r.srtt(), 1ms);
  EXPECT_EQ(r.rto(), 2ms);
}

TEST(TcpRtt, RtoClampedToMaximum_Rfc6298_2_5) {
  RttEstimator r(1s, 200ms, 2s);
  r.sample(1500ms);  // 1.5 + 3 = 4.5 s
  EXPECT_EQ(r.rto(), 2s);
}

TEST(TcpRtt, BackoffDoublesAndCapsAtMax_Rfc6298_5_5) {
  RttEstimator r(1s, 200ms, 5s);
  r.sample(100ms);  // 300 ms
  r.backoff();
  EXPECT_EQ(r.rto(), 600ms);
  r.backoff();
  EXPECT_EQ(r.rto(), 1200ms);
  r.backoff();
  EXPECT_EQ(r.rto(), 2400ms);
  r.backoff();
  EXPECT_EQ(r.rto(), 4800ms);
  r.backoff();
  EXPECT_EQ(r.rto(), 5s);
  EXPECT_EQ(r.backoffs(), 5u);
  for (int i = 0; i < 1000; ++i) r.backoff();  // no overflow, however many
  EXPECT_EQ(r.rto(), 5s);
  EXPECT_EQ(r.backoffs(), 1005u);
}

TEST(TcpRtt, BackoffBeforeFirstSampleStartsFromInitialRto_Rfc6298_5_5) {
  auto r = linux_like();
  r.backoff();
  r.backoff();
  EXPECT_EQ(r.rto(), 4s);
}

TEST(TcpRtt, ValidSampleEndsBackoff_Rfc6298_5_7Karn) {
  auto r = linux_like();
  r.sample(100ms);
  r.backoff();
  r.backoff();
  EXPECT_EQ(r.rto(), 1200ms);
  // A new (non-retransmitted) measurement recomputes the RTO from scratch.
  r.sample(100ms);
  EXPECT_EQ(r.backoffs(), 0u);
  // RTTVAR = 3/4*50 + 0 = 37.5, RTO = 100 + 150 = 250 ms
  EXPECT_EQ(r.rto(), 250ms);
}

TEST(TcpRtt, HandshakeTimeoutWithoutSampleFallsBackToThreeSeconds_Rfc6298_5_7) {
  auto r = linux_like();
  r.backoff();  // SYN retransmitted, RTO now 2 s
  r.reset_backoff();
  EXPECT_EQ(r.backoffs(), 0u);
  EXPECT_EQ(r.rto(), 3s);

  auto s = linux_like();  // no expiry: RTO stays at its initial value
  s.reset_backoff();
  EXPECT_EQ(s.rto(), 1s);

  auto t = linux_like();  // a sample exists (timestamps): that RTO is kept
  t.sample(100ms);
  t.backoff();
  t.reset_backoff();
  EXPECT_EQ(t.rto(), 300ms);
}

TEST(TcpRtt, NegativeSampleIsTreatedAsZero) {
  RttEstimator r(1s, 0ms, 120s);
  r.sample(-5ms);
  EXPECT_EQ(r.srtt(), 0ms);
  EXPECT_EQ(r.rto(), 1ms);  // 0 + max(G, 0)
}
