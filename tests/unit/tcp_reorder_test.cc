// Sending and receiving under reordering: what is retransmitted (never past SND.MAX), what a tail
// loss probe resends, and which reordered segments the timestamp checks let through (PAWS with
// Linux's tolerance for disordered ACKs). Each of these once stalled a Linux peer for good.
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

// A segment sent while SACK blocks rode on our segments is shorter than a full one. Once the
// blocks are gone, its retransmission must still end where the original ended: octets past
// SND.MAX were never sent, and the peer's ACK of them would be "an ACK of something not yet sent"
// (RFC 9293 §3.10.7.4: send an ACK, drop the segment) on every retransmission, for good.
TEST(TcpReorder, RtoRetransmissionEndsAtSndMaxWhenSackBlocksAreGone_Rfc9293_3_10_7_4) {
  TcpHarness h(sack_config(true));
  accept_with(h, {.window = 1436, .mss = 1460, .sack_perm = true, .ts = {{1000, 0}}}, {.window = 1436});
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  const std::uint32_t mss = 1460 - 12;  // timestamps on every segment
  const std::uint32_t p = h.peer_nxt;
  // The peer's data arrives with a hole: our segments carry one SACK block (12 bytes).
  h.send({.seq = p + 100, .ack = h.nxt, .window = 1436, .payload = pattern(100, 100), .ts = {{1002, 0}}});
  EXPECT_EQ(h.expect({.flags = kTcpAck, .ack = p}).opts.sack_count, 1);
  const std::uint32_t s = h.nxt;
  h.write(std::string(3 * mss, 'd'));
  const Sent first = h.expect({.seq = s, .len = mss - 12});
  EXPECT_EQ(first.opts.sack_count, 1);
  h.expect_nothing();  // the peer's window (1436) is full
  // The hole fills: no more SACK blocks, full segments have 12 bytes more room.
  h.send({.seq = p, .ack = s, .window = 1436, .payload = pattern(100), .ts = {{1003, 0}}});
  EXPECT_EQ(h.expect({.flags = kTcpAck, .ack = p + 200}).opts.sack_count, 0);
  h.expect_nothing();
  // RTO: the retransmission resends what was sent, no more.
  h.advance(rto(h));
  const Sent r = h.expect({.seq = s});
  EXPECT_EQ(r.opts.sack_count, 0);
  EXPECT_EQ(r.payload.size(), mss - 12) << "retransmission reaches past SND.MAX: " << r.str();
  // The peer acknowledges everything it received; that ACK is acceptable and the transfer goes on.
  const std::uint32_t got = s + static_cast<std::uint32_t>(r.payload.size());
  h.send({.seq = p + 200, .ack = got, .window = 1436, .ts = {{1004, r.opts.ts.tsval}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_ack), 0u);
  EXPECT_EQ(info(h).unacked, 0u);
  h.expect({.seq = got, .len = 1436});
}

// After an RTO, go-back-N rewinds SND.NXT to SND.UNA; the peer may still acknowledge everything
// sent before (only its ACKs were late). "Not yet sent" in RFC 9293 §3.10.7.4 means beyond the
// highest sequence number sent (Linux and BSD compare with snd_max), so that ACK is accepted.
TEST(TcpReorder, AckAboveRewoundSndNxtUpToSndMaxIsAccepted_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  const std::uint32_t s = send_full(h, 4);
  h.advance(rto(h));
  h.expect({.seq = s, .len = kMss});  // SND.NXT is now s + kMss, SND.MAX s + 4 * kMss
  h.send({.seq = h.peer_nxt, .ack = s + 4 * kMss});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_ack), 0u);
  EXPECT_EQ(info(h).unacked, 0u);
  h.send({.seq = h.peer_nxt, .ack = s + 4 * kMss + 1});  // beyond SND.MAX: dropped, answered
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_ack), 1u);
  h.expect({.flags = kTcpAck, .seq = s + 4 * kMss, .ack = h.peer_nxt});
}

