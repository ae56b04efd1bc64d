#include "stack/net/ipv4.hh"

#include <algorithm>

#include "stack/wire/arp.hh"
#include "stack/wire/ethernet.hh"
#include "stack/wire/icmp.hh"
#include "stack/wire/ipv4.hh"

namespace pno::net {

namespace {
constexpr std::size_t kL2L3Len = wire::kEthHeaderLen + wire::kIpv4MinHeaderLen;
}  // namespace

NetIf::NetIf(const StackConfig& cfg, FrameSink& sink, Counters& counters, Instant now)
    : mac_(cfg.mac),
      addr_(cfg.addr),
      gateway_(cfg.gateway),
      caps_(cfg.caps),
      sink_(sink),
      counters_(counters),
      arp_(cfg.arp, cfg.caps.mtu, counters, *this),
      now_(now),
      scratch_(cfg.caps.mtu) {}

std::size_t NetIf::max_l4_len() const {
  return caps_.mtu > wire::kIpv4MinHeaderLen ? caps_.mtu - wire::kIpv4MinHeaderLen : 0;
}

bool NetIf::is_broadcast(Ipv4Addr a) const {
  if (a == Ipv4Addr::broadcast()) return true;
  // /31 and /32 have no subnet broadcast address (RFC 3021).
  return addr_.prefix_len < 31 && a == addr_.subnet_broadcast();
}

std::optional<Ipv4Addr> NetIf::next_hop(Ipv4Addr dst) const {
  if (addr_.contains(dst)) return dst;
  return gateway_;
}

// --- receive ------------------------------------------------------------------------------------

void NetIf::on_frame(ByteSpan frame, Instant now, const RxMeta& meta) {
  now_ = now;
  counters_.inc(Counter::eth_rx);
  const auto eth = wire::EthernetView::parse(frame);
  if (!eth) {
    counters_.inc(eth.reason());
    return;
  }
  const MacAddr dst = eth->dst();
  if (dst != mac_ && !dst.is_broadcast()) {
    counters_.inc(Counter::eth_drop_not_for_us);
    return;
  }
  if (eth->src() == mac_) {
    // Some ports (af_packet) show our own broadcasts back to us; learning from them would look
    // like an address conflict.
    counters_.inc(Counter::eth_drop_looped);
    return;
  }
  switch (eth->ethertype()) {
    case wire::kEtherTypeArp:
      on_arp(eth->payload(), now);
      break;
    case wire::kEtherTypeIpv4:
      on_ipv4(eth->src(), eth->payload(), now, meta);
      break;
    default:
      counters_.inc(Counter::eth_drop_unknown_type);
      break;
  }
}

void NetIf::on_arp(ByteSpan payload, Instant now) {
  const auto arp = wire::ArpView::parse(payload);
  if (!arp) {
    counters_.inc(arp.reason());
    return;
  }
  const bool request = arp->oper() == wire::kArpOpRequest;
  counters_.inc(request ? Counter::arp_rx_request : Counter::arp_rx_reply);
  const MacAddr sha = arp->sha();
  const Ipv4Addr spa = arp->spa();
  const Ipv4Addr tpa = arp->tpa();
  // A sender claiming a group MAC or a broadcast/multicast IP would poison the cache.
  if (sha.is_multicast() || sha.is_zero() || spa.is_multicast() || is_broadcast(spa)) {
    counters_.inc(Counter::arp_drop_malformed);
    return;
  }
  if (spa == addr_.addr) {
    // Someone else uses our address (RFC 5227 §2.4). Never learn it as a neighbour.
    counters_.inc(Counter::arp_rx_conflict);
    return;
  }
  // RFC 826 "Packet Reception": update an existing entry for the sender whoever the target is
  // (merge_flag), then only continue if we are the target. spa 0.0.0.0 is an RFC 5227 probe:
  // nothing to learn.
  bool merged = false;
  if (!spa.is_any()) merged = arp_.update(spa, sha, now);
  if (tpa != addr_.addr) {
    counters_.inc(Counter::arp_drop_not_for_us);
    return;
  }
  if (!merged && !spa.is_any()) arp_.insert(spa, sha, now);
  if (request) {
    // Reply straight to the asker (RFC 826: swap sender and target, fill in our hardware address).
    send_arp(wire::kArpOpReply, sha, sha, spa);
    counters_.inc(Counter::arp_tx_reply);
  }
}

void NetIf::on_ipv4(const MacAddr& eth_src, ByteSpan payload, Instant now, const RxMeta& meta) {
  counters_.inc(Counter::ip_rx);
  const auto ip = wire::Ipv4View::parse(payload);  // also trims Ethernet padding
  if (!ip) {
    counters_.inc(ip.reason());
    return;
  }
  if (!meta.ipv4_checksum_good && !ip->verify_checksum()) {
    counters_.inc(Counter::ip_drop_bad_checksum);
    return;
  }
  if (ip->is_fragment()) {
    // No reassembly: PnO sends with DF and Linux peers do PMTU discovery, so fragments are rare.
    counters_.inc(Counter::ip_drop_fragment);
    return;
  }
  if (ip->ttl() == 0) {
    counters_.inc(Counter::ip_drop_bad_ttl);
    return;
  }
  const Ipv4Addr src = ip->src();
  const Ipv4Addr dst = ip->dst();
  // RFC 1122 §3.2.1.3: a source must be one of our peers' unicast addresses (not broadcast,
  // multicast, loopback, unspecified, nor our own — which would be a spoofed or looped packet).
  if (src.is_any() || src.is_multicast() || src.is_loopback() || is_broadcast(src) || src == addr_.addr) {
    counters_.inc(Counter::ip_drop_bad_src);
    return;
  }
  bool to_broadcast = false;
  if (dst != addr_.addr) {
    if (!is_broadcast(dst)) {
      counters_.inc(Counter::ip_drop_not_for_us);
      return;
    }
    to_broadcast = true;
  }
  switch (ip->protocol()) {
    case kIpProtoIcmp:
      on_icmp(eth_src, src, ip->tos(), to_broadcast, ip->payload());
      break;
    case kIpProtoTcp:
      if (to_broadcast) {
        // RFC 1122 §4.2.3.10: a SYN to a broadcast address must be ignored; no TCP is broadcast.
        counters_.inc(Counter::ip_drop_broadcast);
        break;
      }
      if (transport_ == nullptr) {
        counters_.inc(Counter::ip_drop_unknown_proto);
        break;
      }
      transport_->on_ipv4(Ipv4RxInfo{.src = src, .dst = dst, .ttl = ip->ttl(), .tos = ip->tos(),
                                     .l4_checksum_good = meta.l4_checksum_good},
                          ip->payload(), now);
      break;
    default:
      counters_.inc(Counter::ip_drop_unknown_proto);
      break;
  }
}

void NetIf::on_icmp(const MacAddr& eth_src, Ipv4Addr src, std::uint8_t tos, bool to_broadcast, ByteSpan message) {
  const auto icmp = wire::IcmpView::parse(message);
  if (!icmp) {
    counters_.inc(icmp.reason());
    return;
  }
  if (!icmp->verify_checksum()) {
    counters_.inc(Counter::icmp_drop_malformed);
    return;
  }
  if (icmp->type() != wire::kIcmpEchoRequest) {
    counters_.inc(Counter::icmp_drop_unhandled);
    return;
  }
  counters_.inc(Counter::icmp_rx_echo);
  if (to_broadcast) {
    // RFC 1122 §3.2.2.6 lets a host ignore broadcast echo; Linux does by default (smurf attacks).
    counters_.inc(Counter::ip_drop_broadcast);
    return;
  }
  const std::size_t icmp_len = message.size();
  if (wire::kIpv4MinHeaderLen + icmp_len > caps_.mtu) {
    counters_.inc(Counter::ip_tx_too_big);
    return;
  }
  MutByteSpan f = sink_.tx_begin(kL2L3Len + icmp_len);
  if (f.size() < kL2L3Len + icmp_len) {
    if (!f.empty()) sink_.tx_abort();
    counters_.inc(Counter::eth_tx_no_buffer);
    return;
  }
  // RFC 792 echo reply: same identifier, sequence number and data; type 0, new checksum. The reply
  // goes back to the frame's source MAC, which is the next hop toward the sender on this link.
  wire::emit_icmp_echo(f.subspan(kL2L3Len),
                       {.type = wire::kIcmpEchoReply, .ident = icmp->echo_ident(), .seq = icmp->echo_seq()},
                       icmp->data());
  const bool hw_csum = caps_.tx_ipv4_checksum;
  wire::emit_ipv4(f.subspan(wire::kEthHeaderLen),
                  {.src = addr_.addr,
                   .dst = src,
                   .protocol = kIpProtoIcmp,
                   .ttl = wire::kIpv4DefaultTtl,
                   .tos = tos,
                   .ident = next_ident_++,
                   .dont_fragment = true,
                   .payload_len = static_cast<std::uint16_t>(icmp_len)},
                  !hw_csum);
  wire::emit_ethernet(f, {.dst = eth_src, .src = mac_, .ethertype = wire::kEtherTypeIpv4});
  sink_.tx_commit(kL2L3Len + icmp_len, TxMeta{.ipv4_checksum = hw_csum, .tcp_checksum = false, .l2_len = 14, .l3_len = 20});
  counters_.inc(Counter::icmp_tx_echo_reply);
  counters_.inc(Counter::ip_tx);
  counters_.inc(Counter::eth_tx);
}

// --- ARP output ---------------------------------------------------------------------------------

void NetIf::send_arp(std::uint16_t oper, const MacAddr& eth_dst, const MacAddr& tha, Ipv4Addr tpa) {
  constexpr std::size_t len = wire::kEthHeaderLen + wire::kArpLen;
  MutByteSpan f = sink_.tx_begin(len);
  if (f.size() < len) {
    if (!f.empty()) sink_.tx_abort();
    counters_.inc(Counter::eth_tx_no_buffer);
    return;
  }
  wire::emit_ethernet(f, {.dst = eth_dst, .src = mac_, .ethertype = wire::kEtherTypeArp});
  wire::emit_arp(f.subspan(wire::kEthHeaderLen), {.oper = oper, .sha = mac_, .spa = addr_.addr, .tha = tha, .tpa = tpa});
  sink_.tx_commit(len, TxMeta{});
  counters_.inc(Counter::eth_tx);
}

void NetIf::arp_send_request(Ipv4Addr target, const MacAddr* unicast_to) {
  // RFC 826: target hardware address is unknown, so zero; re-verification goes unicast
  // (RFC 1122 §2.3.2.1) to spare the rest of the link.
  send_arp(wire::kArpOpRequest, unicast_to ? *unicast_to : MacAddr::broadcast(), MacAddr{}, target);
}

void NetIf::announce() {
  // RFC 5227 §3: an ARP request with sender and target IP both ours, target MAC zero, broadcast.
  send_arp(wire::kArpOpRequest, MacAddr::broadcast(), MacAddr{}, addr_.addr);
  counters_.inc(Counter::arp_tx_announce);
  announcements_left_ = kArpAnnounceNum - 1;
  next_announce_ = announcements_left_ > 0 ? now_ + kArpAnnounceInterval : kNever;
}

void NetIf::arp_send_queued(const MacAddr& dst, ByteSpan packet, const TxMeta& meta) {
  const std::size_t len = wire::kEthHeaderLen + packet.size();
  MutByteSpan f = sink_.tx_begin(len);
  if (f.size() < len) {
    if (!f.empty()) sink_.tx_abort();
    counters_.inc(Counter::eth_tx_no_buffer);
    return;
  }
  wire::emit_ethernet(f, {.dst = dst, .src = mac_, .ethertype = wire::kEtherTypeIpv4});
  std::copy(packet.begin(), packet.end(), f.begin() + wire::kEthHeaderLen);
  sink_.tx_commit(len, meta);
  counters_.inc(Counter::ip_tx);
  counters_.inc(Counter::eth_tx);
}

// --- timers ---------------------------------------------------------------------------------------

void NetIf::poll(Instant now) {
  now_ = now;
  if (announcements_left_ > 0 && now >= next_announce_) {
    send_arp(wire::kArpOpRequest, MacAddr::broadcast(), MacAddr{}, addr_.addr);
    counters_.inc(Counter::arp_tx_announce);
    --announcements_left_;
    next_announce_ = announcements_left_ > 0 ? now + kArpAnnounceInterval : kNever;
  }
  arp_.poll(now);
}

Instant NetIf::next_deadline() const { return std::min(arp_.next_deadline(), next_announce_); }

// --- IPv4 output ------------------------------------------------------------------------------------

MutByteSpan NetIf::ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) {
  if (open_ != Open::none) ip_abort();  // one packet at a time: a forgotten one is dropped
  if (l4_len > max_l4_len()) {
    counters_.inc(Counter::ip_tx_too_big);
    return {};
  }
  const auto hop = next_hop(dst);
  if (!hop) {
    counters_.inc(Counter::ip_tx_no_route);
    return {};
  }
  const auto mac = arp_.lookup(*hop, now_);
  open_dst_ = dst;
  open_next_hop_ = *hop;
  open_proto_ = proto;
  open_l4_len_ = l4_len;
  if (mac) {
    const std::size_t len = kL2L3Len + l4_len;
    MutByteSpan f = sink_.tx_begin(len);
    if (f.size() < len) {
      if (!f.empty()) sink_.tx_abort();
      counters_.inc(Counter::eth_tx_no_buffer);
      return {};
    }
    open_ = Open::direct;
    open_mac_ = *mac;
    open_buf_ = f.first(len);
    return open_buf_.subspan(kL2L3Len);
  }
  // Next hop unresolved: build in scratch; ip_commit() copies it into the ARP queue.
  open_ = Open::scratch;
  open_buf_ = MutByteSpan(scratch_).first(wire::kIpv4MinHeaderLen + l4_len);
  return open_buf_.subspan(wire::kIpv4MinHeaderLen);
}

