// RFC 6675 sender scoreboard. The SACKed ranges are kept sorted and merged in a fixed array; every
// query walks the "holes" between them. Within one hole IsLost() is constant (the SACKed bytes and
// ranges above every octet of the hole are the same), so SetPipe and NextSeg are O(ranges), not
// O(bytes).
#include "stack/tcp/sack_scoreboard.hh"

#include <algorithm>

namespace pno::tcp {

namespace {
// RFC 6675 §4 IsLost() given what lies above the octet.
bool lost_given(std::size_t ranges_above, std::uint64_t bytes_above, std::uint32_t smss) {
  return ranges_above >= SackScoreboard::kDupThresh ||
         bytes_above > std::uint64_t{SackScoreboard::kDupThresh - 1} * smss;
}
}  // namespace

bool SackScoreboard::lost_by_count(std::size_t ranges_above, std::uint64_t bytes_above, std::uint32_t smss) const {
  return dupthresh_ && lost_given(ranges_above, bytes_above, smss);
}

std::uint32_t SackScoreboard::add(SeqNum left, SeqNum right) {
  std::size_t i = 0;
  while (i < count_ && ranges_[i].right < left) ++i;
  std::size_t j = i;
  std::uint32_t already = 0;
  SeqNum l = left, r = right;
  while (j < count_ && ranges_[j].left <= right) {
    const SeqNum ol = seq_max(ranges_[j].left, left), orr = seq_min(ranges_[j].right, right);
    if (ol < orr) already += orr.since(ol);
    l = seq_min(l, ranges_[j].left);
    r = seq_max(r, ranges_[j].right);
    ++j;
  }
  const std::uint32_t fresh = right.since(left) - already;
  const auto at = [this](std::size_t k) { return ranges_.begin() + static_cast<std::ptrdiff_t>(k); };
  if (j > i) {
    ranges_[i] = Range{l, r};
    std::copy(at(j), at(count_), at(i + 1));
    count_ -= j - i - 1;
    return fresh;
  }
  if (count_ == kMaxRanges) {
    // Full: keep the lowest ranges, they matter for the next retransmissions. Forgetting the
    // highest only makes the sender more conservative (it may resend SACKed data).
    if (i == count_) return 0;
    std::copy_backward(at(i), at(count_ - 1), at(count_));
  } else {
    std::copy_backward(at(i), at(count_), at(count_ + 1));
    ++count_;
  }
  ranges_[i] = Range{l, r};
  return fresh;
}

std::uint32_t SackScoreboard::update(SeqNum snd_una, SeqNum snd_nxt, std::span<const SackBlock> blocks) {
  snd_una_ = snd_una;
  // The cumulative ACK retires everything below snd_una.
  std::size_t drop = 0;
  while (drop < count_ && ranges_[drop].right <= snd_una) ++drop;
  if (drop > 0) {
    std::copy(ranges_.begin() + static_cast<std::ptrdiff_t>(drop), ranges_.begin() + static_cast<std::ptrdiff_t>(count_),
              ranges_.begin());
    count_ -= drop;
  }
  if (count_ > 0 && ranges_[0].left < snd_una) ranges_[0].left = snd_una;

  // Offsets from snd_una are unambiguous (unsigned, < 2^32): a block is used only if
  // snd_una <= left < right <= snd_nxt. Blocks below snd_una (incl. D-SACK, RFC 2883), beyond
  // snd_nxt, inverted or empty say nothing we can trust about outstanding data (RFC 2018 §5,
  // RFC 6675 §5), and must not corrupt the board.
  const std::uint32_t span = snd_nxt.since(snd_una);
  std::uint32_t fresh = 0;
  for (const SackBlock& b : blocks) {
    const std::uint32_t off_l = b.left.since(snd_una), off_r = b.right.since(snd_una);
    if (!(off_l < off_r && off_r <= span)) continue;
    fresh += add(b.left, b.right);
  }
  return fresh;
}

bool SackScoreboard::is_lost(SeqNum seq, std::uint32_t smss) const {
  // RFC 6675 §4 IsLost(SeqNum): count SACKed ranges and bytes strictly above seq.
  const SeqNum above = seq + 1;
  std::size_t n = 0;
  std::uint64_t bytes = 0;
  for (std::size_t k = count_; k-- > 0;) {
    const SeqNum from = seq_max(ranges_[k].left, above);
    if (ranges_[k].right <= from) break;  // sorted: nothing lower lies above seq
    bytes += ranges_[k].right.since(from);
    ++n;
    if (lost_by_count(n, bytes, smss)) return true;
  }
  return false;
}

bool SackScoreboard::is_sacked(SeqNum seq) const {
  for (std::size_t k = 0; k < count_; ++k) {
    if (seq < ranges_[k].left) return false;
    if (seq < ranges_[k].right) return true;
  }
  return false;
}

std::uint32_t SackScoreboard::sacked_bytes() const {
  std::uint32_t sum = 0;
  for (std::size_t k = 0; k < count_; ++k) sum += ranges_[k].right.since(ranges_[k].left);
  return sum;
}

SeqNum SackScoreboard::high_sacked() const { return count_ > 0 ? ranges_[count_ - 1].right : snd_una_; }

std::uint32_t SackScoreboard::pipe(SeqNum snd_una, SeqNum snd_nxt, SeqNum high_rxt, std::uint32_t smss,
                                   SeqNum lost_end) const {
  // RFC 6675 §4 SetPipe(): for each non-SACKed octet S1 in [snd_una, snd_nxt):
  //   (a) +1 if !IsLost(S1)   (b) +1 if S1 <= HighRxt.
  // Walk holes from the top, accumulating what is SACKed above each.
  const SeqNum rxt_end = high_rxt + 1;  // octets below this were retransmitted
  std::uint64_t pipe = 0, bytes_above = 0;
  std::size_t ranges_above = 0;
  for (std::size_t k = count_ + 1; k-- > 0;) {
    SeqNum lo = k == 0 ? snd_una : ranges_[k - 1].right;
    SeqNum hi = k == count_ ? snd_nxt : ranges_[k].left;
    lo = seq_max(lo, snd_una);
    hi = seq_min(hi, snd_nxt);
    if (lo < hi) {
      if (!lost_by_count(ranges_above, bytes_above, smss)) {
        // Octets below lost_end are lost regardless of IsLost.
        const SeqNum from = seq_min(seq_max(lo, lost_end), hi);
        pipe += hi.since(from);
      }
      const SeqNum rhi = seq_min(hi, rxt_end);
      if (lo < rhi) pipe += rhi.since(lo);
    }
    if (k > 0) {
      bytes_above += ranges_[k - 1].right.since(ranges_[k - 1].left);
      ++ranges_above;
    }
  }
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(pipe, 0xffffffffu));
}

