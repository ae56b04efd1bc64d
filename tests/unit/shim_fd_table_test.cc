// The shim's descriptor bookkeeping: fd table words, pools with their lock-free free list, the
// per-socket option record replayed at hand-over.
#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "shim/fd_table.hh"

namespace pno::shim {
namespace {

TEST(ShimFdTable, UntrackedFdsAndOutOfRangeNumbersAreKernel) {
  FdTable t;
  ASSERT_TRUE(t.init(1024));
  EXPECT_EQ(t.get(5).kind, FdKind::kernel);
  EXPECT_EQ(t.get(-1).kind, FdKind::kernel);
  EXPECT_EQ(t.get(1024).kind, FdKind::kernel);
  EXPECT_FALSE(t.set(1024, FdKind::socket, 3));  // beyond the table: stays with the kernel
  EXPECT_FALSE(t.set(-3, FdKind::socket, 3));
}

TEST(ShimFdTable, SetGetTakeRoundTripKindAndIndex) {
  FdTable t;
  ASSERT_TRUE(t.init(1024));
  ASSERT_TRUE(t.set(7, FdKind::socket, 0xABCDE));
  FdRef r = t.get(7);
  EXPECT_EQ(r.kind, FdKind::socket);
  EXPECT_EQ(r.index, 0xABCDEu);
  EXPECT_EQ(t.high_water(), 8);
  FdRef taken = t.take(7);
  EXPECT_EQ(taken.kind, FdKind::socket);
  EXPECT_EQ(taken.index, 0xABCDEu);
  EXPECT_EQ(t.get(7).kind, FdKind::kernel);
  EXPECT_EQ(t.take(7).kind, FdKind::kernel);  // a second close finds nothing to release
}

TEST(ShimFdTable, TakeIfOnlyTakesTheExpectedEntry) {
  FdTable t;
  ASSERT_TRUE(t.init(64));
  t.set(3, FdKind::pending, 9);
  EXPECT_FALSE(t.take_if(3, FdRef{FdKind::pending, 8}));
  EXPECT_FALSE(t.take_if(3, FdRef{FdKind::socket, 9}));
  EXPECT_EQ(t.get(3).kind, FdKind::pending);
  EXPECT_TRUE(t.take_if(3, FdRef{FdKind::pending, 9}));
  EXPECT_EQ(t.get(3).kind, FdKind::kernel);
}

TEST(ShimFdTable, ConcurrentClosersReleaseAnEntryExactlyOnce) {
  FdTable t;
  ASSERT_TRUE(t.init(4096));
  for (int fd = 0; fd < 4096; ++fd) t.set(fd, FdKind::socket, static_cast<std::uint32_t>(fd + 1));
  std::atomic<int> released{0};
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k) {
    th.emplace_back([&] {
      for (int fd = 0; fd < 4096; ++fd) {
        if (t.take(fd).kind == FdKind::socket) released.fetch_add(1);
      }
    });
  }
  for (auto& x : th) x.join();
  EXPECT_EQ(released.load(), 4096);
}

struct Item {
  std::atomic<std::uint32_t> next_free;
  int payload;
};

TEST(ShimPool, HandsOutDistinctNonZeroIndicesUpToCapacity) {
  Pool<Item> p;
  ASSERT_TRUE(p.init(100));
  std::set<std::uint32_t> seen;
  for (int i = 0; i < 100; ++i) {
    std::uint32_t idx = p.alloc();
    ASSERT_NE(idx, 0u);
    ASSERT_LE(idx, 100u);
    EXPECT_TRUE(seen.insert(idx).second);
  }
  EXPECT_EQ(p.alloc(), 0u);  // full
  p.free(42);
  EXPECT_EQ(p.alloc(), 42u);  // freed slots are reused first
  EXPECT_EQ(p.alloc(), 0u);
}

TEST(ShimPool, ConcurrentAllocFreeNeverHandsOneSlotToTwoOwners) {
  Pool<Item> p;
  ASSERT_TRUE(p.init(64));
  std::atomic<bool> bad{false};
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k) {
    th.emplace_back([&, k] {
      for (int round = 0; round < 20000; ++round) {
        std::uint32_t idx = p.alloc();
        if (idx == 0) continue;
        p[idx].payload = k;
        for (int spin = 0; spin < 10; ++spin) {
          if (p[idx].payload != k) bad = true;
        }
        p.free(idx);
      }
    });
  }
  for (auto& x : th) x.join();
  EXPECT_FALSE(bad.load());
}

TEST(ShimSockDesc, RecordReplacesAnOptionAndRefusesWhenFull) {
  Pool<SockDesc> p;
  ASSERT_TRUE(p.init(4));
  SockDesc& d = p[p.alloc()];
  d.reset();
  EXPECT_TRUE(d.record(SockOpt::nodelay, 1));
  EXPECT_TRUE(d.record(SockOpt::nodelay, 0));  // set twice: the last value is replayed
  ASSERT_EQ(d.n_opts, 1u);
  EXPECT_EQ(d.opts[0].value, 0);
  for (int i = 0; i < 15; ++i) EXPECT_TRUE(d.record(static_cast<SockOpt>(i % 13), i));
  // 13 distinct options fit; the record keeps one entry per option.
  EXPECT_LE(d.n_opts, 16u);
}

}  // namespace
}  // namespace pno::shim
