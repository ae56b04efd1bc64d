#include "stack/wire/arp.hh"

#include "stack/wire/ethernet.hh"

namespace pno::wire {

Checked<ArpView> ArpView::parse(ByteSpan packet) {
  // Anything after the 28 bytes is Ethernet padding and is ignored.
  if (packet.size() < kArpLen) return Counter::arp_drop_malformed;
  const std::byte* p = packet.data();
  if (load_be16(p + arp_field::kHtype) != kArpHtypeEthernet || load_be16(p + arp_field::kPtype) != kEtherTypeIpv4 ||
      load_u8(p + arp_field::kHlen) != 6 || load_u8(p + arp_field::kPlen) != 4) {
    return Counter::arp_drop_malformed;
  }
  const std::uint16_t op = load_be16(p + arp_field::kOper);
  if (op != kArpOpRequest && op != kArpOpReply) return Counter::arp_drop_malformed;
  return ArpView(packet.first(kArpLen));
}

MacAddr ArpView::load_mac(std::size_t off) const {
  MacAddr m;
  for (std::size_t i = 0; i < m.b.size(); ++i) m.b[i] = load_u8(b_.data() + off + i);
  return m;
}

bool emit_arp(MutByteSpan out, const ArpRepr& a) {
  if (out.size() < kArpLen) return false;
  std::byte* p = out.data();
  store_be16(p + arp_field::kHtype, kArpHtypeEthernet);
  store_be16(p + arp_field::kPtype, kEtherTypeIpv4);
  store_u8(p + arp_field::kHlen, 6);
  store_u8(p + arp_field::kPlen, 4);
  store_be16(p + arp_field::kOper, a.oper);
  store_mac(p + arp_field::kSha, a.sha);
  store_be32(p + arp_field::kSpa, a.spa.v);
  store_mac(p + arp_field::kTha, a.tha);
  store_be32(p + arp_field::kTpa, a.tpa.v);
  return true;
}

}  // namespace pno::wire
