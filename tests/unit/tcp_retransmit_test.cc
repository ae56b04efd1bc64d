// Retransmission timing and loss recovery against a scripted peer: RFC 6298 (RTO, backoff, Karn,
// §5.7), SYN retransmission and tcp_syn_retries, tcp_retries2, RFC 5681 §3.2 fast retransmit,
// RFC 6582 NewReno (inflation, partial/full ACK, "recover"), RFC 6675 SACK recovery (exact holes,
// pipe), and the go-back-N after an RTO that skips SACKed data.
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

TEST(TcpRetransmit, Established_RtoFromHandshakeSampleThenDoublesToRtoMax_Rfc6298_2_5_5) {
  TcpConfig cfg = reno_config();
  cfg.rto_max = 1s;
  TcpHarness h(cfg);
  h.established_passive();
  // The SYN-ACK was timed (RTT ~0 in virtual time): RTO = max(SRTT + 4*RTTVAR, rto_min) = 200 ms.
  EXPECT_EQ(rto(h), 200ms);
  h.write("data");
  h.expect({.seq = h.nxt, .payload = bytes("data")});
  const Instant t0 = h.now;
  const Duration schedule[] = {200ms, 600ms, 1400ms, 2400ms, 3400ms};  // 200, 400, 800, 1000, 1000
  for (const Duration at : schedule) {
    h.run_until(t0 + at - 1ms);
    h.expect_nothing();
    h.run_until(t0 + at);
    h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .payload = bytes("data")});
  }
  EXPECT_EQ(h.counters.get(Counter::tcp_rto_expired), 5u);
  EXPECT_EQ(info(h).total_retrans, 5u);
}

TEST(TcpRetransmit, SynRetransmitted_NoSampleRtoIsThreeSecondsAndCwndOneSegment_Rfc6298_5_7_Rfc5681_3_1) {
  TcpHarness h(reno_config());
  h.syn_sent();
  h.advance(1s);
  h.expect({.flags = kTcpSyn, .seq = h.iss});
  h.advance(500ms);
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = h.nxt, .mss = 1460});
  h.peer_nxt = kPeerIss + 1;
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  // Karn: the SYN-ACK may answer either SYN, so no sample; §5.7: RTO 3 s until the first one.
  EXPECT_EQ(rto(h), 3s);
  EXPECT_EQ(info(h).snd_cwnd, 1460u);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(3000, 'x'));
  h.expect({.seq = h.nxt, .len = 1460});
  h.expect_nothing();  // cwnd = 1 segment
  const Instant t0 = h.now;
  h.run_until(t0 + 3s - 1ms);
  h.expect_nothing();
  h.run_until(t0 + 3s);
  h.expect({.seq = h.nxt, .len = 1460});
}

TEST(TcpRetransmit, Karn_AckOfRetransmittedSegmentGivesNoSampleAndKeepsBackoff_Rfc6298_3_5) {
  TcpHarness h(reno_config());
  h.established_passive();
  const auto srtt0 = info(h).rtt_us;
  h.write("a");
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.advance(200ms);
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.advance(50ms);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  EXPECT_EQ(info(h).rtt_us, srtt0) << "sample taken from an ambiguous ACK";
  // The backed-off RTO (400 ms) stays until a valid sample.
  h.write("b");
  h.expect({.seq = h.nxt + 1, .payload = bytes("b")});
  Instant t = h.now;
  h.run_until(t + 400ms - 1ms);
  h.expect_nothing();
  h.run_until(t + 400ms);
  h.expect({.seq = h.nxt + 1, .payload = bytes("b")});
  // A segment sent once and ACKed gives a sample, and the RTO falls back to 200 ms.
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 2});
  h.write("c");
  h.expect({.seq = h.nxt + 2, .payload = bytes("c")});
  h.advance(10ms);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 3});
  EXPECT_NE(info(h).rtt_us, srtt0);
  EXPECT_EQ(rto(h), 200ms);
}

TEST(TcpRetransmit, Timestamps_AckOfRetransmissionEchoingItsTsvalIsAValidSample_Rfc7323_4_1) {
  TcpConfig cfg = reno_config();
  cfg.timestamps = true;
  TcpHarness h(cfg);
  accept_with(h, {.ts = {{1000, 0}}});
  ASSERT_TRUE(info(h).timestamps);
  const auto srtt0 = info(h).rtt_us;
  EXPECT_EQ(srtt0, 100u);  // the SYN-ACK's echo, 0 ms, floored at 100 us
  h.write("a");
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.advance(200ms);
  const Sent re = h.expect({.seq = h.nxt, .payload = bytes("a")});
  ASSERT_TRUE(re.opts.has_timestamps);
  h.advance(50ms);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1, .ts = {{1002, re.opts.ts.tsval}}});
  // SRTT = 7/8 * 0.1 ms + 1/8 * 50 ms.
  EXPECT_NEAR(info(h).rtt_us, 87 + 6250, 2);
}

