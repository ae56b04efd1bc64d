// Blind-attack and hostile-input defences: RFC 5961 (RST, SYN and ACK acceptability, challenge ACK
// limits), RFC 7323 §4.3/§5 (TS.Recent, PAWS), RFC 6528 ISNs on the wire, SYN cookies when the SYN
// queue is full, illegal flag combinations and malformed options.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

// --- RFC 5961 §3: RST ---------------------------------------------------------------------

TEST(TcpHardening, Established_RstWindowBoundaries_Rfc5961_3_2) {
  TcpHarness h;
  h.established_passive();  // we advertised 65535
  struct Case {
    std::uint32_t off;
    bool challenge;
  };
  // In the window but not RCV.NXT: challenge ACK; outside (either side): silently dropped. The
  // right edge itself counts as inside, as in Linux's tcp_sequence() (a Linux peer sees the same).
  for (const Case c : {Case{1, true}, Case{65534, true}, Case{65535, true}, Case{65536, false}, Case{0xffffffffu, false}}) {
    h.send({.flags = kTcpRst, .seq = h.peer_nxt + c.off});
    if (c.challenge) {
      h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
    }
    h.expect_nothing();
    EXPECT_EQ(h.state(), st(TcpState::established)) << "RST at RCV.NXT+" << c.off;
    h.advance(1s);  // past the per-connection challenge ACK interval
  }
  EXPECT_EQ(h.counters.get(Counter::tcp_challenge_acks), 3u);
  EXPECT_EQ(h.counters.get(Counter::tcp_rst_rx), 0u);
  // Exactly RCV.NXT (with or without ACK) resets.
  h.send({.flags = kTcpRst | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::conn_reset);
  h.expect_nothing();
}

TEST(TcpHardening, FinWait2_RstAtRcvNxtResets_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_2();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::conn_reset);
}

TEST(TcpHardening, Established_ChallengeAckStackWideLimitPerSecond_Rfc5961_7) {
  TcpConfig cfg = plain_config();
  cfg.max_sockets = 2048;
  TcpHarness h(cfg);
  h.listen(kLocalPort, 2000);
  constexpr int kConns = 1001;
  std::vector<std::uint32_t> iss(kConns);
  for (int i = 0; i < kConns; ++i) {
    const auto port = static_cast<std::uint16_t>(20000 + i);
    h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = port});
    const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .dport = port});
    iss[i] = sa.seq;
    h.send({.seq = kPeerIss + 1, .ack = sa.seq + 1, .sport = port});
  }
  h.expect_nothing();
  for (int i = 0; i < kConns; ++i) {
    h.send({.flags = kTcpRst, .seq = kPeerIss + 100, .sport = static_cast<std::uint16_t>(20000 + i)});
  }
  EXPECT_EQ(h.drain().size(), 1000u);  // tcp_challenge_ack_limit
  EXPECT_EQ(h.counters.get(Counter::tcp_challenge_acks), 1000u);
  h.advance(1s);
  h.send({.flags = kTcpRst, .seq = kPeerIss + 200, .sport = 20000});
  h.expect({.flags = kTcpAck, .dport = 20000});  // a new second, a new budget
}

// --- RFC 5961 §4: SYN in a synchronized state -------------------------------------------------

TEST(TcpHardening, SynInWindowOrNotGetsChallengeAckInEverySynchronizedState_Rfc5961_4_2) {
  for (const std::uint32_t off : {0u, 10u, 3000000000u}) {
    TcpHarness h;
    h.close_wait();
    h.send({.flags = kTcpSyn, .seq = h.peer_nxt + off, .mss = 1460});
    h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
    EXPECT_EQ(h.state(), st(TcpState::close_wait)) << "SYN at +" << off;
    EXPECT_EQ(h.counters.get(Counter::tcp_rst_rx), 0u);
  }
}

// --- RFC 5961 §5: ACK acceptability ----------------------------------------------------------

TEST(TcpHardening, Established_AckBelowUnaMinusMaxSndWndDroppedWithChallenge_Rfc5961_5_2) {
  TcpHarness h;
  h.established_passive();  // MAX.SND.WND = 65535, SND.UNA = SND.NXT = h.nxt
  // SEG.ACK = SND.UNA - MAX.SND.WND is still acceptable: the data is taken.
  h.send({.seq = h.peer_nxt, .ack = h.nxt - 65535, .payload = bytes("ok")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 2});
  EXPECT_EQ(h.read(), "ok");
  h.peer_nxt += 2;
  // One below: discarded, challenge ACK, data not taken.
  h.send({.seq = h.peer_nxt, .ack = h.nxt - 65536, .payload = bytes("no")});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_ack), 1u);
}

