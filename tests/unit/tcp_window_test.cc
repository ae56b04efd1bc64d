// Flow control and ACK policy: zero window and the persist timer (RFC 9293 §3.8.6.1, RFC 1122
// §4.2.2.17), window scaling (RFC 7323 §2), never shrinking the window (RFC 7323 §2.4), silly window
// syndrome avoidance on both sides (RFC 9293 §3.8.6.2), Nagle / TCP_NODELAY (§3.7.4), and delayed
// ACKs (RFC 9293 §3.8.6.3, RFC 5681 §4.2, Linux quick-ACK mode).
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

/// ESTABLISHED where the peer's final ACK offers `window`.
void open_with_window(TcpHarness& h, std::uint16_t window) {
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = window});
  h.conn = *h.tcp->accept(h.listener);
}

TEST(TcpWindow, ZeroWindow_ProbesBackOffAndAnsweredProbesNeverTimeOut_Rfc1122_4_2_2_17) {
  TcpConfig cfg = plain_config();
  cfg.retries2 = 3;
  TcpHarness h(cfg);
  open_with_window(h, 0);
  h.write("blocked");
  h.expect_nothing();
  const Instant t0 = h.now;
  // RTO 200 ms, doubling: probes at 200, 600, 1400, 3000, 6200, 12600 ms.
  for (const auto at : {200ms, 600ms, 1400ms, 3000ms, 6200ms, 12600ms}) {
    h.run_until(t0 + at - 1ms);
    h.expect_nothing();
    h.run_until(t0 + at);
    h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
    h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 0});  // still closed
    h.expect_nothing();
  }
  EXPECT_EQ(h.state(), st(TcpState::established));  // 6 probes > retries2, but all answered
  EXPECT_EQ(h.counters.get(Counter::tcp_zero_window_probes), 6u);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 100});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .payload = bytes("blocked")});
}

TEST(TcpWindow, ZeroWindow_UnansweredProbesTimeOutEtimedout_Linux) {
  TcpConfig cfg = plain_config();
  cfg.retries2 = 3;
  TcpHarness h(cfg);
  open_with_window(h, 0);
  h.write("blocked");
  const Instant t0 = h.now;
  for (const auto at : {200ms, 600ms, 1400ms}) {
    h.run_until(t0 + at);
    h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .len = 0});
  }
  h.run_until(t0 + 3000ms - 1ms);
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.run_until(t0 + 3000ms);
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::timed_out);
}

TEST(TcpWindow, SenderSws_RuntHeldUntilPersistOverride_Rfc9293_3_8_6_2_1) {
  TcpHarness h;
  open_with_window(h, 3000);
  h.write(std::string(6000, 'w'));
  h.expect({.seq = h.nxt, .len = 1460});
  h.expect({.seq = h.nxt + 1460, .len = 1460});
  h.expect_nothing();
  // Everything acknowledged, but only 1000 bytes of window: less than MSS and than half the
  // largest window offered (1500), so the sender waits...
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 2920, .window = 1000});
  h.expect_nothing();
  // ...until the override timeout (the persist timer) sends what fits.
  h.advance(rto(h));
  h.expect({.seq = h.nxt + 2920, .len = 1000});
}

TEST(TcpWindow, WindowScale_NegotiatedPassiveSynUnscaledLaterScaled_Rfc7323_2_2) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 65536;
  cfg.rcvbuf_max = 1 << 20;  // shift 5 covers it: 65535 << 5 >= 1 MiB
  TcpHarness h(cfg);
  const Sent sa = accept_with(h, {.wscale = 3}, {.window = 1000});
  ASSERT_TRUE(sa.opts.has_wscale);
  EXPECT_EQ(sa.opts.wscale, 5);
  EXPECT_EQ(sa.window, 65535);  // a <SYN>'s window is never scaled
  EXPECT_EQ(info(h).snd_wnd, 8000u);
  EXPECT_EQ(info(h).snd_wscale, 3);
  EXPECT_EQ(info(h).rcv_wscale, 5);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 1000, .payload = bytes("x")});
  const Sent a = h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 1});
  // 65535 bytes free, advertised in units of 32 without pulling the edge left: 2048 << 5.
  EXPECT_EQ(a.window, 2048);
  // The peer's scaled window limits our sending: 1000 << 3 = 8000 bytes, i.e. five full
  // segments; the 700-byte remainder is a runt below half the window (sender SWS) and waits.
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(10000, 'y'));
  for (std::uint32_t i = 0; i < 5; ++i) h.expect({.seq = h.nxt + i * 1460, .len = 1460});
  h.expect_nothing();
  // The window opens by the scaled amount: 1100 << 3 = 8800 bytes past the new SND.UNA.
  h.send({.seq = h.peer_nxt + 1, .ack = h.nxt + 7300, .window = 1100});
  std::uint32_t sent = 0;
  for (const Sent& x : h.drain()) sent += static_cast<std::uint32_t>(x.payload.size());
  EXPECT_EQ(sent, 2700u);  // the rest of the data (10000 - 7300) fits
}

