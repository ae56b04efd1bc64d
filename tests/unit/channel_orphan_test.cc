// A family that dies with bytes still in a send ring: the engine delivers all of them, then FIN,
// or, when the peer takes nothing for too long, resets the connection. The peer never sees a clean
// EOF after a correct prefix (Linux: tcp_close() keeps an orphan's whole queue; an orphan that
// cannot make progress is reset, tcp_out_of_resources / tcp_orphan_retries). Virtual time.
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
using namespace std::chrono_literals;
namespace c = pno::channel::contract;
using namespace pno::test::channel_bench;

namespace {

constexpr std::uint32_t kRing = 64 * 1024;
constexpr std::uint32_t kTcpBuf = 16 * 1024;

/// Small TCP buffers on both ends: the send ring holds most of what is unsent.
StackConfig small_buffers(Ipv4Addr a, std::uint8_t m) {
  StackConfig cfg = cfg_for(a, m);
  cfg.tcp.rcvbuf_initial = cfg.tcp.rcvbuf_max = kTcpBuf;
  cfg.tcp.sndbuf_initial = cfg.tcp.sndbuf_max = kTcpBuf;
  return cfg;
}

std::byte pattern(std::uint64_t k) { return static_cast<std::byte>((k * 7) ^ (k >> 8) ^ (k >> 16)); }

/// An engine with one in-process host region (64 KiB rings) and a peer listening on port 7.
struct Rig {
  Rig() {
    engine::HostServiceConfig hc = small_in_process_config();
    hc.geometry.stream_ring_bytes = kRing;
    svc = std::make_unique<engine::HostService>(hc);
    EXPECT_EQ(svc->start(eng.tcp(), now), Errc::ok);
    fam = svc->attach_for_test(&base, &bytes);
    EXPECT_GE(fam, 0);
    std::memcpy(&h, base, sizeof(h));
    pl = *peer.tcp().socket();
    peer.tcp().bind(pl, {Ipv4Addr::any(), 7});
    peer.tcp().listen(pl, 16);
  }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;
  ~Rig() { munmap(base, bytes); }

  void step(Duration dt = 10ms) {
    now += dt;
    step_engine_and_peer(eng, eo, peer, po, svc.get(), now, [&] { svc->service_for_test(now); });
    if (conn == kInvalidSocket) {
      if (auto a = peer.tcp().accept(pl)) conn = *a;
    }
  }

  c::SocketSlot& slot(std::uint32_t i) { return *reinterpret_cast<c::SocketSlot*>(base + c::slot_off(h, i)); }

  c::Completion call(c::Command cmd) {
    EXPECT_EQ(region_ring<c::Command>(base, h.cmd_off, h.cmd_entries).push(std::span(&cmd, 1)), 1u);
    step();
    step();
    c::Completion cp;
    EXPECT_EQ(region_ring<c::Completion>(base, h.cpl_off, h.cpl_entries).pop(std::span(&cp, 1)), 1u);
    return cp;
  }

  /// A connection to the peer's port 7; returns its slot index.
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
    for (int k = 0; k < 20; ++k) step();
    EXPECT_EQ(slot(c::handle_index(s)).state, c::SlotState::connected);
    EXPECT_NE(conn, kInvalidSocket);
    return c::handle_index(s);
  }

  /// Writes the pattern into socket i's send ring as the host's send() would, while the peer
  /// reads nothing, until TCP takes no more and the ring is full. Returns the bytes written.
  std::uint64_t fill(std::uint32_t i) {
    c::SocketSlot& sl = slot(i);
    std::byte* ring = base + c::send_ring_off(h, i);
    std::uint64_t written = 0;
    for (int still = 0; still < 50;) {
      const std::uint32_t head = sl.snd_head;
      while (sl.snd_tail - head < kRing) {
        ring[sl.snd_tail & (kRing - 1)] = pattern(written++);
        ++sl.snd_tail;
      }
      ++sl.kick_req;
      region_ring<std::uint32_t>(base, h.kick_off, h.kick_entries).push(std::span(&i, 1));
      step();
      still = sl.snd_head == head ? still + 1 : 0;
    }
    return written;
  }

