// The channel's shared-memory rings and the contract's layout: SPSC rings hammered by two threads
// and by two processes across many wraparounds, the DMA-side ring ends, and the static layout.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "channel/contract.hh"
#include "channel/dma.hh"
#include "channel/spsc.hh"

using namespace pno;
using namespace pno::channel;
namespace c = pno::channel::contract;

namespace {

/// A ring of `n` u64 entries in a MAP_SHARED anonymous mapping (shared across fork), laid out as
/// in the region: indices, a spare line, entries.
struct SharedRing {
  explicit SharedRing(std::uint32_t n) : n(n) {
    bytes = c::kRingEntries + n * sizeof(std::uint64_t);
    mem = static_cast<std::byte*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  }
  ~SharedRing() { munmap(mem, bytes); }
  SpscRing<std::uint64_t> ring() {
    return {reinterpret_cast<c::RingIndices*>(mem), reinterpret_cast<std::uint64_t*>(mem + c::kRingEntries), n};
  }
  std::uint32_t n;
  std::size_t bytes;
  std::byte* mem;
};

constexpr std::uint64_t kItems = 1'000'000;

void produce(SpscRing<std::uint64_t> r) {
  std::uint64_t next = 0;
  std::vector<std::uint64_t> batch;
  while (next < kItems) {
    batch.clear();
    const std::uint64_t k = 1 + next % 13;  // varying batch sizes straddle the wrap point
    for (std::uint64_t j = 0; j < k && next + j < kItems; ++j) batch.push_back(next + j);
    const std::size_t n = r.push(batch);
    next += n;
    if (n == 0) std::this_thread::yield();
  }
}

/// Returns the number of out-of-order items seen (0 when correct).
std::uint64_t consume(SpscRing<std::uint64_t> r) {
  std::uint64_t expect = 0, bad = 0;
  std::uint64_t buf[17];
  while (expect < kItems) {
    const std::size_t n = r.pop(buf);
    for (std::size_t j = 0; j < n; ++j) bad += buf[j] != expect++ ? 1 : 0;
    if (n == 0) std::this_thread::yield();
  }
  return bad;
}

}  // namespace

TEST(ChannelRing, TwoThreadsHammerSpscAcrossWraparound) {
  SharedRing sr(64);
  std::thread p([&] { produce(sr.ring()); });
  const std::uint64_t bad = consume(sr.ring());
  p.join();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(sr.ring().size(), 0u);
}

TEST(ChannelRing, TwoProcessesHammerSpscAcrossWraparound) {
  SharedRing sr(32);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    produce(sr.ring());
    _exit(0);
  }
  const std::uint64_t bad = consume(sr.ring());
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(bad, 0u);
}

TEST(ChannelRing, FreeRunningIndicesWrapAt32Bits) {
  SharedRing sr(8);
  auto* idx = reinterpret_cast<c::RingIndices*>(sr.mem);
  idx->head = idx->tail = 0xfffffffcu;  // four entries before the u32 wrap
  auto r = sr.ring();
  for (std::uint64_t round = 0; round < 10; ++round) {
    const std::uint64_t in[5] = {round, round + 1, round + 2, round + 3, round + 4};
    ASSERT_EQ(r.push(in), 5u);
    std::uint64_t out[8];
    ASSERT_EQ(r.pop(out), 5u);
    for (int j = 0; j < 5; ++j) EXPECT_EQ(out[j], in[j]);
  }
  EXPECT_LT(idx->tail, 0xfffffffcu);  // it did wrap
}

TEST(ChannelRing, FullRingRefusesAndEmptyRingGivesNothing) {
  SharedRing sr(4);
  auto r = sr.ring();
  const std::uint64_t in[6] = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(r.push(in), 4u);
  EXPECT_EQ(r.push(in), 0u);
  std::uint64_t out[6];
  EXPECT_EQ(r.pop(out), 4u);
  EXPECT_EQ(r.pop(out), 0u);
}

TEST(ChannelRing, DmaConsumerAndProducerInteroperateWithHostRing) {
  SharedRing sr(16);
  MemcpyDma dma(sr.mem, sr.bytes);
  DmaRingConsumer<std::uint64_t> cons(&dma, 0, 16);
  auto host = sr.ring();
  std::uint64_t next = 0, got_next = 0;
  for (int round = 0; round < 1000; ++round) {
    std::uint64_t in[7];
    for (auto& v : in) v = next++;
    const std::size_t want = 1 + round % 7;
    const std::size_t pushed = host.push(std::span(in).first(want));
    next -= 7 - pushed;
    std::uint64_t out[5];
    std::size_t got = 0;
    do {
      ASSERT_TRUE(cons.pop(out, got));
      for (std::size_t j = 0; j < got; ++j) ASSERT_EQ(out[j], got_next++);
    } while (got > 0);
  }
  EXPECT_EQ(got_next, next);
  EXPECT_GT(dma.stats().read_ops, 0u);
  EXPECT_GT(dma.stats().read_bytes, next * 8 - 1);

  // The other direction: the engine produces, the host consumes.
  SharedRing sr2(16);
  MemcpyDma dma2(sr2.mem, sr2.bytes);
  DmaRingProducer<std::uint64_t> prod(&dma2, 0, 16);
  auto host2 = sr2.ring();
  std::uint64_t p = 0, q = 0;
  for (int round = 0; round < 1000; ++round) {
    std::uint64_t in[9];
    for (auto& v : in) v = p++;
    const std::size_t pushed = prod.push(std::span(in).first(1 + round % 9));
    p -= 9 - pushed;
    std::uint64_t out[4];
    for (std::size_t n; (n = host2.pop(out)) > 0;) {
      for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(out[j], q++);
    }
  }
  EXPECT_EQ(p, q);
  EXPECT_GT(dma2.stats().write_bytes, p * 8 - 1);
}

