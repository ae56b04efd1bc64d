// The PCIe cost model on the engine's DmaChannel (src/channel/pcie_model.hh): a batch of reads costs
// one completion latency plus its bytes over the link bandwidth, writes are posted (bandwidth only),
// the model off charges nothing; and the host service settles one batch per pass. A virtual clock
// stands in for the spin, so the charged nanoseconds are exact.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "channel/contract.hh"
#include "channel/dma.hh"
#include "channel/pcie_model.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/channel_bench.hh"

using namespace pno;
using namespace pno::channel;
using pno::engine::HostService;
using pno::engine::HostServiceConfig;
namespace c = pno::channel::contract;
using pno::test::channel_bench::region_ring;

namespace {

/// Time advances only when the model spins.
class VirtualClock final : public PcieClock {
 public:
  std::uint64_t now_ns() override { return t; }
  void spin_until(std::uint64_t d) override {
    ++spins;
    if (d > t) t = d;
  }
  std::uint64_t t = 1'000'000;
  std::uint64_t spins = 0;
};

PcieModelConfig gen4(std::uint64_t latency_ns, DmaBatching b = DmaBatching::iteration) {
  PcieModelConfig cfg;
  cfg.latency_ns = latency_ns;
  cfg.gbytes_per_s = 25;
  cfg.batching = b;
  return cfg;
}

struct Mem {
  std::vector<std::byte> region = std::vector<std::byte>(8 << 20);
  MemcpyDma dma{region.data(), region.size()};
};

}  // namespace

TEST(ChannelPcieModel, BatchOfSmallReadsCostsOneLatencyNotOnePerRead) {
  VirtualClock clk;
  PcieModel m(gen4(1000), &clk);
  Mem mem;
  mem.dma.set_model(&m);
  for (std::uint64_t k = 0; k < 16; ++k) {
    std::uint32_t v = 0;
    ASSERT_TRUE(mem.dma.read_u32(k * 64, v));
  }
  EXPECT_EQ(clk.t, 1'000'000u) << "reads are charged when the batch settles, not one by one";
  const std::uint64_t cost = m.settle();
  // 16 index words = 64 bytes = ceil(64/25) = 3 ns on the wire, one 1000 ns completion.
  EXPECT_EQ(cost, 1003u);
  EXPECT_EQ(clk.t, 1'000'000u + 1003u);
  EXPECT_EQ(m.stats().read_batches, 1u);
  EXPECT_EQ(m.stats().read_ops, 16u);
  EXPECT_EQ(m.stats().stall_ns, 1003u);
  EXPECT_EQ(m.settle(), 0u) << "an empty batch costs nothing";
}

TEST(ChannelPcieModel, OpBatchingChargesEveryReadItsOwnRoundTrip) {
  VirtualClock clk;
  PcieModel m(gen4(1000, DmaBatching::op), &clk);
  Mem mem;
  mem.dma.set_model(&m);
  for (std::uint64_t k = 0; k < 16; ++k) {
    std::uint32_t v = 0;
    ASSERT_TRUE(mem.dma.read_u32(k * 64, v));
  }
  m.settle();
  EXPECT_EQ(m.stats().read_batches, 16u);
  EXPECT_EQ(m.stats().stall_ns, 16u * (1000 + 1));  // ceil(4/25) = 1
  EXPECT_EQ(clk.t, 1'000'000u + 16u * 1001);
}

TEST(ChannelPcieModel, BandwidthTermScalesWithBytes) {
  for (const std::uint64_t mib : {1, 2, 4}) {
    VirtualClock clk;
    PcieModel m(gen4(2000), &clk);
    Mem mem;
    mem.dma.set_model(&m);
    std::vector<std::byte> buf(mib << 20);
    ASSERT_TRUE(mem.dma.read(0, buf));
    const std::uint64_t cost = m.settle();
    // 25 GB/s = 25 bytes/ns: 1 MiB takes 41944 ns (rounded up) after the 2000 ns completion.
    EXPECT_EQ(cost, 2000 + (mib * 1048576 + 24) / 25) << mib << " MiB";
  }
  // Halving the bandwidth doubles the wire term, not the latency.
  VirtualClock clk;
  PcieModelConfig slow = gen4(2000);
  slow.gbytes_per_s = 12.5;
  PcieModel m(slow, &clk);
  Mem mem;
  mem.dma.set_model(&m);
  std::vector<std::byte> buf(1 << 20);
  ASSERT_TRUE(mem.dma.read(0, buf));
  EXPECT_EQ(m.settle(), 2000u + 83887u);
}

