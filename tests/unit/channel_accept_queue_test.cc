// The accept queue between engine and host: the engine moves established connections from TCP into
// a slot's queue of kAcceptQueue entries and refills it when the host kicks after accepting from a
// full queue. A host accept() that lands while the engine refills (it read acc_head before the
// accept, writes acc_tail after it) must not leave connections waiting in TCP with no kick to come:
// the peer's requests on them would never be answered.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "channel/contract.hh"
#include "channel/pcie_model.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/channel_bench.hh"

using namespace pno;
using namespace pno::channel;
using pno::engine::HostService;
namespace c = pno::channel::contract;
using namespace pno::test::channel_bench;

namespace {

/// A virtual PCIe clock: with per-read batching the engine calls spin_until right after each read
/// from the region, which lets the test act as the host between the engine's read and its writes.
struct HookClock final : PcieClock {
  std::uint64_t now_ns() override { return t; }
  void spin_until(std::uint64_t deadline_ns) override {
    if (deadline_ns > t) t = deadline_ns;
    if (after_read) after_read();
  }
  std::uint64_t t = 0;
  std::function<void()> after_read;
};

template <class T>
std::atomic_ref<T> at(T& v) {
  return std::atomic_ref<T>(v);
}

struct Rig {
  Rig() {
    auto hc = small_in_process_config();
    hc.geometry.max_sockets = 64;
    hc.pcie.latency_ns = 1;
    hc.pcie.batching = DmaBatching::op;
    hc.pcie_clock = &clock;
    svc = std::make_unique<HostService>(hc);
    EXPECT_EQ(svc->start(eng.tcp(), now), Errc::ok);
    EXPECT_GE(svc->attach_for_test(&base, &bytes), 0);
    std::memcpy(&h, base, sizeof(h));
  }
  ~Rig() { munmap(base, bytes); }

  void step(int n = 1) {
    for (int k = 0; k < n; ++k) {
      now += std::chrono::microseconds(100);
      step_engine_and_peer(eng, eo, peer, po, svc.get(), now, [&] { svc->service_for_test(now); });
    }
  }
  SpscRing<c::Command> cmds() { return region_ring<c::Command>(base, h.cmd_off, h.cmd_entries); }
  SpscRing<c::Completion> cpls() { return region_ring<c::Completion>(base, h.cpl_off, h.cpl_entries); }
  SpscRing<std::uint32_t> kicks() { return region_ring<std::uint32_t>(base, h.kick_off, h.kick_entries); }
  c::SocketSlot& slot(std::uint32_t i) { return *reinterpret_cast<c::SocketSlot*>(base + c::slot_off(h, i)); }

  c::Completion call(c::Command cmd) {
    EXPECT_EQ(cmds().push(std::span(&cmd, 1)), 1u);
    step(2);
    c::Completion cp;
    EXPECT_EQ(cpls().pop(std::span(&cp, 1)), 1u);
    return cp;
  }

  /// The host's accept() (src/channel/host.cc): take the head entry, store acc_head, fence, and
  /// kick if the queue was full before this accept by the tail seen after the store.
  bool host_accept(std::uint32_t li) {
    c::SocketSlot& sl = slot(li);
    const std::uint32_t head = at(sl.acc_head).load(std::memory_order_relaxed);
    const std::uint32_t tail = at(sl.acc_tail).load(std::memory_order_acquire);
    if (tail == head || tail - head > c::kAcceptQueue) return false;
    at(sl.acc_head).store(head + 1, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (at(sl.acc_tail).load(std::memory_order_acquire) - head >= c::kAcceptQueue) kick(li);
    return true;
  }
  void kick(std::uint32_t i) {
    c::SocketSlot& sl = slot(i);
    if (sl.kick_req != sl.kick_done) return;  // one outstanding kick covers later changes
    sl.kick_req++;
    kicks().push(std::span(&i, 1));
  }

  HookClock clock;
  Instant now = instant_from_ns(1'000'000'000);
  MemLink eo, po;
  Stack eng{cfg_for(kEngineIp, 1), eo, now};
  Stack peer{cfg_for(kPeerIp, 2), po, now};
  std::unique_ptr<HostService> svc;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  c::RegionHeader h{};
};

}  // namespace

TEST(ChannelAcceptQueue, HostAcceptDuringEngineRefillLeavesNoConnectionBehindInTcp) {
  Rig r;
  c::Command cmd;
  cmd.op = c::Op::socket;
  const auto ls = static_cast<std::uint32_t>(r.call(cmd).value);
  const std::uint32_t li = c::handle_index(ls);
  cmd = {};
  cmd.op = c::Op::bind;
  cmd.sock = ls;
  cmd.addr = kEngineIp.v;
  cmd.port = 6379;
  ASSERT_EQ(r.call(cmd).err, 0);
  cmd = {};
  cmd.op = c::Op::listen;
  cmd.sock = ls;
  cmd.value = 128;
  ASSERT_EQ(r.call(cmd).err, 0);

  // More connections than the host queue holds: 32 queued for the host, the rest wait in TCP.
  constexpr std::uint32_t kConns = c::kAcceptQueue + 8;
  auto& pt = r.peer.tcp();
  std::vector<SocketId> clients;
  for (std::uint32_t k = 0; k < kConns; ++k) {
    clients.push_back(*pt.socket());
    ASSERT_EQ(pt.connect(clients.back(), {kEngineIp, 6379}), Errc::in_progress);
  }
  r.step(20);
  c::SocketSlot& lsl = r.slot(li);
  ASSERT_EQ(at(lsl.acc_tail).load() - at(lsl.acc_head).load(), c::kAcceptQueue);

  // The host accepts from the full queue (a kick); while the engine refills, right after it read
  // acc_head, the host accepts once more: that accept sees the old tail, so it does not kick.
  std::uint32_t accepted = 0;
  ASSERT_TRUE(r.host_accept(li));
  ++accepted;
  bool raced = false;
  std::uint64_t seen = r.svc->pcie_stats().read_bytes;
  r.clock.after_read = [&] {
    const std::uint64_t now_bytes = r.svc->pcie_stats().read_bytes;
    const std::uint64_t len = now_bytes - seen;
    seen = now_bytes;
    if (!raced && len == sizeof(c::SlotHostLine)) {  // pump() read the listener's host line
      raced = true;
      ASSERT_TRUE(r.host_accept(li));
      ++accepted;
    }
  };
  r.step(1);
  r.clock.after_read = nullptr;
  ASSERT_TRUE(raced);

  // The host keeps accepting until the queue is empty, as an event loop does; every connection
  // must reach it.
  for (int i = 0; i < 200 && accepted < kConns; ++i) {
    while (r.host_accept(li)) ++accepted;
    r.step(1);
  }
  EXPECT_EQ(accepted, kConns);
  EXPECT_EQ(r.svc->stats().accepted, kConns);
}
