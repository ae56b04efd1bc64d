#include "stack/wire/ethernet.hh"

namespace pno::wire {

Checked<EthernetView> EthernetView::parse(ByteSpan frame) {
  if (frame.size() < kEthHeaderLen) return Counter::eth_drop_truncated;
  return EthernetView(frame);
}

MacAddr EthernetView::load_mac(std::size_t off) const {
  MacAddr m;
  for (std::size_t i = 0; i < m.b.size(); ++i) m.b[i] = load_u8(b_.data() + off + i);
  return m;
}

void store_mac(std::byte* p, const MacAddr& m) {
  for (std::size_t i = 0; i < m.b.size(); ++i) store_u8(p + i, m.b[i]);
}

bool emit_ethernet(MutByteSpan out, const EthernetRepr& h) {
  if (out.size() < kEthHeaderLen) return false;
  store_mac(out.data() + eth_field::kDst, h.dst);
  store_mac(out.data() + eth_field::kSrc, h.src);
  store_be16(out.data() + eth_field::kEtherType, h.ethertype);
  return true;
}

}  // namespace pno::wire
