// In-place send and receive (send_space/send_commit, recv_view/recv_consume): the engine's host
// service moves bytes between the host's rings and the TCP buffers with them, without a staging
// copy. They must behave exactly like send() and recv(): same bytes, same errors, same window
// updates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "stack/tcp/tcp_state.hh"
#include "support/tcp_pair.hh"

namespace pno::test {
namespace {

std::byte pattern(std::uint64_t i) { return std::byte((i * 131 + (i >> 11)) & 0xff); }

struct Conn {
  TcpPair& p;
  SocketId client = kInvalidSocket, listener = kInvalidSocket, server = kInvalidSocket;

  void open(int rcvbuf = 0) {
    listener = *p.b.tcp->socket();
    ASSERT_EQ(p.b.tcp->bind(listener, Endpoint{kPeerIp, 5001}), Errc::ok);
    if (rcvbuf != 0) {
      ASSERT_EQ(p.b.tcp->setsockopt(listener, SockOpt::rcvbuf, rcvbuf), Errc::ok);
    }
    ASSERT_EQ(p.b.tcp->listen(listener, 8), Errc::ok);
    client = *p.a.tcp->socket();
    ASSERT_EQ(p.a.tcp->connect(client, Endpoint{kPeerIp, 5001}), Errc::in_progress);
    // RFC 9293 §3.9: SEND before the handshake completes may not queue data yet.
    auto early = p.a.tcp->send_space(client, 100);
    ASSERT_FALSE(early.ok());
    EXPECT_EQ(early.error(), Errc::again);
    ASSERT_TRUE(p.run(
        [&] {
          if (server == kInvalidSocket) {
            if (auto s = p.b.tcp->accept(listener); s.ok()) server = *s;
          }
          return server != kInvalidSocket && (p.a.tcp->readiness(client) & kWritable) != 0;
        },
        std::chrono::seconds(5)));
  }
};

/// Sends `total` pattern bytes with send_space/send_commit in pieces of at most `piece` bytes and
/// receives them with recv_view/recv_consume in pieces of at most `rpiece`: odd sizes make both
/// rings wrap mid-piece, so the two-span case is exercised on both sides.
void inplace_transfer(const LinkConfig& link, std::uint64_t total, std::size_t piece, std::size_t rpiece,
                      int reads_per_step) {
  TcpPair p(TcpConfig{}, link);
  Conn c{p};
  c.open();
  std::uint64_t sent = 0, received = 0;
  bool closed = false, eof = false, corrupt = false, two_span_send = false, two_span_recv = false;
  const bool ok = p.run(
      [&] { return eof; }, std::chrono::seconds(600), [&] {
        while (sent < total) {
          auto sp = p.a.tcp->send_space(c.client, std::min<std::uint64_t>(piece, total - sent));
          if (!sp.ok()) {
            EXPECT_EQ(sp.error(), Errc::again);
            break;
          }
          auto [a, b] = *sp;
          if (!b.empty()) two_span_send = true;
          std::size_t n = 0;
          for (MutByteSpan s : {a, b}) {
            for (auto& x : s) x = pattern(sent + n++);
          }
          auto r = p.a.tcp->send_commit(c.client, n);
          ASSERT_TRUE(r.ok());
          ASSERT_EQ(*r, n);
          sent += n;
        }
        if (sent == total && !closed) {
          closed = true;
          EXPECT_EQ(p.a.tcp->close(c.client), Errc::ok);
        }
        // Once everything is sent no more steps may come (an idle link): drain then.
        const int reads = closed ? 1 << 30 : reads_per_step;
        for (int k = 0; k < reads; ++k) {
          auto [a, b] = p.b.tcp->recv_view(c.server, rpiece);
          if (a.empty()) {
            EXPECT_TRUE(b.empty());
            std::byte one[1];
            auto r = p.b.tcp->recv(c.server, one);  // nothing buffered: EOF or again, never data
            if (r.ok()) {
              EXPECT_EQ(*r, 0u);
              eof = true;
            }
            break;
          }
          if (!b.empty()) two_span_recv = true;
          std::size_t n = 0;
          for (ByteSpan s : {a, b}) {
            for (auto x : s) corrupt = corrupt || x != pattern(received + n++);
          }
          p.b.tcp->recv_consume(c.server, n);
          received += n;
        }
      });
  EXPECT_TRUE(ok) << "sent " << sent << " received " << received;
  EXPECT_EQ(received, total);
  EXPECT_FALSE(corrupt);
  EXPECT_TRUE(two_span_send);
  EXPECT_TRUE(two_span_recv);
}

TEST(TcpInplace, Established_InplaceBulkCleanLinkBytesInOrder) {
  // One read per step lets data pile up in the receive buffer, so reads cross its end.
  inplace_transfer(LinkConfig{}, 8 << 20, 7001, 5003, 1);
}

TEST(TcpInplace, Established_InplaceBulkLossReorder_Rfc6675) {
  inplace_transfer(LinkConfig{.loss = 0.01, .duplicate = 0.01, .reorder = 0.05, .seed = 5}, 2 << 20, 3001, 1999,
                   1 << 30);
}

TEST(TcpInplace, SendSpaceReturnsAndClearsPendingErrorLikeSend) {
  // RFC 9293 §3.10.7.4 / Linux: after a RST the next SEND reports ECONNRESET once, then EPIPE.
  TcpPair p;
  Conn c{p};
  c.open();
  ASSERT_EQ(p.b.tcp->abort(c.server), Errc::ok);
  ASSERT_TRUE(p.run([&] { return (p.a.tcp->readiness(c.client) & kError) != 0; }, std::chrono::seconds(5)));
  auto first = p.a.tcp->send_space(c.client, 100);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error(), Errc::conn_reset);
  auto second = p.a.tcp->send_space(c.client, 100);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error(), Errc::pipe);
}