TEST(ChannelRing, DmaConsumerRejectsImpossibleHostTail) {
  SharedRing sr(16);
  MemcpyDma dma(sr.mem, sr.bytes);
  DmaRingConsumer<std::uint64_t> cons(&dma, 0, 16);
  reinterpret_cast<c::RingIndices*>(sr.mem)->tail = 17;  // more than the ring holds
  std::uint64_t out[4];
  std::size_t got = 99;
  EXPECT_FALSE(cons.pop(out, got));
  EXPECT_EQ(got, 0u);
}

TEST(ChannelDma, OutOfRegionTransfersAreRefusedAndCounted) {
  std::vector<std::byte> region(4096);
  MemcpyDma dma(region.data(), region.size());
  std::byte buf[64];
  EXPECT_TRUE(dma.read(4096 - 64, buf));
  EXPECT_FALSE(dma.read(4096 - 63, buf));
  EXPECT_FALSE(dma.write(~std::uint64_t{0} - 10, buf));  // offset + length overflows
  std::uint32_t w = 0;
  EXPECT_FALSE(dma.read_u32(4096, w));
  EXPECT_FALSE(dma.read_u32(2, w));  // misaligned index word
  EXPECT_FALSE(dma.write_u32(4094, 1));
  EXPECT_EQ(dma.stats().out_of_bounds, 5u);
  EXPECT_EQ(dma.stats().read_ops, 1u);
  EXPECT_EQ(dma.stats().read_bytes, 64u);
}

namespace {
/// Pages of [p, p+len) present in this process's page tables (/proc/self/pagemap bit 63).
std::size_t present_pages(const std::byte* p, std::size_t len) {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t n = 0;
  for (auto a = reinterpret_cast<std::uintptr_t>(p); a < reinterpret_cast<std::uintptr_t>(p) + len; a += page) {
    std::uint64_t e = 0;
    if (::pread(fd, &e, sizeof e, static_cast<off_t>(a / page * sizeof e)) == sizeof e && (e >> 63) != 0) ++n;
  }
  ::close(fd);
  return n;
}
}  // namespace

TEST(ChannelDma, PrepareMapsTheRangeSoTheDataPathTakesNoPageFault) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t bytes = 64 * page;
  int fd = ::memfd_create("pno-prepare-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* base = static_cast<std::byte*>(map);
  MemcpyDma dma(base, bytes);
  EXPECT_EQ(present_pages(base, bytes), 0u);
  // An unaligned start rounds down to its page; the end covers the last byte's page.
  dma.prepare(8 * page + 100, 16 * page);
  EXPECT_EQ(present_pages(base, 8 * page), 0u);
  EXPECT_EQ(present_pages(base + 8 * page, 17 * page), 17u);
  EXPECT_EQ(present_pages(base + 25 * page, bytes - 25 * page), 0u);
  dma.prepare(bytes - page, 2 * page);  // beyond the region: ignored
  EXPECT_EQ(present_pages(base + 25 * page, bytes - 25 * page), 0u);
  munmap(map, bytes);
  ::close(fd);
}

