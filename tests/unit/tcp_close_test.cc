// Connection termination from every state, RFC 9293 §3.6 and §3.10.7.4 (FIN handling), TIME-WAIT.
#include <gtest/gtest.h>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpClose, Established_ShutdownWriteSendsFinFinWait1_Rfc9293_3_6) {
  TcpHarness h;
  h.fin_wait_1();
  EXPECT_EQ(h.state(), st(TcpState::fin_wait_1));
}

TEST(TcpClose, FinWait1_AckOfFinFinWait2_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_2();
  EXPECT_EQ(h.state(), st(TcpState::fin_wait_2));
}

TEST(TcpClose, FinWait2_FinTimeWaitThenClosedAfter2msl_Rfc9293_3_4_2) {
  TcpHarness h;
  h.time_wait();
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  EXPECT_EQ(h.tcp->socket_count(), 2u);  // listener + the TIME-WAIT connection
  h.run_until(h.now + 2 * h.cfg.msl - 1ms);
  EXPECT_EQ(h.tcp->socket_count(), 2u);
  h.run_until(h.now + 2ms);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
  // The 4-tuple is free: a segment now gets a RST from the listener's port.
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.expect({.flags = kTcpRst, .seq = h.nxt});
}

TEST(TcpClose, TimeWait_RetransmittedFinReackedAndTimerRestarted_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.time_wait();
  h.tcp->close(h.conn);
  h.run_until(h.now + h.cfg.msl);
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt - 1, .ack = h.nxt});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  h.run_until(h.now + 2 * h.cfg.msl - 1ms);
  EXPECT_EQ(h.tcp->socket_count(), 2u);
  h.run_until(h.now + 2ms);
  EXPECT_EQ(h.tcp->socket_count(), 1u);
}

TEST(TcpClose, FinWait1_FinWithoutAckClosingThenTimeWait_Rfc9293_3_6) {
  TcpHarness h;
  h.closing();  // simultaneous close
  EXPECT_EQ(h.state(), st(TcpState::closing));
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
}

TEST(TcpClose, FinWait1_FinWithAckGoesTimeWait_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_1();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  h.peer_nxt += 1;
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
}

TEST(TcpClose, Established_FinCloseWaitEof_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.close_wait();
  EXPECT_EQ(h.state(), st(TcpState::close_wait));
  const auto r = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r & kReadable);
  EXPECT_TRUE(r & kReadHangup);
  std::byte b[8];
  auto n = h.tcp->recv(h.conn, b);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);  // EOF
  // Sending still works in CLOSE-WAIT.
  h.write("bye");
  h.expect({.seq = h.nxt, .ack = h.peer_nxt, .payload = bytes("bye")});
}

TEST(TcpClose, CloseWait_CloseLastAckThenClosed_Rfc9293_3_6) {
  TcpHarness h;
  h.last_ack();
  EXPECT_EQ(h.state(), st(TcpState::last_ack));
  const std::size_t before = h.tcp->socket_count();
  h.tcp->close(h.conn);
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, LastAck_FinRetransmittedOnRto_Rfc6298) {
  TcpHarness h;
  h.last_ack();
  h.advance(1s);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt});
}

TEST(TcpClose, FinAfterDataCarriedOnLastSegment) {
  TcpHarness h;
  h.established_passive();
  h.write("tail");
  h.expect({.seq = h.nxt, .payload = bytes("tail")});
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt + 4});
}

TEST(TcpClose, CloseWithUnreadDataSendsRst_Rfc2525_2_17) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("unread")});
  h.drain();
  const std::size_t before = h.tcp->socket_count();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, CloseWithLingerZeroSendsRst) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::linger, 0), Errc::ok);
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
}

TEST(TcpClose, OrphanedFinWait2TimesOut) {
  TcpHarness h;
  h.fin_wait_2();
  const std::size_t before = h.tcp->socket_count();
  h.tcp->close(h.conn);
  h.run_until(h.now + 61s);
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, DataAfterCloseResets_Linux) {
  TcpHarness h;
  h.fin_wait_2();
  h.tcp->close(h.conn);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("late")});
  h.expect({.flags = kTcpRst | kTcpAck});
}

TEST(TcpClose, ListenerCloseResetsUnacceptedConnections) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt});  // queued, not accepted
  EXPECT_EQ(h.tcp->close(h.listener), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), 0u);
}

TEST(TcpClose, Established_RstInSequenceResetsEconnreset_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::closed));
  const auto r = h.tcp->readiness(h.conn);
  EXPECT_TRUE(r & kError);
  EXPECT_TRUE(r & kHangup);
  std::byte b[4];
  EXPECT_EQ(h.tcp->recv(h.conn, b).error(), Errc::conn_reset);
  EXPECT_EQ(*h.tcp->recv(h.conn, b), 0u);
  EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
  h.expect_nothing();
}

}  // namespace
}  // namespace pno::test
