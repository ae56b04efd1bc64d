// Ethernet demux, IPv4 receive validation (RFC 791, RFC 1122 §3.2.1), ICMP echo (RFC 792) and the
// Ipv4Output path, scripted through a recording sink on a virtual clock.
#include <gtest/gtest.h>

#include "support/frames.hh"
#include "support/net_harness.hh"

using namespace pno;
using namespace pno::test;

namespace {

Bytes data_bytes(std::size_t n, int seed = 1) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<std::uint8_t>(i * 13 + static_cast<std::size_t>(seed)));
  return b;
}

Ipv4Spec from_peer(std::uint8_t proto = 6) { return {.src = kPeerIp, .dst = kLocalIp, .proto = proto}; }

Bytes tcp_from_peer(std::size_t payload = 5) {
  return tcp_segment(kPeerIp, kLocalIp, {.sport = 40000, .dport = 80, .seq = 1, .flags = kTcpAck},
                     data_bytes(payload));
}

}  // namespace

class Ipv4Rx : public NetIfHarness {
 protected:
  /// Sends one frame and checks that exactly `reason` went up by one and nothing reached TCP.
  void expect_dropped(const Bytes& frame, Counter reason, const RxMeta& meta = {}) {
    const Counters before = counters;
    rx(frame, Duration::zero(), meta);
    EXPECT_TRUE(transport.packets.empty()) << kCounterNames[static_cast<std::size_t>(reason)];
    EXPECT_TRUE(sink.empty()) << kCounterNames[static_cast<std::size_t>(reason)];
    EXPECT_EQ(counters.get(reason), before.get(reason) + 1) << kCounterNames[static_cast<std::size_t>(reason)];
    // No other drop reason moved.
    for (std::size_t i = 0; i < kCounterCount; ++i) {
      const auto c = static_cast<Counter>(i);
      if (c == reason || c == Counter::eth_rx || c == Counter::ip_rx || c == Counter::arp_rx_request ||
          c == Counter::arp_rx_reply || c == Counter::icmp_rx_echo) {
        continue;
      }
      EXPECT_EQ(counters.get(c), before.get(c)) << "unexpected " << kCounterNames[i];
    }
  }
};

// --- Ethernet demux -----------------------------------------------------------------------------------

TEST_F(Ipv4Rx, FrameForAnotherMacIsDropped) {
  expect_dropped(ipv4_frame(kPeerMac, kGatewayMac, from_peer(), tcp_from_peer()), Counter::eth_drop_not_for_us);
  // Multicast (not broadcast) MAC: not ours either.
  const MacAddr mcast{{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}};
  expect_dropped(ipv4_frame(mcast, kPeerMac, from_peer(), tcp_from_peer()), Counter::eth_drop_not_for_us);
}

TEST_F(Ipv4Rx, OurOwnBroadcastSeenAgainIsDropped) {
  expect_dropped(arp_request_frame(kLocalMac, kLocalIp, kLocalIp), Counter::eth_drop_looped);
  EXPECT_EQ(count(Counter::arp_rx_conflict), 0u);
}

TEST_F(Ipv4Rx, TruncatedFrameAndUnknownEtherTypeAreDropped) {
  Bytes f = ipv4_frame(kLocalMac, kPeerMac, from_peer(), tcp_from_peer());
  f.resize(13);
  expect_dropped(f, Counter::eth_drop_truncated);
  expect_dropped(eth_frame(kLocalMac, kPeerMac, 0x86dd, data_bytes(40)), Counter::eth_drop_unknown_type);
}

// --- delivery to TCP ----------------------------------------------------------------------------------

