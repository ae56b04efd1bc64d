#include "stack/wire/ipv4.hh"

#include "stack/checksum.hh"

namespace pno::wire {

namespace {

// RFC 791 §3.1: options are either a single kind byte (End, NOP) or kind, length (>= 2, counting
// both), data. An option whose length runs past the header is malformed.
bool options_well_formed(ByteSpan opts) {
  std::size_t i = 0;
  while (i < opts.size()) {
    const std::uint8_t kind = load_u8(opts.data() + i);
    if (kind == kIpv4OptEnd) return true;
    if (kind == kIpv4OptNop) {
      ++i;
      continue;
    }
    if (i + 1 >= opts.size()) return false;
    const std::size_t len = load_u8(opts.data() + i + 1);
    if (len < 2 || len > opts.size() - i) return false;
    i += len;
  }
  return true;
}

}  // namespace

Checked<Ipv4View> Ipv4View::parse(ByteSpan packet) {
  if (packet.size() < kIpv4MinHeaderLen) return Counter::ip_drop_truncated;
  const std::uint8_t ver_ihl = load_u8(packet.data() + ipv4_field::kVerIhl);
  if ((ver_ihl >> 4) != 4) return Counter::ip_drop_bad_version;
  const std::size_t hlen = std::size_t{ver_ihl & 0x0fu} * 4;
  if (hlen < kIpv4MinHeaderLen) return Counter::ip_drop_bad_ihl;
  if (hlen > packet.size()) return Counter::ip_drop_truncated;
  const std::size_t total = load_be16(packet.data() + ipv4_field::kTotalLen);
  if (total < hlen || total > packet.size()) return Counter::ip_drop_bad_total_len;
  const ByteSpan bytes = packet.first(total);
  if (!options_well_formed(bytes.subspan(kIpv4MinHeaderLen, hlen - kIpv4MinHeaderLen))) {
    return Counter::ip_drop_options;
  }
  return Ipv4View(bytes);
}

bool Ipv4View::verify_checksum() const { return ipv4_header_checksum(header()) == 0; }

bool emit_ipv4(MutByteSpan out, const Ipv4Repr& h, bool fill_checksum) {
  if (out.size() < kIpv4MinHeaderLen || h.payload_len > 0xffff - kIpv4MinHeaderLen) return false;
  std::byte* p = out.data();
  store_u8(p + ipv4_field::kVerIhl, 0x45);
  store_u8(p + ipv4_field::kTos, h.tos);
  store_be16(p + ipv4_field::kTotalLen, static_cast<std::uint16_t>(kIpv4MinHeaderLen + h.payload_len));
  store_be16(p + ipv4_field::kIdent, h.ident);
  store_be16(p + ipv4_field::kFlagsFrag, h.dont_fragment ? ipv4_field::kFlagDf : 0);
  store_u8(p + ipv4_field::kTtl, h.ttl);
  store_u8(p + ipv4_field::kProto, h.protocol);
  store_be16(p + ipv4_field::kChecksum, 0);
  store_be32(p + ipv4_field::kSrc, h.src.v);
  store_be32(p + ipv4_field::kDst, h.dst.v);
  if (fill_checksum) {
    store_be16(p + ipv4_field::kChecksum, ipv4_header_checksum(ByteSpan(p, kIpv4MinHeaderLen)));
  }
  return true;
}

}  // namespace pno::wire
