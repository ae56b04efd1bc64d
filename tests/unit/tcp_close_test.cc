// Connection termination from every state, RFC 9293 §3.6 and §3.10.7.4 (FIN handling), TIME-WAIT.
#include <gtest/gtest.h>

#include "stack/tcp/tcp_state.hh"
#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

using tcp::TcpState;
constexpr auto st(TcpState s) { return static_cast<std::uint8_t>(s); }

TEST(TcpClose, established_shutdown_write_sends_fin_fin_wait_1_rfc9293_3_6) {
  TcpHarness h;
  h.fin_wait_1();
  EXPECT_EQ(h.state(), st(TcpState::fin_wait_1));
}

TEST(TcpClose, fin_wait_1_ack_of_fin_fin_wait_2_rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_2();
  EXPECT_EQ(h.state(), st(TcpState::fin_wait_2));
}

TEST(TcpClose, fin_wait_2_fin_time_wait_then_closed_after_2msl_rfc9293_3_4_2) {
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

TEST(TcpClose, time_wait_retransmitted_fin_reacked_and_timer_restarted_rfc9293_3_10_7_4) {
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

TEST(TcpClose, fin_wait_1_fin_without_ack_closing_then_time_wait_rfc9293_3_6) {
  TcpHarness h;
  h.closing();  // simultaneous close
  EXPECT_EQ(h.state(), st(TcpState::closing));
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
}

TEST(TcpClose, fin_wait_1_fin_with_ack_goes_time_wait_rfc9293_3_10_7_4) {
  TcpHarness h;
  h.fin_wait_1();
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt});
  h.peer_nxt += 1;
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
  EXPECT_EQ(h.state(), st(TcpState::time_wait));
}

TEST(TcpClose, established_fin_close_wait_eof_rfc9293_3_10_7_4) {
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

TEST(TcpClose, close_wait_close_last_ack_then_closed_rfc9293_3_6) {
  TcpHarness h;
  h.last_ack();
  EXPECT_EQ(h.state(), st(TcpState::last_ack));
  const std::size_t before = h.tcp->socket_count();
  h.tcp->close(h.conn);
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, last_ack_fin_retransmitted_on_rto_rfc6298) {
  TcpHarness h;
  h.last_ack();
  h.advance(1s);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt});
}

TEST(TcpClose, fin_after_data_carried_on_last_segment) {
  TcpHarness h;
  h.established_passive();
  h.write("tail");
  h.expect({.seq = h.nxt, .payload = bytes("tail")});
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = h.nxt + 4});
}

TEST(TcpClose, close_with_unread_data_sends_rst_rfc2525_2_17) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("unread")});
  h.drain();
  const std::size_t before = h.tcp->socket_count();
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, close_with_linger_zero_sends_rst) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::linger, 0), Errc::ok);
  EXPECT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
}

TEST(TcpClose, orphaned_fin_wait_2_times_out) {
  TcpHarness h;
  h.fin_wait_2();
  const std::size_t before = h.tcp->socket_count();
  h.tcp->close(h.conn);
  h.run_until(h.now + 61s);
  EXPECT_EQ(h.tcp->socket_count(), before - 1);
}

TEST(TcpClose, data_after_close_resets_like_linux) {
  TcpHarness h;
  h.fin_wait_2();
  h.tcp->close(h.conn);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("late")});
  h.expect({.flags = kTcpRst | kTcpAck});
}

TEST(TcpClose, listener_close_resets_unaccepted_connections) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt});  // queued, not accepted
  EXPECT_EQ(h.tcp->close(h.listener), Errc::ok);
  h.expect({.flags = kTcpRst | kTcpAck, .seq = h.nxt});
  EXPECT_EQ(h.tcp->socket_count(), 0u);
}

TEST(TcpClose, established_rst_in_sequence_resets_econnreset_rfc9293_3_10_7_4) {
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
