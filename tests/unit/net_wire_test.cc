// Wire views for Ethernet, ARP, IPv4, ICMP and TCP: fields decode from bytes built independently
// (support/frames), every malformation is rejected with its counter, emitters produce the same bytes.
#include <gtest/gtest.h>

#include "stack/checksum.hh"
#include "stack/wire/arp.hh"
#include "stack/wire/ethernet.hh"
#include "stack/wire/icmp.hh"
#include "stack/wire/ipv4.hh"
#include "stack/wire/tcp.hh"
#include "support/frames.hh"

using namespace pno;
using namespace pno::test;
using namespace pno::wire;

namespace {

Bytes payload_bytes(std::size_t n) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<std::uint8_t>(i * 7 + 1));
  return b;
}

}  // namespace

// --- Ethernet ---------------------------------------------------------------------------------------

TEST(EthernetView, DecodesHeaderFields) {
  const Bytes p = payload_bytes(10);
  const Bytes f = eth_frame(kLocalMac, kPeerMac, kEthArp, p);
  const auto v = EthernetView::parse(f);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->dst(), kLocalMac);
  EXPECT_EQ(v->src(), kPeerMac);
  EXPECT_EQ(v->ethertype(), kEtherTypeArp);
  ASSERT_EQ(v->payload().size(), p.size());
  EXPECT_TRUE(std::equal(p.begin(), p.end(), v->payload().begin()));
}

TEST(EthernetView, RejectsFrameShorterThanHeader) {
  const Bytes f = eth_frame(kLocalMac, kPeerMac, kEthIpv4, {});
  EXPECT_TRUE(EthernetView::parse(f));
  const auto v = EthernetView::parse(ByteSpan(f).first(13));
  ASSERT_FALSE(v);
  EXPECT_EQ(v.reason(), Counter::eth_drop_truncated);
  EXPECT_FALSE(EthernetView::parse({}));
}

TEST(EthernetEmit, WritesSameBytesAsBuilderAndRefusesShortBuffer) {
  Bytes out(14);
  ASSERT_TRUE(emit_ethernet(out, {.dst = kPeerMac, .src = kLocalMac, .ethertype = kEtherTypeIpv4}));
  EXPECT_EQ(out, eth_frame(kPeerMac, kLocalMac, kEthIpv4, {}));
  Bytes small(13, std::byte{0x11});
  EXPECT_FALSE(emit_ethernet(small, {.dst = kPeerMac, .src = kLocalMac, .ethertype = kEtherTypeIpv4}));
  EXPECT_EQ(small, Bytes(13, std::byte{0x11}));
}

// --- ARP ------------------------------------------------------------------------------------------

TEST(ArpView, DecodesRequestAndIgnoresEthernetPadding_Rfc826) {
  Bytes a = arp_packet({.oper = 1, .sha = kPeerMac, .spa = kPeerIp, .tha = {}, .tpa = kLocalIp});
  a.resize(46, std::byte{0xee});  // padded to the Ethernet minimum
  const auto v = ArpView::parse(a);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->oper(), kArpOpRequest);
  EXPECT_EQ(v->sha(), kPeerMac);
  EXPECT_EQ(v->spa(), kPeerIp);
  EXPECT_EQ(v->tha(), MacAddr{});
  EXPECT_EQ(v->tpa(), kLocalIp);
}

TEST(ArpView, RejectsShortWrongKindsAndUnknownOperation) {
  const ArpSpec good{.oper = 2, .sha = kPeerMac, .spa = kPeerIp, .tha = kLocalMac, .tpa = kLocalIp};
  EXPECT_TRUE(ArpView::parse(arp_packet(good)));
  auto expect_malformed = [](const Bytes& b) {
    const auto v = ArpView::parse(b);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.reason(), Counter::arp_drop_malformed);
  };
  Bytes s = arp_packet(good);
  s.pop_back();
  expect_malformed(s);
  ArpSpec x = good;
  x.htype = 6;  // IEEE 802 networks: not Ethernet
  expect_malformed(arp_packet(x));
  x = good;
  x.ptype = 0x86dd;
  expect_malformed(arp_packet(x));
  x = good;
  x.hlen = 8;
  expect_malformed(arp_packet(x));
  x = good;
  x.plen = 16;
  expect_malformed(arp_packet(x));
  x = good;
  x.oper = 3;  // RARP request
  expect_malformed(arp_packet(x));
}

TEST(ArpEmit, WritesSameBytesAsBuilder) {
  Bytes out(28);
  ASSERT_TRUE(emit_arp(out, {.oper = kArpOpReply, .sha = kLocalMac, .spa = kLocalIp, .tha = kPeerMac, .tpa = kPeerIp}));
  EXPECT_EQ(out, arp_packet({.oper = 2, .sha = kLocalMac, .spa = kLocalIp, .tha = kPeerMac, .tpa = kPeerIp}));
  Bytes small(27);
  EXPECT_FALSE(emit_arp(small, {}));
}