TEST_F(Ipv4Rx, TcpPacketDeliveredWithEthernetPaddingTrimmed) {
  const Bytes seg = tcp_from_peer(2);  // 22 bytes of TCP: frame gets padded to 60
  Ipv4Spec s = from_peer();
  s.ttl = 33;
  s.tos = 0x28;
  const Bytes f = ipv4_frame(kLocalMac, kPeerMac, s, seg, true);
  ASSERT_EQ(f.size(), 60u);
  rx(f, 7ms, RxMeta{.ipv4_checksum_good = false, .l4_checksum_good = true});
  ASSERT_EQ(transport.packets.size(), 1u);
  const auto& p = transport.packets[0];
  EXPECT_EQ(p.l4, seg) << "padding must not reach TCP";
  EXPECT_EQ(p.info.src, kPeerIp);
  EXPECT_EQ(p.info.dst, kLocalIp);
  EXPECT_EQ(p.info.ttl, 33);
  EXPECT_EQ(p.info.tos, 0x28);
  EXPECT_TRUE(p.info.l4_checksum_good);
  EXPECT_EQ(p.now, at(7ms));
  EXPECT_EQ(count(Counter::ip_rx), 1u);
}

TEST_F(Ipv4Rx, TcpWithValidOptionsIsDelivered_Rfc791) {
  Ipv4Spec s = from_peer();
  s.options = bytes_of({0x01, 0x00, 0x00, 0x00});  // NOP, End
  rx(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()));
  ASSERT_EQ(transport.packets.size(), 1u);
  EXPECT_EQ(transport.packets[0].l4, tcp_from_peer());
}

TEST_F(Ipv4Rx, PortVerifiedChecksumIsNotRechecked) {
  Ipv4Spec s = from_peer();
  s.checksum = 0xdead;
  rx(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Duration::zero(), RxMeta{.ipv4_checksum_good = true});
  EXPECT_EQ(transport.packets.size(), 1u);
}

TEST_F(Ipv4Rx, BroadcastMacWithUnicastIpIsAccepted) {
  rx(ipv4_frame(MacAddr::broadcast(), kPeerMac, from_peer(), tcp_from_peer()));
  EXPECT_EQ(transport.packets.size(), 1u);
}

// --- IPv4 drops, one reason each -------------------------------------------------------------------------

TEST_F(Ipv4Rx, BadVersionDropped) {
  Ipv4Spec s = from_peer();
  s.version = 6;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_bad_version);
}

TEST_F(Ipv4Rx, IhlBelowFiveDropped) {
  Ipv4Spec s = from_peer();
  s.ihl = 4;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_bad_ihl);
}

TEST_F(Ipv4Rx, BadHeaderChecksumDropped_Rfc791_3_1) {
  Ipv4Spec s = from_peer();
  s.checksum = 0x1234;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_bad_checksum);
  // A flipped bit in the address with the old checksum.
  Bytes f = ipv4_frame(kLocalMac, kPeerMac, from_peer(), tcp_from_peer());
  f[14 + 12] ^= std::byte{0x01};
  expect_dropped(f, Counter::ip_drop_bad_checksum);
}

TEST_F(Ipv4Rx, TotalLengthBeyondFrameDropped) {
  Ipv4Spec s = from_peer();
  s.total_len = static_cast<std::uint16_t>(20 + tcp_from_peer().size() + 1);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer(), false), Counter::ip_drop_bad_total_len);
  s.total_len = 12;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer(), false), Counter::ip_drop_bad_total_len);
}

TEST_F(Ipv4Rx, TruncatedHeaderDropped) {
  Bytes f = ipv4_frame(kLocalMac, kPeerMac, from_peer(), tcp_from_peer(), false);
  f.resize(14 + 19);
  expect_dropped(f, Counter::ip_drop_truncated);
  // Options claimed (IHL 15) but not present.
  Ipv4Spec s = from_peer();
  s.ihl = 15;
  s.total_len = 40;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, data_bytes(20), false), Counter::ip_drop_truncated);
}

TEST_F(Ipv4Rx, MalformedOptionsDropped) {
  Ipv4Spec s = from_peer();
  s.options = bytes_of({0x07, 0x0c, 0x04, 0x00});  // record route claiming 12 bytes in a 4-byte area
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_options);
}

