// ARP for IPv4 over Ethernet (RFC 826). Only hardware type Ethernet (1) with protocol IPv4 is accepted.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/wire/checked.hh"

namespace pno::wire {

inline constexpr std::size_t kArpLen = 28;
inline constexpr std::uint16_t kArpHtypeEthernet = 1;
inline constexpr std::uint16_t kArpOpRequest = 1;
inline constexpr std::uint16_t kArpOpReply = 2;

namespace arp_field {
inline constexpr std::size_t kHtype = 0;
inline constexpr std::size_t kPtype = 2;
inline constexpr std::size_t kHlen = 4;
inline constexpr std::size_t kPlen = 5;
inline constexpr std::size_t kOper = 6;
inline constexpr std::size_t kSha = 8;
inline constexpr std::size_t kSpa = 14;
inline constexpr std::size_t kTha = 18;
inline constexpr std::size_t kTpa = 24;
}  // namespace arp_field

/// An Ethernet/IPv4 ARP packet of known length and kinds. Obtain it only through parse().
class ArpView {
 public:
  /// Fails with arp_drop_malformed when short, not Ethernet/IPv4, or the operation is unknown.
  static Checked<ArpView> parse(ByteSpan packet);

  [[nodiscard]] std::uint16_t oper() const { return load_be16(b_.data() + arp_field::kOper); }
  [[nodiscard]] MacAddr sha() const { return load_mac(arp_field::kSha); }
  [[nodiscard]] Ipv4Addr spa() const { return {load_be32(b_.data() + arp_field::kSpa)}; }
  [[nodiscard]] MacAddr tha() const { return load_mac(arp_field::kTha); }
  [[nodiscard]] Ipv4Addr tpa() const { return {load_be32(b_.data() + arp_field::kTpa)}; }

 private:
  explicit ArpView(ByteSpan b) : b_(b) {}
  [[nodiscard]] MacAddr load_mac(std::size_t off) const;
  ByteSpan b_;
};

struct ArpRepr {
  std::uint16_t oper = kArpOpRequest;
  MacAddr sha{};
  Ipv4Addr spa{};
  MacAddr tha{};
  Ipv4Addr tpa{};
};

/// Writes the 28-byte packet at the start of `out`. Returns false (writing nothing) if it is too small.
bool emit_arp(MutByteSpan out, const ArpRepr& a);

}  // namespace pno::wire