// --- IPv4 -----------------------------------------------------------------------------------------

TEST(Ipv4View, DecodesFieldsOptionsAndPayload_Rfc791) {
  const Bytes l4 = payload_bytes(13);
  const Bytes opts = bytes_of({0x01, 0x01, 0x44, 0x04, 0x05, 0x00});  // NOP NOP Timestamp(len 4) ... End
  const Bytes p = ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .proto = 6, .ttl = 17, .tos = 0x10, .ident = 0xbeef,
                               .df = false, .options = opts},
                              l4);
  const auto v = Ipv4View::parse(p);
  ASSERT_TRUE(v) << hex(p);
  EXPECT_EQ(v->version(), 4);
  EXPECT_EQ(v->header_len(), 28u);
  EXPECT_EQ(v->tos(), 0x10);
  EXPECT_EQ(v->total_len(), 28 + 13);
  EXPECT_EQ(v->ident(), 0xbeef);
  EXPECT_FALSE(v->dont_fragment());
  EXPECT_FALSE(v->is_fragment());
  EXPECT_EQ(v->ttl(), 17);
  EXPECT_EQ(v->protocol(), 6);
  EXPECT_EQ(v->src(), kPeerIp);
  EXPECT_EQ(v->dst(), kLocalIp);
  EXPECT_TRUE(v->verify_checksum());
  EXPECT_EQ(v->options().size(), 8u);
  ASSERT_EQ(v->payload().size(), l4.size());
  EXPECT_TRUE(std::equal(l4.begin(), l4.end(), v->payload().begin()));
}

TEST(Ipv4View, PayloadStopsAtTotalLengthNotAtBufferEnd) {
  Bytes p = ipv4_packet({.src = kPeerIp, .dst = kLocalIp}, payload_bytes(6));
  p.resize(46, std::byte{0});  // Ethernet minimum-frame padding
  const auto v = Ipv4View::parse(p);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->payload().size(), 6u);
}

TEST(Ipv4View, ReportsFragmentFlags) {
  const auto mf = ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .df = false, .mf = true}, payload_bytes(8));
  const auto off = ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .df = false, .frag_offset = 185}, payload_bytes(8));
  ASSERT_TRUE(Ipv4View::parse(mf));
  ASSERT_TRUE(Ipv4View::parse(off));
  EXPECT_TRUE(Ipv4View::parse(mf)->more_fragments());
  EXPECT_TRUE(Ipv4View::parse(mf)->is_fragment());
  EXPECT_EQ(Ipv4View::parse(off)->frag_offset(), 185);
  EXPECT_TRUE(Ipv4View::parse(off)->is_fragment());
}

TEST(Ipv4View, RejectsEachMalformationWithItsReason) {
  const Bytes l4 = payload_bytes(8);
  struct Case {
    const char* what;
    Bytes bytes;
    Counter reason;
  };
  Bytes short19 = ipv4_packet({.src = kPeerIp, .dst = kLocalIp}, {});
  short19.pop_back();
  Bytes ihl15 = ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .ihl = 15, .total_len = 28}, l4);  // 60-byte header claimed
  const Case cases[] = {
      {"shorter than 20 bytes", short19, Counter::ip_drop_truncated},
      {"version 6", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .version = 6}, l4), Counter::ip_drop_bad_version},
      {"IHL 4", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .ihl = 4}, l4), Counter::ip_drop_bad_ihl},
      {"IHL 0", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .ihl = 0}, l4), Counter::ip_drop_bad_ihl},
      {"IHL beyond buffer", ihl15, Counter::ip_drop_truncated},
      {"total length below header", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .total_len = 19}, l4),
       Counter::ip_drop_bad_total_len},
      {"total length beyond buffer", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .total_len = 29}, l4),
       Counter::ip_drop_bad_total_len},
      {"option overruns header",
       ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .options = bytes_of({0x01, 0x44, 0x08, 0, 0, 0, 0, 0})}, l4),
       Counter::ip_drop_options},
      {"option length 1", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .options = bytes_of({0x07, 0x01, 0, 0})}, l4),
       Counter::ip_drop_options},
      {"option without length byte", ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .options = bytes_of({1, 1, 1, 0x83})}, l4),
       Counter::ip_drop_options},
  };
  for (const Case& c : cases) {
    const auto v = Ipv4View::parse(c.bytes);
    ASSERT_FALSE(v) << c.what;
    EXPECT_EQ(v.reason(), c.reason) << c.what << ": got " << kCounterNames[static_cast<std::size_t>(v.reason())];
  }
}

TEST(Ipv4View, ChecksumMismatchDetected_Rfc1071) {
  const Bytes good = ipv4_packet({.src = kPeerIp, .dst = kLocalIp}, payload_bytes(4));
  const Bytes bad = ipv4_packet({.src = kPeerIp, .dst = kLocalIp, .checksum = 0x1234}, payload_bytes(4));
  EXPECT_TRUE(Ipv4View::parse(good)->verify_checksum());
  ASSERT_TRUE(Ipv4View::parse(bad));  // structure is fine; only the checksum is wrong
  EXPECT_FALSE(Ipv4View::parse(bad)->verify_checksum());
}

