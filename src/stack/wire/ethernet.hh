// Ethernet II header (IEEE 802.3 with EtherType). No VLAN tags: the engine's ports are untagged.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/wire/checked.hh"

namespace pno::wire {

inline constexpr std::size_t kEthHeaderLen = 14;
/// Frames shorter than this (without FCS) are padded by the sender, so IPv4 must trim by total length.
inline constexpr std::size_t kEthMinFrameLen = 60;

inline constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr std::uint16_t kEtherTypeArp = 0x0806;

namespace eth_field {
inline constexpr std::size_t kDst = 0;
inline constexpr std::size_t kSrc = 6;
inline constexpr std::size_t kEtherType = 12;
}  // namespace eth_field

/// A received frame whose header is known to be present. Obtain it only through parse().
class EthernetView {
 public:
  /// Fails with eth_drop_truncated when the frame cannot hold a header.
  static Checked<EthernetView> parse(ByteSpan frame);

  [[nodiscard]] MacAddr dst() const { return load_mac(eth_field::kDst); }
  [[nodiscard]] MacAddr src() const { return load_mac(eth_field::kSrc); }
  [[nodiscard]] std::uint16_t ethertype() const { return load_be16(b_.data() + eth_field::kEtherType); }
  /// Everything after the header, trailing padding included.
  [[nodiscard]] ByteSpan payload() const { return b_.subspan(kEthHeaderLen); }

 private:
  explicit EthernetView(ByteSpan b) : b_(b) {}
  [[nodiscard]] MacAddr load_mac(std::size_t off) const;
  ByteSpan b_;
};

struct EthernetRepr {
  MacAddr dst{};
  MacAddr src{};
  std::uint16_t ethertype = 0;
};

void store_mac(std::byte* p, const MacAddr& m);

/// Writes the 14-byte header at the start of `out`. Returns false (writing nothing) if it is too small.
bool emit_ethernet(MutByteSpan out, const EthernetRepr& h);

}  // namespace pno::wire