void NetIf::ip_commit(bool l4_checksum_offload) {
  if (open_ == Open::none) return;
  const bool hw_csum = caps_.tx_ipv4_checksum;
  const TxMeta meta{.ipv4_checksum = hw_csum, .tcp_checksum = l4_checksum_offload, .l2_len = 14, .l3_len = 20};
  const MutByteSpan ip = open_ == Open::direct ? open_buf_.subspan(wire::kEthHeaderLen) : open_buf_;
  wire::emit_ipv4(ip,
                  {.src = addr_.addr,
                   .dst = open_dst_,
                   .protocol = open_proto_,
                   .ttl = wire::kIpv4DefaultTtl,
                   .tos = 0,
                   .ident = next_ident_++,
                   .dont_fragment = true,
                   .payload_len = static_cast<std::uint16_t>(open_l4_len_)},
                  !hw_csum);
  const Open mode = open_;
  open_ = Open::none;
  if (mode == Open::direct) {
    wire::emit_ethernet(open_buf_, {.dst = open_mac_, .src = mac_, .ethertype = wire::kEtherTypeIpv4});
    sink_.tx_commit(open_buf_.size(), meta);
    counters_.inc(Counter::ip_tx);
    counters_.inc(Counter::eth_tx);
  } else {
    arp_.enqueue(open_next_hop_, ip, meta, now_);
  }
  open_buf_ = {};
}

void NetIf::ip_abort() {
  if (open_ == Open::direct) sink_.tx_abort();
  open_ = Open::none;
  open_buf_ = {};
}

}  // namespace pno::net
