// RFC 6675 sender scoreboard: IsLost, SetPipe, NextSeg rule 1, and validation of peer blocks.
#include <gtest/gtest.h>

#include <vector>

#include "stack/tcp/sack_scoreboard.hh"

using namespace pno::tcp;

namespace {
constexpr std::uint32_t kSmss = 1000;
SackBlock blk(std::uint32_t l, std::uint32_t r) { return SackBlock{SeqNum(l), SeqNum(r)}; }
std::uint32_t upd(SackScoreboard& sb, std::uint32_t una, std::uint32_t nxt, std::vector<SackBlock> b) {
  return sb.update(SeqNum(una), SeqNum(nxt), b);
}
const SeqNum kNoRxt(0u - 1u);  // high_rxt below snd_una = 0: nothing retransmitted
}  // namespace

TEST(TcpSackScoreboard, UpdateCountsNewlySackedBytes_Rfc6675_5) {
  SackScoreboard sb;
  EXPECT_EQ(upd(sb, 0, 10000, {blk(3000, 4000)}), 1000u);
  EXPECT_EQ(upd(sb, 0, 10000, {blk(3000, 4000)}), 0u);           // repeated block
  EXPECT_EQ(upd(sb, 0, 10000, {blk(3500, 5000), blk(7000, 8000)}), 2000u);  // 1000 new + 1000
  EXPECT_EQ(sb.sacked_bytes(), 3000u);
  EXPECT_EQ(sb.range_count(), 2u);
  EXPECT_TRUE(sb.is_sacked(SeqNum(3000)));
  EXPECT_TRUE(sb.is_sacked(SeqNum(4999)));
  EXPECT_FALSE(sb.is_sacked(SeqNum(5000)));
  EXPECT_FALSE(sb.is_sacked(SeqNum(2999)));
  EXPECT_EQ(sb.high_sacked(), SeqNum(8000));
}

TEST(TcpSackScoreboard, CumulativeAckRetiresAndTrimsRanges) {
  SackScoreboard sb;
  upd(sb, 0, 10000, {blk(1000, 2000), blk(3000, 5000)});
  upd(sb, 4000, 10000, {});
  EXPECT_EQ(sb.range_count(), 1u);
  EXPECT_EQ(sb.sacked_bytes(), 1000u);  // [4000, 5000)
  upd(sb, 6000, 10000, {});
  EXPECT_TRUE(sb.empty());
  EXPECT_EQ(sb.high_sacked(), SeqNum(6000));  // snd_una when nothing is SACKed
}

TEST(TcpSackScoreboard, HostileBlocksAreIgnored_Rfc2018_5) {
  SackScoreboard sb;
  upd(sb, 5000, 10000, {blk(6000, 7000)});
  const std::vector<SackBlock> hostile = {
      blk(1000, 2000),              // wholly below snd_una (also D-SACK, RFC 2883)
      blk(4000, 6500),              // starts below snd_una
      blk(9000, 12000),             // beyond snd_nxt
      blk(11000, 12000),            // wholly beyond snd_nxt
      blk(8000, 7500),              // inverted
      blk(8000, 8000),              // empty
      blk(5000 + 0x80000000u, 9000),  // "left" 2^31 away
      blk(9000, 5000 + 0x80000000u),  // wraps around the whole space
  };
  EXPECT_EQ(sb.update(SeqNum(5000), SeqNum(10000), hostile), 0u);
  EXPECT_EQ(sb.range_count(), 1u);
  EXPECT_EQ(sb.sacked_bytes(), 1000u);
  EXPECT_EQ(sb.high_sacked(), SeqNum(7000));
  // Edges are valid: left == snd_una and right == snd_nxt.
  EXPECT_EQ(upd(sb, 5000, 10000, {blk(9000, 10000)}), 1000u);
}

