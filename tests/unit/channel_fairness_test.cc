// One family cannot keep the engine to itself: each engine pass gives a family a bounded amount of
// work (commands, kicks, deaths of processes it registered), and what the host triggers costs the
// engine a bounded amount per pass however it fills its region. Another family is served in the
// same pass. Everything is counted (commands answered, deaths handled, bytes read), not timed.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "channel/contract.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/channel_bench.hh"

using namespace pno;
using namespace pno::channel;
namespace c = pno::channel::contract;
using namespace pno::test::channel_bench;

namespace {

/// A pid that no process has (pid_max is at most 2^22; the engine accepts up to 2^30 - 1).
constexpr std::uint32_t kNoSuchPid = 0x3ffffff0u;

/// One in-process region as its host sees it.
struct Region {
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  int fam = -1;
  c::RegionHeader h{};

  SpscRing<c::Command> cmds() { return region_ring<c::Command>(base, h.cmd_off, h.cmd_entries); }
  SpscRing<c::Completion> cpls() { return region_ring<c::Completion>(base, h.cpl_off, h.cpl_entries); }
  SpscRing<std::uint32_t> kicks() { return region_ring<std::uint32_t>(base, h.kick_off, h.kick_entries); }
  std::uint32_t& count(std::uint32_t e, std::uint32_t i) {
    return *reinterpret_cast<std::uint32_t*>(base + c::count_off(h, e, i));
  }
  c::ProcEntry& proc(std::uint32_t e) { return *reinterpret_cast<c::ProcEntry*>(base + c::proc_off(h, e)); }
  /// Entries the host published that the engine has not taken yet.
  std::uint32_t unread(std::uint64_t off) {
    const auto* idx = reinterpret_cast<const c::RingIndices*>(base + off);
    return std::atomic_ref<const std::uint32_t>(idx->tail).load() - std::atomic_ref<const std::uint32_t>(idx->head).load();
  }
  std::size_t take_completions(std::vector<c::Completion>* out = nullptr) {
    c::Completion cp[64];
    std::size_t n = 0;
    for (std::size_t k; (k = cpls().pop(cp)) != 0;) {
      n += k;
      if (out != nullptr) out->insert(out->end(), cp, cp + k);
    }
    return n;
  }
};

struct Rig {
  Rig() {
    engine::HostServiceConfig hc = small_in_process_config();
    hc.geometry = {};  // the default table sizes: 1024 sockets, 64 processes, 256 commands
    hc.geometry.stream_ring_bytes = 4096;
    svc = std::make_unique<engine::HostService>(hc);
    EXPECT_EQ(svc->start(eng.tcp(), now), Errc::ok);
    for (Region* r : {&a, &b}) {
      r->fam = svc->attach_for_test(&r->base, &r->bytes);
      EXPECT_GE(r->fam, 0);
      std::memcpy(&r->h, r->base, sizeof(r->h));
    }
  }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;
  ~Rig() {
    for (Region* r : {&a, &b}) munmap(r->base, r->bytes);
  }

  void pass() {
    now += std::chrono::microseconds(10);
    svc->service_for_test(now);
  }