TEST_F(Ipv4Rx, FragmentsDropped) {
  Ipv4Spec s = from_peer();
  s.df = false;
  s.mf = true;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_fragment);
  s.mf = false;
  s.frag_offset = 3;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_fragment);
}

TEST_F(Ipv4Rx, TtlZeroDropped_Rfc1122_3_2_1_7) {
  Ipv4Spec s = from_peer();
  s.ttl = 0;
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_bad_ttl);
  // TTL 1 is fine for a host (RFC 1122 §3.2.1.7: MUST NOT discard for TTL < 2).
  s.ttl = 1;
  rx(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()));
  EXPECT_EQ(transport.packets.size(), 1u);
}

TEST_F(Ipv4Rx, PacketForAnotherAddressDropped) {
  Ipv4Spec s = from_peer();
  s.dst = Ipv4Addr::from_octets(198, 18, 0, 9);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_not_for_us);
  s.dst = Ipv4Addr::from_octets(224, 0, 0, 1);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_not_for_us);
}

TEST_F(Ipv4Rx, BadSourceAddressesDropped_Rfc1122_3_2_1_3) {
  const Ipv4Addr bad[] = {Ipv4Addr::broadcast(), Ipv4Addr::from_octets(198, 18, 0, 255),
                          Ipv4Addr::from_octets(239, 1, 2, 3), Ipv4Addr::from_octets(127, 0, 0, 1), Ipv4Addr::any(),
                          kLocalIp};
  for (const Ipv4Addr src : bad) {
    SCOPED_TRACE(src.str());
    Ipv4Spec s = from_peer();
    s.src = src;
    expect_dropped(ipv4_frame(kLocalMac, kPeerMac, s, tcp_from_peer()), Counter::ip_drop_bad_src);
  }
}

TEST_F(Ipv4Rx, TcpToBroadcastDropped_Rfc1122_4_2_3_10) {
  Ipv4Spec s = from_peer();
  s.dst = Ipv4Addr::broadcast();
  expect_dropped(ipv4_frame(MacAddr::broadcast(), kPeerMac, s, tcp_from_peer()), Counter::ip_drop_broadcast);
  s.dst = Ipv4Addr::from_octets(198, 18, 0, 255);
  expect_dropped(ipv4_frame(MacAddr::broadcast(), kPeerMac, s, tcp_from_peer()), Counter::ip_drop_broadcast);
}

TEST_F(Ipv4Rx, UnknownProtocolDropped) {
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(17), data_bytes(16)), Counter::ip_drop_unknown_proto);
  // Without a transport, TCP is unknown too.
  netif->set_transport(nullptr);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(), tcp_from_peer()), Counter::ip_drop_unknown_proto);
}

// --- ICMP ---------------------------------------------------------------------------------------------

class Icmp : public Ipv4Rx {};

TEST_F(Icmp, EchoRequestGetsByteExactReply_Rfc792) {
  const Bytes data = data_bytes(56, 3);
  Ipv4Spec s = from_peer(1);
  s.tos = 0x10;
  rx(ipv4_frame(kLocalMac, kPeerMac, s, icmp_echo(8, 0x4321, 17, data)));
  EXPECT_EQ(count(Counter::icmp_rx_echo), 1u);
  EXPECT_EQ(count(Counter::icmp_tx_echo_reply), 1u);
  ASSERT_EQ(sink.size(), 1u);
  const DecodedIpv4 ip = expect_ipv4(kPeerMac);
  EXPECT_EQ(ip.dst, kPeerIp);
  EXPECT_EQ(ip.proto, 1);
  EXPECT_EQ(ip.ttl, 64);
  EXPECT_TRUE(ip.df);
  EXPECT_TRUE(ip.checksum_ok);
  EXPECT_EQ(ip.tos, 0x10);
  // The whole ICMP message equals an independently built reply (type 0, same id/seq/data, checksum).
  EXPECT_EQ(hex(ip.payload), hex(icmp_echo(0, 0x4321, 17, data)));
  EXPECT_EQ(inet_checksum(ip.payload), 0) << "ICMP checksum must verify";
  EXPECT_FALSE(last_meta.ipv4_checksum);
  EXPECT_TRUE(transport.packets.empty());
}

