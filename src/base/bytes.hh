// Explicit big-endian loads and stores on byte spans. Header code uses these instead of casting
// frames to packed structs, so alignment and strict aliasing never matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace pno {

using ByteSpan = std::span<const std::byte>;
using MutByteSpan = std::span<std::byte>;

inline std::uint8_t load_u8(const std::byte* p) { return static_cast<std::uint8_t>(*p); }
inline std::uint16_t load_be16(const std::byte* p) {
  return static_cast<std::uint16_t>((load_u8(p) << 8) | load_u8(p + 1));
}
inline std::uint32_t load_be32(const std::byte* p) {
  return (std::uint32_t{load_u8(p)} << 24) | (std::uint32_t{load_u8(p + 1)} << 16) |
         (std::uint32_t{load_u8(p + 2)} << 8) | std::uint32_t{load_u8(p + 3)};
}
inline void store_u8(std::byte* p, std::uint8_t v) { *p = std::byte{v}; }
inline void store_be16(std::byte* p, std::uint16_t v) {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v & 0xff);
}
inline void store_be32(std::byte* p, std::uint32_t v) {
  p[0] = std::byte(v >> 24);
  p[1] = std::byte((v >> 16) & 0xff);
  p[2] = std::byte((v >> 8) & 0xff);
  p[3] = std::byte(v & 0xff);
}

inline ByteSpan as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace pno
