// Out-of-order range tracking for the receiver (RFC 9293 §3.10.7.4) and the SACK blocks it
// advertises (RFC 2018 §4). A fixed sorted array: at most kMaxRanges entries, no allocation.
#include "stack/tcp/reassembly.hh"

#include <algorithm>

namespace pno::tcp {

bool Reassembly::insert(SeqNum seq, SeqLen len) {
  if (len == 0) return true;
  SeqNum left = seq;
  SeqNum right = seq + len;
  // First range that ends at or after `left`: everything before it lies wholly below and is
  // not adjacent.
  std::size_t i = 0;
  while (i < count_ && ranges_[i].right < left) ++i;
  // Ranges [i, j) overlap or touch [left, right) and merge into one.
  std::size_t j = i;
  while (j < count_ && ranges_[j].left <= right) {
    left = seq_min(left, ranges_[j].left);
    right = seq_max(right, ranges_[j].right);
    ++j;
  }
  // RFC 2018 §4: the block holding the latest segment is reported first, so every insert
  // (even a duplicate) refreshes the stamp of the block it lands in.
  const std::uint32_t stamp = ++clock_;
  if (j > i) {
    ranges_[i] = Range{left, right, stamp};
    std::copy(ranges_.begin() + static_cast<std::ptrdiff_t>(j), ranges_.begin() + static_cast<std::ptrdiff_t>(count_),
              ranges_.begin() + static_cast<std::ptrdiff_t>(i + 1));
    count_ -= j - i - 1;
    return true;
  }
  if (count_ == kMaxRanges) return false;  // no merge and no room: the caller drops the segment
  std::copy_backward(ranges_.begin() + static_cast<std::ptrdiff_t>(i), ranges_.begin() + static_cast<std::ptrdiff_t>(count_),
                     ranges_.begin() + static_cast<std::ptrdiff_t>(count_ + 1));
  ranges_[i] = Range{left, right, stamp};
  ++count_;
  return true;
}

SeqLen Reassembly::advance(SeqNum rcv_nxt) {
  // Ranges wholly below rcv_nxt were delivered (or overtaken by in-order data).
  std::size_t drop = 0;
  while (drop < count_ && ranges_[drop].right <= rcv_nxt) ++drop;
  SeqLen ext = 0;
  if (drop < count_ && ranges_[drop].left <= rcv_nxt) {
    // This range starts at or covers rcv_nxt: its bytes are already in the ring, so rcv_nxt
    // jumps to its end. Ranges are non-adjacent, so the next one leaves a gap.
    ext = ranges_[drop].right.since(rcv_nxt);
    ++drop;
  }
  if (drop > 0) {
    std::copy(ranges_.begin() + static_cast<std::ptrdiff_t>(drop), ranges_.begin() + static_cast<std::ptrdiff_t>(count_),
              ranges_.begin());
    count_ -= drop;
  }
  return ext;
}

std::size_t Reassembly::sack_blocks(std::span<SackBlock> out) const {
  // Selection by stamp, newest first. Stamps compare by signed difference, so the 32-bit
  // insertion clock may wrap.
  std::array<std::uint8_t, kMaxRanges> idx{};
  for (std::size_t k = 0; k < count_; ++k) idx[k] = static_cast<std::uint8_t>(k);
  const std::size_t n = std::min(out.size(), count_);
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.begin() + static_cast<std::ptrdiff_t>(count_),
                    [this](std::uint8_t a, std::uint8_t b) {
                      return static_cast<std::int32_t>(ranges_[a].stamp - ranges_[b].stamp) > 0;
                    });
  for (std::size_t k = 0; k < n; ++k) out[k] = SackBlock{ranges_[idx[k]].left, ranges_[idx[k]].right};
  return n;
}

}  // namespace pno::tcp