TEST(TcpInplace, SendSpaceAfterShutdownWriteIsEpipe_Rfc9293_3_10_4) {
  TcpPair p;
  Conn c{p};
  c.open();
  ASSERT_EQ(p.a.tcp->shutdown(c.client, ShutdownHow::write), Errc::ok);
  auto sp = p.a.tcp->send_space(c.client, 100);
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.error(), Errc::pipe);
}

TEST(TcpInplace, SendSpaceIsBoundedByTheSendBuffer) {
  TcpPair p;
  Conn c{p};
  c.open();
  ASSERT_EQ(p.a.tcp->setsockopt(c.client, SockOpt::sndbuf, 16384), Errc::ok);
  const int limit = *p.a.tcp->getsockopt(c.client, SockOpt::sndbuf);
  auto sp = p.a.tcp->send_space(c.client, 1 << 20);
  ASSERT_TRUE(sp.ok());
  const std::size_t room = (*sp).first.size() + (*sp).second.size();
  EXPECT_GT(room, 0u);
  EXPECT_LE(room, static_cast<std::size_t>(limit));
  // Nothing is queued until committed: a second call offers the same room.
  auto again = p.a.tcp->send_space(c.client, 1 << 20);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again).first.size() + (*again).second.size(), room);
  ASSERT_EQ(*p.a.tcp->send_commit(c.client, room), room);
  auto full = p.a.tcp->send_space(c.client, 1);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error(), Errc::again);
}

TEST(TcpInplace, RecvConsumeReopensAZeroWindowWithAWindowUpdate_Rfc9293_3_8_6_2_2) {
  // The receiver's buffer fills (zero window); consuming it with recv_consume must announce the
  // reopened window at once (receiver SWS avoidance allows it: a full buffer's worth opened), not
  // leave the sender to its persist timer.
  TcpPair p;
  Conn c{p};
  c.open(16384);
  std::vector<std::byte> data(256 * 1024, std::byte{0x5a});
  std::size_t sent = 0;
  p.run([&] { return false; }, std::chrono::seconds(2), [&] {
    if (auto r = p.a.tcp->send(c.client, ByteSpan(data).subspan(sent)); r.ok()) sent += *r;
  });
  auto info = p.a.tcp->info(c.client);
  ASSERT_TRUE(info.ok());
  // Full but for less than one segment (window scaling rounds the edge to 2^wscale bytes).
  ASSERT_LT((*info).snd_wnd, 1000u) << "the receiver's buffer should be full";
  auto [a, b] = p.b.tcp->recv_view(c.server, 1 << 20);
  const std::size_t n = a.size() + b.size();
  ASSERT_GE(n, 8192u);
  const std::uint64_t tx_before = p.b.counters.get(Counter::tcp_tx);
  p.b.tcp->recv_consume(c.server, n);
  // The update leaves at the receiver's next poll: within 1 ms, less than the 5 ms one-way delay,
  // so no segment from the sender can have prompted it.
  p.run([&] { return false; }, std::chrono::milliseconds(1));
  EXPECT_GT(p.b.counters.get(Counter::tcp_tx), tx_before);
  // And the sender uses the reopened window: new data arrives within a few round trips (10 ms
  // each), long before its persist timer (200 ms or more) would have probed.
  const bool more = p.run([&] { return !p.b.tcp->recv_view(c.server, 1).first.empty(); }, std::chrono::milliseconds(40));
  EXPECT_TRUE(more);
}

}  // namespace
}  // namespace pno::test
