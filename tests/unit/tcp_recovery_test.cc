// Retransmission: RFC 6298 RTO (timing, backoff, Karn), RFC 5681 fast retransmit with RFC 6582
// NewReno partial ACKs, RFC 6675 SACK recovery, retries2 -> ETIMEDOUT.
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpRecovery, Established_RtoInitial1sThenDoubles_Rfc6298_5_5) {
  TcpHarness h;
  h.established_passive();
  h.write("data");
  h.expect({.seq = h.nxt, .payload = bytes("data")});
  // No RTT sample yet (the handshake's was taken, but we check backoff relative to the RTO):
  const auto rto = std::chrono::microseconds((*h.tcp->info(h.conn)).rto_us);
  h.advance(rto - 1ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.seq = h.nxt, .payload = bytes("data")});
  h.advance(2 * rto - 1ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.seq = h.nxt, .payload = bytes("data")});
  EXPECT_EQ(h.counters.get(Counter::tcp_rto_expired), 2u);
}

TEST(TcpRecovery, Established_RttSampleSetsRto_Rfc6298_2_3) {
  TcpHarness h;
  h.established_passive();
  h.write("a");
  h.expect({.seq = h.nxt});
  h.advance(100ms);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  auto i = *h.tcp->info(h.conn);
  // The handshake gave a first sample of ~0 (clamped to 100 us); SRTT = 7/8 SRTT + 1/8 R'.
  EXPECT_NEAR(i.rtt_us, (7 * 100 + 100000) / 8, 2);
  // RTO = SRTT + max(G, 4*RTTVAR), clamped at rto_min 200 ms.
  EXPECT_GE(i.rto_us, 200000u);
}

TEST(TcpRecovery, Established_KarnNoSampleFromRetransmission_Rfc6298_3) {
  TcpHarness h;
  h.established_passive();
  const auto before = (*h.tcp->info(h.conn)).rtt_us;
  h.write("a");
  h.expect({.seq = h.nxt});
  h.run_until(h.now + 5s);
  h.drain();  // retransmissions
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  // The ACK may be for either transmission: no sample (srtt unchanged).
  EXPECT_EQ((*h.tcp->info(h.conn)).rtt_us, before);
}

TEST(TcpRecovery, Established_Retries2ExhaustedEtimedout) {
  TcpConfig cfg = plain_config();
  cfg.retries2 = 3;
  TcpHarness h(cfg);
  h.established_passive();
  h.write("a");
  h.run_until(h.now + 200s);
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::timed_out);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_timeouts), 1u);
}

TEST(TcpRecovery, Established_UserTimeoutAborts) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::user_timeout, 3000), Errc::ok);
  h.write("a");
  h.run_until(h.now + 10s);
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::timed_out);
}

/// ESTABLISHED with `n` full segments in flight, the first of them to be "lost".
std::uint32_t send_segments(TcpHarness& h, int n) {
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(static_cast<std::size_t>(n) * 1460, 'd'));
  for (int i = 0; i < n; ++i) h.expect({.seq = h.nxt + static_cast<std::uint32_t>(i) * 1460, .len = 1460});
  return h.nxt;
}

TEST(TcpRecovery, Established_ThreeDupacksFastRetransmit_Rfc5681_3_2) {
  TcpHarness h;
  h.established_passive();
  const std::uint32_t s = send_segments(h, 5);
  // Segment 1 lost: the peer ACKs s for segments 2..4.
  for (int i = 0; i < 2; ++i) {
    h.send({.seq = h.peer_nxt, .ack = s});
    h.expect_nothing();
  }
  h.send({.seq = h.peer_nxt, .ack = s});
  h.expect({.seq = s, .len = 1460});
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u);
  // NewReno partial ACK (segment 1 arrived, 3 missing too): resend the next hole at once.
  h.send({.seq = h.peer_nxt, .ack = s + 2 * 1460});
  h.expect({.seq = s + 2 * 1460, .len = 1460});
  // Full ACK ends recovery.
  h.send({.seq = h.peer_nxt, .ack = s + 5 * 1460});
  h.expect_nothing();
  EXPECT_EQ((*h.tcp->info(h.conn)).unacked, 0u);
}