TEST(ChannelPcieModel, WritesArePostedAndPayOnlyTheirBandwidth) {
  VirtualClock clk;
  PcieModel m(gen4(1000), &clk);
  Mem mem;
  mem.dma.set_model(&m);
  std::vector<std::byte> buf(64 * 1024);
  ASSERT_TRUE(mem.dma.write(0, buf));
  ASSERT_TRUE(mem.dma.write_u32(1 << 20, 7));
  EXPECT_EQ(m.settle(), (65536u + 4 + 24) / 25) << "no completion latency for posted writes";
  EXPECT_EQ(m.stats().write_batches, 1u);
  EXPECT_EQ(m.stats().read_batches, 0u);
  // Reads and writes in one batch use both directions of the link at once: the slower one counts.
  std::uint32_t v = 0;
  ASSERT_TRUE(mem.dma.read_u32(0, v));
  ASSERT_TRUE(mem.dma.write(0, std::span(buf).first(64)));
  EXPECT_EQ(m.settle(), 1001u);
  ASSERT_TRUE(mem.dma.read_u32(0, v));
  std::vector<std::byte> big(1 << 20);
  ASSERT_TRUE(mem.dma.write(0, big));
  EXPECT_EQ(m.settle(), (1048576u + 24) / 25);
}

TEST(ChannelPcieModel, ModelOffChargesNothing) {
  VirtualClock clk;
  PcieModel off(gen4(0), &clk);
  EXPECT_FALSE(off.enabled());
  Mem mem;
  mem.dma.set_model(&off);  // a disabled model is not attached at all
  std::uint32_t v = 0;
  std::vector<std::byte> buf(1 << 20);
  for (int k = 0; k < 100; ++k) {
    ASSERT_TRUE(mem.dma.read_u32(0, v));
    ASSERT_TRUE(mem.dma.read(0, buf));
    ASSERT_TRUE(mem.dma.write(0, buf));
  }
  EXPECT_EQ(off.settle(), 0u);
  EXPECT_EQ(clk.t, 1'000'000u);
  EXPECT_EQ(clk.spins, 0u);
  EXPECT_EQ(off.stats().read_ops, 0u);
  EXPECT_EQ(off.stats().stall_ns, 0u);
  // The channel's own counters run regardless.
  EXPECT_EQ(mem.dma.stats().read_ops, 200u);
  EXPECT_EQ(mem.dma.stats().write_ops, 100u);
}

// ---------------------------------------------------------------------------- the host service

namespace {

class NullSink final : public FrameSink {
 public:
  MutByteSpan tx_begin(std::size_t max_len) override {
    buf_.resize(max_len);
    return buf_;
  }
  void tx_commit(std::size_t, const TxMeta&) override {}
  void tx_abort() override {}

 private:
  std::vector<std::byte> buf_;
};

struct Rig {
  explicit Rig(std::uint64_t latency_ns, DmaBatching b = DmaBatching::iteration) {
    HostServiceConfig hc = pno::test::channel_bench::small_in_process_config();
    hc.pcie = gen4(latency_ns, b);
    hc.pcie_clock = &clk;
    StackConfig sc;
    sc.mac = MacAddr{{2, 0, 0, 0, 0, 1}};
    sc.addr = Ipv4Cidr{Ipv4Addr::from_octets(198, 18, 0, 1), 24};
    eng = std::make_unique<Stack>(sc, sink, now);
    svc = std::make_unique<HostService>(hc);
    EXPECT_EQ(svc->start(eng->tcp(), now), Errc::ok);
    EXPECT_GE(svc->attach_for_test(&base, &bytes), 0);
    std::memcpy(&h, base, sizeof(h));
  }
  ~Rig() { munmap(base, bytes); }
  void pass() {
    now += std::chrono::microseconds(10);
    svc->service_for_test(now);
  }
  SpscRing<c::Command> cmds() { return region_ring<c::Command>(base, h.cmd_off, h.cmd_entries); }
  SpscRing<c::Completion> cpls() { return region_ring<c::Completion>(base, h.cpl_off, h.cpl_entries); }

