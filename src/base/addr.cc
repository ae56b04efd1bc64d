#include "base/addr.hh"

#include <charconv>
#include <cstdio>

namespace pno {

std::string MacAddr::str() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
  return buf;
}

std::optional<MacAddr> MacAddr::parse(std::string_view s) {
  MacAddr m;
  if (s.size() != 17) return std::nullopt;
  for (int i = 0; i < 6; ++i) {
    auto part = s.substr(static_cast<std::size_t>(i) * 3, 2);
    unsigned v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + 2, v, 16);
    if (ec != std::errc{} || p != part.data() + 2) return std::nullopt;
    if (i < 5 && s[static_cast<std::size_t>(i) * 3 + 2] != ':') return std::nullopt;
    m.b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
  }
  return m;
}

std::string Ipv4Addr::str() const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
  return buf;
}

std::optional<Ipv4Addr> Ipv4Addr::parse(std::string_view s) {
  std::uint32_t out = 0;
  const char* p = s.data();
  const char* end = s.data() + s.size();
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    auto [q, ec] = std::from_chars(p, end, octet, 10);
    if (ec != std::errc{} || octet > 255 || q == p || q - p > 3) return std::nullopt;
    out = (out << 8) | octet;
    p = q;
    if (i < 3) {
      if (p == end || *p != '.') return std::nullopt;
      ++p;
    }
  }
  if (p != end) return std::nullopt;
  return Ipv4Addr{out};
}

std::optional<Ipv4Cidr> Ipv4Cidr::parse(std::string_view s) {
  auto slash = s.find('/');
  auto a = Ipv4Addr::parse(s.substr(0, slash));
  if (!a) return std::nullopt;
  if (slash == std::string_view::npos) return Ipv4Cidr{*a, 32};
  auto rest = s.substr(slash + 1);
  unsigned len = 0;
  auto [q, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), len, 10);
  if (ec != std::errc{} || q != rest.data() + rest.size() || len > 32) return std::nullopt;
  return Ipv4Cidr{*a, static_cast<std::uint8_t>(len)};
}

}  // namespace pno