TEST(TcpWindow, WindowScale_PeerWithoutOptionMeansNoScalingEitherWay_Rfc7323_1_3) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 1 << 20;
  cfg.rcvbuf_max = 4 << 20;
  TcpHarness h(cfg);
  const Sent sa = accept_with(h, {}, {.window = 1000});
  EXPECT_FALSE(sa.opts.has_wscale);
  EXPECT_EQ(info(h).rcv_wscale, 0);
  EXPECT_EQ(info(h).snd_wscale, 0);
  EXPECT_EQ(info(h).snd_wnd, 1000u);  // not scaled
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 1000, .payload = bytes("x")});
  const Sent a = h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 1});
  // 1 MiB free, but unscaled the field says at most 65535; the right edge stays where the
  // SYN-ACK put it (moving it by one byte would be silly window syndrome).
  EXPECT_EQ(sa.window, 65535);
  EXPECT_EQ(a.window, 65534);
}

TEST(TcpWindow, WindowScale_ActiveOpenOffersShiftAndScalesAfterSynAck_Rfc7323_2_2) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_max = 1 << 20;
  TcpHarness h(cfg);
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
  h.conn = *s;
  const Sent syn = h.expect({.flags = kTcpSyn});
  ASSERT_TRUE(syn.opts.has_wscale);
  EXPECT_EQ(syn.opts.wscale, 5);
  EXPECT_EQ(syn.window, 65535);
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = syn.seq + 1, .window = 5000, .mss = 1460, .wscale = 3,
          .dport = syn.sport});
  h.drain();
  EXPECT_EQ(info(h).snd_wnd, 5000u);  // SYN-ACK window unscaled
  h.send({.seq = kPeerIss + 1, .ack = syn.seq + 1, .window = 5000, .dport = syn.sport});
  EXPECT_EQ(info(h).snd_wnd, 40000u);
}

TEST(TcpWindow, WindowScale_ActiveOpenPeerDeclinesNoScaling_Rfc7323_2_2) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_max = 1 << 20;
  TcpHarness h(cfg);
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
  h.conn = *s;
  const Sent syn = h.expect({.flags = kTcpSyn});
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = syn.seq + 1, .window = 5000, .mss = 1460,
          .dport = syn.sport});
  const Sent a = h.expect({.flags = kTcpAck, .ack = kPeerIss + 1});
  EXPECT_EQ(info(h).rcv_wscale, 0);
  EXPECT_EQ(a.window, 65535);  // 64 KiB buffer, unscaled
  h.send({.seq = kPeerIss + 1, .ack = syn.seq + 1, .window = 5000, .dport = syn.sport});
  EXPECT_EQ(info(h).snd_wnd, 5000u);
}

TEST(TcpWindow, WindowScale_PeerShiftAbove14ClampedTo14_Rfc7323_2_3) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  TcpHarness h(cfg);
  accept_with(h, {.wscale = 15}, {.window = 1});
  EXPECT_EQ(info(h).snd_wscale, 14);
  EXPECT_EQ(info(h).snd_wnd, 1u << 14);
}

TEST(TcpWindow, Receiver_RightEdgeNeverMovesLeft_Rfc7323_2_4) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 65536;
  cfg.rcvbuf_max = 65536 * 4;  // shift 3
  TcpHarness h(cfg);
  accept_with(h, {.wscale = 0});
  const std::uint8_t ws = info(h).rcv_wscale;
  ASSERT_EQ(ws, 3);
  std::uint32_t edge = h.peer_nxt + 65535;  // the SYN-ACK's window (unscaled)
  std::uint32_t seq = h.peer_nxt;
  const std::size_t sizes[] = {1000, 333, 77, 1460, 1, 999, 1460, 1460, 13};
  for (int round = 0; round < 8; ++round) {
    for (const std::size_t n : sizes) {
      h.send({.seq = seq, .ack = h.nxt, .payload = pattern(n)});
      seq += static_cast<std::uint32_t>(n);
      for (const Sent& a : h.drain()) {
        const std::uint32_t e = right_edge(a, ws);
        EXPECT_GE(static_cast<std::int32_t>(e - edge), 0) << "window shrank: " << a.str();
        edge = e;
      }
    }
    if (round == 3) {
      // The application shrinks SO_RCVBUF: the advertised edge still may not move left.
      ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::rcvbuf, 1024), Errc::ok);
    }
  }
  h.advance(40ms);
  for (const Sent& a : h.drain()) EXPECT_GE(static_cast<std::int32_t>(right_edge(a, ws) - edge), 0) << a.str();
}

