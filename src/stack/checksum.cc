#include "stack/checksum.hh"

#include <cstring>

namespace pno {

void Checksum::add(ByteSpan data) {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  // Sum 32-bit big-endian words into a 64-bit accumulator: carries are folded at the end.
  while (n >= 4) {
    sum_ += load_be32(p);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    sum_ += load_be16(p);
    p += 2;
    n -= 2;
  }
  if (n == 1) sum_ += std::uint32_t{load_u8(p)} << 8;
}

std::uint16_t Checksum::fold() const {
  std::uint64_t s = sum_;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(~s & 0xffff);
}

std::uint16_t ipv4_header_checksum(ByteSpan header) {
  Checksum c;
  c.add(header);
  return c.fold();
}

std::uint16_t l4_checksum(Ipv4Addr src, Ipv4Addr dst, std::uint8_t proto, ByteSpan segment) {
  Checksum c;
  c.add_u32(src.v);
  c.add_u32(dst.v);
  c.add_u16(proto);
  c.add_u16(static_cast<std::uint16_t>(segment.size()));
  c.add(segment);
  return c.fold();
}

}  // namespace pno