TEST(TcpHardening, Established_AckAboveSndNxtDroppedAndAcked_Rfc5961_5_2) {
  TcpHarness h;
  h.established_passive();
  h.write("abc");
  h.expect({.seq = h.nxt, .payload = bytes("abc")});
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 4, .payload = bytes("no")});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 3, .ack = h.peer_nxt, .len = 0});
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  EXPECT_EQ(info(h).unacked, 3u);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 3, .payload = bytes("ok")});  // = SND.NXT: fine
  EXPECT_EQ(h.read(), "ok");
  EXPECT_EQ(info(h).unacked, 0u);
}

TEST(TcpHardening, OutOfWindowPureAcksAnsweredAtMostEvery500ms_Linux) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt + 200000, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  h.send({.seq = h.peer_nxt + 200000, .ack = h.nxt});
  h.expect_nothing();  // an ACK loop between two confused stacks is cut here
  // Data segments out of window are always answered (the peer may need the ACK to recover).
  h.send({.seq = h.peer_nxt - 100, .ack = h.nxt, .payload = bytes("old")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  h.advance(500ms);
  h.send({.seq = h.peer_nxt + 200000, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
}

// --- RFC 7323: TS.Recent and PAWS -------------------------------------------------------------

TEST(TcpHardening, TsRecent_NotUpdatedByOutOfOrderSegment_Rfc7323_4_3) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000, 0}}});
  const std::uint32_t s = h.peer_nxt;
  h.send({.seq = s, .ack = h.nxt, .payload = bytes("aaaa"), .ts = {{1005, 0}}});
  Sent a = h.expect({.flags = kTcpAck, .ack = s + 4});
  EXPECT_EQ(a.opts.ts.tsecr, 1005u);
  // Beyond a hole: SEG.SEQ > Last.ACK.sent, so its newer TSval must not become TS.Recent.
  h.send({.seq = s + 8, .ack = h.nxt, .payload = bytes("cccc"), .ts = {{2000, 0}}});
  a = h.expect({.flags = kTcpAck, .ack = s + 4});
  EXPECT_EQ(a.opts.ts.tsecr, 1005u);
  h.send({.seq = s + 4, .ack = h.nxt, .payload = bytes("bbbb"), .ts = {{1006, 0}}});
  a = h.expect({.flags = kTcpAck, .ack = s + 12});
  EXPECT_EQ(a.opts.ts.tsecr, 1006u);
  EXPECT_EQ(h.read(), "aaaabbbbcccc");
}

TEST(TcpHardening, Paws_RstWithOldTimestampStillResets_Rfc7323_5_2) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000, 0}}});
  h.send({.flags = kTcpRst, .seq = h.peer_nxt, .ts = {{1, 0}}});
  EXPECT_EQ(h.state(), st(TcpState::closed));
}

TEST(TcpHardening, Paws_OldTsvalDroppedAndAckedEchoingTsRecent_Rfc7323_5_3) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000, 0}}});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("new"), .ts = {{0x80000000u, 0}}});
  h.expect({.ack = h.peer_nxt + 3});
  h.peer_nxt += 3;
  // 1000 is "older" than 0x80000000 in the modular sense: a duplicate from an old incarnation.
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("dup"), .ts = {{1000, 0}}});
  const Sent a = h.expect({.flags = kTcpAck, .ack = h.peer_nxt, .len = 0});
  EXPECT_EQ(a.opts.ts.tsecr, 0x80000000u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 1u);
  EXPECT_EQ(h.read(), "new");
}

TEST(TcpHardening, Paws_TsRecentIdle24DaysIsInvalidAndReplaced_Rfc7323_5_5) {
  TcpHarness h(ts_config());
  accept_with(h, {.ts = {{1000000, 0}}});
  h.run_until(h.now + std::chrono::hours(25 * 24));
  // The peer's clock went backwards meanwhile (e.g. it rebooted): not a PAWS drop after 24 days.
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("late"), .ts = {{50, 0}}});
  const Sent a = h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 4});
  EXPECT_EQ(h.read(), "late");
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 0u);
  EXPECT_EQ(a.opts.ts.tsecr, 50u) << "TS.Recent must take the accepted segment's TSval";
}

