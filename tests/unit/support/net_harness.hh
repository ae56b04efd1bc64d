// A NetIf on a virtual clock with a recording sink and a recording transport, for scripted tests of
// the link and network layers (and for anything that wants a real IPv4 layer under it).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "stack/counters.hh"
#include "stack/net/ipv4.hh"
#include "stack/stack.hh"
#include "support/frames.hh"

namespace pno::test {

/// Records what the IPv4 layer hands up for protocol 6.
class RecordingTransport : public net::TransportRx {
 public:
  struct Packet {
    Ipv4RxInfo info;
    Bytes l4;
    Instant now;
  };
  void on_ipv4(const Ipv4RxInfo& info, ByteSpan l4, Instant now) override {
    packets.push_back({info, Bytes(l4.begin(), l4.end()), now});
  }
  std::vector<Packet> packets;
};

/// Default config: kLocalMac, kLocalIp/24, gateway kGatewayIp, no offloads.
inline StackConfig test_stack_config() {
  StackConfig c;
  c.mac = kLocalMac;
  c.addr = kLocalCidr;
  c.gateway = kGatewayIp;
  return c;
}

class NetIfHarness : public ::testing::Test {
 protected:
  /// Builds the NetIf from `cfg`; tests that change cfg call it again.
  void make() {
    netif = std::make_unique<net::NetIf>(cfg, sink, counters, t0);
    netif->set_transport(&transport);
  }
  void SetUp() override { make(); }

  [[nodiscard]] Instant at(Duration d) const { return t0 + d; }
  void rx(const Bytes& frame, Duration t = Duration::zero(), const RxMeta& meta = {}) {
    netif->on_frame(frame, at(t), meta);
  }
  void poll(Duration t) { netif->poll(at(t)); }
  [[nodiscard]] std::uint64_t count(Counter c) const { return counters.get(c); }

  /// Sends `l4` as protocol `proto` through the Ipv4Output path; false if ip_begin refused.
  bool send_l4(Ipv4Addr dst, const Bytes& l4, std::uint8_t proto = 6, bool l4_offload = false) {
    MutByteSpan b = netif->ip_begin(dst, proto, l4.size());
    if (b.size() != l4.size()) return false;
    std::copy(l4.begin(), l4.end(), b.begin());
    netif->ip_commit(l4_offload);
    return true;
  }

  /// Makes `ip` resolved at `mac` by answering as if we had asked, then clears the sink.
  void learn(Ipv4Addr ip, MacAddr mac, Duration t = Duration::zero()) {
    rx(arp_request_frame(mac, ip, kLocalIp), t);
    sink.clear();
  }

  /// Pops the next frame and checks it is an ARP packet with `oper` to `eth_dst`.
  DecodedArp expect_arp(std::uint16_t oper, MacAddr eth_dst) {
    const SentFrame f = sink.pop();
    const auto e = decode_eth(f.bytes);
    if (!e) {
      ADD_FAILURE() << "not an Ethernet frame: " << hex(f.bytes);
      return {};
    }
    EXPECT_EQ(e->ethertype, kEthArp);
    EXPECT_EQ(e->dst, eth_dst) << e->dst.str();
    EXPECT_EQ(e->src, kLocalMac);
    const auto a = decode_arp(e->payload);
    if (!a) {
      ADD_FAILURE() << "not an Ethernet/IPv4 ARP packet: " << hex(e->payload);
      return {};
    }
    EXPECT_EQ(a->oper, oper);
    EXPECT_EQ(a->sha, kLocalMac);
    EXPECT_EQ(a->spa, kLocalIp);
    return *a;
  }

  /// Pops the next frame and checks it is an IPv4 packet from us to `eth_dst` with a valid header.
  DecodedIpv4 expect_ipv4(MacAddr eth_dst) {
    const SentFrame f = sink.pop();
    const auto e = decode_eth(f.bytes);
    if (!e) {
      ADD_FAILURE() << "not an Ethernet frame: " << hex(f.bytes);
      return {};
    }
    EXPECT_EQ(e->ethertype, kEthIpv4);
    EXPECT_EQ(e->dst, eth_dst) << e->dst.str();
    EXPECT_EQ(e->src, kLocalMac);
    const auto ip = decode_ipv4(e->payload);
    if (!ip) {
      ADD_FAILURE() << "not a well-formed IPv4 packet: " << hex(e->payload);
      return {};
    }
    EXPECT_EQ(ip->src, kLocalIp);
    EXPECT_EQ(ip->total_len, e->payload.size()) << "frame must end where the packet ends";
    last_meta = f.meta;
    return *ip;
  }

  Instant t0 = instant_from_ns(1'000'000'000);
  StackConfig cfg = test_stack_config();
  RecordingSink sink;
  Counters counters;
  RecordingTransport transport;
  std::unique_ptr<net::NetIf> netif;
  TxMeta last_meta;
};

}  // namespace pno::test
