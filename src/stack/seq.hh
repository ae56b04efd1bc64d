// TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4). Comparisons go through the signed
// difference, so raw uint32_t comparisons never appear in protocol code.
#pragma once

#include <cstdint>

namespace pno::tcp {

/// A length in sequence space (bytes plus SYN/FIN).
using SeqLen = std::uint32_t;

class SeqNum {
 public:
  constexpr SeqNum() = default;
  constexpr explicit SeqNum(std::uint32_t v) : v_(v) {}
  [[nodiscard]] constexpr std::uint32_t raw() const { return v_; }

  constexpr SeqNum operator+(SeqLen n) const { return SeqNum(v_ + n); }
  constexpr SeqNum operator-(SeqLen n) const { return SeqNum(v_ - n); }
  constexpr SeqNum& operator+=(SeqLen n) { v_ += n; return *this; }
  constexpr SeqNum& operator-=(SeqLen n) { v_ -= n; return *this; }
  /// Distance from `o` to this, as a signed value (valid while |distance| < 2^31).
  [[nodiscard]] constexpr std::int32_t operator-(SeqNum o) const { return static_cast<std::int32_t>(v_ - o.v_); }

  friend constexpr bool operator==(SeqNum a, SeqNum b) = default;
  friend constexpr bool operator<(SeqNum a, SeqNum b) { return (a - b) < 0; }
  friend constexpr bool operator<=(SeqNum a, SeqNum b) { return (a - b) <= 0; }
  friend constexpr bool operator>(SeqNum a, SeqNum b) { return (a - b) > 0; }
  friend constexpr bool operator>=(SeqNum a, SeqNum b) { return (a - b) >= 0; }

  /// Unsigned distance from `from` up to this (caller knows this >= from).
  [[nodiscard]] constexpr SeqLen since(SeqNum from) const { return v_ - from.v_; }
  /// this in [lo, hi)
  [[nodiscard]] constexpr bool in_range(SeqNum lo, SeqNum hi) const { return lo <= *this && *this < hi; }
  /// this in [first, first + len)
  [[nodiscard]] constexpr bool in_window(SeqNum first, SeqLen len) const { return SeqLen(v_ - first.v_) < len; }

 private:
  std::uint32_t v_ = 0;
};

constexpr SeqNum seq_max(SeqNum a, SeqNum b) { return a < b ? b : a; }
constexpr SeqNum seq_min(SeqNum a, SeqNum b) { return a < b ? a : b; }

}  // namespace pno::tcp
