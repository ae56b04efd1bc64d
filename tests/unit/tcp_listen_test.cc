// Passive open and port management: accept-queue overflow as Linux (drop the final ACK, drop new
// SYNs), SYN-ACK retransmission and tcp_synack_retries, RST to a closed port (RFC 9293 §3.10.7.1),
// ephemeral ports (RFC 6056), and SO_REUSEADDR with a TIME-WAIT connection.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

/// A SYN from `port`; returns the SYN-ACK's ISS.
std::uint32_t syn_from(TcpHarness& h, std::uint16_t port) {
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = port});
  return h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1, .dport = port}).seq;
}

void ack_from(TcpHarness& h, std::uint16_t port, std::uint32_t iss) {
  h.send({.seq = kPeerIss + 1, .ack = iss + 1, .sport = port});
}

TEST(TcpListen, AcceptQueueFull_FinalAckDroppedThenRetriedAfterAccept_Linux) {
  TcpHarness h;
  h.listen(kLocalPort, 1);  // Linux queues backlog + 1
  const std::uint32_t a = syn_from(h, 2001);
  ack_from(h, 2001, a);
  const std::uint32_t b = syn_from(h, 2002);
  const std::uint32_t c = syn_from(h, 2003);
  ack_from(h, 2002, b);
  ack_from(h, 2003, c);  // queue full: dropped, C stays in SYN-RECEIVED
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_listen_overflow), 1u);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_passive_opens), 2u);
  // A new SYN while the queue is full gets no SYN-ACK at all.
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = 2004});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_listen_overflow), 2u);
  // C's SYN-ACK is retransmitted after 1 s; the application accepts meanwhile; C's next ACK fits.
  h.advance(1s);
  h.expect({.flags = kTcpSyn | kTcpAck, .seq = c, .dport = 2003});
  Endpoint peer{};
  ASSERT_TRUE(h.tcp->accept(h.listener, &peer).ok());
  EXPECT_EQ(peer.port, 2001);
  ack_from(h, 2003, c);
  ASSERT_TRUE(h.tcp->accept(h.listener, &peer).ok());
  EXPECT_EQ(peer.port, 2002);
  ASSERT_TRUE(h.tcp->accept(h.listener, &peer).ok());
  EXPECT_EQ(peer.port, 2003);
  EXPECT_EQ(h.tcp->accept(h.listener).error(), Errc::again);
  EXPECT_FALSE(h.tcp->readiness(h.listener) & kReadable);
}

TEST(TcpListen, SynAckRetransmittedAt1_3_7_15_31sThenDroppedSilently_Rfc6298_Linux) {
  TcpHarness h;  // synack_retries = 5
  h.listen();
  const std::uint32_t iss = syn_from(h, 3000);
  const Instant t0 = h.now;
  for (const int at : {1, 3, 7, 15, 31}) {
    h.run_until(t0 + std::chrono::seconds(at) - 1ms);
    h.expect_nothing();
    h.run_until(t0 + std::chrono::seconds(at));
    h.expect({.flags = kTcpSyn | kTcpAck, .seq = iss, .ack = kPeerIss + 1, .dport = 3000});
  }
  EXPECT_EQ(h.tcp->socket_count(), 2u);
  h.run_until(t0 + 63s);
  h.expect_nothing();  // no RST: the peer never answered
  EXPECT_EQ(h.tcp->socket_count(), 1u);
  // The listener is unharmed, and a very late ACK finds nothing: RST.
  ack_from(h, 3000, iss);
  h.expect({.flags = kTcpRst, .seq = iss + 1, .dport = 3000});
}

