// Persist (zero-window probes), keepalive, SYN cookies, ISNs, the timer wheel and window scaling.
#include <gtest/gtest.h>

#include <string>

#include "stack/tcp/isn.hh"
#include "stack/tcp/timer_wheel.hh"
#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpTimers, Established_ZeroWindowProbesWithBackoff_Rfc9293_3_8_6_1) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 0});
  h.conn = *h.tcp->accept(h.listener);
  h.write("blocked");
  h.expect_nothing();
  const auto rto = std::chrono::microseconds((*h.tcp->info(h.conn)).rto_us);
  h.advance(rto);
  h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .len = 0});  // <SEQ=SND.UNA-1>
  h.advance(2 * rto - 1ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.flags = kTcpAck, .seq = h.nxt - 1});
  EXPECT_EQ(h.counters.get(Counter::tcp_zero_window_probes), 2u);
  // The window opens: data flows.
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 1000});
  h.expect({.seq = h.nxt, .payload = bytes("blocked")});
  EXPECT_EQ(h.state(), st(TcpState::established));
}

TEST(TcpTimers, Established_KeepaliveProbesThenEtimedout_Rfc9293_3_8_4) {
  TcpHarness h;
  h.established_passive();
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepidle, 10), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepintvl, 2), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepcnt, 2), Errc::ok);
  h.run_until(h.now + 9s);
  h.expect_nothing();
  h.run_until(h.now + 1s);
  h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
  // The peer answers: the connection stays, the next probe comes after keepidle again.
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.run_until(h.now + 9s);
  h.expect_nothing();
  h.run_until(h.now + 1s);
  h.expect({.seq = h.nxt - 1});
  h.run_until(h.now + 2s);
  h.expect({.seq = h.nxt - 1});
  h.run_until(h.now + 2s);
  h.expect({.flags = kTcpRst | kTcpAck});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::timed_out);
  EXPECT_EQ(h.counters.get(Counter::tcp_keepalive_probes), 3u);
}

TEST(TcpTimers, Listen_SynQueueFullSendsSynCookieAndCookieAckEstablishes) {
  TcpConfig cfg = plain_config();
  cfg.syn_backlog = 0;  // every SYN overflows the SYN queue
  cfg.timestamps = true;
  cfg.window_scaling = true;
  cfg.sack = true;
  TcpHarness h(cfg);
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .wscale = 5, .sack_perm = true, .ts = {{77, 0}}});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  EXPECT_EQ(h.counters.get(Counter::tcp_syn_cookies_sent), 1u);
  EXPECT_EQ(h.tcp->socket_count(), 1u);  // no state kept
  ASSERT_TRUE(sa.opts.has_timestamps);
  EXPECT_TRUE(sa.opts.has_wscale);
  EXPECT_TRUE(sa.opts.sack_permitted);
  // A forged ACK gets a RST; the right one creates the connection.
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 2, .ts = {{78, sa.opts.ts.tsval}}});
  h.expect({.flags = kTcpRst});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_syn_cookie), 1u);
  h.send({.seq = kPeerIss + 1, .ack = sa.seq + 1, .window = 10, .payload = bytes("hi"), .ts = {{78, sa.opts.ts.tsval}}});
  auto c = h.tcp->accept(h.listener);
  ASSERT_TRUE(c.ok());
  const auto i = *h.tcp->info(*c);
  EXPECT_EQ(i.state, st(TcpState::established));
  EXPECT_EQ(i.snd_wscale, 5);  // recovered from the cookie's TSval bits
  EXPECT_TRUE(i.sack);
  EXPECT_EQ(i.snd_wnd, 10u << 5);
  EXPECT_EQ(i.snd_mss, 1448u);
  EXPECT_EQ(h.read(100, *c), "hi");
}

TEST(TcpTimers, SynCookieExpires) {
  tcp::IsnGenerator g(42);
  const tcp::FourTuple t{Endpoint{kLocalIp, 80}, Endpoint{kPeerIp, 1234}};
  const Instant t0 = instant_from_ns(5'000'000'000'000);
  const tcp::SeqNum iss = g.cookie_iss(t, tcp::SeqNum(100), 1460, t0);
  EXPECT_EQ(g.cookie_check(t, tcp::SeqNum(101), iss + 1, t0 + 30s), std::optional<std::uint16_t>(1460));
  EXPECT_FALSE(g.cookie_check(t, tcp::SeqNum(101), iss + 1, t0 + 200s).has_value());
  EXPECT_FALSE(g.cookie_check(t, tcp::SeqNum(101 + 0x12345), iss + 1, t0).has_value());  // another SYN's ISN
}

TEST(TcpTimers, IsnDiffersPerTupleAndAdvancesWithTime_Rfc6528) {
  tcp::IsnGenerator g(42);
  const tcp::FourTuple a{Endpoint{kLocalIp, 80}, Endpoint{kPeerIp, 1234}};
  const tcp::FourTuple b{Endpoint{kLocalIp, 80}, Endpoint{kPeerIp, 1235}};
  const Instant t0 = instant_from_ns(1'000'000'000);
  EXPECT_NE(g.isn(a, t0), g.isn(b, t0));
  EXPECT_EQ(g.isn(a, t0 + 4us) - g.isn(a, t0), 1);  // M ticks every 4 us
}

TEST(TcpTimers, TimerWheelFiresInOrderAndToleratesStaleEntries) {
  const Instant t0 = instant_from_ns(1'000'000'000);
  tcp::TimerWheel w(t0);
  w.schedule(1, t0 + 5ms);
  w.schedule(2, t0 + 10s);  // beyond one revolution (4096 ms)
  w.schedule(3, t0 + 1500us);
  EXPECT_LE(w.next_deadline(), t0 + 2ms);
  std::vector<std::uint32_t> fired;
  w.expire(t0 + 5ms, [&](std::uint32_t k, Instant) { fired.push_back(k); });
  EXPECT_EQ(fired, (std::vector<std::uint32_t>{3, 1}));
  w.expire(t0 + 9s, [&](std::uint32_t k, Instant) { fired.push_back(k); });
  EXPECT_EQ(fired.size(), 2u);
  w.expire(t0 + 10s, [&](std::uint32_t k, Instant) { fired.push_back(k); });
  EXPECT_EQ(fired.back(), 2u);
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), kNever);
}

TEST(TcpTimers, Established_WindowScaleAppliedBothWays_Rfc7323_2) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 1 << 20;
  cfg.rcvbuf_max = 4 << 20;
  TcpHarness h(cfg);
  h.syn_received({.wscale = 2});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 1000});
  h.conn = *h.tcp->accept(h.listener);
  EXPECT_EQ((*h.tcp->info(h.conn)).snd_wnd, 4000u);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("x")});
  const Sent a = h.expect({.flags = kTcpAck});
  // Our shift is 7 (4 MiB buffer): the field is the free space >> 7.
  EXPECT_EQ(a.window, ((1u << 20) - 1) >> 7);
}

}  // namespace
}  // namespace pno::test