// --- RFC 6528 ISNs ------------------------------------------------------------------------------

TEST(TcpHardening, Isn_DiffersPerTupleAndAdvancesOnePer4us_Rfc6528_3) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn, .seq = 1, .mss = 1460, .sport = 1111});
  const std::uint32_t a = h.expect({.flags = kTcpSyn | kTcpAck, .dport = 1111}).seq;
  h.send({.flags = kTcpSyn, .seq = 1, .mss = 1460, .sport = 2222});
  const std::uint32_t b = h.expect({.flags = kTcpSyn | kTcpAck, .dport = 2222}).seq;
  EXPECT_NE(a, b);
  EXPECT_GT(static_cast<std::uint32_t>(a - b) > 1000000u ? 1 : 0, 0) << "ISNs of two tuples too close";
  // The same tuple 1 s later (after the first attempt was reset): M advanced by 250000.
  h.send({.flags = kTcpRst, .seq = 2, .sport = 1111});
  h.send({.flags = kTcpRst, .seq = 2, .sport = 2222});
  EXPECT_EQ(h.tcp->socket_count(), 1u);
  h.advance(1s);
  h.send({.flags = kTcpSyn, .seq = 5000, .mss = 1460, .sport = 1111});
  const std::uint32_t a2 = h.expect({.flags = kTcpSyn | kTcpAck, .dport = 1111}).seq;
  EXPECT_EQ(a2 - a, 250000u);
}

// --- SYN cookies --------------------------------------------------------------------------------

TEST(TcpHardening, SynQueueFull_ThirdSynGetsCookieAndNoState_Linux) {
  TcpConfig cfg = plain_config();
  cfg.syn_backlog = 2;
  TcpHarness h(cfg);
  h.listen();
  for (const std::uint16_t p : {1001, 1002}) {
    h.send({.flags = kTcpSyn, .seq = 7, .mss = 1460, .sport = p});
    h.expect({.flags = kTcpSyn | kTcpAck, .ack = 8, .dport = p});
  }
  EXPECT_EQ(h.tcp->socket_count(), 3u);
  EXPECT_EQ(h.counters.get(Counter::tcp_syn_cookies_sent), 0u);
  h.send({.flags = kTcpSyn, .seq = 7, .mss = 1460, .sport = 1003});
  h.expect({.flags = kTcpSyn | kTcpAck, .ack = 8, .dport = 1003});
  EXPECT_EQ(h.counters.get(Counter::tcp_syn_cookies_sent), 1u);
  EXPECT_EQ(h.tcp->socket_count(), 3u);
}

TEST(TcpHardening, SynCookie_WithoutTimestampsEncodesMssRoundedDown_Linux) {
  TcpConfig cfg = plain_config();
  cfg.syn_backlog = 0;
  cfg.window_scaling = true;  // offered by the peer, but a cookie without timestamps can't keep it
  cfg.sack = true;
  TcpHarness h(cfg);
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1400, .wscale = 4, .sack_perm = true});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  EXPECT_TRUE(sa.opts.has_mss);
  EXPECT_FALSE(sa.opts.has_wscale);
  EXPECT_FALSE(sa.opts.sack_permitted);
  EXPECT_FALSE(sa.opts.has_timestamps);
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 1, .window = 20000});
  auto c = h.tcp->accept(h.listener);
  ASSERT_TRUE(c.ok());
  h.conn = *c;
  h.nxt = sa.seq + 1;
  h.peer_nxt = kPeerIss + 1;
  EXPECT_EQ(info(h).snd_mss, 1300u);  // 1400 rounded down to the cookie table's 1300
  EXPECT_EQ(info(h).snd_wscale, 0);
  EXPECT_FALSE(info(h).sack);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(3000, 'm'));
  h.expect({.seq = h.nxt, .len = 1300});
  h.expect({.seq = h.nxt + 1300, .len = 1300});
  h.expect({.seq = h.nxt + 2600, .len = 400});
}

