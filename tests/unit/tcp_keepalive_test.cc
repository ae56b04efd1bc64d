// TCP keep-alive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6) with Linux's knobs: SO_KEEPALIVE off by
// default, TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT (or the stack-wide defaults), probes of the form
// <SEQ=SND.UNA-1><ACK=RCV.NXT>, and death by RST + ETIMEDOUT after the last unanswered probe.
#include <gtest/gtest.h>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

TcpConfig ka_config() {
  TcpConfig c = plain_config();
  c.keepalive_idle = 5s;
  c.keepalive_intvl = 1s;
  c.keepalive_probes = 3;
  return c;
}

TEST(TcpKeepalive, OffByDefault_NoProbeAfterHoursIdle_Rfc1122_4_2_3_6) {
  TcpHarness h(ka_config());
  h.established_passive();
  EXPECT_EQ(*h.tcp->getsockopt(h.conn, SockOpt::keepalive), 0);
  h.run_until(h.now + 3h);
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::established));
}

TEST(TcpKeepalive, ConfigDefaults_ProbesAtIdleThenIntervalThenRstEtimedout_Rfc9293_3_8_4) {
  TcpHarness h(ka_config());
  h.established_passive();
  const Instant t0 = h.now;  // the last segment from the peer
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  EXPECT_EQ(*h.tcp->getsockopt(h.conn, SockOpt::keepidle), 5);
  EXPECT_EQ(*h.tcp->getsockopt(h.conn, SockOpt::keepintvl), 1);
  EXPECT_EQ(*h.tcp->getsockopt(h.conn, SockOpt::keepcnt), 3);
  for (const auto at : {5s, 6s, 7s}) {
    h.run_until(t0 + at - 1ms);
    h.expect_nothing();
    h.run_until(t0 + at);
    h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
  }
  h.run_until(t0 + 8s - 1ms);
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.run_until(t0 + 8s);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt, .len = 0});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kError);
  std::byte b[4];
  EXPECT_EQ(h.tcp->recv(h.conn, b).error(), Errc::timed_out);
  EXPECT_EQ(h.counters.get(Counter::tcp_keepalive_probes), 3u);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_timeouts), 1u);
}

TEST(TcpKeepalive, AnsweredProbeResetsCountAndKeepsConnection_Rfc9293_3_8_4) {
  TcpHarness h(ka_config());
  h.established_passive();
  const Instant t0 = h.now;
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  h.run_until(t0 + 6s);
  h.expect({.seq = h.nxt - 1, .len = 0});
  h.expect({.seq = h.nxt - 1, .len = 0});
  // The peer answers the second probe with a plain ACK.
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  const Instant answered = h.now;
  h.run_until(answered + 5s - 1ms);
  h.expect_nothing();
  h.run_until(answered + 5s);
  h.expect({.seq = h.nxt - 1, .len = 0});
  // Three more unanswered probes are allowed again (the count restarted).
  h.run_until(answered + 7s);
  h.expect({.seq = h.nxt - 1});
  h.expect({.seq = h.nxt - 1});
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.run_until(answered + 8s);
  h.expect({.flags = kTcpRst | kTcpAck});
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::timed_out);
}

TEST(TcpKeepalive, IdleCountsFromLastReceivedSegment_Rfc1122_4_2_3_6) {
  TcpHarness h(ka_config());
  h.established_passive();
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  h.advance(3s);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("hi")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 2});
  h.peer_nxt += 2;
  const Instant last = h.now;
  h.run_until(last + 5s - 1ms);
  h.expect_nothing();
  h.run_until(last + 5s);
  h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
}

TEST(TcpKeepalive, SetsockoptKeepidleWhileIdleIsRelativeToLastSegment_Linux) {
  TcpHarness h(ka_config());
  h.established_passive();
  const Instant t0 = h.now;
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  h.run_until(t0 + 2s);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepidle, 3), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepintvl, 2), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepcnt, 1), Errc::ok);
  h.run_until(t0 + 3s - 1ms);
  h.expect_nothing();
  h.run_until(t0 + 3s);
  h.expect({.seq = h.nxt - 1, .len = 0});
  h.run_until(t0 + 5s);
  h.expect({.flags = kTcpRst | kTcpAck});
  EXPECT_EQ(h.state(), st(TcpState::closed));
}

TEST(TcpKeepalive, ProbeCarriesTimestampsEchoingTsRecent_Rfc7323_3_2) {
  TcpConfig cfg = ka_config();
  cfg.timestamps = true;
  TcpHarness h(cfg);
  accept_with(h, {.ts = {{500, 0}}});
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  h.run_until(h.now + 5s);
  const Sent p = h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .len = 0});
  ASSERT_TRUE(p.opts.has_timestamps);
  EXPECT_EQ(p.opts.ts.tsecr, 501u);
}

TEST(TcpKeepalive, CloseWait_ProbesStillRunAndDetectDeadPeer_Linux) {
  TcpHarness h(ka_config());
  h.close_wait();
  const Instant t0 = h.now;
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  h.run_until(t0 + 7s);
  EXPECT_EQ(h.drain().size(), 3u);
  h.run_until(t0 + 8s);
  h.expect({.flags = kTcpRst | kTcpAck});
  EXPECT_EQ(h.state(), st(TcpState::closed));
}

TEST(TcpKeepalive, InvalidValuesRejectedEinval_Linux) {
  TcpHarness h(ka_config());
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepidle, 0), Errc::inval);
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepintvl, 0), Errc::inval);
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepcnt, 0), Errc::inval);
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepcnt, 128), Errc::inval);
}

}  // namespace
}  // namespace pno::test
