// ARP through the interface (RFC 826, RFC 1122 §2.3.2, RFC 5227 §3) and the cache on its own:
// replies, learning and the merge rule, queueing while resolving, retries and failure, expiry and
// re-verification, announcements.
#include <gtest/gtest.h>

#include "stack/net/arp_cache.hh"
#include "support/frames.hh"
#include "support/net_harness.hh"

using namespace pno;
using namespace pno::test;

namespace {

Bytes tagged(int tag, std::size_t n = 40) {
  Bytes b(n, std::byte(static_cast<std::uint8_t>(tag)));
  return b;
}

constexpr MacAddr kPeerMac2{{0x02, 0x00, 0xc6, 0x12, 0x00, 0x22}};
constexpr Ipv4Addr kOtherIp = Ipv4Addr::from_octets(198, 18, 0, 77);

}  // namespace

class Arp : public NetIfHarness {};

TEST_F(Arp, RequestForOurAddressGetsReplyToSender_Rfc826) {
  rx(arp_request_frame(kPeerMac, kPeerIp, kLocalIp));
  ASSERT_EQ(sink.size(), 1u);
  const DecodedArp a = expect_arp(2, kPeerMac);
  EXPECT_EQ(a.tha, kPeerMac);
  EXPECT_EQ(a.tpa, kPeerIp);
  EXPECT_EQ(count(Counter::arp_rx_request), 1u);
  EXPECT_EQ(count(Counter::arp_tx_reply), 1u);
  EXPECT_EQ(count(Counter::eth_tx), 1u);
}

TEST_F(Arp, RequesterIsLearnedSoNoRequestIsNeeded_Rfc826) {
  rx(arp_request_frame(kPeerMac, kPeerIp, kLocalIp));
  sink.clear();
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  ASSERT_EQ(sink.size(), 1u);
  const DecodedIpv4 ip = expect_ipv4(kPeerMac);
  EXPECT_EQ(ip.dst, kPeerIp);
  EXPECT_EQ(count(Counter::arp_tx_request), 0u);
}

TEST_F(Arp, RequestForAnotherTargetIsNeitherAnsweredNorLearned_Rfc826) {
  rx(arp_request_frame(kPeerMac, kPeerIp, kOtherIp));
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(count(Counter::arp_drop_not_for_us), 1u);
  EXPECT_EQ(netif->arp().size(), 0u);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  const DecodedArp a = expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(a.tpa, kPeerIp);
}

TEST_F(Arp, KnownSenderIsUpdatedEvenWhenTargetIsNotUs_Rfc826MergeFlag) {
  learn(kPeerIp, kPeerMac);
  // The peer moved to a new MAC and asks someone else: RFC 826 updates the existing entry anyway.
  rx(arp_request_frame(kPeerMac2, kPeerIp, kOtherIp), 1s);
  EXPECT_TRUE(sink.empty());
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  expect_ipv4(kPeerMac2);
}

TEST_F(Arp, UnresolvedNextHopSendsBroadcastRequestAndQueues_Rfc826) {
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  ASSERT_EQ(sink.size(), 1u);
  const DecodedArp a = expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(a.tha, MacAddr{});
  EXPECT_EQ(a.tpa, kPeerIp);
  EXPECT_EQ(netif->arp().queued(kPeerIp), 1u);
  // More packets while resolving: queued, no second request.
  ASSERT_TRUE(send_l4(kPeerIp, tagged(2)));
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(netif->arp().queued(kPeerIp), 2u);
  EXPECT_EQ(count(Counter::arp_tx_request), 1u);
  EXPECT_EQ(netif->next_deadline(), at(cfg.arp.retry_interval));
}

TEST_F(Arp, ReplyFillsCacheAndFlushesQueueInOrder) {
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(send_l4(kPeerIp, tagged(i, 30 + static_cast<std::size_t>(i))));
  expect_arp(1, MacAddr::broadcast());
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp), 5ms);
  EXPECT_EQ(count(Counter::arp_rx_reply), 1u);
  ASSERT_EQ(sink.size(), 3u);
  std::uint16_t prev_ident = 0;
  for (int i = 1; i <= 3; ++i) {
    const DecodedIpv4 ip = expect_ipv4(kPeerMac);
    EXPECT_EQ(ip.dst, kPeerIp);
    EXPECT_TRUE(ip.checksum_ok);
    EXPECT_TRUE(ip.df);
    EXPECT_EQ(ip.ttl, 64);
    EXPECT_EQ(ip.payload, tagged(i, 30 + static_cast<std::size_t>(i))) << "packet " << i << " out of order";
    if (i > 1) {
      EXPECT_EQ(ip.ident, static_cast<std::uint16_t>(prev_ident + 1));
    }
    prev_ident = ip.ident;
  }
  EXPECT_EQ(netif->arp().queued(kPeerIp), 0u);
  EXPECT_EQ(netif->next_deadline(), kNever);
  EXPECT_EQ(count(Counter::ip_tx), 3u);
  // Resolved now: the next packet goes straight out.
  ASSERT_TRUE(send_l4(kPeerIp, tagged(9)));
  expect_ipv4(kPeerMac);
  EXPECT_EQ(count(Counter::arp_tx_request), 1u);
}