TEST(TcpSackScoreboard, IsLostByDiscontiguousRanges_Rfc6675_4) {
  SackScoreboard sb;
  upd(sb, 0, 10000, {blk(2000, 2100), blk(3000, 3100)});
  EXPECT_FALSE(sb.is_lost(SeqNum(0), kSmss));  // 2 ranges, 200 bytes
  upd(sb, 0, 10000, {blk(4000, 4100)});
  EXPECT_TRUE(sb.is_lost(SeqNum(0), kSmss));   // DupThresh = 3 ranges above
  EXPECT_TRUE(sb.is_lost(SeqNum(1999), kSmss));
  EXPECT_FALSE(sb.is_lost(SeqNum(2100), kSmss));  // only 2 ranges above
  EXPECT_TRUE(sb.loss_detected(SeqNum(0), kSmss));
}

TEST(TcpSackScoreboard, IsLostByBytesAboveThreshold_Rfc6675_4) {
  SackScoreboard sb;
  // (DupThresh - 1) * SMSS = 2000 bytes is not enough; 2001 is.
  upd(sb, 0, 10000, {blk(1000, 3000)});
  EXPECT_FALSE(sb.is_lost(SeqNum(0), kSmss));
  upd(sb, 0, 10000, {blk(3000, 3001)});
  EXPECT_TRUE(sb.is_lost(SeqNum(0), kSmss));
  EXPECT_TRUE(sb.is_lost(SeqNum(999), kSmss));
  // Octet 1000 is itself SACKed: only 2000 bytes lie above it.
  EXPECT_FALSE(sb.is_lost(SeqNum(1000), kSmss));
}

TEST(TcpSackScoreboard, PipeCountsOnlyNotLostAndRetransmitted_Rfc6675_4) {
  SackScoreboard sb;
  // 10 segments sent, segments 3, 5, 7 SACKed.
  upd(sb, 0, 10000, {blk(3000, 4000), blk(5000, 6000), blk(7000, 8000)});
  // [0,3000): 3 ranges above -> lost, not in pipe.
  // [4000,5000): 2 ranges, 2000 bytes above -> not lost: 1000.
  // [6000,7000): 1000, [8000,10000): 2000.
  EXPECT_EQ(sb.pipe(SeqNum(0), SeqNum(10000), kNoRxt, kSmss), 4000u);
  // The first segment was retransmitted (HighRxt = 999): it counts once (rule b).
  EXPECT_EQ(sb.pipe(SeqNum(0), SeqNum(10000), SeqNum(999), kSmss), 5000u);
  // A retransmitted octet that is not lost counts twice (rules a and b).
  EXPECT_EQ(sb.pipe(SeqNum(0), SeqNum(10000), SeqNum(4499), kSmss), 4000u + 3000u + 500u);
  // Without SACK information pipe is the whole flight.
  SackScoreboard empty;
  EXPECT_EQ(empty.pipe(SeqNum(0), SeqNum(10000), kNoRxt, kSmss), 10000u);
}

TEST(TcpSackScoreboard, NextLostReturnsFirstLostHoleAboveHighRxt_Rfc6675_4_NextSeg1) {
  SackScoreboard sb;
  upd(sb, 0, 10000, {blk(3000, 4000), blk(5000, 6000), blk(7000, 8000)});
  SeqNum seq;
  std::uint32_t len = 0;
  ASSERT_TRUE(sb.next_lost(SeqNum(0), kNoRxt, kSmss, seq, len));
  EXPECT_EQ(seq, SeqNum(0));
  EXPECT_EQ(len, kSmss);
  ASSERT_TRUE(sb.next_lost(SeqNum(0), SeqNum(999), kSmss, seq, len));  // (1.a) S2 > HighRxt
  EXPECT_EQ(seq, SeqNum(1000));
  // Stops at the next SACKed byte.
  ASSERT_TRUE(sb.next_lost(SeqNum(0), SeqNum(2499), kSmss, seq, len));
  EXPECT_EQ(seq, SeqNum(2500));
  EXPECT_EQ(len, 500u);
  // Everything lost was retransmitted; [4000,5000) is not lost (1.c).
  EXPECT_FALSE(sb.next_lost(SeqNum(0), SeqNum(2999), kSmss, seq, len));
  // Holes above the highest SACKed octet are never rule-1 candidates (1.b).
  SackScoreboard top;
  upd(top, 0, 10000, {blk(1000, 1500), blk(2000, 2500), blk(3000, 3500)});
  ASSERT_TRUE(top.next_lost(SeqNum(0), kNoRxt, 1460, seq, len));
  EXPECT_EQ(seq, SeqNum(0));
  EXPECT_EQ(len, 1000u);
  EXPECT_FALSE(top.next_lost(SeqNum(0), SeqNum(2999), 1460, seq, len));
  EXPECT_FALSE(SackScoreboard{}.next_lost(SeqNum(0), kNoRxt, kSmss, seq, len));
}

