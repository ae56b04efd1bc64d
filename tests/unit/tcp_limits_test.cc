// Limits on what connections may hold of the socket table, as Linux has them: listen() backlogs
// clamped to somaxconn (__sys_listen), and at most tcp_max_tw_buckets connections in TIME-WAIT
// (tcp_time_wait: past the cap the connection is closed at once, after the ACK of the peer's FIN,
// and counted as TCPTimeWaitOverflow).
#include <gtest/gtest.h>

#include <vector>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

/// One peer connection from `port`, with the stack's ISS once known.
struct Peer {
  std::uint16_t port = 0;
  std::uint32_t iss = 0;
  SocketId id = kInvalidSocket;
};

/// SYN from `port`; returns the stack's ISS from its SYN-ACK.
std::uint32_t syn_from(TcpHarness& h, std::uint16_t port) {
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = port});
  return h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1, .dport = port}).seq;
}

/// A handshake from `port`, accepted.
Peer open_from(TcpHarness& h, std::uint16_t port) {
  Peer p{.port = port, .iss = syn_from(h, port)};
  h.send({.seq = kPeerIss + 1, .ack = p.iss + 1, .sport = port});
  h.expect_nothing();
  auto a = h.tcp->accept(h.listener);
  EXPECT_TRUE(a.ok());
  p.id = a.ok() ? *a : kInvalidSocket;
  return p;
}

/// Active close of `p` up to the peer's FIN (FIN-WAIT-1, FIN-WAIT-2, FIN): returns the ACK of it.
/// `orphan`: the application closes the socket instead of shutting it down.
Sent close_to_time_wait(TcpHarness& h, const Peer& p, bool orphan = false) {
  EXPECT_EQ(orphan ? h.tcp->close(p.id) : h.tcp->shutdown(p.id, ShutdownHow::write), Errc::ok);
  h.expect({.flags = kTcpFin | kTcpAck, .seq = p.iss + 1, .ack = kPeerIss + 1, .dport = p.port});
  h.send({.seq = kPeerIss + 1, .ack = p.iss + 2, .sport = p.port});
  h.expect_nothing();
  h.send({.flags = kTcpFin | kTcpAck, .seq = kPeerIss + 1, .ack = p.iss + 2, .sport = p.port});
  return h.expect({.flags = kTcpAck, .seq = p.iss + 2, .ack = kPeerIss + 2, .dport = p.port});
}

TEST(TcpLimits, BacklogClampedToSomaxconn_LinuxSysListen) {
  EXPECT_EQ(TcpConfig{}.somaxconn, 4096u);  // net.core.somaxconn
  TcpConfig cfg = plain_config();
  cfg.somaxconn = 2;
  TcpHarness h(cfg);
  h.listen(kLocalPort, 100000);  // clamped to 2: Linux queues backlog + 1 = 3
  std::vector<std::uint32_t> iss;
  for (std::uint16_t port = 2001; port <= 2004; ++port) iss.push_back(syn_from(h, port));
  for (std::uint16_t i = 0; i < 4; ++i) h.send({.seq = kPeerIss + 1, .ack = iss[i] + 1, .sport = std::uint16_t(2001 + i)});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_passive_opens), 3u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_listen_overflow), 1u);  // the fourth final ACK
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(h.tcp->accept(h.listener).ok());
  EXPECT_EQ(h.tcp->accept(h.listener).error(), Errc::again);
}

TEST(TcpLimits, NegativeOrHugeBacklogMeansSomaxconnAlsoOnRelisten_LinuxSysListen) {
  TcpConfig cfg = plain_config();
  cfg.somaxconn = 1;
  TcpHarness h(cfg);
  h.listen(kLocalPort, -1);  // (unsigned)-1 > somaxconn: somaxconn, not 0
  ASSERT_EQ(h.tcp->listen(h.listener, 70000), Errc::ok);  // listen() again updates the backlog
  std::vector<std::uint32_t> iss;
  for (std::uint16_t port = 3001; port <= 3003; ++port) iss.push_back(syn_from(h, port));
  for (std::uint16_t i = 0; i < 3; ++i) h.send({.seq = kPeerIss + 1, .ack = iss[i] + 1, .sport = std::uint16_t(3001 + i)});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_conn_passive_opens), 2u);
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_listen_overflow), 1u);
}