TEST(TcpListen, ClosedPort_RstSeqAckRules_Rfc9293_3_10_7_1) {
  TcpHarness h;
  // A SYN with data: ACK = SEG.SEQ + SEG.LEN counts SYN and payload.
  h.send({.flags = kTcpSyn, .seq = 1000, .payload = bytes("hello"), .dport = 81});
  Sent r = h.expect({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = 1006, .window = 0, .len = 0, .sport = 81});
  EXPECT_FALSE(r.opts.has_mss || r.opts.has_timestamps || r.opts.sack_count);
  // FIN+ACK with data: <SEQ=SEG.ACK><CTL=RST>, no ACK bit.
  h.send({.flags = kTcpFin | kTcpAck, .seq = 1000, .ack = 0xfffffff0u, .payload = bytes("x"), .dport = 81});
  h.expect({.flags = kTcpRst, .seq = 0xfffffff0u, .len = 0});
  EXPECT_EQ(h.counters.get(Counter::tcp_rst_tx), 2u);
}

TEST(TcpListen, BoundButNotListening_SynGetsRst_Rfc9293_3_10_7_1) {
  TcpHarness h;
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, 82}), Errc::ok);
  h.send({.flags = kTcpSyn, .seq = 5, .dport = 82});
  h.expect({.flags = kTcpRst | kTcpAck, .seq = 0, .ack = 6});
}

TEST(TcpListen, EphemeralPorts_UniqueAndInRangeAcrossManyConnects_Rfc6056) {
  TcpConfig cfg = plain_config();
  cfg.max_sockets = 1024;
  TcpHarness h(cfg);
  std::set<std::uint16_t> ports;
  for (int i = 0; i < 500; ++i) {
    auto s = h.tcp->socket();
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
    const auto local = h.tcp->local_endpoint(*s);
    ASSERT_TRUE(local.ok());
    EXPECT_GE((*local).port, cfg.ephemeral_lo);
    EXPECT_LE((*local).port, cfg.ephemeral_hi);
    EXPECT_TRUE(ports.insert((*local).port).second) << "port " << (*local).port << " given twice";
  }
  // Every SYN leaves from its own port.
  std::set<std::uint16_t> wire;
  for (const Sent& s : h.drain()) wire.insert(s.sport);
  EXPECT_EQ(wire, ports);
}

TEST(TcpListen, EphemeralPorts_ExhaustedRangeEaddrnotavail_Linux) {
  TcpConfig cfg = plain_config();
  cfg.ephemeral_lo = 40000;
  cfg.ephemeral_hi = 40009;
  TcpHarness h(cfg);
  std::set<std::uint16_t> ports;
  for (int i = 0; i < 10; ++i) {
    auto s = h.tcp->socket();
    ASSERT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
    ports.insert((*h.tcp->local_endpoint(*s)).port);
  }
  EXPECT_EQ(ports.size(), 10u);
  auto s = h.tcp->socket();
  EXPECT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::addr_not_avail);
  // Another destination may reuse the same local ports (the 4-tuple differs).
  EXPECT_EQ(h.tcp->connect(*s, Endpoint{kPeerIp, kPeerPort + 1}), Errc::in_progress);
}

/// A listener on kLocalPort with SO_REUSEADDR, as servers set it.
SocketId reuse_listener(TcpHarness& h) {
  auto s = h.tcp->socket();
  EXPECT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseaddr, 1), Errc::ok);
  EXPECT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
  EXPECT_EQ(h.tcp->listen(*s, 16), Errc::ok);
  h.listener = *s;
  return *s;
}

