// Out-of-order receive tracking (RFC 9293 §3.10.7.4: segments beyond RCV.NXT are held until the
// gap fills). Tracks which byte ranges past rcv_nxt are present; the bytes themselves live in the
// receive ring at their offset, so nothing is copied twice. Also yields the SACK blocks to
// advertise (RFC 2018 §4: the block with the most recent segment first).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "stack/seq.hh"
#include "stack/wire/tcp.hh"

namespace pno::tcp {

/// A SACK block is a wire value (RFC 2018 §3); the layer names it as its own.
using wire::SackBlock;

class Reassembly {
 public:
  /// Fixed capacity: beyond it, new out-of-order ranges that do not merge are refused.
  static constexpr std::size_t kMaxRanges = 32;

  /// Records [seq, seq+len) as received (seq > rcv_nxt). Returns false if refused (table full).
  bool insert(SeqNum seq, SeqLen len);
  /// rcv_nxt moved to `rcv_nxt`: drops ranges below it, and returns how far rcv_nxt can advance
  /// further because the range starting at (or covering) rcv_nxt is already present.
  SeqLen advance(SeqNum rcv_nxt);
  [[nodiscard]] bool empty() const { return count_ == 0; }
  [[nodiscard]] std::size_t range_count() const { return count_; }
  /// Up to `out.size()` SACK blocks, most recently changed first (RFC 2018 §4). Returns count.
  std::size_t sack_blocks(std::span<SackBlock> out) const;
  void clear() { count_ = 0; }

 private:
  struct Range {
    SeqNum left, right;
    std::uint32_t stamp;  ///< insertion order, for "most recent first"
  };
  std::array<Range, kMaxRanges> ranges_{};  ///< sorted by left, disjoint, non-adjacent
  std::size_t count_ = 0;
  std::uint32_t clock_ = 0;
};

}  // namespace pno::tcp