TEST_F(Icmp, OddLengthEchoAndPaddedFrameReplyWithExactData) {
  const Bytes data = data_bytes(3, 9);  // 8 + 3 bytes of ICMP: frame is padded to 60
  rx(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(8, 1, 2, data), true));
  const DecodedIpv4 ip = expect_ipv4(kPeerMac);
  EXPECT_EQ(hex(ip.payload), hex(icmp_echo(0, 1, 2, data))) << "padding must not be echoed";
}

TEST_F(Icmp, EchoFromOffLinkHostRepliesToTheFramesSourceMac) {
  Ipv4Spec s = from_peer(1);
  s.src = kRemoteIp;
  rx(ipv4_frame(kLocalMac, kGatewayMac, s, icmp_echo(8, 5, 6, data_bytes(8))));
  const DecodedIpv4 ip = expect_ipv4(kGatewayMac);
  EXPECT_EQ(ip.dst, kRemoteIp);
}

TEST_F(Icmp, ReplyLeavesIpv4ChecksumToPortWhenOffloaded) {
  cfg.caps.tx_ipv4_checksum = true;
  make();
  rx(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(8, 5, 6, data_bytes(8))));
  const DecodedIpv4 ip = expect_ipv4(kPeerMac);
  EXPECT_EQ(ip.checksum, 0);
  EXPECT_TRUE(last_meta.ipv4_checksum);
  EXPECT_EQ(last_meta.l2_len, 14);
  EXPECT_EQ(last_meta.l3_len, 20);
}

TEST_F(Icmp, BadChecksumDropped) {
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(8, 1, 1, data_bytes(20), true)),
                 Counter::icmp_drop_malformed);
}

TEST_F(Icmp, TruncatedMessageDropped) {
  Bytes m = icmp_echo(8, 1, 1, {});
  m.resize(7);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), m), Counter::icmp_drop_malformed);
}

TEST_F(Icmp, OtherTypesAreCountedUnhandled) {
  // Timestamp request (type 13), correct checksum.
  Bytes m = bytes_of({13, 0, 0, 0, 0, 1, 0, 1});
  const std::uint16_t c = inet_checksum(m);
  m[2] = std::byte(c >> 8);
  m[3] = std::byte(c & 0xff);
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), m), Counter::icmp_drop_unhandled);
  // An echo reply nobody asked for.
  expect_dropped(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(0, 1, 1, {})), Counter::icmp_drop_unhandled);
}

TEST_F(Icmp, BroadcastEchoIgnored_Rfc1122_3_2_2_6) {
  Ipv4Spec s = from_peer(1);
  s.dst = Ipv4Addr::from_octets(198, 18, 0, 255);
  expect_dropped(ipv4_frame(MacAddr::broadcast(), kPeerMac, s, icmp_echo(8, 1, 1, {})), Counter::ip_drop_broadcast);
}

TEST_F(Icmp, NoTxBufferCountsAndSendsNothing) {
  sink.buffers_free = 0;
  rx(ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(8, 1, 1, data_bytes(4))));
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(count(Counter::eth_tx_no_buffer), 1u);
  EXPECT_EQ(count(Counter::icmp_tx_echo_reply), 0u);
}

// --- Ipv4Output ------------------------------------------------------------------------------------------

class Ipv4Tx : public NetIfHarness {};

