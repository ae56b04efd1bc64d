// Limits on what connections may hold of the socket table, as Linux has them: listen() backlogs
// clamped to somaxconn (__sys_listen).
#include <gtest/gtest.h>

#include <vector>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

/// SYN from `port`; returns the stack's ISS from its SYN-ACK.
std::uint32_t syn_from(TcpHarness& h, std::uint16_t port) {
  h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = 1460, .sport = port});
  return h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1, .dport = port}).seq;
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

}  // namespace
}  // namespace pno::test
