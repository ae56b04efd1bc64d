// Connection teardown from every state through close()/shutdown() (RFC 9293 §3.6, §3.10.4 CLOSE,
// §3.10.7.4 eighth step), TIME-WAIT lasting exactly 2*MSL (§3.4.2), half-close, EOF and EPIPE,
// and Linux's abortive close (unread data or SO_LINGER 0 -> RST, RFC 2525 §2.17).
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

TcpConfig short_msl() {
  TcpConfig c = plain_config();
  c.msl = 5s;  // TIME-WAIT = 10 s
  return c;
}

TEST(TcpTeardown, Established_CloseSendsFinAndOrphanIsFreedAfterTimeWait_Rfc9293_3_6) {
  TcpHarness h(short_msl());
  h.established_passive();
  ASSERT_EQ(h.tcp->socket_count(), 2u);
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .window = 65535, .len = 0});
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect_nothing();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 1, .ack = h.peer_nxt + 1});
  const Instant tw_start = h.now;
  h.run_until(tw_start + 10s - 1ms);
  EXPECT_EQ(h.tcp->socket_count(), 2u) << "TIME-WAIT ended before 2*MSL";
  h.run_until(tw_start + 10s);
  EXPECT_EQ(h.tcp->socket_count(), 1u) << "TIME-WAIT outlived 2*MSL";
  h.expect_nothing();  // TIME-WAIT ends silently
}

TEST(TcpTeardown, TimeWait_LastsExactlyTwoMslAsConfigured_Rfc9293_3_4_2) {
  TcpConfig cfg = plain_config();
  cfg.msl = 1500ms;
  TcpHarness h(cfg);
  h.time_wait();
  const Instant tw_start = h.now;
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
  // Not closed by the user: the connection reaches CLOSED (EOF, HUP) but the socket stays.
  h.run_until(tw_start + 3s - 1ms);
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
  h.run_until(tw_start + 3s);
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kHangup);
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::ok);  // a graceful end is no error
  std::byte b[4];
  EXPECT_EQ(*h.tcp->recv(h.conn, b), 0u);
}

TEST(TcpTeardown, TimeWait_RetransmittedFinReAckedAndTwoMslRestarted_Rfc9293_3_10_7_4) {
  TcpHarness h(short_msl());
  h.time_wait();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  const Instant tw_start = h.now;
  h.run_until(tw_start + 6s);
  // Our ACK of the peer's FIN was lost: the peer sends its FIN again (same sequence number).
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt - 1, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
  const Instant restarted = h.now;
  h.run_until(tw_start + 10s);
  EXPECT_EQ(h.tcp->socket_count(), 2u) << "2*MSL must restart on the retransmitted FIN";
  h.run_until(restarted + 10s - 1ms);
  EXPECT_EQ(h.tcp->socket_count(), 2u);
  h.run_until(restarted + 10s);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
}

TEST(TcpTeardown, CloseWait_CloseSendsFinLastAckThenFreedOnAck_Rfc9293_3_10_4) {
  TcpHarness h;
  h.close_wait();
  const std::size_t before = h.tcp->socket_count();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
  EXPECT_EQ(h.tcp->socket_count(), before);  // LAST-ACK, held by the protocol
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect_nothing();
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpTeardown, CloseWait_CloseWithUnreadDataSendsRst_Rfc2525_2_17) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("unread")});
  h.peer_nxt += 7;
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
  ASSERT_EQ(h.state(), st(TcpState::close_wait));
  const std::size_t before = h.tcp->socket_count();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  h.expect_nothing();
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpTeardown, Established_LingerZeroCloseSendsRstEvenWithUnsentData_Linux) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 0});
  h.conn = *h.tcp->accept(h.listener);
  h.write("queued");  // zero window: not sent
  h.expect_nothing();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::linger, 0), Errc::ok);
  const std::size_t before = h.tcp->socket_count();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = 0});
  h.expect_nothing();
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpTeardown, SynSent_CloseSendsNothingAndLateSynAckGetsRst_Rfc9293_3_10_4) {
  TcpHarness h;
  h.syn_sent();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect_nothing();
  EXPECT_EQ(h.tcp->socket_count(), 0u);
  h.run_until(h.now + 10s);
  h.expect_nothing();  // no SYN retransmission for a closed socket
  // The peer's SYN-ACK now finds no connection: <SEQ=SEG.ACK><CTL=RST> (RFC 9293 §3.10.7.1).
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = h.nxt, .mss = 1460});
  h.expect({.flags = kTcpRst, .seq = h.nxt, .len = 0});
}