TEST_F(Ipv4Tx, ResolvedPacketIsBuiltInPlaceWithFullHeader_Rfc791) {
  learn(kPeerIp, kPeerMac);
  const std::uint64_t eth_tx_before = count(Counter::eth_tx);  // the ARP reply
  const Bytes seg = tcp_segment(kLocalIp, kPeerIp, {.sport = 80, .dport = 40000, .flags = kTcpAck}, data_bytes(100));
  ASSERT_TRUE(send_l4(kPeerIp, seg));
  ASSERT_TRUE(send_l4(kPeerIp, seg));
  const DecodedIpv4 a = expect_ipv4(kPeerMac);
  const DecodedIpv4 b = expect_ipv4(kPeerMac);
  EXPECT_EQ(a.ihl, 5);
  EXPECT_EQ(a.dst, kPeerIp);
  EXPECT_EQ(a.proto, 6);
  EXPECT_EQ(a.ttl, 64);
  EXPECT_EQ(a.tos, 0);
  EXPECT_TRUE(a.df);
  EXPECT_FALSE(a.mf);
  EXPECT_EQ(a.frag_offset, 0);
  EXPECT_TRUE(a.checksum_ok);
  EXPECT_EQ(a.payload, seg);
  EXPECT_EQ(b.ident, static_cast<std::uint16_t>(a.ident + 1));
  EXPECT_EQ(inet_checksum(a.payload, a.src, a.dst, 6), 0) << "TCP bytes must pass through untouched";
  EXPECT_FALSE(last_meta.tcp_checksum);
  EXPECT_FALSE(last_meta.ipv4_checksum);
  EXPECT_EQ(count(Counter::ip_tx), 2u);
  EXPECT_EQ(count(Counter::eth_tx), eth_tx_before + 2);
  EXPECT_EQ(sink.begins, sink.commits) << "no buffer may be left open";
}

TEST_F(Ipv4Tx, OffloadFlagsReachThePort) {
  cfg.caps.tx_ipv4_checksum = true;
  cfg.caps.tx_tcp_checksum = true;
  make();
  EXPECT_TRUE(netif->tcp_checksum_offload());
  learn(kPeerIp, kPeerMac);
  ASSERT_TRUE(send_l4(kPeerIp, data_bytes(20), 6, /*l4_offload=*/true));
  const DecodedIpv4 ip = expect_ipv4(kPeerMac);
  EXPECT_EQ(ip.checksum, 0);
  EXPECT_TRUE(last_meta.ipv4_checksum);
  EXPECT_TRUE(last_meta.tcp_checksum);
}

TEST_F(Ipv4Tx, OffloadFlagsSurviveTheArpQueue) {
  cfg.caps.tx_ipv4_checksum = true;
  make();
  ASSERT_TRUE(send_l4(kPeerIp, data_bytes(20), 6, true));
  sink.clear();
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp));
  expect_ipv4(kPeerMac);
  EXPECT_TRUE(last_meta.ipv4_checksum);
  EXPECT_TRUE(last_meta.tcp_checksum);
}

TEST_F(Ipv4Tx, NoGatewayMeansNoRouteOffLink) {
  cfg.gateway.reset();
  make();
  EXPECT_TRUE(netif->ip_begin(kRemoteIp, 6, 20).empty());
  EXPECT_EQ(count(Counter::ip_tx_no_route), 1u);
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(sink.begins, 0u);
  netif->ip_commit();  // nothing open: harmless
  EXPECT_TRUE(sink.empty());
}

TEST_F(Ipv4Tx, OversizedPacketRefused) {
  learn(kPeerIp, kPeerMac);
  EXPECT_EQ(netif->max_l4_len(), 1480u);
  EXPECT_TRUE(netif->ip_begin(kPeerIp, 6, 1481).empty());
  EXPECT_EQ(count(Counter::ip_tx_too_big), 1u);
  EXPECT_EQ(netif->ip_begin(kPeerIp, 6, 1480).size(), 1480u);
  netif->ip_abort();
}

TEST_F(Ipv4Tx, NoFrameBufferGivesEmptySpan) {
  learn(kPeerIp, kPeerMac);
  sink.buffers_free = 0;
  EXPECT_TRUE(netif->ip_begin(kPeerIp, 6, 20).empty());
  EXPECT_EQ(count(Counter::eth_tx_no_buffer), 1u);
  EXPECT_FALSE(sink.open());
}