TEST(TcpListen, ReuseAddr_RebindWhileTimeWaitAndNewSynReusesTuple_Linux_Rfc6191) {
  TcpConfig cfg = plain_config();
  cfg.msl = 5s;
  TcpHarness h(cfg);
  reuse_listener(h);
  h.established_passive();
  // The server closes first: its side goes through TIME-WAIT on port 80.
  ASSERT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck});
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt + 1});
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 1});
  ASSERT_EQ(h.tcp->close(h.listener), Errc::ok);
  ASSERT_EQ(h.tcp->socket_count(), 1u);  // the TIME-WAIT connection
  // Restart: without SO_REUSEADDR the port is busy, with it the bind succeeds.
  auto plain = h.tcp->socket();
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
  const SocketId l2 = reuse_listener(h);
  EXPECT_NE(l2, kInvalidSocket);
  // The same client reconnects from the same port with a higher ISN: the TIME-WAIT gives way.
  h.send({.flags = kTcpSyn, .seq = h.peer_nxt + 100000, .mss = 1460});
  h.expect({.flags = kTcpSyn | kTcpAck, .ack = h.peer_nxt + 100001});
  // After 2*MSL the plain socket may bind too... except the new listener holds the port now.
  h.run_until(h.now + 10s);
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
}

TEST(TcpListen, ReuseAddr_TimeWaitExpiresThenPlainBindSucceeds_Linux) {
  TcpConfig cfg = plain_config();
  cfg.msl = 5s;
  TcpHarness h(cfg);
  reuse_listener(h);
  h.established_passive();
  ASSERT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck});
  h.send({.flags = kTcpFin | kTcpAck, .seq = h.peer_nxt, .ack = h.nxt + 1});
  h.drain();
  ASSERT_EQ(h.tcp->close(h.listener), Errc::ok);
  auto plain = h.tcp->socket();
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
  h.run_until(h.now + 10s);
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
}

TEST(TcpListen, SecondListenerOnPortEaddrinuseEvenWithReuseAddr_Linux) {
  TcpHarness h;
  reuse_listener(h);
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseaddr, 1), Errc::ok);
  EXPECT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
}

// --- SO_REUSEPORT (socket(7)): listener groups sharing a port ---

/// A socket with SO_REUSEPORT bound to kLocalPort and listening.
SocketId reuseport_listener(TcpHarness& h, int backlog = 64) {
  auto s = h.tcp->socket();
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseport, 1), Errc::ok);
  EXPECT_EQ(*h.tcp->getsockopt(*s, SockOpt::reuseport), 1);
  EXPECT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
  EXPECT_EQ(h.tcp->listen(*s, backlog), Errc::ok);
  return *s;
}

/// Completes handshakes from peer ports [first, first + n) and returns each peer port's listener
/// (by accepting from every listener in `ls` until all are empty).
std::map<std::uint16_t, SocketId> connect_and_accept(TcpHarness& h, std::uint16_t first, int n,
                                                    const std::vector<SocketId>& ls) {
  for (int i = 0; i < n; ++i) {
    const auto port = static_cast<std::uint16_t>(first + i);
    const std::uint32_t iss = syn_from(h, port);
    ack_from(h, port, iss);
  }
  h.expect_nothing();
  std::map<std::uint16_t, SocketId> by_peer;
  for (const SocketId l : ls) {
    for (;;) {
      Endpoint peer{};
      auto c = h.tcp->accept(l, &peer);
      if (!c.ok()) {
        EXPECT_EQ(c.error(), Errc::again);
        break;
      }
      EXPECT_TRUE(by_peer.emplace(peer.port, l).second) << "peer port " << peer.port << " accepted twice";
    }
  }
  return by_peer;
}

TEST(TcpListen, ReuseportTwoListenersShareAPortAndBothAccept_Socket7) {
  TcpHarness h;
  const SocketId l1 = reuseport_listener(h);
  const SocketId l2 = reuseport_listener(h);
  EXPECT_EQ(h.tcp->local_endpoint(l1).value().port, kLocalPort);
  EXPECT_EQ(h.tcp->local_endpoint(l2).value().port, kLocalPort);
  const int n = 32;
  const auto by_peer = connect_and_accept(h, 3000, n, {l1, l2});
  ASSERT_EQ(by_peer.size(), static_cast<std::size_t>(n));
  int on_l1 = 0, on_l2 = 0;
  for (const auto& [port, l] : by_peer) (l == l1 ? on_l1 : on_l2) += 1;
  // The split is by a keyed hash; 32 connections all landing on one member would mean no split.
  EXPECT_GT(on_l1, 0);
  EXPECT_GT(on_l2, 0);
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_passive_opens), static_cast<std::uint64_t>(n));
}