TEST_F(Arp, QueueOverflowIsCountedAndOldestPacketsKept) {
  cfg.arp.max_queued_per_dest = 4;
  make();
  for (int i = 1; i <= 6; ++i) send_l4(kPeerIp, tagged(i));
  EXPECT_EQ(netif->arp().queued(kPeerIp), 4u);
  EXPECT_EQ(count(Counter::arp_queue_overflow), 2u);
  sink.clear();
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp));
  ASSERT_EQ(sink.size(), 4u);
  for (int i = 1; i <= 4; ++i) EXPECT_EQ(expect_ipv4(kPeerMac).payload, tagged(i));
}

TEST_F(Arp, RetriesEveryIntervalThenDropsQueueAndCounts_Rfc1122_2_3_2_1) {
  ASSERT_EQ(cfg.arp.max_retries, 3);
  send_l4(kPeerIp, tagged(1));
  send_l4(kPeerIp, tagged(2));
  expect_arp(1, MacAddr::broadcast());
  poll(999ms);
  EXPECT_TRUE(sink.empty()) << "retry before the interval";
  for (int r = 1; r <= 3; ++r) {
    poll(std::chrono::seconds(r));
    ASSERT_EQ(sink.size(), 1u) << "retry " << r;
    EXPECT_EQ(expect_arp(1, MacAddr::broadcast()).tpa, kPeerIp);
    EXPECT_EQ(netif->next_deadline(), at(std::chrono::seconds(r + 1)));
  }
  EXPECT_EQ(count(Counter::arp_tx_request), 4u);
  EXPECT_EQ(count(Counter::arp_resolve_failed), 0u);
  poll(4s);
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(count(Counter::arp_resolve_failed), 2u);
  EXPECT_EQ(netif->arp().queued(kPeerIp), 0u);
  EXPECT_EQ(netif->arp().size(), 0u);
  EXPECT_EQ(netif->next_deadline(), kNever);
  EXPECT_EQ(netif->arp().pool_free(), cfg.arp.queue_small_packets + cfg.arp.queue_large_packets)
      << "pool buffers leaked";
  // A later packet starts a fresh resolution.
  send_l4(kPeerIp, tagged(3));
  expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(netif->arp().queued(kPeerIp), 1u);
}

TEST_F(Arp, ExpiredEntryStaysUsableWhileReverifiedByUnicast_Rfc1122_2_3_2_1) {
  learn(kPeerIp, kPeerMac);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  expect_ipv4(kPeerMac);
  // Just before entry_ttl: still fresh, no ARP.
  poll(59s);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(2)));
  ASSERT_EQ(sink.size(), 1u);
  expect_ipv4(kPeerMac);
  // At entry_ttl the next use triggers a unicast request, and the packet still goes out.
  poll(60s);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(3)));
  ASSERT_EQ(sink.size(), 2u);
  EXPECT_EQ(expect_arp(1, kPeerMac).tpa, kPeerIp);
  EXPECT_EQ(expect_ipv4(kPeerMac).payload, tagged(3));
  // The peer confirms: fresh again, no more requests.
  rx(arp_reply_frame(kPeerMac, kPeerIp, kLocalMac, kLocalIp), 60s + 300ms);
  EXPECT_EQ(netif->next_deadline(), kNever);
  poll(100s);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(4)));
  ASSERT_EQ(sink.size(), 1u);
  expect_ipv4(kPeerMac);
}