// RFC 8985 §7.3: when no new segment may be sent, the probe is the highest-sequence segment sent
// so far. Data the peer's window holds back was never sent and is no probe.
TEST(TcpReorder, TailLossProbeResendsLastSentSegmentWhenWindowLimited_Rfc8985_7_3) {
  TcpConfig cfg = plain_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  accept_with(h, {.mss = 1460, .sack_perm = true}, {.window = 2 * kMss});
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  // One exchange for an RTT sample (10 ms), so the probe timeout is 2 * SRTT, well before the RTO.
  h.write(std::string(100, 'a'));
  h.expect({.seq = h.nxt, .len = 100});
  h.advance(std::chrono::milliseconds(10));
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 100, .window = 2 * kMss});
  h.nxt += 100;
  h.drain();
  const std::uint32_t s = h.nxt;
  h.write(std::string(10 * kMss, 'd'));
  h.expect({.seq = s, .len = kMss});
  h.expect({.seq = s + kMss, .len = kMss});
  h.expect_nothing();  // window full
  h.run_until(h.now + std::chrono::milliseconds(300));
  const auto out = h.drain();
  ASSERT_FALSE(out.empty()) << "no tail loss probe";
  EXPECT_EQ(out[0].seq, s + kMss) << out[0].str();
  EXPECT_EQ(out[0].payload.size(), kMss);
  for (const Sent& x : out) EXPECT_LE(x.seq + x.payload.size(), s + 2 * kMss) << "never-sent data: " << x.str();
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes), 1u);
}

}  // namespace
}  // namespace pno::test

namespace pno::test {
namespace {

// A retransmission (TSval 1005) fills the hole at RCV.NXT and makes 1005 TS.Recent; the original
// segment after it was sent a tick earlier (1004) and arrives late. That is reordering, not a
// replay: Linux keeps one tick of slack (TCP_PAWS_WINDOW), and dropping it costs the peer a
// retransmission. Two ticks older is still a PAWS drop (RFC 7323 §5.3 R1).
TEST(TcpReorder, Paws_SegmentOneTickOlderThanTsRecentIsAccepted_Rfc7323_5_3_LinuxPawsWindow) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000, 0}}});
  const std::uint32_t p = h.peer_nxt;
  h.send({.seq = p, .ack = h.nxt, .payload = bytes("aaaa"), .ts = {{1005, 0}}});
  EXPECT_EQ(h.expect({.flags = kTcpAck, .ack = p + 4}).opts.ts.tsecr, 1005u);
  h.send({.seq = p + 4, .ack = h.nxt, .payload = bytes("bbbb"), .ts = {{1004, 0}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 0u);
  const Sent a = h.expect({.flags = kTcpAck, .ack = p + 8});
  EXPECT_EQ(a.opts.ts.tsecr, 1005u) << "an older TSval never becomes TS.Recent";
  EXPECT_EQ(h.read(), "aaaabbbb");
  h.send({.seq = p + 8, .ack = h.nxt, .payload = bytes("cccc"), .ts = {{1003, 0}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 1u);
  h.expect({.flags = kTcpAck, .ack = p + 8});
  EXPECT_EQ(h.read(), "");
}

// Duplicate ACKs reordered among themselves: the later one (newer TSval) sets TS.Recent, the
// earlier one arrives after it. Linux (tcp_disordered_ack) processes such a pure duplicate ACK at
// RCV.NXT that updates no window; dropping it lost a duplicate ACK, so three duplicates no longer
// triggered fast retransmit (RFC 5681 §3.2) and recovery waited for the RTO.
TEST(TcpReorder, Paws_ReorderedDuplicateAckStillCountsForFastRetransmit_Rfc5681_3_2_LinuxDisorderedAck) {
  TcpConfig cfg = ts_config();
  cfg.congestion = CongestionAlgo::new_reno;
  TcpHarness h(cfg);
  accept_with(h, {.mss = 1460, .ts = {{1000, 0}}});
  const std::uint32_t mss = 1460 - 12;
  const std::uint32_t s = send_full(h, 4, mss);
  const std::uint32_t p = h.peer_nxt;
  // Segment 0 is lost; 1-3 draw duplicate ACKs, the second overtaken by the third.
  h.send({.seq = p, .ack = s, .ts = {{1010, 0}}});
  h.send({.seq = p, .ack = s, .ts = {{1012, 0}}});
  h.expect_nothing();
  h.send({.seq = p, .ack = s, .ts = {{1011, 0}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 0u);
  const Sent r = h.expect({.seq = s, .len = mss});
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u) << r.str();
}

// Not every old pure ACK is reordering: one that would update the window, or one older than an
// RTO's worth of ticks, is still dropped by PAWS (RFC 7323 §5.3 R1) and answered with an ACK.
TEST(TcpReorder, Paws_OldAckThatWouldUpdateTheWindowIsStillDropped_Rfc7323_5_3) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000, 0}}});
  const std::uint32_t p = h.peer_nxt;
  const std::uint32_t s = send_full(h, 2, 1460 - 12);
  h.send({.seq = p, .ack = s, .window = 30000, .ts = {{1010, 0}}});
  h.send({.seq = p, .ack = s, .window = 40000, .ts = {{1005, 0}}});  // opens the window
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 1u);
  EXPECT_EQ(info(h).snd_wnd, 30000u);
  h.send({.seq = p, .ack = s, .window = 30000, .ts = {{1010u - 5000u, 0}}});  // 5 s old, RTO 1 s
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 2u);
  h.expect({.flags = kTcpAck, .ack = p});
}

}  // namespace
}  // namespace pno::test

