// Connection establishment, RFC 9293 §3.5 and §3.10.7.2-§3.10.7.4, against a scripted peer.
#include <gtest/gtest.h>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpHandshake, Listen_SynSendsSynack_Rfc9293_3_10_7_2) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1200});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1, .sport = kLocalPort, .dport = kPeerPort});
  EXPECT_TRUE(sa.opts.has_mss);
  EXPECT_EQ(sa.opts.mss, 1460);
  // The peer offered neither: the SYN-ACK must not offer them either (RFC 7323 §1.3, RFC 2018 §2).
  EXPECT_FALSE(sa.opts.has_wscale);
  EXPECT_FALSE(sa.opts.has_timestamps);
  EXPECT_FALSE(sa.opts.sack_permitted);
  EXPECT_EQ(h.tcp->accept(h.listener).error(), Errc::again);
}

TEST(TcpHandshake, SynReceived_AckEstablishesAndAccepts_Rfc9293_3_10_7_4) {
  TcpHarness h;
  const SocketId c = h.established_passive();
  ASSERT_NE(c, kInvalidSocket);
  EXPECT_EQ(h.state(), st(TcpState::established));
  EXPECT_TRUE(h.tcp->readiness(c) & kWritable);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_passive_opens), 1u);
  auto peer = h.tcp->peer_endpoint(c);
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(*peer, (Endpoint{kPeerIp, kPeerPort}));
}

TEST(TcpHandshake, Listen_ReadableEventWhenConnectionQueued) {
  TcpHarness h;
  h.syn_received();
  SocketEvent ev;
  while (h.tcp->next_event(ev)) {
  }
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  ASSERT_TRUE(h.tcp->next_event(ev));
  EXPECT_EQ(ev.id, h.listener);
  EXPECT_TRUE(ev.ready & kReadable);
}

TEST(TcpHandshake, SynSent_SynackEstablishes_Rfc9293_3_10_7_3) {
  TcpHarness h;
  const SocketId c = h.established_active();
  EXPECT_EQ(h.state(), st(TcpState::established));
  EXPECT_TRUE(h.tcp->readiness(c) & kWritable);
  EXPECT_EQ(h.tcp->connect(c, Endpoint{kPeerIp, kPeerPort}), Errc::is_conn);
}

TEST(TcpHandshake, SynSent_ConnectTwiceIsAlready) {
  TcpHarness h;
  const SocketId c = h.syn_sent();
  EXPECT_EQ(h.tcp->connect(c, Endpoint{kPeerIp, kPeerPort}), Errc::already);
  EXPECT_EQ(h.tcp->send(c, as_bytes("x")).error(), Errc::again);
}

TEST(TcpHandshake, SynSent_RstWithGoodAckRefuses_Rfc9293_3_10_7_3) {
  TcpHarness h;
  const SocketId c = h.syn_sent();
  h.send({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = h.nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_TRUE(h.tcp->readiness(c) & kError);
  EXPECT_TRUE(h.tcp->readiness(c) & kHangup);
  EXPECT_EQ(h.tcp->take_error(c), Errc::conn_refused);
  h.expect_nothing();
}

TEST(TcpHandshake, SynSent_RstWithoutAckIgnored_Rfc5961_3_2) {
  TcpHarness h;
  h.syn_sent();
  h.send({.flags = kTcpRst, .seq = kPeerIss});
  EXPECT_EQ(h.state(), st(TcpState::syn_sent));
}

TEST(TcpHandshake, SynSent_BadAckGetsRst_Rfc9293_3_10_7_3) {
  TcpHarness h;
  h.syn_sent();
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = h.nxt + 100});
  h.expect({.flags = kTcpRst, .seq = h.nxt + 100});
  EXPECT_EQ(h.state(), st(TcpState::syn_sent));
}

TEST(TcpHandshake, SynSent_SimultaneousOpen_Rfc9293_3_5) {
  TcpHarness h;
  h.syn_sent();
  // The peer's SYN crosses ours: SYN-RECEIVED, and a SYN-ACK with our original ISS.
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460});
  EXPECT_EQ(h.state(), st(TcpState::syn_received));
  h.expect({.flags = kTcpSyn | kTcpAck, .seq = h.iss, .ack = kPeerIss + 1});
  // The peer's SYN-ACK of our SYN completes it, and is acknowledged.
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = kPeerIss + 1});
  EXPECT_EQ(h.state(), st(TcpState::established));
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kWritable);
}

