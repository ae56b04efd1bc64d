#include "stack/checksum.hh"

#include <bit>
#include <cstring>

namespace pno {

namespace {

inline std::uint64_t load_native64(const std::byte* p) {
  std::uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

/// One's-complement sum of `n` bytes in the machine's byte order, folded to 16 bits.
/// RFC 1071 §2(B): the sum is byte-order independent, so the data is summed as native 64-bit words
/// (no byte swap per word) and only the folded 16-bit result is swapped to network order. The
/// words go into a 128-bit accumulator (an add and an add-with-carry per word): carries out of 64
/// bits are kept, and folded back at the end (RFC 1071 §2(C), deferred carries).
std::uint16_t native_sum16(const std::byte* p, std::size_t n) {
  unsigned __int128 acc = 0;
  while (n >= 32) {
    acc += load_native64(p);
    acc += load_native64(p + 8);
    acc += load_native64(p + 16);
    acc += load_native64(p + 24);
    p += 32;
    n -= 32;
  }
  while (n >= 8) {
    acc += load_native64(p);
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    // The tail, zero-padded to a whole word in memory order: a lone last byte takes the position
    // it has within its 16-bit word (RFC 1071 §4.1 pads an odd length with a zero byte).
    std::uint64_t x = 0;
    std::memcpy(&x, p, n);
    acc += x;
  }
  // 2^64 is 1 modulo 0xffff: the high half adds in as an end-around carry.
  std::uint64_t s = static_cast<std::uint64_t>(acc);
  const std::uint64_t hi = static_cast<std::uint64_t>(acc >> 64);
  s += hi;
  if (s < hi) ++s;
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
