#include "stack/checksum.hh"

#include <bit>
#include <cstring>

namespace pno {

namespace {

/// One's-complement sum of `n` bytes in the machine's byte order, folded to 16 bits.
/// RFC 1071 §2(B): the sum is byte-order independent, so the data is summed as native 64-bit words
/// (no byte swap per word) and only the folded 16-bit result is swapped to network order. Each
/// 64-bit word is split into two 32-bit halves summed into 64-bit accumulators: no carry is lost
/// for any length below 2^34 bytes, and the loop has no carry chain, so the compiler can vectorise it.
std::uint16_t native_sum16(const std::byte* p, std::size_t n) {
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  while (n >= 32) {
    std::uint64_t w[4];
    std::memcpy(w, p, sizeof w);
    for (const std::uint64_t x : w) {
      lo += x & 0xffffffffu;
      hi += x >> 32;
    }
    p += 32;
    n -= 32;
  }
  while (n >= 8) {
    std::uint64_t x;
    std::memcpy(&x, p, 8);
    lo += x & 0xffffffffu;
    hi += x >> 32;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    // The tail, zero-padded to a whole word in memory order: a lone last byte takes the position
    // it has within its 16-bit word (RFC 1071 §4.1 pads an odd length with a zero byte).
    std::uint64_t x = 0;
    std::memcpy(&x, p, n);
    lo += x & 0xffffffffu;
    hi += x >> 32;
  }
  std::uint64_t s = lo + hi;  // < 2^63: no overflow
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}

}  // namespace

void Checksum::add(ByteSpan data) {
  const std::uint16_t s = native_sum16(data.data(), data.size());
  if constexpr (std::endian::native == std::endian::little) {
    sum_ += static_cast<std::uint16_t>((s >> 8) | (s << 8));
  } else {
    sum_ += s;
  }
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