TEST(ChannelContract, LayoutIsCacheLineSeparatedAndVersioned) {
  static_assert(c::kAbiVersion == 5);  // 2: the process table; 3: no-reply commands; 4: snd_nospace;
                                      // 5: features, reserved words, published offsets, spare ring line
  static_assert(c::kNoReply >= c::kReplySlots);
  static_assert(sizeof(c::RingIndices) == 128);
  static_assert(offsetof(c::RingIndices, tail) - offsetof(c::RingIndices, head) >= c::kCacheLine);
  static_assert(sizeof(c::Command) == 64 && sizeof(c::Completion) == 128);
  static_assert(alignof(c::SocketSlot) == c::kCacheLine);
  // Engine-written and host-written parts of a slot never share a cache line.
  static_assert(offsetof(c::SocketSlot, snd_head) / c::kCacheLine != offsetof(c::SocketSlot, snd_tail) / c::kCacheLine);
  static_assert(offsetof(c::SocketSlot, rcv_tail) / c::kCacheLine != offsetof(c::SocketSlot, rcv_head) / c::kCacheLine);
  static_assert(offsetof(c::RegionHeader, engine_sleeping) / c::kCacheLine !=
                offsetof(c::RegionHeader, armed_waiters) / c::kCacheLine);
  c::RegionHeader h;
  ASSERT_TRUE(c::layout(c::Geometry{}, h));
  const std::uint64_t offs[] = {h.cmd_off,     h.cpl_off,   h.kick_off,          h.changed_off, h.waiters_off,
                                h.replies_off, h.slots_off, h.procs_off, h.counts_off, h.data_off};
  std::uint64_t prev = 0;
  for (auto o : offs) {
    EXPECT_EQ(o % c::kCacheLine, 0u);
    EXPECT_GT(o, prev);
    prev = o;
  }
  EXPECT_EQ(h.data_off % 4096, 0u);
  // The process table and its counts fit between the slots and the stream rings.
  EXPECT_GE(h.procs_off, c::slot_off(h, h.max_sockets));
  EXPECT_LE(c::count_off(h, h.max_procs - 1, h.max_sockets - 1) + 4, h.data_off);
  c::Geometry one_proc;
  one_proc.max_procs = 1;  // no room for the shared entry
  EXPECT_FALSE(c::layout(one_proc, h));
  ASSERT_TRUE(c::layout(c::Geometry{}, h));
  EXPECT_EQ(h.region_bytes, h.data_off + std::uint64_t{h.max_sockets} * 2 * h.stream_ring_bytes);
  EXPECT_GE(h.kick_entries, 2 * h.max_sockets);
  EXPECT_EQ(c::send_ring_off(h, 1) - c::send_ring_off(h, 0), 2u * h.stream_ring_bytes);
  c::Geometry bad;
  bad.stream_ring_bytes = 3000;  // not a power of two
  EXPECT_FALSE(c::layout(bad, h));
  // Handles: index + generation, never 0.
  EXPECT_NE(c::handle_make(0, 0), 0u);
  EXPECT_EQ(c::handle_index(c::handle_make(77, 5)), 77u);
  EXPECT_EQ(c::handle_gen(c::handle_make(77, 5)), 5u);
}

TEST(ChannelContract, HostAcceptsAnyPublishedLayoutThatFitsAndRefusesOneThatDoesNot) {
  c::RegionHeader h;
  ASSERT_TRUE(c::layout(c::Geometry{}, h));
  EXPECT_EQ(c::validate(h, h.region_bytes), nullptr);
  // Ring entries start one spare line after the indices.
  EXPECT_EQ(c::kRingEntries, sizeof(c::RingIndices) + c::kCacheLine);
  EXPECT_GE(h.cpl_off - h.cmd_off, c::kRingEntries + std::uint64_t{h.cmd_entries} * sizeof(c::Command));

  // An engine may place the parts elsewhere (here: a page of room before the slots, and the
  // process table after the stream rings): the host takes the offsets as published.
  c::RegionHeader moved = h;
  moved.slots_off += 4096;
  moved.procs_off += 4096;
  moved.counts_off += 4096;
  moved.data_off += 4096;
  moved.region_bytes += 4096;
  EXPECT_EQ(c::validate(moved, moved.region_bytes), nullptr);

  auto refused = [&](auto change) {
    c::RegionHeader b = h;
    change(b);
    return c::validate(b, h.region_bytes) != nullptr;
  };
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.region_bytes -= 4096; }));                // not what was mapped
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.counts_off = b.region_bytes - 64; }));    // runs past the end
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.cmd_off = ~std::uint64_t{0} - 63; }));    // wraps around
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.cpl_off = b.cmd_off + 64; }));            // overlaps commands
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.waiters_off = 64; }));                    // inside the header
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.slots_off += 8; }));                      // misaligned
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.data_off += 64; }));                     // rings off a page
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.cmd_entries = 100; }));                   // not a power of two
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.kick_entries = b.max_sockets; }));        // kicks could overflow
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.max_sockets = 70000; }));                 // beyond handles
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.n_addrs = 9; }));
  EXPECT_TRUE(refused([](c::RegionHeader& b) { b.abi_version = c::kAbiVersion - 1; }));
}

TEST(ChannelContract, EndpointsPackAndUnpackOnBothEnds) {
  const c::PackedEndpoint e = c::endpoint_unpack(c::endpoint_pack(0xc6120001u, 6379));
  EXPECT_EQ(e.addr, 0xc6120001u);
  EXPECT_EQ(e.port, 6379);
  EXPECT_EQ(c::endpoint_unpack(c::endpoint_pack(0, 0)).addr, 0u);
  EXPECT_GE(c::endpoint_pack(0xffffffffu, 0xffff), 0);  // fits the completion's signed value
}