namespace pno::test {
namespace {

constexpr std::uint32_t m = kMss;

/// The peer SACKs segments [first, last) of a flight starting at `s`, one duplicate ACK each.
void sack_segments(TcpHarness& h, std::uint32_t s, std::uint32_t first, std::uint32_t last) {
  for (std::uint32_t i = first; i < last; ++i) h.send({.seq = h.peer_nxt, .ack = s, .sack = {{s + first * m, s + (i + 1) * m}}});
}

/// A flight of 10 segments whose first one is late: three SACKed segments make it lost by
/// DupThresh (no reordering seen yet) and it is resent; the original arrives, then the peer
/// reports the retransmission as a duplicate (D-SACK, RFC 2883). Leaves everything acknowledged.
void learn_reordering_by_dsack(TcpHarness& h) {
  const std::uint32_t s = send_full(h, 10);
  sack_segments(h, s, 1, 4);
  h.expect({.seq = s, .len = m});
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u);
  h.send({.seq = h.peer_nxt, .ack = s + 10 * m});
  h.send({.seq = h.peer_nxt, .ack = s + 10 * m, .sack = {{s, s + m}}});
  h.drain();
  EXPECT_EQ(h.counters.get(Counter::tcp_dsack_rx), 1u);
  EXPECT_EQ(h.counters.get(Counter::tcp_reordering_seen), 1u);
  h.nxt = s + 10 * m;
}

// RFC 8985 §6.2: once reordering was seen, DupThresh SACKed segments above a hole no longer make
// it lost at once; it gets the reordering window, and a late original is not resent.
TEST(TcpReorder, AfterDsackLateSegmentIsNotResentByDupThresh_Rfc8985_6_2) {
  TcpHarness h(sack_config());
  accept_with(h, {.sack_perm = true});
  learn_reordering_by_dsack(h);
  const std::uint32_t s = send_full(h, 6);
  sack_segments(h, s, 1, 6);
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = s + 6 * m});  // the late original
  h.run_until(h.now + std::chrono::seconds(5));
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 1u);
  EXPECT_EQ(h.counters.get(Counter::tcp_retransmits), 1u);
  EXPECT_EQ(info(h).unacked, 0u);
}

// ... and a real loss is still repaired after the reordering window, long before the RTO.
TEST(TcpReorder, AfterDsackLostSegmentIsResentAfterReorderingWindow_Rfc8985_6_2) {
  TcpHarness h(sack_config());
  accept_with(h, {.sack_perm = true});
  learn_reordering_by_dsack(h);
  const std::uint32_t s = send_full(h, 6);
  sack_segments(h, s, 1, 6);
  h.expect_nothing();
  h.advance(std::chrono::milliseconds(5));  // reo_wnd: min(mult * SRTT / 4, SRTT), at least 1 ms
  h.expect({.seq = s, .len = m});
  EXPECT_EQ(h.counters.get(Counter::tcp_rack_marks), 1u);
  EXPECT_EQ(h.counters.get(Counter::tcp_rto_expired), 0u);
  h.send({.seq = h.peer_nxt, .ack = s + 6 * m});
  EXPECT_EQ(info(h).unacked, 0u);
}

// RFC 8985 §6.2 RACK.reord: a hole below SACKed data filled by the original (never resent) shows
// reordering by itself; the next late segment is not resent when three segments above it are SACKed.
TEST(TcpReorder, HoleFilledByOriginalShowsReordering_Rfc8985_6_2) {
  TcpHarness h(sack_config());
  accept_with(h, {.sack_perm = true});
  const std::uint32_t s = send_full(h, 10);
  sack_segments(h, s, 1, 3);  // two segments: not yet lost by DupThresh
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = s + 3 * m});  // segment 0 arrives late
  EXPECT_EQ(h.counters.get(Counter::tcp_reordering_seen), 1u);
  sack_segments(h, s, 4, 8);  // segment 3 late, 4-7 SACKed
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = s + 10 * m});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_retransmits), 0u);
}


}  // namespace
}  // namespace pno::test
