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
  /// SetPipe, RFC 6675 §4: bytes in flight given the scoreboard. `high_rxt` is RFC 6675's HighRxt:
  /// the highest octet retransmitted in this recovery, i.e. seq + len - 1 of the highest
  /// retransmission; pass snd_una - 1 (anything below snd_una) while nothing was retransmitted.
  /// Non-SACKed octets count once unless IsLost, plus once more if <= high_rxt.
  [[nodiscard]] std::uint32_t pipe(SeqNum snd_una, SeqNum snd_nxt, SeqNum high_rxt, std::uint32_t smss) const {
    return pipe(snd_una, snd_nxt, high_rxt, smss, snd_una);
  }
  /// As above, with every non-SACKed octet below `lost_end` lost whatever IsLost says (losses found
  /// by time, RFC 8985 RACK, or lost retransmissions).
  [[nodiscard]] std::uint32_t pipe(SeqNum snd_una, SeqNum snd_nxt, SeqNum high_rxt, std::uint32_t smss,
                                   SeqNum lost_end) const;
  /// NextSeg rule 1, RFC 6675 §4: the first not-SACKed, lost sequence number at or above
  /// max(snd_una, high_rxt+1)... returns true and sets `seq`/`len` (len <= smss, stopping at the
  /// next SACKed byte) if there is one.
  bool next_lost(SeqNum snd_una, SeqNum high_rxt, std::uint32_t smss, SeqNum& seq, std::uint32_t& len) const {
    return next_lost(snd_una, high_rxt, smss, seq, len, snd_una);
  }
  /// As above, with non-SACKed octets below `lost_end` lost whatever IsLost says.
  bool next_lost(SeqNum snd_una, SeqNum high_rxt, std::uint32_t smss, SeqNum& seq, std::uint32_t& len,
                 SeqNum lost_end) const;
  /// NextSeg rule 3, RFC 6675 §4: the first non-SACKed octet at or above `from` and below the
  /// highest SACKed octet, lost or not; `len` <= smss stops at the next SACKed byte.
  bool next_hole(SeqNum from, std::uint32_t smss, SeqNum& seq, std::uint32_t& len) const;
  /// Whether the scoreboard says loss happened (enter recovery, RFC 6675 §5 step C).
  [[nodiscard]] bool loss_detected(SeqNum snd_una, std::uint32_t smss) const { return is_lost(snd_una, smss); }
  void clear() { count_ = 0; }
  /// RFC 8985 §6.2: once reordering has been seen, DupThresh SACKed segments above a hole no
  /// longer make it lost (IsLost, pipe and NextSeg rule 1 then go by `lost_end` alone, i.e. by
  /// time); until then RFC 6675's rule applies.
  void set_dupthresh(bool on) { dupthresh_ = on; }
  [[nodiscard]] bool dupthresh() const { return dupthresh_; }
  [[nodiscard]] bool empty() const { return count_ == 0; }
  [[nodiscard]] std::size_t range_count() const { return count_; }

 private:
  struct Range {
    SeqNum left, right;
  };
  /// Adds [left, right) (already validated); returns bytes not SACKed before.
  std::uint32_t add(SeqNum left, SeqNum right);

  std::array<Range, kMaxRanges> ranges_{};  ///< sorted, disjoint, non-adjacent
  std::size_t count_ = 0;
  SeqNum snd_una_{};  ///< from the last update(), for high_sacked() on an empty board
  bool dupthresh_ = true;
  [[nodiscard]] bool lost_by_count(std::size_t ranges_above, std::uint64_t bytes_above, std::uint32_t smss) const;
};

}  // namespace pno::tcp