TEST(TcpSackScoreboard, NextLostStartsAtSndUnaAfterPartialAck_Rfc6675_4) {
  SackScoreboard sb;
  upd(sb, 0, 10000, {blk(3000, 4000), blk(5000, 6000), blk(7000, 8000)});
  upd(sb, 2000, 10000, {});  // partial ACK
  SeqNum seq;
  std::uint32_t len = 0;
  ASSERT_TRUE(sb.next_lost(SeqNum(2000), SeqNum(999), kSmss, seq, len));
  EXPECT_EQ(seq, SeqNum(2000));
  EXPECT_EQ(len, 1000u);
}

TEST(TcpSackScoreboard, BoundedRangesDropHighestWhenFull) {
  SackScoreboard sb;
  std::vector<SackBlock> many;
  for (std::uint32_t i = 0; i < SackScoreboard::kMaxRanges + 4; ++i) many.push_back(blk(1000 + 200 * i, 1100 + 200 * i));
  sb.update(SeqNum(0), SeqNum(100000), many);
  EXPECT_EQ(sb.range_count(), SackScoreboard::kMaxRanges);
  EXPECT_EQ(sb.high_sacked(), SeqNum(1100 + 200 * (SackScoreboard::kMaxRanges - 1)));
  // A new low range is kept, the highest one goes.
  EXPECT_EQ(upd(sb, 0, 100000, {blk(500, 600)}), 100u);
  EXPECT_EQ(sb.range_count(), SackScoreboard::kMaxRanges);
  EXPECT_TRUE(sb.is_sacked(SeqNum(500)));
  EXPECT_EQ(sb.high_sacked(), SeqNum(1100 + 200 * (SackScoreboard::kMaxRanges - 2)));
  // Merging still works when full.
  EXPECT_EQ(upd(sb, 0, 100000, {blk(1100, 1200)}), 100u);
  EXPECT_EQ(sb.range_count(), SackScoreboard::kMaxRanges - 1);
}

TEST(TcpSackScoreboard, WorksAcrossSequenceWrap_Rfc9293_3_4) {
  SackScoreboard sb;
  const std::uint32_t una = 0xfffff000u;
  upd(sb, una, una + 10000, {blk(una + 3000, una + 4000), blk(una + 5000, una + 6000), blk(una + 7000, una + 8000)});
  EXPECT_EQ(sb.sacked_bytes(), 3000u);
  EXPECT_TRUE(sb.is_lost(SeqNum(una), kSmss));
  EXPECT_EQ(sb.pipe(SeqNum(una), SeqNum(una + 10000), SeqNum(una - 1), kSmss), 4000u);
  SeqNum seq;
  std::uint32_t len = 0;
  ASSERT_TRUE(sb.next_lost(SeqNum(una), SeqNum(una + 999), kSmss, seq, len));
  EXPECT_EQ(seq, SeqNum(una + 1000));
  EXPECT_EQ(sb.high_sacked(), SeqNum(una + 8000));
}
