// Data transfer in ESTABLISHED: segmentation, Nagle, delayed ACK, out-of-order data, windows.
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpData, Established_DataInIsReadableAndAcked_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("hello")});
  EXPECT_TRUE(h.tcp->readiness(h.conn) & kReadable);
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 5u);
  EXPECT_EQ(h.read(), "hello");
  EXPECT_EQ(h.tcp->recv(h.conn, MutByteSpan{}).error(), Errc::ok);
  // Quick-ACK mode at the start of a connection (Linux): ACKed at once.
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt + 5});
}

TEST(TcpData, Established_DelayedAckAfterQuickack_Rfc9293_3_8_6_3) {
  TcpHarness h;
  h.established_passive();
  std::uint32_t seq = h.peer_nxt;
  // Leave quick-ACK mode: 16 single-byte segments each ACKed at once.
  for (int i = 0; i < 16; ++i) {
    h.send({.seq = seq, .ack = h.nxt, .payload = bytes("x")});
    seq += 1;
    h.expect({.flags = kTcpAck, .ack = seq});
  }
  h.send({.seq = seq, .ack = h.nxt, .payload = bytes("y")});
  seq += 1;
  h.expect_nothing();
  h.advance(39ms);
  h.expect_nothing();
  h.advance(1ms);
  h.expect({.flags = kTcpAck, .ack = seq});
}

TEST(TcpData, Established_AckEverySecondFullSegment_Rfc5681_4_2) {
  TcpHarness h;
  h.established_passive();
  std::uint32_t seq = h.peer_nxt;
  const Bytes full(1460, std::byte{'a'});
  for (int i = 0; i < 16; ++i) {
    h.send({.seq = seq, .ack = h.nxt, .payload = bytes("x")});
    seq += 1;
    h.expect({.flags = kTcpAck, .ack = seq});
  }
  h.read();
  h.send({.seq = seq, .ack = h.nxt, .payload = full});
  seq += 1460;
  h.expect_nothing();
  h.send({.seq = seq, .ack = h.nxt, .payload = full});
  seq += 1460;
  h.expect({.flags = kTcpAck, .ack = seq});
}

TEST(TcpData, Established_SendSegmentsAtMss_Rfc9293_3_7_1) {
  TcpHarness h;
  h.syn_received({.mss = 1000});
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.conn = *h.tcp->accept(h.listener);
  const std::string data(2500, 'z');
  EXPECT_EQ(h.write(data), 2500u);
  h.expect({.flags = kTcpAck, .seq = h.nxt, .len = 1000});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 1000, .len = 1000});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 2000, .len = 500, .psh = true});
  h.expect_nothing();
}

TEST(TcpData, Established_NagleHoldsRuntUntilAck_Rfc9293_3_7_4) {
  TcpHarness h;
  h.established_passive();
  h.write("a");
  h.expect({.flags = kTcpAck, .seq = h.nxt, .payload = bytes("a")});
  h.write("b");
  h.write("c");
  h.expect_nothing();  // "a" unacknowledged: the runt waits
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect({.flags = kTcpAck, .seq = h.nxt + 1, .payload = bytes("bc")});
}

TEST(TcpData, Established_NodelaySendsRuntsAtOnce) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write("a");
  h.expect({.seq = h.nxt, .payload = bytes("a")});
  h.write("b");
  h.expect({.seq = h.nxt + 1, .payload = bytes("b")});
}

TEST(TcpData, Established_CorkAndMsgMoreHoldPartialSegment) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::cork, 1), Errc::ok);
  h.write("abc");
  h.expect_nothing();
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::cork, 0), Errc::ok);
  h.expect({.seq = h.nxt, .payload = bytes("abc")});
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 3});
  ASSERT_TRUE(h.tcp->send(h.conn, as_bytes("de"), true).ok());
  h.expect_nothing();
  ASSERT_TRUE(h.tcp->send(h.conn, as_bytes("f"), false).ok());
  h.expect({.seq = h.nxt + 3, .payload = bytes("def")});
}

TEST(TcpData, Established_OutOfOrderHeldThenDelivered_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  const std::uint32_t s = h.peer_nxt;
  h.send({.seq = s + 3, .ack = h.nxt, .payload = bytes("def")});
  h.expect({.flags = kTcpAck, .ack = s});  // duplicate ACK at once (RFC 5681 §4.2)
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  h.send({.seq = s, .ack = h.nxt, .payload = bytes("abc")});
  h.expect({.flags = kTcpAck, .ack = s + 6});  // hole filled: ACK at once
  EXPECT_EQ(h.read(), "abcdef");
}