TEST(TcpHardening, SynCookie_WrongAckWrongSeqOrExpiredDroppedAndCounted_Linux) {
  TcpConfig cfg = plain_config();
  cfg.syn_backlog = 0;
  TcpHarness h(cfg);
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck});
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 2});  // cookie + 1 is wrong
  h.expect({.flags = kTcpRst, .seq = sa.seq + 2});
  h.send({.seq = kPeerIss + 5, .ack = sa.seq + 1});  // not the SYN's ISN + 1
  h.expect({.flags = kTcpRst, .seq = sa.seq + 1});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_syn_cookie), 2u);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
  h.advance(200s);  // beyond the cookie's lifetime
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 1});
  h.expect({.flags = kTcpRst});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_syn_cookie), 3u);
  EXPECT_EQ(h.tcp->accept(h.listener).error(), Errc::again);
}

// --- illegal flags and options ---------------------------------------------------------------

TEST(TcpHardening, SynRstDroppedAndCountedEverywhere_Linux) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpSyn | kTcpRst, .seq = h.peer_nxt});
  h.send({.flags = kTcpSyn | kTcpRst, .seq = 1, .sport = 3333});  // to the listener
  h.send({.flags = kTcpSyn | kTcpRst | kTcpAck, .seq = 1, .dport = 99});  // to a closed port
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::established));
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_flags), 3u);
}

TEST(TcpHardening, Established_SegmentsWithoutAckDroppedAndCounted_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  // No flags at all ("null scan"), FIN alone, FIN+PSH+URG ("Xmas"), data without ACK.
  h.send({.flags = 0, .seq = h.peer_nxt, .payload = bytes("null")});
  h.send({.flags = kTcpFin, .seq = h.peer_nxt});
  h.send({.flags = kTcpFin | kTcpPsh | kTcpUrg, .seq = h.peer_nxt, .payload = bytes("xmas")});
  h.send({.flags = kTcpPsh, .seq = h.peer_nxt, .payload = bytes("data")});
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::established));
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_flags), 4u);
}

TEST(TcpHardening, NoFlagsToListenerIgnoredToClosedPortReset_Rfc9293_3_10_7) {
  TcpHarness h;
  h.listen();
  h.send({.flags = 0, .seq = 100, .sport = 4444});
  h.send({.flags = kTcpFin, .seq = 100, .sport = 4444});
  h.expect_nothing();  // LISTEN: no SYN, no ACK -> drop
  h.send({.flags = 0, .seq = 100, .payload = bytes("abc"), .dport = 81});
  h.expect({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = 103, .window = 0});
  h.send({.flags = kTcpFin, .seq = 100, .dport = 81});
  h.expect({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = 101});  // FIN occupies a sequence number
}

TEST(TcpHardening, PortZeroDroppedAndCounted) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn, .seq = 1, .sport = 0});
  h.send({.flags = kTcpSyn, .seq = 1, .dport = 0});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_flags), 2u);
}

TEST(TcpHardening, UnknownOptionIgnored_Rfc9293_3_2) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1200, .raw_options = {std::byte{253}, std::byte{4}, std::byte{0xab}, std::byte{0xcd}}});
  h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_options), 0u);
}

TEST(TcpHardening, KnownOptionWithWrongLengthIgnoredLikeLinux) {
  TcpHarness h;
  // An MSS option of length 3 (and one byte of padding): skipped, so the MSS defaults to 536.
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .raw_options = {std::byte{2}, std::byte{3}, std::byte{5}, std::byte{0}}});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 1});
  h.conn = *h.tcp->accept(h.listener);
  EXPECT_EQ(info(h).snd_mss, 536u);  // RFC 9293 §3.7.1 default
}

TEST(TcpHardening, OptionLengthBelowTwoDroppedAndCounted_Rfc9293_3_1) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("x"), .raw_options = {std::byte{30}, std::byte{1}, std::byte{0}, std::byte{0}}});
  h.expect_nothing();
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_options), 1u);
}

TEST(TcpHardening, TruncatedHeaderDroppedAndCounted) {
  TcpHarness h;
  h.listen();
  Ipv4RxInfo ip;
  ip.src = kPeerIp;
  ip.dst = kLocalIp;
  const Bytes seg = tcp_segment(kPeerIp, kLocalIp, TcpSpec{.sport = 1, .dport = kLocalPort, .seq = 7, .flags = kTcpSyn}, {});
  h.tcp->on_segment(ip, ByteSpan(seg).first(12), h.now);
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_truncated), 1u);
}

}  // namespace
}  // namespace pno::test
