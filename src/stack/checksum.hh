// Internet checksum (RFC 1071), incremental, and the TCP/UDP pseudo-header (RFC 9293 §3.1).
#pragma once

#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"

namespace pno {

/// Running one's-complement sum; fold() gives the 16-bit checksum field value.
class Checksum {
 public:
  /// Adds bytes. Every call except the last must pass an even length.
  void add(ByteSpan data);
  void add_u16(std::uint16_t v) { sum_ += v; }
  void add_u32(std::uint32_t v) { sum_ += (v >> 16) + (v & 0xffff); }
  /// Final checksum value (complemented). Zero sum gives 0xffff, as required for the wire.
  [[nodiscard]] std::uint16_t fold() const;
  /// True if the data added includes the checksum field and the result verifies.
  [[nodiscard]] bool verifies() const { return fold() == 0; }

 private:
  std::uint64_t sum_ = 0;
};

/// Checksum of an IPv4 header (the header's checksum field included: result 0 means valid).
std::uint16_t ipv4_header_checksum(ByteSpan header);

/// TCP/UDP checksum over pseudo-header + segment. With the checksum field filled in, 0 means valid.
std::uint16_t l4_checksum(Ipv4Addr src, Ipv4Addr dst, std::uint8_t proto, ByteSpan segment);

}  // namespace pno
