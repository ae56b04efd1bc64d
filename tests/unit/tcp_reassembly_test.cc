// Out-of-order range tracking (RFC 9293 §3.10.7.4) and SACK block generation (RFC 2018 §4).
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "stack/tcp/reassembly.hh"

using namespace pno::tcp;

namespace {
SackBlock blk(std::uint32_t l, std::uint32_t r) { return SackBlock{SeqNum(l), SeqNum(r)}; }

std::vector<SackBlock> blocks(const Reassembly& r, std::size_t max = 4) {
  std::array<SackBlock, Reassembly::kMaxRanges> out{};
  const std::size_t n = r.sack_blocks(std::span(out).first(max));
  return {out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)};
}
}  // namespace

TEST(TcpReassembly, DisjointRangesStaySeparate_Rfc9293_3_10_7_4) {
  Reassembly r;
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(r.insert(SeqNum(2000), 100));
  EXPECT_TRUE(r.insert(SeqNum(1500), 100));
  EXPECT_EQ(r.range_count(), 2u);
  EXPECT_EQ(r.advance(SeqNum(1000)), 0u);  // a gap at rcv_nxt: nothing to deliver
  EXPECT_EQ(r.range_count(), 2u);
}

TEST(TcpReassembly, OverlappingAndAdjacentRangesMerge) {
  Reassembly r;
  r.insert(SeqNum(1100), 100);  // [1100,1200)
  r.insert(SeqNum(1150), 100);  // overlaps -> [1100,1250)
  EXPECT_EQ(r.range_count(), 1u);
  r.insert(SeqNum(1250), 50);   // adjacent on the right -> [1100,1300)
  r.insert(SeqNum(1050), 50);   // adjacent on the left  -> [1050,1300)
  EXPECT_EQ(r.range_count(), 1u);
  EXPECT_EQ(blocks(r), std::vector<SackBlock>{blk(1050, 1300)});
  r.insert(SeqNum(1400), 100);
  r.insert(SeqNum(1600), 100);
  EXPECT_EQ(r.range_count(), 3u);
  r.insert(SeqNum(1200), 450);  // [1200,1650) bridges all three
  EXPECT_EQ(r.range_count(), 1u);
  EXPECT_EQ(blocks(r), std::vector<SackBlock>{blk(1050, 1700)});
  r.insert(SeqNum(1100), 10);   // fully inside: no change
  EXPECT_EQ(blocks(r), std::vector<SackBlock>{blk(1050, 1700)});
}

TEST(TcpReassembly, AdvanceReturnsContiguousExtension_Rfc9293_3_10_7_4) {
  Reassembly r;
  r.insert(SeqNum(1100), 100);
  r.insert(SeqNum(1300), 100);
  // In-order data filled [1000,1100): rcv_nxt = 1100, the held range extends it to 1200.
  EXPECT_EQ(r.advance(SeqNum(1100)), 100u);
  EXPECT_EQ(r.range_count(), 1u);
  // rcv_nxt lands inside a held range (segment overlapping its start): extend to its end.
  EXPECT_EQ(r.advance(SeqNum(1350)), 50u);
  EXPECT_TRUE(r.empty());
}

TEST(TcpReassembly, AdvanceDropsRangesBelowRcvNxt) {
  Reassembly r;
  r.insert(SeqNum(1100), 100);
  r.insert(SeqNum(1300), 100);
  r.insert(SeqNum(1500), 100);
  // A large in-order segment overtook the first two.
  EXPECT_EQ(r.advance(SeqNum(1450)), 0u);
  EXPECT_EQ(blocks(r), std::vector<SackBlock>{blk(1500, 1600)});
  EXPECT_EQ(r.advance(SeqNum(1500)), 100u);
  EXPECT_TRUE(r.empty());
}

