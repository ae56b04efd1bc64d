// The trust boundary: the engine reads indices, lengths and handles from host memory that a buggy
// or hostile application can scribble on. Every such value is checked; the damage stays inside
// the offending family (its socket is poisoned or the family is detached), the engine never reads
// or writes outside the region, and other families keep working.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "channel/contract.hh"
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
using namespace pno::test::channel_bench;

namespace {

/// An engine with one in-process "host" region the test writes like a (hostile) host would.
struct Rig : RegionRig {
  /// A socket connected to the peer's port 7; returns its handle.
  std::uint32_t connected() {
    c::Command cmd;
    cmd.op = c::Op::socket;
    const auto s = static_cast<std::uint32_t>(call(cmd).value);
    cmd = {};
    cmd.op = c::Op::connect;
    cmd.sock = s;
    cmd.addr = kPeerIp.v;
    cmd.port = 7;
    EXPECT_EQ(call(cmd).err, EINPROGRESS);
    step(20);
    EXPECT_EQ(slot(c::handle_index(s)).state, c::SlotState::connected);
    return s;
  }

  void kick(std::uint32_t i) {
    slot(i).kick_req++;
    kicks().push(std::span(&i, 1));
  }
};

}  // namespace

TEST(ChannelHostile, BogusHandlesAndOpsAreAnsweredWithErrors) {
  Rig r;
  c::Command cmd;
  cmd.op = c::Op::bind;
  cmd.sock = 0xdeadbeef;  // index far beyond the table
  EXPECT_EQ(r.call(cmd).err, EBADF);
  cmd.sock = c::handle_make(3, 7);  // a free slot
  EXPECT_EQ(r.call(cmd).err, EBADF);
  cmd.op = static_cast<c::Op>(999);
  cmd.sock = r.connected();
  EXPECT_EQ(r.call(cmd).err, EINVAL);
  cmd.op = c::Op::shutdown;
  cmd.how = 77;
  EXPECT_EQ(r.call(cmd).err, EINVAL);
  cmd.op = c::Op::setsockopt;
  cmd.how = 200;  // not a SockOpt
  EXPECT_NE(r.call(cmd).err, 0);
  EXPECT_EQ(r.svc->families(), 1u);
}

