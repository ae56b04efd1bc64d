// The engine's test-only impairment stage: loss, duplication, reordering, delay and draining, on
// opaque frame handles (the stage never looks inside a frame).
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "engine/impair.hh"

using namespace pno;
using namespace pno::engine;

namespace {

// Frames are opaque handles: addresses of slots in an array, never dereferenced.
std::array<int, 4096> g_storage;
rte_mbuf* frame(std::size_t i) { return reinterpret_cast<rte_mbuf*>(&g_storage.at(i)); }
std::size_t index_of(rte_mbuf* m) { return static_cast<std::size_t>(reinterpret_cast<int*>(m) - g_storage.data()); }

struct RecordingOps final : FrameOps {
  std::vector<std::size_t> emitted, dropped;
  std::size_t next_copy = 2048;
  bool copies_fail = false;
  void emit(rte_mbuf* m) override { emitted.push_back(index_of(m)); }
  void drop(rte_mbuf* m) override { dropped.push_back(index_of(m)); }
  rte_mbuf* copy(rte_mbuf*) override { return copies_fail ? nullptr : frame(next_copy++); }
};

Instant ms(int v) { return instant_from_ns(std::int64_t{v} * 1'000'000); }

}  // namespace

TEST(Impair, NoImpairmentPassesEveryFrameInOrder) {
  EngineCounters c;
  ImpairStage s(ImpairConfig{}, 1, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 100; ++i) s.push(frame(i), ms(0), ops);
  ASSERT_EQ(ops.emitted.size(), 100u);
  for (std::size_t i = 0; i < 100; ++i) EXPECT_EQ(ops.emitted[i], i);
  EXPECT_TRUE(ops.dropped.empty());
  EXPECT_EQ(s.next_release(), kNever);
}

TEST(Impair, LossDropsAboutTheConfiguredShareAndCountsIt) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.loss_pct = 10;
  ImpairStage s(cfg, 7, ImpairCounterIds::tx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 2000; ++i) s.push(frame(i), ms(0), ops);
  EXPECT_EQ(ops.emitted.size() + ops.dropped.size(), 2000u);
  EXPECT_GT(ops.dropped.size(), 140u);  // 10 % of 2000 = 200, generous bounds for a fixed seed
  EXPECT_LT(ops.dropped.size(), 260u);
  EXPECT_EQ(c.get(EngineCounter::impair_tx_loss), ops.dropped.size());
  EXPECT_EQ(c.get(EngineCounter::impair_rx_loss), 0u);
}

TEST(Impair, SameSeedReplaysTheSameDrops) {
  ImpairConfig cfg;
  cfg.loss_pct = 30;
  auto run = [&](std::uint64_t seed) {
    EngineCounters c;
    ImpairStage s(cfg, seed, ImpairCounterIds::rx(), c);
    RecordingOps ops;
    for (std::size_t i = 0; i < 500; ++i) s.push(frame(i), ms(0), ops);
    return ops.dropped;
  };
  EXPECT_EQ(run(3), run(3));
  EXPECT_NE(run(3), run(4));
}

TEST(Impair, HundredPercentDuplicationSendsEveryFrameTwice) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.dup_pct = 100;
  ImpairStage s(cfg, 1, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 10; ++i) s.push(frame(i), ms(0), ops);
  ASSERT_EQ(ops.emitted.size(), 20u);
  for (std::size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(ops.emitted[2 * i], i);
    EXPECT_EQ(ops.emitted[2 * i + 1], 2048 + i);  // the copy follows its original
  }
  EXPECT_EQ(c.get(EngineCounter::impair_rx_dup), 10u);
  // No buffer for a copy: the original still goes, the duplicate is skipped and not counted.
  ops.copies_fail = true;
  s.push(frame(50), ms(0), ops);
  EXPECT_EQ(ops.emitted.back(), 50u);
  EXPECT_EQ(c.get(EngineCounter::impair_rx_dup), 10u);
}

TEST(Impair, ReorderedFrameLeavesAfterGapFramesOvertookIt) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.reorder_pct = 100;  // every frame that is not overtaking a held one gets held
  cfg.reorder_gap = 2;
  ImpairStage s(cfg, 1, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 6; ++i) s.push(frame(i), ms(0), ops);
  // 0 held; 1, 2 overtake it; 0 released; 3 held; 4, 5 overtake; 3 released.
  EXPECT_EQ(ops.emitted, (std::vector<std::size_t>{1, 2, 0, 4, 5, 3}));
  EXPECT_EQ(c.get(EngineCounter::impair_rx_reorder), 2u);
}

TEST(Impair, HeldFrameLeavesAfterMaxHoldEvenWithoutTraffic) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.reorder_pct = 100;
  cfg.reorder_gap = 5;
  cfg.reorder_max_hold = std::chrono::milliseconds(1);
  ImpairStage s(cfg, 1, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  s.push(frame(0), ms(10), ops);
  EXPECT_TRUE(ops.emitted.empty());
  EXPECT_EQ(s.held(), 1u);
  EXPECT_EQ(s.next_release(), ms(11));
  s.poll(ms(10) + std::chrono::microseconds(999), ops);
  EXPECT_TRUE(ops.emitted.empty());
  s.poll(ms(11), ops);
  EXPECT_EQ(ops.emitted, (std::vector<std::size_t>{0}));
  EXPECT_EQ(s.held(), 0u);
}

TEST(Impair, DelayHoldsFramesForTheConfiguredTimeAndKeepsOrder) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.delay = std::chrono::milliseconds(5);
  cfg.jitter = std::chrono::milliseconds(3);
  ImpairStage s(cfg, 9, ImpairCounterIds::tx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 50; ++i) s.push(frame(i), ms(static_cast<int>(i % 3)), ops);
  s.poll(ms(4) + std::chrono::microseconds(999), ops);  // no frame can be due before 5 ms
  EXPECT_TRUE(ops.emitted.empty());
  EXPECT_LE(s.next_release(), ms(2 + 5 + 3));
  s.poll(ms(20), ops);  // every frame is due by 2 + 5 + 3 ms
  ASSERT_EQ(ops.emitted.size(), 50u);
  for (std::size_t i = 0; i < 50; ++i) EXPECT_EQ(ops.emitted[i], i);  // jitter never reorders
  EXPECT_EQ(c.get(EngineCounter::impair_tx_delayed), 50u);
}

TEST(Impair, FullDelayLineDropsAndCountsOverflow) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.delay = std::chrono::milliseconds(1);
  cfg.delay_slots = 4;
  ImpairStage s(cfg, 1, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 6; ++i) s.push(frame(i), ms(0), ops);
  EXPECT_EQ(ops.dropped, (std::vector<std::size_t>{4, 5}));
  EXPECT_EQ(c.get(EngineCounter::impair_rx_overflow), 2u);
}

TEST(Impair, DrainFreesEveryHeldFrame) {
  EngineCounters c;
  ImpairConfig cfg;
  cfg.delay = std::chrono::milliseconds(10);
  cfg.reorder_pct = 50;
  ImpairStage s(cfg, 5, ImpairCounterIds::rx(), c);
  RecordingOps ops;
  for (std::size_t i = 0; i < 20; ++i) s.push(frame(i), ms(0), ops);
  const std::size_t held = s.held();
  EXPECT_GT(held, 0u);
  s.drain(ops);
  EXPECT_EQ(ops.dropped.size() + ops.emitted.size(), 20u);
  EXPECT_EQ(ops.dropped.size(), held);
  EXPECT_EQ(s.held(), 0u);
  EXPECT_EQ(s.next_release(), kNever);
}