  Instant now = instant_from_ns(1'000'000'000);
  MemLink eo;
  Stack eng{cfg_for(kEngineIp, 1), eo, now};
  std::unique_ptr<engine::HostService> svc;
  Region a, b;
};

c::Command socket_cmd(std::uint16_t tag) {
  c::Command cmd;
  cmd.op = c::Op::socket;
  cmd.tag = tag;
  return cmd;
}

}  // namespace

TEST(ChannelFairness, FloodOfRegistrationsAndKicksGetsABoundedShareOfEachPass) {
  Rig r;
  Region& a = r.a;
  // Family A: 1000 sockets, each counted (the host says) by every process entry 1..62, all live:
  // a death checks each of them against the other entries.
  constexpr std::uint32_t kSockets = 1000;
  std::vector<std::uint32_t> socks;
  for (std::uint32_t k = 0; k < kSockets; ++k) {
    const c::Command cmd = socket_cmd(1);
    ASSERT_EQ(a.cmds().push(std::span(&cmd, 1)), 1u);
    if (k % 64 == 63 || k + 1 == kSockets) {
      r.pass();
      std::vector<c::Completion> cps;
      a.take_completions(&cps);
      for (const auto& cp : cps) socks.push_back(c::handle_index(static_cast<std::uint32_t>(cp.value)));
    }
  }
  ASSERT_EQ(socks.size(), kSockets);
  const std::uint32_t last = c::proc_shared(a.h) - 1;  // 62
  for (std::uint32_t e = 1; e <= last; ++e) {
    a.proc(e).state = static_cast<std::uint32_t>(c::ProcState::live);
    for (std::uint32_t i : socks) a.count(e, i) = 1;
  }
  // A fills its command ring with registrations of pids that do not exist (each a death) and
  // its kick ring with kicks.
  const std::uint32_t n_cmds = a.h.cmd_entries;
  for (std::uint32_t k = 0; k < n_cmds; ++k) {
    c::Command cmd;
    cmd.op = c::Op::proc_register;
    cmd.tag = 2;
    cmd.value = 1 + k % (last - 1);  // entries 1..61, several times each
    cmd.addr = kNoSuchPid + k % 8;
    ASSERT_EQ(a.cmds().push(std::span(&cmd, 1)), 1u);
  }
  for (std::uint32_t k = 0; k < a.h.kick_entries; ++k) {
    const std::uint32_t i = socks[k % kSockets];
    ASSERT_EQ(a.kicks().push(std::span(&i, 1)), 1u);
  }
  // Family B asks for a socket at the same time.
  const c::Command bc = socket_cmd(9);
  ASSERT_EQ(r.b.cmds().push(std::span(&bc, 1)), 1u);

  const auto before = r.svc->stats();
  const auto read0 = r.svc->dma_stats().read_bytes;
  const auto t0 = std::chrono::steady_clock::now();
  r.pass();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  RecordProperty("first_pass_us", static_cast<int>(us.count()));
  const auto& after = r.svc->stats();
  // B is answered in this very pass.
  std::vector<c::Completion> bcp;
  ASSERT_EQ(r.b.take_completions(&bcp), 1u);
  EXPECT_EQ(bcp[0].err, 0);
  EXPECT_NE(bcp[0].value, 0u);
  // A got a share of it: some commands, at most one death, some kicks, and the engine read a
  // bounded number of bytes of its region (a death reads at most one row per process entry).
  std::vector<c::Completion> acp;
  const std::size_t a_first = a.take_completions(&acp);
  EXPECT_GT(a_first, 0u);
  EXPECT_LE(a_first, 64u);
  EXPECT_LE(after.proc_deaths - before.proc_deaths, 1u);
  EXPECT_LE(after.kicks - before.kicks, 256u);
  EXPECT_GT(after.kicks - before.kicks, 0u);
  const std::uint64_t row = std::uint64_t{a.h.max_sockets} * 4;
  EXPECT_LE(r.svc->dma_stats().read_bytes - read0, std::uint64_t{a.h.max_procs} * row + 256 * 1024)
      << "bytes of host memory one pass read";

  // The rest is served in the following passes, and B keeps being answered in each of them.
  std::size_t a_total = a_first;
  int passes = 1;
  for (; passes < 200 && (a_total < n_cmds || a.unread(a.h.kick_off) != 0); ++passes) {
    const c::Command more = socket_cmd(10);
    ASSERT_EQ(r.b.cmds().push(std::span(&more, 1)), 1u);
    r.pass();
    EXPECT_EQ(r.b.take_completions(), 1u) << "pass " << passes;
    a_total += a.take_completions(&acp);
  }
  EXPECT_EQ(a_total, n_cmds);
  EXPECT_LE(passes, 10) << "passes until A's rings were empty";
  // Every accepted registration's death is handled, one per pass; the sockets stay open (the
  // other entries hold them).
  for (int k = 0; k < 100; ++k) r.pass();
  std::uint64_t accepted = 0;
  for (const auto& cp : acp) accepted += cp.err == 0 ? 1 : 0;
  EXPECT_GE(accepted, last - 1);
  EXPECT_EQ(r.svc->stats().proc_deaths - before.proc_deaths, accepted);
  EXPECT_EQ(r.svc->stats().death_closes, 0u);
  for (std::uint32_t e = 1; e < last; ++e) {
    EXPECT_EQ(a.proc(e).state, static_cast<std::uint32_t>(c::ProcState::free)) << "entry " << e;
  }
}

TEST(ChannelFairness, RegistrationOfAGonePidIsBusyUntilItsDeathIsHandled) {
  Rig r;
  Region& a = r.a;
  c::Command cmd;
  cmd.op = c::Op::proc_register;
  cmd.tag = 3;
  cmd.value = 1;
  cmd.addr = kNoSuchPid;
  a.proc(1).state = static_cast<std::uint32_t>(c::ProcState::reserved);
  std::vector<c::Completion> cps;
  for (int k = 0; k < 3; ++k) ASSERT_EQ(a.cmds().push(std::span(&cmd, 1)), 1u);
  r.pass();
  a.take_completions(&cps);
  ASSERT_EQ(cps.size(), 3u);
  EXPECT_EQ(cps[0].err, 0);
  EXPECT_EQ(cps[1].err, EBUSY);  // one death per registration, however often the host asks
  EXPECT_EQ(cps[2].err, EBUSY);
  EXPECT_EQ(r.svc->stats().proc_deaths, 1u);
  EXPECT_EQ(a.proc(1).state, static_cast<std::uint32_t>(c::ProcState::free));
}
