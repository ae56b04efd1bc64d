// The composed stack: ARP and ping answered by a whole Stack, announcements and deadlines through
// Stack::poll, and TCP reached through NetIf in both directions (including waiting for ARP).
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/frames.hh"
#include "support/net_harness.hh"

using namespace pno;
using namespace pno::test;

namespace {

struct DecodedTcp {
  std::uint16_t sport = 0, dport = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  bool checksum_ok = false;
};

std::optional<DecodedTcp> decode_tcp(const DecodedIpv4& ip) {
  const Bytes& s = ip.payload;
  if (ip.proto != 6 || s.size() < 20) return std::nullopt;
  auto u16 = [&](std::size_t o) { return static_cast<std::uint16_t>((std::to_integer<int>(s[o]) << 8) | std::to_integer<int>(s[o + 1])); };
  DecodedTcp t;
  t.sport = u16(0);
  t.dport = u16(2);
  t.seq = (std::uint32_t{u16(4)} << 16) | u16(6);
  t.ack = (std::uint32_t{u16(8)} << 16) | u16(10);
  t.flags = std::to_integer<std::uint8_t>(s[13]);
  t.checksum_ok = inet_checksum(s, ip.src, ip.dst, 6) == 0;
  return t;
}

}  // namespace

class StackTest : public ::testing::Test {
 protected:
  StackTest() : stack(test_stack_config(), sink, t0) {}

  [[nodiscard]] Instant at(Duration d) const { return t0 + d; }
  void rx(const Bytes& f, Duration t = Duration::zero()) { stack.on_frame(f, at(t)); }
  [[nodiscard]] std::uint64_t count(Counter c) const { return stack.counters().get(c); }

  DecodedIpv4 pop_ipv4(MacAddr eth_dst) {
    const SentFrame f = sink.pop();
    const auto e = decode_eth(f.bytes);
    EXPECT_TRUE(e && e->ethertype == kEthIpv4 && e->dst == eth_dst) << hex(f.bytes);
    if (!e) return {};
    const auto ip = decode_ipv4(e->payload);
    EXPECT_TRUE(ip && ip->checksum_ok) << hex(e->payload);
    return ip ? *ip : DecodedIpv4{};
  }

  Bytes syn_from_peer(std::uint32_t iss) {
    return ipv4_frame(kLocalMac, kPeerMac, {.src = kPeerIp, .dst = kLocalIp, .proto = 6},
                      tcp_segment(kPeerIp, kLocalIp, {.sport = 40000, .dport = 80, .seq = iss, .flags = kTcpSyn}, {}));
  }

  void listen_on_80() {
    auto s = stack.tcp().socket();
    ASSERT_TRUE(s);
    ASSERT_EQ(stack.tcp().bind(*s, {kLocalIp, 80}), Errc::ok);
    ASSERT_EQ(stack.tcp().listen(*s, 16), Errc::ok);
  }

  Instant t0 = instant_from_ns(5'000'000'000);
  RecordingSink sink;
  Stack stack;
};

TEST_F(StackTest, AnswersArpRequest_Rfc826) {
  rx(arp_request_frame(kPeerMac, kPeerIp, kLocalIp));
  ASSERT_EQ(sink.size(), 1u);
  const auto e = decode_eth(sink.pop().bytes);
  ASSERT_TRUE(e);
  const auto a = decode_arp(e->payload);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->oper, 2);
  EXPECT_EQ(a->sha, kLocalMac);
  EXPECT_EQ(a->spa, kLocalIp);
  EXPECT_EQ(a->tpa, kPeerIp);
  EXPECT_EQ(count(Counter::arp_tx_reply), 1u);
}

TEST_F(StackTest, AnswersPing_Rfc792) {
  const Bytes data = bytes_of({1, 2, 3, 4, 5, 6, 7, 8, 9});
  rx(ipv4_frame(kLocalMac, kPeerMac, {.src = kPeerIp, .dst = kLocalIp, .proto = 1}, icmp_echo(8, 77, 3, data)));
  const DecodedIpv4 ip = pop_ipv4(kPeerMac);
  EXPECT_EQ(ip.dst, kPeerIp);
  EXPECT_EQ(hex(ip.payload), hex(icmp_echo(0, 77, 3, data)));
  EXPECT_EQ(count(Counter::icmp_tx_echo_reply), 1u);
}

TEST_F(StackTest, AnnouncementDeadlineComesOutOfPoll_Rfc5227_3) {
  stack.announce();
  EXPECT_EQ(sink.size(), 1u);
  EXPECT_LE(stack.next_deadline(), at(2s));
  const Instant next = stack.poll(at(2s));
  EXPECT_EQ(sink.size(), 2u);
  EXPECT_GT(next, at(2s)) << "announcements done; nothing else due now";
  EXPECT_EQ(count(Counter::arp_tx_announce), 2u);
}

TEST_F(StackTest, SynToListenerIsAnsweredThroughNetIf_Rfc9293_3_10_7_2) {
  listen_on_80();
  rx(arp_request_frame(kPeerMac, kPeerIp, kLocalIp));
  sink.clear();
  rx(syn_from_peer(1000), 1ms);
  stack.poll(at(1ms));
  ASSERT_GE(sink.size(), 1u);
  const DecodedIpv4 ip = pop_ipv4(kPeerMac);
  EXPECT_EQ(ip.dst, kPeerIp);
  const auto t = decode_tcp(ip);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->flags & (kTcpSyn | kTcpAck), kTcpSyn | kTcpAck);
  EXPECT_EQ(t->ack, 1001u);
  EXPECT_EQ(t->sport, 80);
  EXPECT_EQ(t->dport, 40000);
  EXPECT_TRUE(t->checksum_ok);
}

TEST_F(StackTest, TcpReplyToUnresolvedPeerWaitsForArpThenFlows) {
  listen_on_80();
  rx(syn_from_peer(5000), 1ms);
  stack.poll(at(1ms));
  // The SYN-ACK waits in the ARP queue; only the request is on the wire.
  ASSERT_EQ(sink.size(), 1u);
  const auto e = decode_eth(sink.pop().bytes);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->ethertype, kEthArp);
  EXPECT_EQ(e->dst, MacAddr::broadcast());
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp), 2ms);
  ASSERT_GE(sink.size(), 1u);
  const auto t = decode_tcp(pop_ipv4(kPeerMac));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->flags & (kTcpSyn | kTcpAck), kTcpSyn | kTcpAck);
  EXPECT_EQ(t->ack, 5001u);
}

TEST_F(StackTest, ThousandConnectsToAnUnresolvedNeighbourAllSendTheirSynAfterArp) {
  // Each SYN waits in the ARP queue; none is lost (a lost SYN costs a 1 s retransmission).
  std::vector<SocketId> socks;
  for (int i = 0; i < 1000; ++i) {
    auto s = stack.tcp().socket();
    ASSERT_TRUE(s);
    ASSERT_EQ(stack.tcp().connect(*s, {kPeerIp, 7}), Errc::in_progress);
    socks.push_back(*s);
  }
  stack.poll(at(1ms));
  ASSERT_EQ(sink.size(), 1u);  // the ARP request only
  sink.clear();
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp), 2ms);
  std::set<std::uint16_t> ports;
  while (!sink.empty()) {
    const auto t = decode_tcp(pop_ipv4(kPeerMac));
    ASSERT_TRUE(t);
    EXPECT_EQ(t->flags, kTcpSyn);
    ports.insert(t->sport);
  }
  EXPECT_EQ(ports.size(), 1000u);
  EXPECT_EQ(count(Counter::arp_queue_overflow), 0u);
}
