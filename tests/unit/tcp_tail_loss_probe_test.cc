// When the tail loss probe fires (RFC 8985 §7.2). A receiver may hold its ACK back until two
// full-sized segments arrived (RFC 5681 §4.2, RFC 1122 §4.2.3.2) or until its application reads, and
// Linux does: with less than two full segments outstanding the ACK may come a delayed-ACK time
// (40 ms and up in Linux) later. A probe before that allowance is a spurious retransmission the
// peer reports with a D-SACK. With two full segments or more out, the probe stays at 2 * SRTT plus
// a small margin, so real tail losses are still repaired quickly.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using std::chrono::milliseconds;

constexpr Duration kRtt = milliseconds(1);

/// SACK connection, TCP_NODELAY, one exchange so SRTT = 1 ms.
void open_with_rtt_sample(TcpHarness& h) {
  accept_with(h, {.mss = 1460, .sack_perm = true});
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(100, 'a'));
  h.expect({.seq = h.nxt, .len = 100});
  h.advance(kRtt);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 100});
  h.nxt += 100;
  h.drain();
}

/// Nothing at all is sent until `until` (virtual time), and no probe is counted.
void expect_silence_until(TcpHarness& h, Instant until) {
  h.run_until(until);
  for (const Sent& x : h.drain()) ADD_FAILURE() << "sent before the delayed-ACK allowance: " << x.str();
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_retransmits), 0u);
}

TEST(TcpTailLossProbe, OneSegmentOutWaitsForWorstCaseDelayedAck_Rfc8985_7_2) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const Instant sent = h.now;
  h.write(std::string(500, 'b'));
  h.expect({.seq = h.nxt, .len = 500});
  // 2 * SRTT + 2 ms would be 4 ms; a Linux receiver's delayed ACK takes 40 ms or more. With the
  // allowance the probe would come after the RTO (200 ms here), so the RTO is what comes first.
  expect_silence_until(h, sent + rto(h) - milliseconds(1));
}

TEST(TcpTailLossProbe, LessThanTwoFullSegmentsOutWaitsForDelayedAck_Rfc8985_7_2_Rfc5681_4_2) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const Instant sent = h.now;
  // One full segment and a partial one: the receiver owes an ACK only after a second full one.
  h.write(std::string(kMss + 500, 'c'));
  h.expect({.seq = h.nxt, .len = kMss});
  h.expect({.seq = h.nxt + kMss, .len = 500});
  expect_silence_until(h, sent + 2 * kRtt + milliseconds(150));
}

TEST(TcpTailLossProbe, PartialTailLeftAfterAnAckWaitsForDelayedAck_Rfc8985_7_2) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const std::uint32_t s = h.nxt;
  h.write(std::string(2 * kMss + 500, 'd'));
  h.expect({.seq = s, .len = kMss});
  h.expect({.seq = s + kMss, .len = kMss});
  h.expect({.seq = s + 2 * kMss, .len = 500});
  // The receiver ACKs the two full segments at once and delays the ACK of the tail: the probe
  // timer is re-armed from that ACK with the allowance.
  h.advance(kRtt);
  h.send({.seq = h.peer_nxt, .ack = s + 2 * kMss});
  const Instant acked = h.now;
  expect_silence_until(h, acked + 2 * kRtt + milliseconds(150));
}

TEST(TcpTailLossProbe, TwoFullSegmentsOutProbeAfterTwoSrtt_Rfc8985_7_2) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const Instant sent = h.now;
  const std::uint32_t s = h.nxt;
  h.write(std::string(2 * kMss, 'e'));
  h.expect({.seq = s, .len = kMss});
  h.expect({.seq = s + kMss, .len = kMss});
  // The receiver must ACK these at once; no ACK within 2 * SRTT (+ 2 ms) means the tail is lost.
  h.run_until(sent + 2 * kRtt + milliseconds(3));
  const auto out = h.drain();
  ASSERT_EQ(out.size(), 1u) << "expected one probe";
  EXPECT_EQ(out[0].seq, s + kMss) << out[0].str();
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes), 1u);
  EXPECT_LT(h.now - sent, rto(h)) << "the probe must come before the RTO";
}

/// Two full segments out, then the probe (the last one again) at 2 * SRTT + `margin` (give or take
/// the timer wheel's granularity, never before). Returns the start.
std::uint32_t two_segments_and_probe(TcpHarness& h, Duration margin) {
  const Instant sent = h.now;
  const std::uint32_t s = h.nxt;
  const Duration srtt = std::chrono::microseconds(info(h).rtt_us);
  h.write(std::string(2 * kMss, 'f'));
  h.expect({.seq = s, .len = kMss});
  h.expect({.seq = s + kMss, .len = kMss});
  h.run_until(sent + 2 * srtt + margin - std::chrono::microseconds(100));
  for (const Sent& x : h.drain()) ADD_FAILURE() << "probe before 2 * SRTT + " << margin.count() << " ns: " << x.str();
  h.run_until(sent + 2 * srtt + margin + milliseconds(2));  // timers run on a coarser wheel
  const auto out = h.drain();
  EXPECT_EQ(out.size(), 1u) << "expected one probe";
  if (!out.empty()) {
    EXPECT_EQ(out[0].seq, s + kMss) << out[0].str();
  }
  h.nxt = s + 2 * kMss;
  return s;
}

// §7.4: the D-SACK of a probe shows the original arrived (its ACK was late): the probe was
// needless, so the next one waits twice as long past 2 * SRTT.
TEST(TcpTailLossProbe, ProbeReportedByDsackDoublesTheMargin_Rfc8985_7_4) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const std::uint32_t s = two_segments_and_probe(h, milliseconds(2));
  const std::uint32_t cwnd = info(h).snd_cwnd;
  h.send({.seq = h.peer_nxt, .ack = s + 2 * kMss, .sack = {{s + kMss, s + 2 * kMss}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes_spurious), 1u);
  EXPECT_GE(info(h).snd_cwnd, cwnd) << "a needless probe repaired no loss: no cwnd reduction";
  h.drain();
  two_segments_and_probe(h, milliseconds(4));
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes), 2u);
}

// Linux tcp_process_tlp_ack: an ACK of exactly the probed data may be the late ACK of the
// original; only an ACK beyond the probe (without D-SACK) shows a repaired loss.
TEST(TcpTailLossProbe, LateAckOfTheOriginalIsNoLoss_Rfc8985_7_4) {
  TcpHarness h(sack_config());
  open_with_rtt_sample(h);
  const std::uint32_t s = two_segments_and_probe(h, milliseconds(2));
  const std::uint32_t cwnd = info(h).snd_cwnd;
  h.send({.seq = h.peer_nxt, .ack = s + 2 * kMss});  // the original's ACK
  h.send({.seq = h.peer_nxt, .ack = s + 2 * kMss, .sack = {{s + kMss, s + 2 * kMss}}});  // the probe's
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes_spurious), 1u);
  EXPECT_GE(info(h).snd_cwnd, cwnd) << "cwnd reduced for a loss that did not happen";
}

}  // namespace
}  // namespace pno::test