TEST_F(Arp, UnansweredReverificationRemovesEntryAndNextPacketReResolves) {
  learn(kPeerIp, kPeerMac);
  poll(60s);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(1)));
  expect_arp(1, kPeerMac);
  expect_ipv4(kPeerMac);
  for (int r = 1; r <= 3; ++r) {
    poll(60s + std::chrono::seconds(r));
    EXPECT_EQ(expect_arp(1, kPeerMac).tpa, kPeerIp) << "unicast retry " << r;
  }
  poll(64s);
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(netif->arp().size(), 0u);
  // Nothing was queued, so nothing failed; the next packet waits for a broadcast resolution.
  EXPECT_EQ(count(Counter::arp_resolve_failed), 0u);
  ASSERT_TRUE(send_l4(kPeerIp, tagged(2)));
  expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(netif->arp().queued(kPeerIp), 1u);
}

TEST_F(Arp, AnnounceSendsTwoGratuitousRequestsTwoSecondsApart_Rfc5227_3) {
  netif->announce();
  ASSERT_EQ(sink.size(), 1u);
  DecodedArp a = expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(a.tpa, kLocalIp) << "announcement: target IP is our own";
  EXPECT_EQ(a.tha, MacAddr{});
  EXPECT_EQ(netif->next_deadline(), at(2s));
  poll(1s);
  EXPECT_TRUE(sink.empty());
  poll(2s);
  a = expect_arp(1, MacAddr::broadcast());
  EXPECT_EQ(a.tpa, kLocalIp);
  EXPECT_EQ(netif->next_deadline(), kNever);
  poll(10s);
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(count(Counter::arp_tx_announce), 2u);
}

TEST_F(Arp, ProbeForOurAddressIsAnsweredButNothingLearned_Rfc5227_2_1) {
  // A probe has sender IP 0.0.0.0; answering defends our address.
  rx(eth_frame(MacAddr::broadcast(), kPeerMac, kEthArp,
               arp_packet({.oper = 1, .sha = kPeerMac, .spa = Ipv4Addr::any(), .tha = {}, .tpa = kLocalIp}), true));
  const DecodedArp a = expect_arp(2, kPeerMac);
  EXPECT_EQ(a.tpa, Ipv4Addr::any());
  EXPECT_EQ(netif->arp().size(), 0u);
}

TEST_F(Arp, MalformedAndConflictingPacketsAreDroppedAndCounted) {
  Bytes shortp = arp_packet({.oper = 1, .sha = kPeerMac, .spa = kPeerIp, .tha = {}, .tpa = kLocalIp});
  shortp.resize(27);
  rx(eth_frame(MacAddr::broadcast(), kPeerMac, kEthArp, shortp));  // unpadded: really short
  EXPECT_EQ(count(Counter::arp_drop_malformed), 1u);
  // Sender hardware address broadcast: would poison the cache.
  rx(eth_frame(MacAddr::broadcast(), kPeerMac, kEthArp,
               arp_packet({.oper = 1, .sha = MacAddr::broadcast(), .spa = kPeerIp, .tha = {}, .tpa = kLocalIp})));
  EXPECT_EQ(count(Counter::arp_drop_malformed), 2u);
  // Sender IP is the subnet broadcast.
  rx(arp_request_frame(kPeerMac, Ipv4Addr::from_octets(198, 18, 0, 255), kLocalIp));
  EXPECT_EQ(count(Counter::arp_drop_malformed), 3u);
  // Another host claims our address (RFC 5227 §2.4): counted, never learned or answered.
  rx(arp_request_frame(kPeerMac, kLocalIp, kLocalIp));
  EXPECT_EQ(count(Counter::arp_rx_conflict), 1u);
  EXPECT_TRUE(sink.empty());
  EXPECT_EQ(netif->arp().size(), 0u);
}

TEST_F(Arp, OffLinkDestinationResolvesTheGateway) {
  ASSERT_TRUE(send_l4(kRemoteIp, tagged(1)));
  EXPECT_EQ(expect_arp(1, MacAddr::broadcast()).tpa, kGatewayIp);
  rx(arp_reply_frame(kGatewayMac, kGatewayIp, kLocalMac, kLocalIp));
  const DecodedIpv4 ip = expect_ipv4(kGatewayMac);
  EXPECT_EQ(ip.dst, kRemoteIp);
}

// --- the cache alone ----------------------------------------------------------------------------------

namespace {

struct RecordingArpSender : net::ArpSender {
  struct Req {
    Ipv4Addr target;
    bool unicast;
  };
  std::vector<Req> requests;
  std::vector<std::pair<MacAddr, Bytes>> sent;
  void arp_send_request(Ipv4Addr target, const MacAddr* unicast_to) override {
    requests.push_back({target, unicast_to != nullptr});
  }
  void arp_send_queued(const MacAddr& dst, ByteSpan packet, const TxMeta&) override {
    sent.emplace_back(dst, Bytes(packet.begin(), packet.end()));
  }
};

}  // namespace