bool SackScoreboard::next_lost(SeqNum snd_una, SeqNum high_rxt, std::uint32_t smss, SeqNum& seq,
                               std::uint32_t& len, SeqNum lost_end) const {
  // RFC 6675 §4 NextSeg() rule 1: the lowest non-SACKed S2 with (1.a) S2 > HighRxt,
  // (1.b) S2 below the highest SACKed octet, (1.c) IsLost(S2). Holes below the highest SACKed
  // octet all end at a SACKed range, so ascending order finds the smallest S2.
  if (count_ == 0 || smss == 0) return false;
  const SeqNum start = seq_max(snd_una, high_rxt + 1);
  std::uint64_t bytes_above = sacked_bytes();
  for (std::size_t k = 0; k < count_; ++k) {
    const SeqNum lo = seq_max(k == 0 ? snd_una : ranges_[k - 1].right, start);
    SeqNum hi = ranges_[k].left;
    if (lo < hi) {
      // IsLost only falls as we go up: the first hole that is not lost (and not below lost_end)
      // ends the search.
      if (!lost_by_count(count_ - k, bytes_above, smss) && !(lo < lost_end)) return false;
      if (!lost_by_count(count_ - k, bytes_above, smss)) hi = seq_min(hi, lost_end);
      seq = lo;
      len = std::min(smss, hi.since(lo));
      return true;
    }
    bytes_above -= ranges_[k].right.since(ranges_[k].left);
  }
  return false;
}

}  // namespace pno::tcp

namespace pno::tcp {

bool SackScoreboard::next_hole(SeqNum from, std::uint32_t smss, SeqNum& seq, std::uint32_t& len) const {
  if (count_ == 0 || smss == 0) return false;
  for (std::size_t k = 0; k < count_; ++k) {
    const SeqNum lo = seq_max(k == 0 ? snd_una_ : ranges_[k - 1].right, from);
    const SeqNum hi = ranges_[k].left;
    if (lo < hi) {
      seq = lo;
      len = std::min(smss, hi.since(lo));
      return true;
    }
  }
  return false;
}

}  // namespace pno::tcp