TEST(TcpReassembly, RefusesNewRangeWhenFullButStillMerges) {
  Reassembly r;
  for (std::uint32_t i = 0; i < Reassembly::kMaxRanges; ++i) ASSERT_TRUE(r.insert(SeqNum(1000 + 200 * i), 100));
  EXPECT_EQ(r.range_count(), Reassembly::kMaxRanges);
  EXPECT_FALSE(r.insert(SeqNum(1000 + 200 * 40), 100));  // would need a 33rd range
  EXPECT_FALSE(r.insert(SeqNum(1150), 10));               // in a gap, touching nothing
  EXPECT_EQ(r.range_count(), Reassembly::kMaxRanges);
  EXPECT_TRUE(r.insert(SeqNum(1100), 50));                // extends the first range
  EXPECT_TRUE(r.insert(SeqNum(1150), 50));                // closes the first gap: 31 ranges
  EXPECT_EQ(r.range_count(), Reassembly::kMaxRanges - 1);
  EXPECT_TRUE(r.insert(SeqNum(1000 + 200 * 40), 100));
}

TEST(TcpReassembly, WorksAcrossSequenceWrap_Rfc9293_3_4) {
  Reassembly r;
  const SeqNum rcv_nxt(0xffffff00u);
  r.insert(SeqNum(0x00000100u), 0x100);  // beyond 2^32
  r.insert(SeqNum(0xffffff80u), 0x100);  // [0xffffff80, 0x80) straddles the wrap
  EXPECT_EQ(r.range_count(), 2u);
  r.insert(SeqNum(0x00000080u), 0x80);   // fills [0x80, 0x100): all one range
  EXPECT_EQ(r.range_count(), 1u);
  EXPECT_EQ(blocks(r), std::vector<SackBlock>{blk(0xffffff80u, 0x200)});
  EXPECT_EQ(r.advance(rcv_nxt), 0u);
  EXPECT_EQ(r.advance(SeqNum(0xffffff80u)), 0x280u);
  EXPECT_TRUE(r.empty());
}

TEST(TcpReassembly, SackBlocksMostRecentFirst_Rfc2018_4) {
  Reassembly r;
  r.insert(SeqNum(3000), 100);  // A
  r.insert(SeqNum(1000), 100);  // B
  r.insert(SeqNum(2000), 100);  // C
  EXPECT_EQ(blocks(r), (std::vector<SackBlock>{blk(2000, 2100), blk(1000, 1100), blk(3000, 3100)}));
  // A segment extending A makes A's block first.
  r.insert(SeqNum(3100), 100);
  EXPECT_EQ(blocks(r), (std::vector<SackBlock>{blk(3000, 3200), blk(2000, 2100), blk(1000, 1100)}));
  // A duplicate inside B still triggers the ACK: B's block must come first.
  r.insert(SeqNum(1020), 10);
  EXPECT_EQ(blocks(r), (std::vector<SackBlock>{blk(1000, 1100), blk(3000, 3200), blk(2000, 2100)}));
  // A merge reports the merged block first.
  r.insert(SeqNum(1100), 900);
  EXPECT_EQ(blocks(r), (std::vector<SackBlock>{blk(1000, 2100), blk(3000, 3200)}));
}

TEST(TcpReassembly, SackBlocksLimitedToRoomAndRepeatRecentBlocks_Rfc2018_4) {
  Reassembly r;
  for (std::uint32_t i = 0; i < 6; ++i) r.insert(SeqNum(1000 + 200 * i), 100);
  // Only 3 fit (timestamps take option space): the 3 most recent.
  EXPECT_EQ(blocks(r, 3), (std::vector<SackBlock>{blk(2000, 2100), blk(1800, 1900), blk(1600, 1700)}));
  EXPECT_EQ(blocks(r, 0).size(), 0u);
  r.clear();
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(blocks(r).empty());
}

TEST(TcpReassembly, ZeroLengthInsertIsNoop) {
  Reassembly r;
  EXPECT_TRUE(r.insert(SeqNum(1000), 0));
  EXPECT_TRUE(r.empty());
}