TEST(ArpCache, SharedPoolExhaustionIsCountedAsOverflow) {
  ArpConfig cfg;
  cfg.max_queued_per_dest = 8;
  cfg.queue_small_packets = 3;
  cfg.queue_large_packets = 0;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 1500, ctr, tx);
  const Instant t = instant_from_ns(0);
  EXPECT_TRUE(cache.enqueue(kPeerIp, tagged(1), {}, t));
  EXPECT_TRUE(cache.enqueue(kOtherIp, tagged(2), {}, t));
  EXPECT_TRUE(cache.enqueue(kPeerIp, tagged(3), {}, t));
  EXPECT_FALSE(cache.enqueue(kOtherIp, tagged(4), {}, t));
  EXPECT_EQ(ctr.get(Counter::arp_queue_overflow), 1u);
  EXPECT_EQ(cache.pool_free(), 0u);
  ASSERT_EQ(tx.requests.size(), 2u);
  EXPECT_TRUE(cache.update(kPeerIp, kPeerMac, t));
  ASSERT_EQ(tx.sent.size(), 2u);
  EXPECT_EQ(tx.sent[0].second, tagged(1));
  EXPECT_EQ(tx.sent[1].second, tagged(3));
  EXPECT_EQ(cache.pool_free(), 2u);
  EXPECT_TRUE(cache.enqueue(kOtherIp, tagged(5), {}, t));
}

TEST(ArpCache, BurstOfSmallPacketsToOneFreshNeighbourIsQueuedWhole) {
  // A thousand connect()s to one unresolved neighbour: every SYN waits in a small buffer and all
  // leave in order once the reply comes; the large pool stays free for full-size packets.
  ArpConfig cfg;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 1500, ctr, tx);
  const Instant t = instant_from_ns(0);
  const std::size_t free_before = cache.pool_free();
  const Bytes syn(60, std::byte{0x45});
  for (int i = 0; i < 1000; ++i) {
    Bytes p = syn;
    p[4] = std::byte(i & 0xff);
    p[5] = std::byte(i >> 8);
    ASSERT_TRUE(cache.enqueue(kPeerIp, p, {}, t)) << i;
  }
  Bytes big(1500, std::byte{7});
  EXPECT_TRUE(cache.enqueue(kPeerIp, big, {}, t));
  EXPECT_EQ(ctr.get(Counter::arp_queue_overflow), 0u);
  EXPECT_EQ(cache.queued(kPeerIp), 1001u);
  EXPECT_EQ(tx.requests.size(), 1u);
  EXPECT_TRUE(cache.update(kPeerIp, kPeerMac, t));
  ASSERT_EQ(tx.sent.size(), 1001u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(tx.sent[static_cast<std::size_t>(i)].second.size(), 60u);
    EXPECT_EQ(tx.sent[static_cast<std::size_t>(i)].second[4], std::byte(i & 0xff));
    EXPECT_EQ(tx.sent[static_cast<std::size_t>(i)].second[5], std::byte(i >> 8));
  }
  EXPECT_EQ(tx.sent[1000].second, big);
  EXPECT_EQ(cache.pool_free(), free_before);
}

TEST(ArpCache, SmallPacketsSpillIntoLargeBuffersButNotTheReverse) {
  ArpConfig cfg;
  cfg.queue_small_packets = 1;
  cfg.queue_large_packets = 2;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 1500, ctr, tx);
  const Instant t = instant_from_ns(0);
  EXPECT_TRUE(cache.enqueue(kPeerIp, Bytes(60, std::byte{1}), {}, t));   // small buffer
  EXPECT_TRUE(cache.enqueue(kPeerIp, Bytes(60, std::byte{2}), {}, t));   // spills into a large one
  EXPECT_TRUE(cache.enqueue(kPeerIp, Bytes(1000, std::byte{3}), {}, t)); // the last large one
  EXPECT_FALSE(cache.enqueue(kPeerIp, Bytes(1000, std::byte{4}), {}, t));
  EXPECT_EQ(ctr.get(Counter::arp_queue_overflow), 1u);
  EXPECT_TRUE(cache.update(kPeerIp, kPeerMac, t));
  ASSERT_EQ(tx.sent.size(), 3u);
  EXPECT_EQ(tx.sent[1].second, Bytes(60, std::byte{2}));
  EXPECT_EQ(tx.sent[2].second, Bytes(1000, std::byte{3}));
  EXPECT_EQ(cache.pool_free(), 3u);
}