TEST(Ipv4Emit, WritesSameBytesAsBuilderWithDfAndChecksum) {
  Bytes out(20);
  ASSERT_TRUE(emit_ipv4(out, {.src = kLocalIp, .dst = kPeerIp, .protocol = 6, .ttl = 64, .tos = 0, .ident = 7,
                              .dont_fragment = true, .payload_len = 100}));
  Bytes expect = ipv4_packet({.src = kLocalIp, .dst = kPeerIp, .proto = 6, .ttl = 64, .ident = 7, .df = true,
                              .total_len = 120},
                             {});
  EXPECT_EQ(hex(out), hex(expect));
  // Offload: checksum left zero for the port.
  ASSERT_TRUE(emit_ipv4(out, {.src = kLocalIp, .dst = kPeerIp, .protocol = 6, .payload_len = 100}, false));
  EXPECT_EQ(load_be16(out.data() + ipv4_field::kChecksum), 0);
  Bytes small(19);
  EXPECT_FALSE(emit_ipv4(small, {}));
  EXPECT_FALSE(emit_ipv4(out, {.payload_len = 0xffff}));
}

// --- ICMP -----------------------------------------------------------------------------------------

TEST(IcmpView, DecodesEchoAndVerifiesChecksum_Rfc792) {
  const Bytes data = payload_bytes(57);  // odd length exercises the checksum's last byte
  const Bytes m = icmp_echo(8, 0x1234, 0x0042, data);
  const auto v = IcmpView::parse(m);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->type(), kIcmpEchoRequest);
  EXPECT_EQ(v->code(), 0);
  EXPECT_EQ(v->echo_ident(), 0x1234);
  EXPECT_EQ(v->echo_seq(), 0x0042);
  EXPECT_EQ(v->data().size(), 57u);
  EXPECT_TRUE(v->verify_checksum());
  const Bytes bad = icmp_echo(8, 0x1234, 0x0042, data, true);
  EXPECT_FALSE(IcmpView::parse(bad)->verify_checksum());
}

TEST(IcmpView, RejectsMessageShorterThanHeader) {
  const Bytes m = icmp_echo(8, 1, 1, {});
  const auto v = IcmpView::parse(ByteSpan(m).first(7));
  ASSERT_FALSE(v);
  EXPECT_EQ(v.reason(), Counter::icmp_drop_malformed);
}

TEST(IcmpEmit, EchoMatchesBuilderIncludingChecksum) {
  const Bytes data = payload_bytes(33);
  Bytes out(8 + 33);
  ASSERT_EQ(emit_icmp_echo(out, {.type = kIcmpEchoReply, .ident = 0xabcd, .seq = 9}, data), out.size());
  EXPECT_EQ(hex(out), hex(icmp_echo(0, 0xabcd, 9, data)));
  Bytes small(8 + 32);
  EXPECT_EQ(emit_icmp_echo(small, {}, data), 0u);
}

// --- TCP ------------------------------------------------------------------------------------------

TEST(TcpRepr, ParseRejectsBadDataOffsetAndEmitRoundtrips) {
  Bytes seg = tcp_segment(kPeerIp, kLocalIp, TcpSpec{.sport = 1, .dport = 2, .seq = 7, .flags = kTcpSyn, .data_offset = 4}, {});
  EXPECT_FALSE(TcpView::parse(seg).ok());
  seg = tcp_segment(kPeerIp, kLocalIp, TcpSpec{.sport = 1, .dport = 2, .seq = 7, .flags = kTcpSyn, .data_offset = 15}, {});
  EXPECT_FALSE(TcpView::parse(seg).ok());
  TcpRepr r;
  r.src_port = 80;
  r.dst_port = 1234;
  r.seq = tcp::SeqNum(1);
  r.ack = tcp::SeqNum(2);
  r.flags = kTcpAck;
  r.window = 99;
  r.opts.has_timestamps = true;
  r.opts.ts = {5, 6};
  r.opts.sack_count = 2;
  r.opts.sack[0] = {tcp::SeqNum(10), tcp::SeqNum(20)};
  r.opts.sack[1] = {tcp::SeqNum(30), tcp::SeqNum(40)};
  const Bytes payload{std::byte{'x'}, std::byte{'y'}, std::byte{'z'}};
  r.payload = payload;
  Bytes out(r.buffer_len());
  ASSERT_EQ(r.emit(out, kLocalIp, kPeerIp, false), out.size());
  EXPECT_EQ(inet_checksum(out, kLocalIp, kPeerIp, 6), 0);
  const auto back = TcpRepr::parse(out, kLocalIp, kPeerIp, true);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back).opts, r.opts);
  EXPECT_EQ((*back).window, 99);
  EXPECT_EQ((*back).payload.size(), 3u);
}