TEST(TcpHandshake, SynSent_RetransmitsSynWithBackoff_Rfc6298_5_5) {
  TcpHarness h;
  h.syn_sent();
  h.advance(999ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.flags = kTcpSyn, .seq = h.iss});
  h.advance(1999ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.flags = kTcpSyn, .seq = h.iss});
}

TEST(TcpHandshake, SynSent_GivesUpAfterSynRetriesEtimedout) {
  TcpConfig cfg = plain_config();
  cfg.syn_retries = 2;
  TcpHarness h(cfg);
  const SocketId c = h.syn_sent();
  h.run_until(h.now + 1s);
  h.expect({.flags = kTcpSyn});
  h.run_until(h.now + 2s);
  h.expect({.flags = kTcpSyn});
  h.run_until(h.now + 4s);
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(c), Errc::timed_out);
}

TEST(TcpHandshake, SynReceived_SynackRetransmitted_Rfc6298) {
  TcpHarness h;
  h.syn_received();
  h.advance(1s);
  h.expect({.flags = kTcpSyn | kTcpAck, .seq = h.iss, .ack = kPeerIss + 1});
  // A retransmitted SYN from the peer gets the SYN-ACK again.
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460});
  h.expect({.flags = kTcpSyn | kTcpAck, .seq = h.iss, .ack = kPeerIss + 1});
}

TEST(TcpHandshake, SynReceived_BadAckGetsRst_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 5});
  h.expect({.flags = kTcpRst, .seq = h.nxt + 5});
}

TEST(TcpHandshake, SynReceived_RstReturnsToListen_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.syn_received();
  const std::size_t before = h.tcp->socket_count();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt});
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
  EXPECT_EQ(h.tcp->accept(h.listener).error(), Errc::again);
  // The listener still works.
  h.send({.flags = kTcpSyn, .seq = kPeerIss + 1000, .mss = 1460});
  h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1001});
}

TEST(TcpHandshake, ClosedPort_SynGetsRstAck_Rfc9293_3_10_7_1) {
  TcpHarness h;
  h.send({.flags = kTcpSyn, .seq = 500, .dport = 81});
  h.expect({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = 501});
  h.send({.flags = kTcpAck, .seq = 500, .ack = 777, .dport = 81});
  h.expect({.flags = kTcpRst, .seq = 777});
  h.send({.flags = kTcpRst, .seq = 500, .dport = 81});
  h.expect_nothing();  // never RST a RST
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_no_socket), 3u);
}

TEST(TcpHandshake, Listen_AckWithoutConnectionGetsRst_Rfc9293_3_10_7_2) {
  TcpConfig cfg = plain_config();
  cfg.syn_cookies = false;
  TcpHarness h(cfg);
  h.listen();
  h.send({.seq = 1, .ack = 1234});
  h.expect({.flags = kTcpRst, .seq = 1234});
}

TEST(TcpHandshake, OptionsNegotiatedWhenBothOffer_Rfc7323_Rfc2018) {
  TcpConfig cfg = plain_config();
  cfg.timestamps = cfg.sack = cfg.window_scaling = true;
  cfg.rcvbuf_max = 6 * 1024 * 1024;
  TcpHarness h(cfg);
  h.listen();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .wscale = 7, .sack_perm = true, .ts = {{555, 0}}});
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  EXPECT_TRUE(sa.opts.has_wscale);
  EXPECT_EQ(sa.opts.wscale, 7);
  EXPECT_TRUE(sa.opts.sack_permitted);
  ASSERT_TRUE(sa.opts.has_timestamps);
  EXPECT_EQ(sa.opts.ts.tsecr, 555u);
  h.iss = sa.seq;
  h.nxt = sa.seq + 1;
  h.peer_nxt = kPeerIss + 1;
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 100, .ts = {{556, sa.opts.ts.tsval}}});
  auto c = h.tcp->accept(h.listener);
  ASSERT_TRUE(c.ok());
  auto info = h.tcp->info(*c);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE((*info).timestamps);
  EXPECT_TRUE((*info).sack);
  EXPECT_EQ((*info).snd_wscale, 7);
  EXPECT_EQ((*info).rcv_wscale, 7);
  EXPECT_EQ((*info).snd_wnd, 100u << 7);  // window of a non-SYN segment is scaled (RFC 7323 §2.2)
  EXPECT_EQ((*info).snd_mss, 1448u);      // MSS minus the 12 bytes of timestamps
}

}  // namespace
}  // namespace pno::test