TEST(TcpRetransmit, SynSent_DefaultSchedule1_2_4_8_16_32_64ThenEtimedoutAt127s_Rfc6298_5_5) {
  TcpHarness h;  // syn_retries = 6, like Linux
  const SocketId c = h.syn_sent();
  const Instant t0 = h.now;
  for (const int at : {1, 3, 7, 15, 31, 63}) {
    h.run_until(t0 + std::chrono::seconds(at) - 1ms);
    h.expect_nothing();
    h.run_until(t0 + std::chrono::seconds(at));
    h.expect({.flags = kTcpSyn, .seq = h.iss, .len = 0});
  }
  h.run_until(t0 + 127s - 1ms);
  EXPECT_EQ(h.state(), st(TcpState::syn_sent));
  h.run_until(t0 + 127s);
  h.expect_nothing();  // giving up sends nothing (no RST: the peer never answered)
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_TRUE(h.tcp->readiness(c) & kError);
  EXPECT_EQ(h.tcp->take_error(c), Errc::timed_out);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_timeouts), 1u);
}

TEST(TcpRetransmit, Established_Retries2ExhaustedEtimedoutSoErrorNoRst_Linux) {
  TcpConfig cfg = reno_config();
  cfg.retries2 = 3;
  TcpHarness h(cfg);
  h.established_passive();
  h.write("a");
  h.expect({.seq = h.nxt});
  const Instant t0 = h.now;
  for (const auto at : {200ms, 600ms, 1400ms}) {
    h.run_until(t0 + at);
    h.expect({.seq = h.nxt, .payload = bytes("a")});
  }
  h.run_until(t0 + 3000ms - 1ms);
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.run_until(t0 + 3000ms);
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::closed));
  const auto r = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r & kError);
  EXPECT_TRUE(r & kHangup);
  std::byte b[4];
  EXPECT_EQ(h.tcp->recv(h.conn, b).error(), Errc::timed_out);  // so_error, then cleared
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::ok);
}

TEST(TcpRetransmit, FastRetransmit_OnlyOnThirdDupAckAndWindowUpdatesDoNotCount_Rfc5681_2_3_2) {
  TcpHarness h(reno_config());
  h.established_passive();
  const std::uint32_t s = send_full(h, 5);
  h.send({.seq = h.peer_nxt, .ack = s});
  h.send({.seq = h.peer_nxt, .ack = s});
  h.expect_nothing();
  // Same ACK number but a new window: a window update, not a duplicate ACK (RFC 5681 §2 (e)).
  h.send({.seq = h.peer_nxt, .ack = s, .window = 60000});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 0u);
  h.send({.seq = h.peer_nxt, .ack = s, .window = 60000});
  h.expect({.flags = kTcpAck, .seq = s, .len = 1460});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u);
}

TEST(TcpRetransmit, NewReno_InflationSendsNewDataThenFullAckDeflates_Rfc6582_3_2) {
  TcpHarness h(reno_config());
  h.established_passive();
  const std::uint32_t s = send_full(h, 5);
  for (int i = 0; i < 3; ++i) h.send({.seq = h.peer_nxt, .ack = s});
  h.expect({.seq = s, .len = 1460});
  // ssthresh = max(FlightSize/2, 2*SMSS) = 3650; cwnd = ssthresh + 3*SMSS (step 2).
  EXPECT_EQ(info(h).snd_ssthresh, 3650u);
  EXPECT_EQ(info(h).snd_cwnd, 3650u + 3 * 1460);
  h.write(std::string(2 * 1460, 'n'));
  h.expect_nothing();  // 730 bytes of room: not a full segment
  h.send({.seq = h.peer_nxt, .ack = s});  // step 3: +1 SMSS -> one new segment
  h.expect({.seq = at(s, 5), .len = 1460});
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = s});
  h.expect({.seq = at(s, 6), .len = 1460});
  h.expect_nothing();
  // Full ACK (covers "recover" = the highest byte sent when recovery began): cwnd = ssthresh.
  h.send({.seq = h.peer_nxt, .ack = at(s, 7)});
  h.expect_nothing();
  EXPECT_EQ(info(h).snd_cwnd, 3650u);
  EXPECT_EQ(info(h).unacked, 0u);
}

TEST(TcpRetransmit, NewReno_DupAcksBelowRecoverAfterRtoDoNotStartFastRetransmit_Rfc6582_4) {
  TcpHarness h(reno_config());
  h.established_passive();
  const std::uint32_t s = send_full(h, 5);
  h.advance(rto(h));
  h.expect({.seq = s, .len = 1460});  // RTO: cwnd 1 segment
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = at(s, 1)});
  const auto gbn = h.drain();  // go-back-N with cwnd 2
  ASSERT_EQ(gbn.size(), 2u);
  EXPECT_EQ(gbn[0].seq, at(s, 1));
  EXPECT_EQ(gbn[1].seq, at(s, 2));
  // Duplicates produced by the old flight (segments 2..4 arriving): not a new loss event, so no
  // fast retransmit of SND.UNA (the go-back-N may go on: each duplicate means a segment left).
  for (int i = 0; i < 3; ++i) h.send({.seq = h.peer_nxt, .ack = at(s, 1)});
  for (const Sent& x : h.drain()) EXPECT_NE(x.seq, at(s, 1)) << "fast retransmit below recover: " << x.str();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 0u);
}