TEST(TcpTeardown, SynSent_ShutdownWriteClosesLikeLinux) {
  TcpHarness h;
  h.syn_sent();
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::closed));
}

/// Simultaneous open (RFC 9293 §3.5 figure 8) up to SYN-RECEIVED with the SYN-ACK consumed.
void simultaneous_syn_received(TcpHarness& h) {
  h.syn_sent();
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460});
  h.expect({.flags = kTcpSyn | kTcpAck, .seq = h.iss, .ack = kPeerIss + 1});
  h.peer_nxt = kPeerIss + 1;
  ASSERT_EQ(h.state(), st(TcpState::syn_received));
}

TEST(TcpTeardown, SynReceived_CloseSendsFinOnceSynAcked_Rfc9293_3_10_4) {
  TcpHarness h;
  simultaneous_syn_received(h);
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  std::vector<Sent> out = h.drain();
  // The peer's SYN-ACK acknowledges our SYN.
  h.send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = h.nxt});
  for (Sent& s : h.drain()) out.push_back(std::move(s));
  bool fin = false;
  for (const Sent& s : out) {
    EXPECT_FALSE(s.flags & kTcpRst) << s.str();
    EXPECT_TRUE(s.payload.empty()) << s.str();
    if (s.flags & kTcpFin) {
      EXPECT_EQ(s.seq, h.nxt) << s.str();
      EXPECT_EQ(s.ack, h.peer_nxt) << s.str();
      fin = true;
    }
  }
  EXPECT_TRUE(fin) << "no FIN after close() in SYN-RECEIVED";
  // The peer ACKs our FIN and sends its own: TIME-WAIT (the closed id is gone; the protocol holds
  // the connection for 2*MSL).
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 1, .ack = h.peer_nxt + 1});
  EXPECT_EQ(h.tcp->socket_count(), 1u);
  h.run_until(h.now + 2 * h.cfg.msl);
  EXPECT_EQ(h.tcp->socket_count(), 0u);
}

TEST(TcpTeardown, SynReceived_CloseThenRtoResendsSynAckNotData_Rfc6298_5_4) {
  TcpHarness h;
  simultaneous_syn_received(h);
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.drain();
  h.run_until(h.now + 1s);
  const std::vector<Sent> out = h.drain();
  ASSERT_FALSE(out.empty()) << "the unacknowledged SYN must be retransmitted";
  for (const Sent& s : out) {
    EXPECT_TRUE(s.payload.empty()) << "retransmitted bytes that were never written: " << s.str();
  }
  EXPECT_TRUE(out[0].flags & kTcpSyn) << out[0].str();
  EXPECT_EQ(out[0].seq, h.iss);
}

TEST(TcpTeardown, FinWait1_CloseAfterShutdownSendsNothingAndCompletes_Rfc9293_3_10_4) {
  TcpHarness h(short_msl());
  h.fin_wait_1();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect_nothing();  // the FIN is already out
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.expect_nothing();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 1});
  h.run_until(h.now + 10s);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
}

TEST(TcpTeardown, FinWait2_PeerFinAckedAtOnceEntersTimeWait_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_2();
  leave_quickack(h);  // the FIN's ACK must not wait for the delayed-ACK timer even so
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 1});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
}

TEST(TcpTeardown, Closing_CloseThenAckEntersTimeWaitAndIsFreed_Rfc9293_3_6) {
  TcpHarness h(short_msl());
  h.closing();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect_nothing();
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.expect_nothing();
  const Instant tw = h.now;
  h.run_until(tw + 10s - 1ms);
  EXPECT_EQ(h.tcp->socket_count(), 2u);
  h.run_until(tw + 10s);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
}

TEST(TcpTeardown, Closing_FinRetransmittedOnRto_Rfc6298_5_4) {
  TcpHarness h;
  h.closing();
  h.run_until(h.now + rto(h));
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
}