TEST(TcpListen, ReuseportBindWithoutOptionFailsAddrInUse_Socket7) {
  TcpHarness h;
  reuseport_listener(h);
  reuseport_listener(h);
  // Neither a plain socket nor one with SO_REUSEADDR may join the group.
  auto plain = h.tcp->socket();
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
  ASSERT_EQ(h.tcp->setsockopt(*plain, SockOpt::reuseaddr, 1), Errc::ok);
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
  // Joining is fine once it sets SO_REUSEPORT too.
  ASSERT_EQ(h.tcp->setsockopt(*plain, SockOpt::reuseport, 1), Errc::ok);
  EXPECT_EQ(h.tcp->bind(*plain, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
}

TEST(TcpListen, ReuseportBindAgainstAPlainListenerFailsAddrInUse_Socket7) {
  TcpHarness h;
  h.listen();  // no SO_REUSEPORT
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseport, 1), Errc::ok);
  EXPECT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::addr_in_use);
}

TEST(TcpListen, ReuseportOptionClearedBeforeListenFailsAddrInUse_Linux) {
  // Linux checks the port again at listen(): a member that dropped SO_REUSEPORT after bind
  // cannot listen beside the group.
  TcpHarness h;
  reuseport_listener(h);
  auto s = h.tcp->socket();
  ASSERT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseport, 1), Errc::ok);
  ASSERT_EQ(h.tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
  ASSERT_EQ(h.tcp->setsockopt(*s, SockOpt::reuseport, 0), Errc::ok);
  EXPECT_EQ(h.tcp->listen(*s, 16), Errc::addr_in_use);
}

TEST(TcpListen, ReuseportClosingOneMemberLeavesTheOtherServing_Socket7) {
  TcpHarness h;
  const SocketId l1 = reuseport_listener(h);
  const SocketId l2 = reuseport_listener(h);
  ASSERT_EQ(h.tcp->close(l1), Errc::ok);
  const int n = 16;
  const auto by_peer = connect_and_accept(h, 4000, n, {l2});
  ASSERT_EQ(by_peer.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_no_socket), 0u);
  // Closing the last member frees the port: a SYN now gets a RST and a plain socket may bind.
  ASSERT_EQ(h.tcp->close(l2), Errc::ok);
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .sport = 4999});
  h.expect({.flags = kTcpRst | kTcpAck, .ack = kPeerIss + 1, .dport = 4999});
}

TEST(TcpListen, ReuseportSynCookieHandshakeCompletesOnTheMemberTheSynHashedTo_Socket7) {
  // No SYN queue: every handshake goes through a SYN cookie, so the final ACK is demuxed afresh
  // and must reach the same member as its SYN; each connection appears on exactly one member.
  TcpConfig cfg = plain_config();
  cfg.syn_backlog = 0;
  TcpHarness h(cfg);
  const SocketId l1 = reuseport_listener(h);
  const SocketId l2 = reuseport_listener(h);
  const int n = 24;
  const auto by_peer = connect_and_accept(h, 5000, n, {l1, l2});
  EXPECT_EQ(by_peer.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(h.counters.get(Counter::tcp_syn_cookies_sent), static_cast<std::uint64_t>(n));
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_syn_cookie), 0u);
  int on_l1 = 0;
  for (const auto& [port, l] : by_peer) on_l1 += l == l1 ? 1 : 0;
  EXPECT_GT(on_l1, 0);
  EXPECT_LT(on_l1, n);
}