/// Passive open with SACK permitted and NewReno arithmetic.
void sack_conn(TcpHarness& h) {
  accept_with(h, {.sack_perm = true});
  ASSERT_TRUE(info(h).sack);
}

TEST(TcpRetransmit, SackRecovery_RetransmitsExactlyTheHolesAndPipeLimitsSending_Rfc6675_5) {
  TcpConfig cfg = reno_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  sack_conn(h);
  const std::uint32_t s = send_full(h, 10);  // IW = 10 segments (RFC 6928)
  h.expect_nothing();
  // Segments 0 and 4 are lost. Three duplicate ACKs SACK 1, 1-2, 1-3.
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 1), at(s, 2)}}});
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 1), at(s, 3)}}});
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 1), at(s, 4)}}});
  // Recovery: cwnd = ssthresh = 7300. Only the first hole goes; pipe (segments 4..9 + the
  // retransmission = 7 segments) exceeds cwnd.
  h.expect({.seq = s, .len = 1460});
  h.expect_nothing();
  EXPECT_EQ(info(h).snd_ssthresh, 7300u);
  EXPECT_EQ(info(h).snd_cwnd, 7300u);
  h.write(std::string(3 * 1460, 'n'));
  h.expect_nothing();  // pipe still >= cwnd
  // 5-7 SACKed: segment 4 has 3 segments SACKed above it, so IsLost; pipe = 0 (rexmitted) + 1 +
  // segments 8, 9 = 3 segments: two may go: the hole, then one new segment (NextSeg rule 2).
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 5), at(s, 8)}, {at(s, 1), at(s, 4)}}});
  h.expect({.seq = at(s, 4), .len = 1460});
  h.expect({.seq = at(s, 10), .len = 1460});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u);
  EXPECT_EQ(info(h).total_retrans, 2u);
  // ACK of everything up to RecoveryPoint ends recovery; cwnd = ssthresh, flight 1 segment.
  h.send({.seq = h.peer_nxt, .ack = at(s, 10)});
  h.expect({.seq = at(s, 11), .len = 1460});
  h.expect({.seq = at(s, 12), .len = 1460});
  h.expect_nothing();
}

TEST(TcpRetransmit, SackRecovery_NoSackedSegmentIsEverRetransmitted_Rfc6675_4) {
  TcpConfig cfg = reno_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  sack_conn(h);
  const std::uint32_t s = send_full(h, 10);
  // Every other segment lost: 0, 2, 4, 6, 8.
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 1), at(s, 2)}}});
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 3), at(s, 4)}, {at(s, 1), at(s, 2)}}});
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 5), at(s, 6)}, {at(s, 3), at(s, 4)}, {at(s, 1), at(s, 2)}}});
  h.send({.seq = h.peer_nxt,
          .ack = s,
          .sack = {{at(s, 7), at(s, 8)}, {at(s, 5), at(s, 6)}, {at(s, 3), at(s, 4)}, {at(s, 1), at(s, 2)}}});
  std::vector<std::uint32_t> resent;
  for (const Sent& x : h.drain()) resent.push_back((x.seq - s) / 1460);
  for (int i = 0; i < 5 && !resent.empty(); ++i) {
    // Let the peer ACK up to the first hole the sender filled, keeping the SACKs above.
    h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 7), at(s, 8)}, {at(s, 5), at(s, 6)}, {at(s, 3), at(s, 4)}}});
    for (const Sent& x : h.drain()) resent.push_back((x.seq - s) / 1460);
  }
  ASSERT_FALSE(resent.empty());
  EXPECT_EQ(resent[0], 0u);
  for (const std::uint32_t seg : resent) {
    EXPECT_TRUE(seg % 2 == 0) << "SACKed segment " << seg << " retransmitted";
  }
}

TEST(TcpRetransmit, RtoWithSack_GoBackSkipsSackedSegments_Rfc6675_5_1) {
  TcpConfig cfg = reno_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  sack_conn(h);
  const std::uint32_t s = send_full(h, 4);
  // Segments 0 and 3 lost; one duplicate ACK SACKs 1-2 (not enough for fast retransmit).
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{at(s, 1), at(s, 3)}}});
  h.expect_nothing();
  h.advance(rto(h));
  h.expect({.seq = s, .len = 1460});
  h.expect_nothing();
  // Segment 0 arrives; cwnd 2 segments. 1 and 2 are held by the receiver: the next to resend is 3.
  h.send({.seq = h.peer_nxt, .ack = at(s, 1), .sack = {{at(s, 1), at(s, 3)}}});
  h.expect({.seq = at(s, 3), .len = 1460});
  h.expect_nothing();
}

}  // namespace
}  // namespace pno::test