TEST(ArpCache, FullTableEvictsStalestResolvedEntryButNeverAPendingOne) {
  ArpConfig cfg;
  cfg.max_entries = 4;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 1500, ctr, tx);
  const Instant t = instant_from_ns(0);
  auto ip = [](int i) { return Ipv4Addr::from_octets(198, 18, 0, static_cast<std::uint8_t>(10 + i)); };
  for (int i = 0; i < 4; ++i) cache.insert(ip(i), kPeerMac, t + std::chrono::seconds(i));
  EXPECT_EQ(cache.size(), 4u);
  cache.insert(ip(4), kPeerMac, t + 10s);  // evicts ip(0), the oldest
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_FALSE(cache.lookup(ip(0), t + 10s));
  for (int i = 1; i <= 4; ++i) EXPECT_TRUE(cache.lookup(ip(i), t + 10s)) << i;
  // Fill with pending entries: they are kept, and a fifth destination cannot be queued.
  Counters c2;
  RecordingArpSender tx2;
  net::ArpCache pending(cfg, 1500, c2, tx2);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(pending.enqueue(ip(i), tagged(i), {}, t));
  EXPECT_FALSE(pending.enqueue(ip(4), tagged(4), {}, t));
  EXPECT_EQ(c2.get(Counter::arp_queue_overflow), 1u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pending.queued(ip(i)), 1u);
}

TEST(ArpCache, ManyEntriesSurviveRemovalsInTheProbeChains) {
  // Exercise backward-shift deletion: resolve many, fail a subset, and check the rest are found.
  ArpConfig cfg;
  cfg.max_entries = 64;
  cfg.max_retries = 0;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 64, ctr, tx);
  const Instant t = instant_from_ns(0);
  auto ip = [](int i) { return Ipv4Addr{0xc6120000u + static_cast<std::uint32_t>(i) * 256u}; };
  for (int i = 0; i < 64; ++i) {
    if (i % 3 == 0) {
      cache.enqueue(ip(i), tagged(i, 8), {}, t);  // will fail
    } else {
      cache.insert(ip(i), kPeerMac, t);
    }
  }
  EXPECT_EQ(cache.size(), 64u);
  cache.poll(t + cfg.retry_interval);
  EXPECT_EQ(ctr.get(Counter::arp_resolve_failed), 22u);
  EXPECT_EQ(cache.size(), 64u - 22u);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(cache.lookup(ip(i), t + 1s).has_value(), i % 3 != 0) << i;
}

TEST(ArpCache, RandomInsertFailCyclesKeepEveryLiveEntryFindable) {
  // Dense table (load 1/2) with arbitrary addresses: removals must keep probe chains intact.
  ArpConfig cfg;
  cfg.max_entries = 32;
  cfg.max_retries = 0;
  Counters ctr;
  RecordingArpSender tx;
  net::ArpCache cache(cfg, 64, ctr, tx);
  std::uint32_t rng = 12345;
  auto next = [&] {
    rng = rng * 1664525u + 1013904223u;
    return rng;
  };
  Instant t = instant_from_ns(0);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::pair<Ipv4Addr, bool>> added;  // (ip, resolved)
    while (cache.size() < cfg.max_entries) {
      const Ipv4Addr ip{0xc6120000u | ((next() >> 12) & 0xffffu)};
      if (cache.lookup(ip, t) || cache.queued(ip) != 0) continue;
      const bool resolve = ((next() >> 20) & 1u) != 0;  // high bits: an LCG's low bit alternates
      if (resolve) {
        cache.insert(ip, kPeerMac, t);
      } else {
        cache.enqueue(ip, tagged(1, 8), {}, t);
      }
      added.emplace_back(ip, resolve);
    }
    t += cfg.retry_interval;
    cache.poll(t);  // every pending entry fails and is removed
    for (const auto& [ip, resolved] : added) {
      ASSERT_EQ(cache.lookup(ip, t).has_value(), resolved) << "round " << round << " ip " << ip.str();
    }
    // Age out the rest so the next round evicts them.
    t += cfg.entry_ttl;
  }
  EXPECT_EQ(cache.pool_free(), cfg.queue_small_packets + cfg.queue_large_packets);
}