  /// The peer reads at most `max` bytes, checking them against the pattern.
  void peer_read(std::size_t max) {
    std::byte buf[4096];
    while (max > 0 && !eof && !reset) {
      const auto n = peer.tcp().recv(conn, std::span(buf).first(std::min(max, sizeof(buf))));
      if (!n) {
        reset = n.error() == Errc::conn_reset;
        return;
      }
      if (*n == 0) {
        eof = true;
        return;
      }
      for (std::size_t k = 0; k < *n; ++k) {
        if (buf[k] != pattern(got + k)) bad = true;
      }
      got += *n;
      max -= *n;
    }
  }

  Instant now = instant_from_ns(1'000'000'000);
  MemLink eo, po;
  Stack eng{small_buffers(kEngineIp, 1), eo, now};
  Stack peer{small_buffers(kPeerIp, 2), po, now};
  std::unique_ptr<engine::HostService> svc;
  int fam = -1;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  c::RegionHeader h{};
  SocketId pl = kInvalidSocket, conn = kInvalidSocket;
  std::uint64_t got = 0;
  bool eof = false, reset = false, bad = false;
};

}  // namespace

TEST(ChannelOrphan, PeerThatReadsNothingIsResetNotGivenAFinAfterAPrefix) {
  Rig r;
  const std::uint32_t i = r.connected();
  const std::uint64_t written = r.fill(i);
  ASSERT_EQ(r.slot(i).snd_tail - r.slot(i).snd_head, kRing);  // the ring is full: unsent bytes
  ASSERT_TRUE(r.svc->hang_up_for_test(r.fam));
  // The peer's window stays shut past the limit.
  for (int k = 0; k < 3200; ++k) r.step();
  EXPECT_EQ(r.svc->families(), 0u);
  EXPECT_EQ(r.svc->sockets(), 0u);
  // What the peer got is a correct prefix, followed by a reset: never a clean EOF.
  for (int k = 0; k < 2000 && !r.eof && !r.reset; ++k) {
    r.peer_read(1 << 20);
    r.step();
  }
  EXPECT_TRUE(r.reset);
  EXPECT_FALSE(r.eof) << "FIN after " << r.got << " of " << written << " bytes";
  EXPECT_FALSE(r.bad);
  EXPECT_LT(r.got, written);
}

TEST(ChannelOrphan, SlowSteadyReaderGetsEveryByteThenFinEvenPastTheLimit) {
  Rig r;
  const std::uint32_t i = r.connected();
  const std::uint64_t written = r.fill(i);
  ASSERT_EQ(r.slot(i).snd_tail - r.slot(i).snd_head, kRing);
  ASSERT_TRUE(r.svc->hang_up_for_test(r.fam));
  const Instant died = r.now;
  // 1 KiB every 600 ms: the ring alone takes longer than the 30 s limit to drain, but it never
  // stops moving for long.
  for (int k = 0; k < 40000 && !r.eof && !r.reset; ++k) {
    if (k % 60 == 0) r.peer_read(1024);
    r.step();
  }
  EXPECT_TRUE(r.eof);
  EXPECT_FALSE(r.reset);
  EXPECT_FALSE(r.bad);
  EXPECT_EQ(r.got, written);  // every byte send() accepted, then FIN
  EXPECT_GT(r.now - died, std::chrono::seconds(45));
  for (int k = 0; k < 100; ++k) r.step();
  EXPECT_EQ(r.svc->families(), 0u);
  EXPECT_EQ(r.svc->sockets(), 0u);
}

TEST(ChannelOrphan, FamilyMarkedDeadThatStillWritesAddsNothingAfterItsDeath) {
  Rig r;
  const std::uint32_t i = r.connected();
  const std::uint64_t written = r.fill(i);
  ASSERT_TRUE(r.svc->hang_up_for_test(r.fam));
  r.step();
  // A host that outlived its family's death (marked dead for corruption) keeps topping the ring
  // up as it drains: what it writes now is not sent, the connection ends after what it held.
  c::SocketSlot& sl = r.slot(i);
  std::byte* ring = r.base + c::send_ring_off(r.h, i);
  std::uint64_t more = written;
  for (int k = 0; k < 20000 && !r.eof && !r.reset; ++k) {
    while (sl.snd_tail - sl.snd_head < kRing) {
      ring[sl.snd_tail & (kRing - 1)] = pattern(more++);
      ++sl.snd_tail;
    }
    r.peer_read(1 << 20);
    r.step();
  }
  EXPECT_TRUE(r.eof);
  EXPECT_FALSE(r.bad);
  EXPECT_EQ(r.got, written);
  EXPECT_GT(more, written);
}