TEST_F(Ipv4Tx, AbortReleasesTheFrame) {
  learn(kPeerIp, kPeerMac);
  ASSERT_EQ(netif->ip_begin(kPeerIp, 6, 20).size(), 20u);
  EXPECT_TRUE(sink.open());
  netif->ip_abort();
  EXPECT_FALSE(sink.open());
  EXPECT_EQ(sink.aborts, 1u);
  EXPECT_TRUE(sink.empty());
  // Aborting a packet that waits for ARP queues nothing.
  EXPECT_EQ(netif->ip_begin(kRemoteIp, 6, 20).size(), 20u);
  netif->ip_abort();
  EXPECT_EQ(netif->arp().queued(kGatewayIp), 0u);
  EXPECT_TRUE(sink.empty());
}

// --- robustness -------------------------------------------------------------------------------------------

TEST_F(Ipv4Rx, MutatedFramesAreCountedNeverCrashAndRepliesStayWellFormed) {
  // Valid seeds of every kind the interface parses, then random bit flips, truncations and
  // extensions. Every frame must be counted as received; every frame sent must be well formed.
  Ipv4Spec with_opts = from_peer();
  with_opts.options = bytes_of({0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0});
  const std::vector<Bytes> seeds = {
      arp_request_frame(kPeerMac, kPeerIp, kLocalIp),
      arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp),
      ipv4_frame(kLocalMac, kPeerMac, from_peer(), tcp_from_peer(30)),
      ipv4_frame(kLocalMac, kPeerMac, with_opts, tcp_from_peer(3)),
      ipv4_frame(kLocalMac, kPeerMac, from_peer(1), icmp_echo(8, 1, 2, data_bytes(40))),
  };
  std::uint32_t rng = 2024;
  auto next = [&] {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
  };
  constexpr int kFrames = 20000;
  for (int i = 0; i < kFrames; ++i) {
    Bytes f = seeds[next() % seeds.size()];
    const std::uint32_t flips = next() % 4;
    for (std::uint32_t k = 0; k < flips; ++k) {
      // Mostly in the headers, where the parsing decisions are.
      const std::size_t pos = next() % std::min<std::size_t>(f.size(), 48);
      f[pos] ^= std::byte(static_cast<std::uint8_t>(1u << (next() % 8)));
    }
    switch (next() % 4) {
      case 0: f.resize(next() % (f.size() + 1)); break;
      case 1: f.resize(f.size() + next() % 16, std::byte{0x5a}); break;
      default: break;
    }
    // Keep frames addressed to us often enough to reach the deeper layers.
    if (f.size() >= 6 && next() % 2) std::copy(kLocalMac.b.begin(), kLocalMac.b.end(), reinterpret_cast<std::uint8_t*>(f.data()));
    rx(f, std::chrono::milliseconds(i));
    while (!sink.empty()) {
      const SentFrame out = sink.pop();
      const auto e = decode_eth(out.bytes);
      ASSERT_TRUE(e);
      EXPECT_EQ(e->src, kLocalMac);
      if (e->ethertype == kEthIpv4) {
        const auto ip = decode_ipv4(e->payload);
        ASSERT_TRUE(ip) << hex(out.bytes);
        EXPECT_TRUE(ip->checksum_ok);
        if (ip->proto == 1) {
          EXPECT_EQ(inet_checksum(ip->payload), 0);
        }
      } else {
        ASSERT_EQ(e->ethertype, kEthArp);
        EXPECT_TRUE(decode_arp(e->payload));
      }
    }
  }
  EXPECT_EQ(count(Counter::eth_rx), static_cast<std::uint64_t>(kFrames));
  EXPECT_GT(count(Counter::ip_drop_bad_checksum), 0u);
  EXPECT_GT(count(Counter::icmp_tx_echo_reply), 0u);
  EXPECT_GT(transport.packets.size(), 0u);
}