  VirtualClock clk;
  Instant now = instant_from_ns(1'000'000'000);
  NullSink sink;
  std::unique_ptr<Stack> eng;
  std::unique_ptr<HostService> svc;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  c::RegionHeader h{};
};

}  // namespace

TEST(ChannelPcieModel, IdleServicePassReadsSeveralIndexWordsInOneRoundTrip) {
  Rig r(1000);
  r.pass();  // the region header written at attach goes out with the first pass
  const DmaStats d0 = r.svc->dma_stats();
  const PcieModelStats p0 = r.svc->pcie_stats();
  const std::uint64_t t0 = r.clk.t;
  r.pass();
  const DmaStats d1 = r.svc->dma_stats();
  const PcieModelStats p1 = r.svc->pcie_stats();
  // An idle family: the command ring's tail and the kick ring's tail (at least two index reads)...
  EXPECT_GE(d1.word_reads - d0.word_reads, 2u);
  // ...cost one completion, not one each.
  EXPECT_EQ(p1.read_batches - p0.read_batches, 1u);
  EXPECT_EQ(r.clk.t - t0, 1000 + ((d1.read_bytes - d0.read_bytes) + 24) / 25);
  EXPECT_EQ(p1.stall_ns - p0.stall_ns, r.clk.t - t0);
}

TEST(ChannelPcieModel, IdleServicePassWithOpBatchingPaysEveryIndexRead) {
  Rig r(1000, DmaBatching::op);
  r.pass();
  const DmaStats d0 = r.svc->dma_stats();
  const std::uint64_t t0 = r.clk.t;
  r.pass();
  const DmaStats d1 = r.svc->dma_stats();
  const std::uint64_t reads = d1.read_ops - d0.read_ops;
  EXPECT_GE(reads, 2u);
  EXPECT_EQ(r.clk.t - t0, reads * 1001) << "each 4-byte index read: 1000 ns + ceil(4/25) ns";
}

TEST(ChannelPcieModel, CommandsAndTheirCompletionsShareOnePassBatch) {
  Rig r(2000);
  r.pass();
  // Eight socket() commands in one go: tail, entries, head; eight completions and their tail.
  std::vector<c::Command> batch(8);
  for (std::size_t k = 0; k < batch.size(); ++k) {
    batch[k].op = c::Op::socket;
    batch[k].tag = static_cast<std::uint16_t>(k + 1);
  }
  ASSERT_EQ(r.cmds().push(batch), batch.size());
  const DmaStats d0 = r.svc->dma_stats();
  const PcieModelStats p0 = r.svc->pcie_stats();
  const std::uint64_t t0 = r.clk.t;
  r.pass();
  const DmaStats d1 = r.svc->dma_stats();
  const PcieModelStats p1 = r.svc->pcie_stats();
  std::vector<c::Completion> out(16);
  ASSERT_EQ(r.cpls().pop(out), batch.size());
  for (std::size_t k = 0; k < batch.size(); ++k) EXPECT_EQ(out[k].err, 0) << k;
  EXPECT_EQ(p1.read_batches - p0.read_batches, 1u);
  EXPECT_EQ(p1.write_batches - p0.write_batches, 1u);
  const std::uint64_t rb = d1.read_bytes - d0.read_bytes, wb = d1.write_bytes - d0.write_bytes;
  EXPECT_GE(rb, batch.size() * sizeof(c::Command));
  EXPECT_GE(wb, batch.size() * sizeof(c::Completion));
  EXPECT_EQ(r.clk.t - t0, std::max<std::uint64_t>(2000 + (rb + 24) / 25, (wb + 24) / 25));
}

TEST(ChannelPcieModel, HostServiceWithModelOffNeverSpins) {
  Rig r(0);
  for (int k = 0; k < 10; ++k) r.pass();
  std::vector<c::Command> batch(4);
  for (auto& cmd : batch) cmd.op = c::Op::socket;
  ASSERT_EQ(r.cmds().push(batch), batch.size());
  r.pass();
  EXPECT_GT(r.svc->dma_stats().read_ops, 0u);
  EXPECT_EQ(r.clk.spins, 0u);
  EXPECT_EQ(r.clk.t, 1'000'000u);
  EXPECT_EQ(r.svc->pcie_stats().read_batches, 0u);
  EXPECT_EQ(r.svc->pcie_stats().stall_ns, 0u);
}