TEST(TcpRecovery, Established_SackRecoveryResendsOnlyHoles_Rfc6675) {
  TcpConfig cfg = plain_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  h.syn_received({.sack_perm = true});
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.conn = *h.tcp->accept(h.listener);
  const std::uint32_t s = send_segments(h, 8);
  const std::uint32_t m = 1460;
  // Segments 0 and 3 lost; the peer SACKs 1-2 and 4-7 over a few duplicate ACKs.
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{s + m, s + 2 * m}}});
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{s + m, s + 3 * m}}});
  h.send({.seq = h.peer_nxt, .ack = s, .sack = {{s + 4 * m, s + 8 * m}, {s + m, s + 3 * m}}});
  const auto out = h.drain();
  ASSERT_GE(out.size(), 1u);
  EXPECT_EQ(out[0].seq, s);  // the first hole
  bool resent_sacked = false, resent_hole2 = false;
  for (const Sent& x : out) {
    if (x.seq == s + m || x.seq == s + 2 * m || x.seq >= s + 4 * m) resent_sacked = true;
    if (x.seq == s + 3 * m) resent_hole2 = true;
  }
  EXPECT_FALSE(resent_sacked);
  EXPECT_TRUE(resent_hole2);  // IsLost: more than 2 segments SACKed above it (RFC 6675 §4)
  h.send({.seq = h.peer_nxt, .ack = s + 8 * m});
  EXPECT_EQ((*h.tcp->info(h.conn)).unacked, 0u);
}

TEST(TcpRecovery, Established_RtoGoesBackAndResetsCwnd_Rfc5681_3_1) {
  TcpHarness h;
  h.established_passive();
  const std::uint32_t s = send_segments(h, 4);
  const auto rto = std::chrono::microseconds((*h.tcp->info(h.conn)).rto_us);
  h.advance(rto);
  const auto out = h.drain();
  ASSERT_EQ(out.size(), 1u);  // cwnd = 1 segment after an RTO
  EXPECT_EQ(out[0].seq, s);
  EXPECT_EQ((*h.tcp->info(h.conn)).snd_cwnd, 1460u);
  h.send({.seq = h.peer_nxt, .ack = s + 1460});
  const auto next = h.drain();
  ASSERT_GE(next.size(), 1u);
  EXPECT_EQ(next[0].seq, s + 1460);  // go-back-N continues from the next unacked byte
}

TEST(TcpRecovery, Established_SegmentsWithTimestampsAndSackBlocksFitTheMtu_Rfc6691) {
  // RFC 6691 §2 / Linux tcp_current_mss: the MSS counts no options, so every segment's payload is
  // min(peer MSS, MTU - 40) minus the option bytes it carries: timestamps (12) and, while we hold
  // out-of-order data, SACK blocks (4 + 8 per block). New data, fast retransmissions and RTO
  // retransmissions all obey it (FakeIpv4 fails the test if a segment exceeds the MTU).
  TcpConfig cfg = plain_config();
  cfg.sack = true;
  cfg.timestamps = true;
  TcpHarness h(cfg);
  h.syn_received({.mss = 1460, .sack_perm = true, .ts = {{1000, 0}}});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .ts = {{1001, 0}}});
  h.conn = *h.tcp->accept(h.listener);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  const std::uint32_t mss = 1460 - 12;
  EXPECT_EQ((*h.tcp->info(h.conn)).snd_mss, mss);
  h.write(std::string(4 * mss, 'd'));
  const std::uint32_t s = h.nxt;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(h.expect({.seq = s + i * mss}).payload.size(), mss);
  // The peer's data arrives with three holes: our segments now carry three SACK blocks (28 bytes).
  const std::uint32_t p = h.peer_nxt;
  for (int i = 1; i <= 3; ++i) {
    h.send({.seq = p + 200 * i, .ack = s, .payload = Bytes(100, std::byte{1}), .ts = {{1002, 0}}});
  }
  const auto acks = h.drain();
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().opts.sack_count, 3);
  // RTO: the retransmission of the first segment carries timestamps + 3 SACK blocks.
  h.advance(std::chrono::microseconds((*h.tcp->info(h.conn)).rto_us));
  const Sent r = h.expect({.seq = s});
  EXPECT_EQ(r.opts.sack_count, 3);
  EXPECT_EQ(r.payload.size(), mss - 28);
  // The rest of the segment follows once the peer acknowledges the first part.
  h.send({.seq = p, .ack = s + mss - 28, .payload = Bytes(100, std::byte{1}), .ts = {{1003, 0}}});
  const auto out = h.drain();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out[0].seq, s + mss - 28);
  for (const Sent& x : out) EXPECT_LE(x.payload.size() + 12 + 4 + 8u * x.opts.sack_count, 1460u) << x.str();
}

}  // namespace
}  // namespace pno::test
