#include "stack/wire/icmp.hh"

#include <cstring>

#include "stack/checksum.hh"

namespace pno::wire {

Checked<IcmpView> IcmpView::parse(ByteSpan message) {
  if (message.size() < kIcmpHeaderLen) return Counter::icmp_drop_malformed;
  return IcmpView(message);
}

bool IcmpView::verify_checksum() const {
  Checksum c;
  c.add(b_);
  return c.verifies();
}

std::size_t emit_icmp_echo(MutByteSpan out, const IcmpEchoRepr& h, ByteSpan data) {
  const std::size_t len = kIcmpHeaderLen + data.size();
  if (out.size() < len) return 0;
  std::byte* p = out.data();
  if (!data.empty() && data.data() != p + kIcmpHeaderLen) std::memmove(p + kIcmpHeaderLen, data.data(), data.size());
  store_u8(p + icmp_field::kType, h.type);
  store_u8(p + icmp_field::kCode, 0);
  store_be16(p + icmp_field::kChecksum, 0);
  store_be16(p + icmp_field::kIdent, h.ident);
  store_be16(p + icmp_field::kSeq, h.seq);
  Checksum c;
  c.add(ByteSpan(p, len));
  store_be16(p + icmp_field::kChecksum, c.fold());
  return len;
}

}  // namespace pno::wire
