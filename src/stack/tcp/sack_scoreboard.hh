// The sender's SACK scoreboard and the RFC 6675 loss-recovery queries on it: IsLost, pipe,
// NextSeg. Holds SACKed ranges above snd_una; the connection feeds it each ACK's SACK blocks.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "stack/seq.hh"
#include "stack/tcp/reassembly.hh"

namespace pno::tcp {

class SackScoreboard {
 public:
  static constexpr std::size_t kMaxRanges = 32;
  static constexpr unsigned kDupThresh = 3;  ///< DupThresh, RFC 6675 §2

  /// Applies an ACK: cumulative `snd_una` and its SACK blocks (blocks outside
  /// (snd_una, snd_nxt] are ignored, per RFC 2018 §5 / RFC 6675 §5). Returns bytes newly SACKed.
  std::uint32_t update(SeqNum snd_una, SeqNum snd_nxt, std::span<const SackBlock> blocks);
  /// IsLost(seq), RFC 6675 §4: DupThresh discontiguous SACKed ranges, or at least
  /// (DupThresh-1)*SMSS + 1 bytes SACKed, above seq.
  [[nodiscard]] bool is_lost(SeqNum seq, std::uint32_t smss) const;
  [[nodiscard]] bool is_sacked(SeqNum seq) const;
  /// Bytes SACKed in total above snd_una.
  [[nodiscard]] std::uint32_t sacked_bytes() const;
  /// Highest SACKed sequence number + 1 (snd_una if none).
  [[nodiscard]] SeqNum high_sacked() const;
  /// SetPipe, RFC 6675 §4: bytes in flight given the scoreboard. `high_rxt`: highest retransmitted.
  [[nodiscard]] std::uint32_t pipe(SeqNum snd_una, SeqNum snd_nxt, SeqNum high_rxt, std::uint32_t smss) const;
  /// NextSeg rule 1, RFC 6675 §4: the first not-SACKed, lost sequence number at or above
  /// max(snd_una, high_rxt+1)... returns true and sets `seq`/`len` (len <= smss, stopping at the
  /// next SACKed byte) if there is one.
  bool next_lost(SeqNum snd_una, SeqNum high_rxt, std::uint32_t smss, SeqNum& seq, std::uint32_t& len) const;
  /// Whether the scoreboard says loss happened (enter recovery, RFC 6675 §5 step C).
  [[nodiscard]] bool loss_detected(SeqNum snd_una, std::uint32_t smss) const { return is_lost(snd_una, smss); }
  void clear() { count_ = 0; }
  [[nodiscard]] bool empty() const { return count_ == 0; }

 private:
  struct Range {
    SeqNum left, right;
  };
  std::array<Range, kMaxRanges> ranges_{};  ///< sorted, disjoint
  std::size_t count_ = 0;
};

}  // namespace pno::tcp