TEST(TcpLimits, TimeWaitCapped_PastTheCapClosedAtOnceAndCounted_LinuxTcpMaxTwBuckets) {
  TcpConfig cfg = plain_config();
  cfg.max_tw_buckets = 2;
  TcpHarness h(cfg);
  h.listen();
  std::vector<Peer> peers;
  for (std::uint16_t port = 4001; port <= 4003; ++port) peers.push_back(open_from(h, port));
  close_to_time_wait(h, peers[0]);
  close_to_time_wait(h, peers[1]);
  EXPECT_EQ(h.state(peers[0].id), st(TcpState::time_wait));
  EXPECT_EQ(h.state(peers[1].id), st(TcpState::time_wait));
  EXPECT_EQ(h.counters.get(Counter::tcp_tw_overflow), 0u);
  // The third is over the cap: its FIN is still ACKed, then the connection is closed at once.
  close_to_time_wait(h, peers[2]);
  EXPECT_EQ(h.state(peers[2].id), st(TcpState::closed));
  EXPECT_EQ(h.counters.get(Counter::tcp_tw_overflow), 1u);
  std::byte b[4];
  EXPECT_EQ(*h.tcp->recv(peers[2].id, b), 0u);  // a clean EOF: the connection ended gracefully
  ASSERT_EQ(h.tcp->close(peers[2].id), Errc::ok);
  EXPECT_EQ(h.tcp->socket_count(), 3u);  // the listener and two TIME-WAITs
  // A retransmission of its FIN finds no connection: RST, as Linux answers once the TIME-WAIT
  // bucket was refused.
  h.send({.flags = kTcpFin | kTcpAck, .seq = kPeerIss + 1, .ack = peers[2].iss + 2, .sport = 4003});
  h.expect({.flags = kTcpRst, .seq = peers[2].iss + 2, .dport = 4003});
  // Once the TIME-WAITs end (2*MSL), their buckets are free again.
  h.run_until(h.now + 2 * cfg.msl);
  EXPECT_EQ(h.state(peers[0].id), st(TcpState::closed));
  const Peer late = open_from(h, 4004);
  close_to_time_wait(h, late);
  EXPECT_EQ(h.state(late.id), st(TcpState::time_wait));
  EXPECT_EQ(h.counters.get(Counter::tcp_tw_overflow), 1u);
}

TEST(TcpLimits, TimeWaitCapped_OrphanFreedAtOnce_LinuxTcpMaxTwBuckets) {
  TcpConfig cfg = plain_config();
  cfg.max_tw_buckets = 1;
  TcpHarness h(cfg);
  h.listen();
  const Peer a = open_from(h, 5001);
  const Peer b = open_from(h, 5002);
  close_to_time_wait(h, a, /*orphan=*/true);
  EXPECT_EQ(h.tcp->socket_count(), 3u);  // a's TIME-WAIT holds its socket
  close_to_time_wait(h, b, /*orphan=*/true);
  EXPECT_EQ(h.tcp->socket_count(), 2u);  // b was freed with its FIN's ACK
  EXPECT_EQ(h.counters.get(Counter::tcp_tw_overflow), 1u);
  EXPECT_EQ(h.tcp->timer_entries(), 1u);  // a's 2*MSL only
}

TEST(TcpLimits, TimeWaitCapped_SimultaneousCloseFromClosing_LinuxTcpMaxTwBuckets) {
  TcpConfig cfg = plain_config();
  cfg.max_tw_buckets = 0;  // never TIME-WAIT
  TcpHarness h(cfg);
  h.closing();  // FIN-WAIT-1 + the peer's FIN: CLOSING, our FIN unacknowledged
  EXPECT_EQ(h.state(), st(TcpState::closing));
  h.send({.seq = h.peer_nxt, .ack = h.nxt});  // ACK of our FIN: TIME-WAIT would follow
  h.expect_nothing();
  EXPECT_EQ(h.state(), st(TcpState::closed));
  EXPECT_EQ(h.counters.get(Counter::tcp_tw_overflow), 1u);
}

}  // namespace
}  // namespace pno::test