TEST(ChannelHostile, ImpossibleSendTailPoisonsOnlyThatSocket) {
  Rig r;
  const std::uint32_t good = r.connected();
  const std::uint32_t bad = r.connected();
  c::SocketSlot& bs = r.slot(c::handle_index(bad));
  bs.snd_tail = bs.snd_head + r.h.stream_ring_bytes + 5;  // more than the ring holds
  r.kick(c::handle_index(bad));
  r.step(5);
  EXPECT_NE(bs.flags & c::kFlagError, 0u);
  EXPECT_EQ(bs.err, EIO);
  EXPECT_NE(bs.flags & c::kFlagSendClosed, 0u);
  // The good socket still moves data.
  c::SocketSlot& gs = r.slot(c::handle_index(good));
  const char msg[] = "fine";
  std::memcpy(r.base + c::send_ring_off(r.h, c::handle_index(good)), msg, 4);
  gs.snd_tail = 4;
  r.kick(c::handle_index(good));
  r.step(20);
  EXPECT_EQ(gs.snd_head, 4u);
  ASSERT_EQ(r.accepted.size(), 2u);
  std::byte buf[8];
  auto n = r.peer.tcp().recv(r.accepted[0], buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(r.svc->families(), 1u);
}

TEST(ChannelHostile, ImpossibleReceiveHeadPoisonsTheSocket) {
  Rig r;
  const std::uint32_t s = r.connected();
  c::SocketSlot& sl = r.slot(c::handle_index(s));
  sl.rcv_head = sl.rcv_tail + 1;  // ahead of what the engine wrote
  r.peer.tcp().send(r.accepted.at(0), as_bytes(std::span("data", 4)));
  r.step(20);
  EXPECT_EQ(sl.err, EIO);
  EXPECT_EQ(r.svc->dma_stats().out_of_bounds, 0u);
}

TEST(ChannelHostile, KickIndicesOutsideTheTableAreIgnoredAndCounted) {
  Rig r;
  const std::uint32_t junk[] = {r.h.max_sockets, 0xffffffffu, 1u << 20};
  r.kicks().push(junk);
  r.step(2);
  EXPECT_EQ(r.svc->stats().bad_index, 3u);
  EXPECT_EQ(r.svc->families(), 1u);
}

TEST(ChannelHostile, ImpossibleCommandTailDetachesTheFamily) {
  Rig r;
  const std::uint32_t s = r.connected();
  (void)s;
  auto* idx = reinterpret_cast<c::RingIndices*>(r.base + r.h.cmd_off);
  idx->tail = idx->head + 1000;  // more commands than the ring holds
  r.step(3);
  EXPECT_EQ(r.svc->families(), 0u);
  EXPECT_GE(r.svc->stats().corrupt, 1u);
  // Its connection was closed on the way out (the peer sees FIN or RST, not silence).
  r.step(20);
  EXPECT_NE(r.peer.tcp().readiness(r.accepted.at(0)) & (kReadable | kHangup), 0u);
}

TEST(ChannelHostile, AcceptQueueHeadFromTheHostIsClamped) {
  Rig r;
  c::Command cmd;
  cmd.op = c::Op::socket;
  const auto l = static_cast<std::uint32_t>(r.call(cmd).value);
  cmd = {};
  cmd.op = c::Op::bind;
  cmd.sock = l;
  cmd.port = 90;
  EXPECT_EQ(r.call(cmd).err, 0);
  cmd.op = c::Op::listen;
  cmd.value = 8;
  EXPECT_EQ(r.call(cmd).err, 0);
  r.slot(c::handle_index(l)).acc_head = 0x80000000u;  // nonsense: read as "queue full"
  const SocketId cs = *r.peer.tcp().socket();
  r.peer.tcp().connect(cs, {kEngineIp, 90});
  r.step(20);
  EXPECT_EQ(r.slot(c::handle_index(l)).acc_tail, 0u);  // nothing queued over the host's entries
  EXPECT_EQ(r.svc->families(), 1u);
}

TEST(ChannelHostile, RandomScribblingNeverCrashesTheEngine) {
  Rig r;
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    if (r.svc->families() == 0) {
      std::byte* b = nullptr;
      std::uint64_t n = 0;
      munmap(r.base, r.bytes);
      ASSERT_GE(r.svc->attach_for_test(&b, &n), 0);
      r.base = b;
      r.bytes = n;
    }
    // Plausible traffic first, then garbage over the host-writable areas (and the rest).
    c::Command cmd;
    cmd.op = static_cast<c::Op>(rng() % 14);
    cmd.sock = (rng() % 2) ? c::handle_make(rng() % 20, rng() % 4) : static_cast<std::uint32_t>(rng());
    cmd.addr = (rng() % 2) ? kPeerIp.v : static_cast<std::uint32_t>(rng());
    cmd.port = static_cast<std::uint16_t>(rng());
    cmd.how = static_cast<std::uint16_t>(rng() % 20);
    cmd.value = static_cast<std::int32_t>(rng());
    r.cmds().push(std::span(&cmd, 1));
    c::Completion cp[16];
    r.cpls().pop(cp);
    for (int k = 0; k < 8; ++k) {
      const std::uint64_t off = rng() % r.bytes;
      const std::size_t len = std::min<std::uint64_t>(1 + rng() % 16, r.bytes - off);
      for (std::size_t j = 0; j < len; ++j) r.base[off + j] = static_cast<std::byte>(rng());
    }
    const std::uint32_t k = rng() % 20;
    r.kicks().push(std::span(&k, 1));
    r.step(2);
  }
  EXPECT_EQ(r.svc->dma_stats().out_of_bounds, 0u);  // validation happens before any transfer
}