TEST(TcpTeardown, SimultaneousClose_FinsCrossClosingThenTimeWait_Rfc9293_3_6_Figure13) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  // The peer's FIN was sent before ours arrived: it acknowledges only up to our FIN.
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 1, .ack = h.peer_nxt + 1});
  EXPECT_EQ(h.state(), st(TcpState::closing));
  const auto r = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r & kReadHangup);
  EXPECT_TRUE(r & kHangup);  // both directions shut
  h.send({.seq = h.peer_nxt + 1, .ack = h.nxt + 1});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
  h.expect_nothing();
}

TEST(TcpTeardown, CloseWithUnsentData_FinRidesOnLastDataSegmentWhenWindowOpens_Rfc9293_3_10_4) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 0});
  h.conn = *h.tcp->accept(h.listener);
  h.write("abc");
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect_nothing();  // zero window: neither data nor FIN
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 1000});
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .payload = bytes("abc")});
  h.expect_nothing();
}

TEST(TcpTeardown, HalfClose_ShutdownWriteStillReceivesData_Rfc9293_3_6) {
  TcpHarness h;
  h.fin_wait_2();
  const auto r0 = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r0 & kWritable);       // Linux reports OUT once the write side is shut
  EXPECT_FALSE(r0 & kReadHangup);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("more")});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 4, .len = 0});
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kReadable);
  EXPECT_EQ(h.read(), "more");
  h.send({.seq = h.peer_nxt + 4, .ack = h.nxt, .payload = bytes("data")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 8});
  EXPECT_EQ(h.read(), "data");
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt + 8, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 9});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
  std::byte b[8];
  EXPECT_EQ(*h.tcp->recv(h.conn, b), 0u);
}

TEST(TcpTeardown, FinWait1_DataFromPeerBeforeFinAckIsDelivered_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_1();
  // The peer's data does not acknowledge our FIN yet.
  h.send({.seq = h.peer_nxt, .ack = h.nxt - 1, .payload = bytes("late")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 4});
  EXPECT_EQ(h.state(), st(TcpState::fin_wait_1));
  EXPECT_EQ(h.read(), "late");
}

TEST(TcpTeardown, Eof_RecvReturnsDataThenZeroRepeatedly_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("abc")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 4});
  std::byte b[16];
  auto n = h.tcp->recv(h.conn, b, true);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);  // peek
  EXPECT_EQ(h.read(), "abc");
  for (int i = 0; i < 3; ++i) {
    auto z = h.tcp->recv(h.conn, b);
    ASSERT_TRUE(z.ok()) << to_errno(z.error());
    EXPECT_EQ(*z, 0u);
  }
  const auto r = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r & kReadable);
  EXPECT_TRUE(r & kReadHangup);
  EXPECT_FALSE(r & kHangup);  // our side is still open
  EXPECT_TRUE(r & kWritable);
}

TEST(TcpTeardown, ShutdownWrite_SendIsEpipeInEveryClosingState_Rfc9293_3_10_2) {
  {
    TcpHarness h;
    h.fin_wait_2();
    EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
  }
  {
    TcpHarness h;
    h.last_ack();
    EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
  }
  {
    TcpHarness h;
    h.time_wait();
    EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
  }
  {
    TcpHarness h;
    h.close_wait();
    EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::both), Errc::ok);
    EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
    h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt});
  }
}

TEST(TcpTeardown, ShutdownWriteTwice_OneFinOnly) {
  TcpHarness h;
  h.fin_wait_1();
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  h.expect_nothing();
}

TEST(TcpTeardown, ShutdownRead_RecvReturnsEofAtOnce) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::read), Errc::ok);
  std::byte b[4];
  auto n = h.tcp->recv(h.conn, b);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kReadHangup);
  h.expect_nothing();  // SHUT_RD sends nothing
}

TEST(TcpTeardown, Close_IdIsInvalidAfterwardsEbadf) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  // The connection lives on in the protocol (FIN-WAIT-1), but the handle is gone, as an fd is.
  EXPECT_EQ(h.tcp->close(h.conn), Errc::badf);
  EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::badf);
}

TEST(TcpTeardown, LastAck_PeerRstEndsWithoutError_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.last_ack();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::ok);
  h.expect_nothing();
}

TEST(TcpTeardown, CloseWait_PeerRstResetsEconnreset_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.close_wait();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.tcp->take_error(h.conn), Errc::conn_reset);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_resets), 1u);
}

}  // namespace
}  // namespace pno::test