TEST(TcpWindow, ReceiverSws_SmallReadsDoNotReopenWindowUntilMss_Rfc9293_3_8_6_2_2) {
  TcpConfig cfg = plain_config();
  cfg.rcvbuf_initial = 4096;
  TcpHarness h(cfg);
  h.established_passive();
  std::uint32_t s = h.peer_nxt;
  for (int i = 0; i < 3; ++i) {
    h.send({.seq = s, .ack = h.nxt, .payload = Bytes(1460, std::byte{1})});
    s += i < 2 ? 1460 : 1176;
  }
  ASSERT_EQ(h.drain().back().window, 0);
  EXPECT_EQ(h.read(1000).size(), 1000u);
  h.expect_nothing();  // 1000 bytes free: less than min(MSS, buffer/2)
  // A zero-window probe is answered with the window still closed.
  h.send({.seq = s, .ack = h.nxt, .payload = bytes("p")});
  h.expect({.flags = kTcpAck, .ack = s, .window = 0});
  EXPECT_EQ(h.read(460).size(), 460u);
  h.expect({.flags = kTcpAck, .ack = s, .window = 1460});
}

TEST(TcpWindow, Nagle_FullSegmentsGoRuntWaitsForAckMinshall_Rfc9293_3_7_4) {
  TcpHarness h;
  h.established_passive();
  h.write("a");
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.write(std::string(3000, 'b'));
  h.expect({.seq = h.nxt + 1, .len = 1460});
  h.expect({.seq = h.nxt + 1461, .len = 1460});
  h.expect_nothing();  // the 80-byte tail waits: "a" (a partial segment) is unacknowledged
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect({.seq = h.nxt + 2921, .len = 80, .psh = true});
}

TEST(TcpWindow, Nagle_SettingNodelayPushesHeldRunt_Linux) {
  TcpHarness h;
  h.established_passive();
  h.write("a");
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.write("b");
  h.expect_nothing();
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.expect({.seq = h.nxt + 1, .payload = bytes("b")});
  EXPECT_EQ(*h.tcp->getsockopt(h.conn, SockOpt::nodelay), 1);
}

TEST(TcpWindow, DelayedAck_SingleFullSegmentAckedAfterExactly40ms_Rfc9293_3_8_6_3) {
  TcpHarness h;
  h.established_passive();
  leave_quickack(h);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = pattern(1460)});
  h.expect_nothing();
  h.advance(39ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 1460, .len = 0});
}

TEST(TcpWindow, DelayedAck_ThirdFullSegmentWaitsAgain_Rfc5681_4_2) {
  TcpHarness h;
  h.established_passive();
  leave_quickack(h);
  std::uint32_t s = h.peer_nxt;
  for (int i = 0; i < 3; ++i) {
    h.send({.seq = s, .ack = h.nxt, .payload = pattern(1460)});
    s += 1460;
    if (i == 1) {
      h.expect({.flags = kTcpAck, .ack = s});
    } else {
      h.expect_nothing();
    }
  }
  h.advance(40ms);
  h.expect({.flags = kTcpAck, .ack = s});
}

TEST(TcpWindow, DelayedAck_PiggybackedOnResponseNoSeparateAck_Rfc9293_3_8_6_3) {
  TcpHarness h;
  h.established_passive();
  leave_quickack(h);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("req")});
  h.expect_nothing();
  h.advance(10ms);
  h.write("resp");
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 3, .payload = bytes("resp")});
  h.advance(40ms);
  h.expect_nothing();  // the delayed ACK was carried by the data
}

TEST(TcpWindow, DelayedAck_OutOfOrderAckedAtOnceAndQuickAckFollows_Rfc5681_4_2_Linux) {
  TcpHarness h;
  h.established_passive();
  leave_quickack(h);
  const std::uint32_t s = h.peer_nxt;
  h.send({.seq = s + 10, .ack = h.nxt, .payload = pattern(10, 10)});
  h.expect({.flags = kTcpAck, .ack = s});  // duplicate ACK at once
  h.send({.seq = s, .ack = h.nxt, .payload = pattern(10)});
  h.expect({.flags = kTcpAck, .ack = s + 20});  // the hole filled: at once
  // Quick-ACK mode after reordering: the next small in-order segment is ACKed at once too.
  h.send({.seq = s + 20, .ack = h.nxt, .payload = pattern(5, 20)});
  h.expect({.flags = kTcpAck, .ack = s + 25});
  EXPECT_EQ(h.read(), pattern_str(25));
}

}  // namespace
}  // namespace pno::test
