#include "support/tcp_script.hh"

#include <gtest/gtest.h>

namespace pno::test {

TcpConfig reno_config() {
  TcpConfig c = plain_config();
  c.congestion = CongestionAlgo::new_reno;
  return c;
}

TcpConfig sack_config(bool ts) {
  TcpConfig c = plain_config();
  c.sack = true;
  c.timestamps = ts;
  return c;
}

TcpConfig ts_config() {
  TcpConfig c = plain_config();
  c.timestamps = true;
  return c;
}

Sent accept_with(TcpHarness& h, const Seg& syn, const Seg& ack) {
  if (h.listener == kInvalidSocket) h.listen();
  Seg s = syn;
  s.flags = kTcpSyn;
  s.seq = kPeerIss;
  s.ack = 0;
  if (!s.mss) s.mss = 1460;
  h.send(s);
  const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  h.iss = sa.seq;
  h.nxt = sa.seq + 1;
  h.peer_nxt = kPeerIss + 1;
  Seg a = ack;
  a.flags = kTcpAck;
  a.seq = h.peer_nxt;
  a.ack = h.nxt;
  if (syn.ts && !a.ts) a.ts = {{syn.ts->first + 1, sa.opts.has_timestamps ? sa.opts.ts.tsval : 0}};
  h.send(a);
  auto c = h.tcp->accept(h.listener);
  EXPECT_TRUE(c.ok()) << "accept: " << to_errno(c.error());
  h.conn = c.ok() ? *c : kInvalidSocket;
  h.peer_nxt += static_cast<std::uint32_t>(a.payload.size());
  h.drain();
  return sa;
}

Bytes pattern(std::size_t n, std::size_t from) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<std::uint8_t>('a' + (from + i) % 26));
  return b;
}

std::string pattern_str(std::size_t n, std::size_t from) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (from + i) % 26);
  return s;
}

TcpInfo info(const TcpHarness& h, SocketId s) {
  auto i = h.tcp->info(s == kInvalidSocket ? h.conn : s);
  EXPECT_TRUE(i.ok());
  return i.ok() ? *i : TcpInfo{};
}

Duration rto(const TcpHarness& h, SocketId s) { return std::chrono::microseconds(info(h, s).rto_us); }

std::uint32_t send_full(TcpHarness& h, int n, std::uint32_t mss) {
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  h.write(std::string(static_cast<std::size_t>(n) * mss, 'd'));
  for (int i = 0; i < n; ++i) h.expect({.seq = h.nxt + static_cast<std::uint32_t>(i) * mss, .len = mss});
  return h.nxt;
}

void leave_quickack(TcpHarness& h) {
  // Each ACK we send uses up one quick ACK (the handshake's and FIN's included): feed one-byte
  // segments until one is no longer ACKed at once, then let the delayed-ACK timer send that ACK.
  bool delayed = false;
  for (int i = 0; i < 20 && !delayed; ++i) {
    h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("q")});
    h.peer_nxt += 1;
    h.poll();
    if (h.ip.sent.empty()) {
      delayed = true;
      h.advance(h.cfg.delayed_ack);
    }
    h.expect({.flags = kTcpAck, .ack = h.peer_nxt});
  }
  EXPECT_TRUE(delayed) << "still in quick-ACK mode after 20 segments";
  h.read();
  h.expect_nothing();
}

}  // namespace pno::test