TEST(TcpData, Established_SackBlocksForOutOfOrder_Rfc2018_4) {
  TcpConfig cfg = plain_config();
  cfg.sack = true;
  TcpHarness h(cfg);
  h.syn_received({.sack_perm = true});
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.conn = *h.tcp->accept(h.listener);
  const std::uint32_t s = h.peer_nxt;
  h.send({.seq = s + 10, .ack = h.nxt, .payload = bytes("0123456789")});
  Sent a = h.expect({.flags = kTcpAck, .ack = s});
  ASSERT_EQ(a.opts.sack_count, 1);
  EXPECT_EQ(a.opts.sack[0].left.raw(), s + 10);
  EXPECT_EQ(a.opts.sack[0].right.raw(), s + 20);
  h.send({.seq = s + 30, .ack = h.nxt, .payload = bytes("0123456789")});
  a = h.expect({.flags = kTcpAck, .ack = s});
  ASSERT_EQ(a.opts.sack_count, 2);
  EXPECT_EQ(a.opts.sack[0].left.raw(), s + 30);  // most recent first
  EXPECT_EQ(a.opts.sack[1].left.raw(), s + 10);
}

TEST(TcpData, Established_DuplicateDataAckedImmediately) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("abc")});
  h.expect({.ack = h.peer_nxt + 3});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("abc")});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 3});
  EXPECT_EQ(h.read(), "abc");
}

TEST(TcpData, Established_AckedDataFreesSendBuffer) {
  TcpHarness h;
  h.established_passive();
  h.write("hello");
  h.expect({.seq = h.nxt, .payload = bytes("hello")});
  auto i = h.tcp->info(h.conn);
  EXPECT_EQ((*i).unacked, 5u);
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 5});
  i = h.tcp->info(h.conn);
  EXPECT_EQ((*i).unacked, 0u);
  EXPECT_EQ((*i).bytes_acked, 5u);
}

TEST(TcpData, Established_WindowLimitsSender_Rfc9293_3_8_6) {
  TcpHarness h;
  h.syn_received();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .window = 3000});
  h.conn = *h.tcp->accept(h.listener);
  h.write(std::string(5000, 'q'));
  h.expect({.seq = h.nxt, .len = 1460});
  h.expect({.seq = h.nxt + 1460, .len = 1460});
  h.expect_nothing();  // 80 bytes of window left: a runt below max_wnd/2 waits (SWS avoidance)
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 2920, .window = 3000});
  h.expect({.seq = h.nxt + 2920, .len = 1460});
  h.expect({.seq = h.nxt + 4380, .len = 620});
}

TEST(TcpData, Established_ReceiveWindowShrinksAsBufferFillsNeverEdge_Rfc7323_2_4) {
  TcpHarness h;
  h.established_passive();
  const Sent first = [&] {
    h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = Bytes(1000, std::byte{1})});
    return h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 1000});
  }();
  // 64536 bytes are free, but moving the right edge by one byte is silly window syndrome.
  EXPECT_EQ(first.window, 65535 - 1000);
  // Reading opens the window again; a small read does not announce (SWS avoidance).
  h.read(10);
  h.expect_nothing();
}

TEST(TcpData, Established_ZeroWindowThenUpdateOnRead_Rfc9293_3_8_6_2_2) {
  TcpConfig cfg = plain_config();
  cfg.rcvbuf_initial = 4096;
  TcpHarness h(cfg);
  h.established_passive();
  std::uint32_t s = h.peer_nxt;
  h.send({.seq = s, .ack = h.nxt, .payload = Bytes(1460, std::byte{1})});
  s += 1460;
  h.send({.seq = s, .ack = h.nxt, .payload = Bytes(1460, std::byte{1})});
  s += 1460;
  h.send({.seq = s, .ack = h.nxt, .payload = Bytes(1460, std::byte{1})});
  s += 1176;  // only 4096 - 2920 = 1176 bytes fit
  const Sent a = h.drain().back();
  EXPECT_EQ(a.ack, s);
  EXPECT_EQ(a.window, 0);
  // Reading everything opens the window: an update goes out without waiting for data.
  h.read();
  const Sent u = h.expect({.flags = kTcpAck, .ack = s});
  EXPECT_EQ(u.window, 4096);
}

TEST(TcpData, SendAfterShutdownWriteIsEpipe) {
  TcpHarness h;
  h.established_passive();
  EXPECT_EQ(h.tcp->shutdown(h.conn, ShutdownHow::write), Errc::ok);
  EXPECT_EQ(h.tcp->send(h.conn, as_bytes("x")).error(), Errc::pipe);
}

TEST(TcpData, Closed_SocketErrors_Linux) {
  TcpHarness h;
  auto s = h.tcp->socket();
  ASSERT_TRUE(s.ok());
  std::byte b[4];
  EXPECT_EQ(h.tcp->recv(*s, b).error(), Errc::not_conn);
  EXPECT_EQ(h.tcp->send(*s, as_bytes("x")).error(), Errc::pipe);
  EXPECT_EQ(h.tcp->peer_endpoint(*s).error(), Errc::not_conn);
  EXPECT_EQ(h.tcp->close(*s), Errc::ok);
  EXPECT_EQ(h.tcp->close(*s), Errc::badf);  // the id is stale now
}

}  // namespace
}  // namespace pno::test