TEST(TcpListen, ReuseportAcceptQueuesArePerMember_Linux) {
  // Each member has its own backlog: while one member's queue is full (its SYNs are dropped), the
  // other still completes handshakes into its own queue.
  TcpHarness h;
  const SocketId l1 = reuseport_listener(h, 0);  // Linux queues backlog + 1 = 1
  const SocketId l2 = reuseport_listener(h, 0);
  std::map<SocketId, std::uint16_t> queued;
  std::uint64_t dropped = 0;
  for (std::uint16_t port = 6100; port < 6200 && (queued[l1] == 0 || queued[l2] == 0); ++port) {
    h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = port});
    const auto sent = h.drain();
    if (sent.empty()) {
      ++dropped;  // its member's queue is full
      continue;
    }
    ASSERT_EQ(sent.size(), 1u);
    ASSERT_EQ(sent[0].flags, kTcpSyn | kTcpAck);
    ack_from(h, port, sent[0].seq);
    h.expect_nothing();
    for (const SocketId l : {l1, l2}) {
      if (queued[l] == 0 && (h.tcp->readiness(l) & kReadable)) queued[l] = port;
    }
  }
  ASSERT_NE(queued[l1], 0);
  ASSERT_NE(queued[l2], 0);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_listen_overflow), dropped);
  Endpoint peer{};
  ASSERT_TRUE(h.tcp->accept(l1, &peer).ok());
  EXPECT_EQ(peer.port, queued[l1]);
  ASSERT_TRUE(h.tcp->accept(l2, &peer).ok());
  EXPECT_EQ(peer.port, queued[l2]);
  EXPECT_EQ(h.tcp->accept(l1).error(), Errc::again);
  EXPECT_EQ(h.tcp->accept(l2).error(), Errc::again);
}

TEST(TcpListen, WildcardBoundListenerKeepsTheWildcardNameChildrenGetTheConcreteAddress_Linux) {
  TcpHarness h;
  // bind(0.0.0.0:port): Linux getsockname gives 0.0.0.0:port before and after listen().
  auto l = h.tcp->socket();
  ASSERT_EQ(h.tcp->bind(*l, Endpoint{Ipv4Addr{}, kLocalPort}), Errc::ok);
  EXPECT_EQ(h.tcp->local_endpoint(*l).value(), (Endpoint{Ipv4Addr{}, kLocalPort}));
  ASSERT_EQ(h.tcp->listen(*l, 4), Errc::ok);
  EXPECT_EQ(h.tcp->local_endpoint(*l).value(), (Endpoint{Ipv4Addr{}, kLocalPort}));
  h.listener = *l;
  // The accepted connection reports the address the SYN was sent to.
  const SocketId c = h.established_passive();
  EXPECT_EQ(h.tcp->local_endpoint(c).value(), (Endpoint{kLocalIp, kLocalPort}));
  // listen() on an unbound socket autobinds the wildcard (inet_autobind).
  auto a = h.tcp->socket();
  ASSERT_EQ(h.tcp->listen(*a, 4), Errc::ok);
  const Endpoint an = h.tcp->local_endpoint(*a).value();
  EXPECT_TRUE(an.addr.is_any());
  EXPECT_NE(an.port, 0);
  // A socket bound to the wildcard that connects reports the source address connect chose.
  auto d = h.tcp->socket();
  ASSERT_EQ(h.tcp->bind(*d, Endpoint{Ipv4Addr{}, 0}), Errc::ok);
  EXPECT_TRUE(h.tcp->local_endpoint(*d).value().addr.is_any());
  ASSERT_EQ(h.tcp->connect(*d, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
  EXPECT_EQ(h.tcp->local_endpoint(*d).value().addr, kLocalIp);
  // An explicit address is reported as bound.
  auto e = h.tcp->socket();
  ASSERT_EQ(h.tcp->bind(*e, Endpoint{kLocalIp, 0}), Errc::ok);
  EXPECT_EQ(h.tcp->local_endpoint(*e).value().addr, kLocalIp);
}

}  // namespace
}  // namespace pno::test
