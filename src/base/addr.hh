// Link and network addresses, held in host order for IPv4 and as raw bytes for MAC.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pno {

struct MacAddr {
  std::array<std::uint8_t, 6> b{};
  static constexpr MacAddr broadcast() { return {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}; }
  [[nodiscard]] constexpr bool is_broadcast() const { return *this == broadcast(); }
  [[nodiscard]] constexpr bool is_multicast() const { return (b[0] & 1) != 0; }
  [[nodiscard]] constexpr bool is_zero() const { return *this == MacAddr{}; }
  friend constexpr bool operator==(const MacAddr&, const MacAddr&) = default;
  [[nodiscard]] std::string str() const;
  static std::optional<MacAddr> parse(std::string_view s);
};

/// IPv4 address in host byte order.
struct Ipv4Addr {
  std::uint32_t v = 0;
  static constexpr Ipv4Addr any() { return {0}; }
  static constexpr Ipv4Addr broadcast() { return {0xffffffffu}; }
  static constexpr Ipv4Addr from_octets(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    return {(std::uint32_t{a} << 24) | (std::uint32_t{b} << 16) | (std::uint32_t{c} << 8) | d};
  }
  [[nodiscard]] constexpr bool is_any() const { return v == 0; }
  [[nodiscard]] constexpr bool is_multicast() const { return (v >> 28) == 0xe; }
  [[nodiscard]] constexpr bool is_loopback() const { return (v >> 24) == 127; }
  friend constexpr auto operator<=>(const Ipv4Addr&, const Ipv4Addr&) = default;
  [[nodiscard]] std::string str() const;
  static std::optional<Ipv4Addr> parse(std::string_view s);
};

/// An IPv4 subnet: address plus prefix length.
struct Ipv4Cidr {
  Ipv4Addr addr;
  std::uint8_t prefix_len = 32;
  [[nodiscard]] constexpr std::uint32_t mask() const {
    return prefix_len == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix_len);
  }
  [[nodiscard]] constexpr bool contains(Ipv4Addr a) const { return (a.v & mask()) == (addr.v & mask()); }
  [[nodiscard]] constexpr Ipv4Addr subnet_broadcast() const { return {addr.v | ~mask()}; }
  static std::optional<Ipv4Cidr> parse(std::string_view s);  ///< "198.18.0.1/24"
};

/// A TCP endpoint.
struct Endpoint {
  Ipv4Addr addr;
  std::uint16_t port = 0;
  friend constexpr bool operator==(const Endpoint&, const Endpoint&) = default;
};

}  // namespace pno
