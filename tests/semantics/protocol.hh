// What the semantics suite and its Linux peer (pno-semantics-peer) share: the byte pattern both
// sides send, so either end can check order and content from the stream offset alone, and the
// control protocol's framing (one text line per command and per reply over a Unix-domain socket,
// which is never offloaded).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace pno::semtest {

/// The byte at stream offset `off` of every pattern stream. 251 is prime, so a stream that is
/// shifted, duplicated or reordered by anything but a multiple of 251*256 bytes mismatches.
inline std::uint8_t pattern_byte(std::uint64_t off) {
  return static_cast<std::uint8_t>(off % 251 + (off / 251) % 256 * 7);
}

/// Fills `out` with the pattern from stream offset `off`.
inline void fill_pattern(std::span<std::uint8_t> out, std::uint64_t off) {
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = pattern_byte(off + i);
}

/// True when `in` is the pattern from stream offset `off`.
inline bool check_pattern(std::span<const std::uint8_t> in, std::uint64_t off) {
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != pattern_byte(off + i)) return false;
  }
  return true;
}

}  // namespace pno::semtest
