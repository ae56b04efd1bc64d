// Per-process death cleanup: every process of a family counts its own descriptors per socket in the
// region's process table (contract.hh); when one dies, by any signal, the engine drops its entry's
// references and closes each socket no other process holds, exactly as the host's last close()
// would (FIN, or RST with unread data; listeners freed). The counts are host-written and
// untrusted: nonsense only ever keeps the family's own sockets open or closes its own.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
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
namespace c = pno::channel::contract;
using namespace pno::test::channel_bench;

namespace {

/// An engine with one in-process "host" region the test writes as the host's processes would.
struct Rig : RegionRig {
  c::ProcEntry& proc(std::uint32_t e) { return *reinterpret_cast<c::ProcEntry*>(base + c::proc_off(h, e)); }
  std::uint32_t& count(std::uint32_t e, std::uint32_t s) {
    return *reinterpret_cast<std::uint32_t*>(base + c::count_off(h, e, c::handle_index(s)));
  }

  std::uint32_t socket() {
    c::Command cmd;
    cmd.op = c::Op::socket;
    return static_cast<std::uint32_t>(call(cmd).value);
  }

  /// A socket connected to the peer's port 7, counted once in entry `holder`.
  std::uint32_t connected(std::uint32_t holder) {
    const std::uint32_t s = socket();
    c::Command cmd;
    cmd.op = c::Op::connect;
    cmd.sock = s;
    cmd.addr = kPeerIp.v;
    cmd.port = 7;
    EXPECT_EQ(call(cmd).err, EINPROGRESS);
    step(20);
    EXPECT_EQ(slot(c::handle_index(s)).state, c::SlotState::connected);
    count(holder, s) = 1;
    return s;
  }

  /// A child forked by the first process: entry `e` reserved as the host's fork_reserve() does.
  void reserve(std::uint32_t e) { proc(e).state = static_cast<std::uint32_t>(c::ProcState::reserved); }

  [[nodiscard]] bool peer_sees_eof(SocketId p) {
    std::byte b[64];
    const auto n = peer.tcp().recv(p, b);
    return n && *n == 0;
  }
};

}  // namespace

TEST(ChannelProcDeath, EngineSetsUpTheFirstAndSharedEntries) {
  Rig r;
  EXPECT_EQ(r.proc(c::kProcFirst).state, static_cast<std::uint32_t>(c::ProcState::live));
  EXPECT_EQ(r.proc(c::proc_shared(r.h)).state, static_cast<std::uint32_t>(c::ProcState::shared));
  EXPECT_GE(r.h.counts_off + std::uint64_t{r.h.max_procs} * r.h.max_sockets * 4, r.h.counts_off);
  EXPECT_LE(c::count_off(r.h, r.h.max_procs - 1, r.h.max_sockets - 1) + 4, r.h.data_off);
}

TEST(ChannelProcDeath, DeathOfTheOnlyHolderClosesTheConnectionWithFin) {
  Rig r;
  r.reserve(1);
  const std::uint32_t s = r.connected(1);  // the parent closed its copy: only the child counts it
  ASSERT_EQ(r.accepted.size(), 1u);
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(20);
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::free);
  EXPECT_TRUE(r.peer_sees_eof(r.accepted[0]));  // FIN: no unread data (RFC 9293 §3.10.4)
  EXPECT_EQ(r.svc->stats().death_closes, 1u);
  EXPECT_EQ(r.proc(1).state, static_cast<std::uint32_t>(c::ProcState::free));
  EXPECT_EQ(r.svc->sockets(), 0u);
}

TEST(ChannelCommands, CloseWithoutReplyClosesWithFinAndPostsNoCompletion) {
  Rig r;
  const std::uint32_t s = r.connected(c::kProcFirst);
  ASSERT_EQ(r.accepted.size(), 1u);
  c::Command cmd;
  cmd.op = c::Op::close;
  cmd.sock = s;
  cmd.tag = c::kNoReply;  // the host's close() without SO_LINGER does not wait
  ASSERT_EQ(r.cmds().push(std::span(&cmd, 1)), 1u);
  r.step(20);
  c::Completion cp;
  EXPECT_EQ(r.cpls().pop(std::span(&cp, 1)), 0u) << "a completion nobody waits for";
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::free);
  EXPECT_TRUE(r.peer_sees_eof(r.accepted[0]));
  // The next command is answered as usual.
  EXPECT_NE(r.socket(), 0u);
}

TEST(ChannelProcDeath, DeathWithUnreadDataResetsTheConnection) {
  Rig r;
  r.reserve(1);
  const std::uint32_t s = r.connected(1);
  ASSERT_EQ(r.accepted.size(), 1u);
  r.peer.tcp().send(r.accepted[0], as_bytes(std::span("unread", 6)));
  r.step(10);
  ASSERT_NE(r.slot(c::handle_index(s)).rcv_tail, 0u);  // in the receive ring, never read
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(20);
  std::byte b[16];
  const auto n = r.peer.tcp().recv(r.accepted[0], b);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error(), Errc::conn_reset);  // RFC 2525 §2.17: close with unread data sends RST
}

TEST(ChannelProcDeath, ListenerHeldOnlyByTheDeadProcessIsFreed) {
  Rig r;
  r.reserve(1);
  const std::uint32_t l = r.socket();
  c::Command cmd;
  cmd.op = c::Op::bind;
  cmd.sock = l;
  cmd.port = 90;
  ASSERT_EQ(r.call(cmd).err, 0);
  cmd.op = c::Op::listen;
  cmd.value = 8;
  ASSERT_EQ(r.call(cmd).err, 0);
  r.count(1, l) = 1;
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(2);
  // The port is free: a new socket binds and listens on it.
  const std::uint32_t l2 = r.socket();
  cmd = {};
  cmd.op = c::Op::bind;
  cmd.sock = l2;
  cmd.port = 90;
  EXPECT_EQ(r.call(cmd).err, 0);
}

TEST(ChannelProcDeath, SocketSharedWithALiveProcessStaysOpenAndWorks) {
  Rig r;
  r.reserve(1);
  const std::uint32_t s = r.connected(1);
  r.count(c::kProcFirst, s) = 1;  // the parent kept its copy
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(5);
  const std::uint32_t i = c::handle_index(s);
  ASSERT_EQ(r.slot(i).state, c::SlotState::connected);
  EXPECT_EQ(r.svc->stats().death_closes, 0u);
  std::memcpy(r.base + c::send_ring_off(r.h, i), "live", 4);
  r.slot(i).snd_tail = 4;
  r.slot(i).kick_req++;
  const std::uint32_t k = i;
  region_ring<std::uint32_t>(r.base, r.h.kick_off, r.h.kick_entries).push(std::span(&k, 1));
  r.step(20);
  std::byte b[8];
  const auto n = r.peer.tcp().recv(r.accepted.at(0), b);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 4u);
}

TEST(ChannelProcDeath, SharedEntryAndReservedChildCountAsHolders) {
  Rig r;
  r.reserve(1);
  r.reserve(2);
  const std::uint32_t a = r.connected(1);
  const std::uint32_t b = r.connected(1);
  r.count(2, a) = 3;                       // a child not registered yet
  r.count(c::proc_shared(r.h), b) = 1;     // a process without an entry of its own
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(5);
  EXPECT_EQ(r.slot(c::handle_index(a)).state, c::SlotState::connected);
  EXPECT_EQ(r.slot(c::handle_index(b)).state, c::SlotState::connected);
}

TEST(ChannelProcDeath, HostCloseRacingWithTheDeathClosesOnce) {
  Rig r;
  r.reserve(1);
  // The engine saw the socket unheld first: the live process's close that follows succeeds and
  // touches nothing else; once the slot is reused the stale handle is EBADF.
  const std::uint32_t s = r.connected(1);
  r.count(c::kProcFirst, s) = 0;  // the parent's close() decremented at the same moment
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(5);
  c::Command cmd;
  cmd.op = c::Op::close;
  cmd.sock = s;
  EXPECT_EQ(r.call(cmd).err, 0);
  const std::uint32_t fresh = r.connected(c::kProcFirst);
  EXPECT_EQ(r.call(cmd).err, c::handle_index(fresh) == c::handle_index(s) ? EBADF : 0);
  r.step(5);
  EXPECT_EQ(r.slot(c::handle_index(fresh)).state, c::SlotState::connected);
  EXPECT_EQ(r.svc->stats().death_closes, 1u);

  // The host's close came first: the death finds the slot closing or free and does nothing.
  r.reserve(2);
  const std::uint32_t t = r.connected(2);
  cmd.sock = t;
  EXPECT_EQ(r.call(cmd).err, 0);
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 2));
  r.step(5);
  EXPECT_EQ(r.svc->stats().death_closes, 1u);
  EXPECT_EQ(r.slot(c::handle_index(fresh)).state, c::SlotState::connected);
}

TEST(ChannelProcDeath, PendingCloseOfTheDeadProcessIsFinished) {
  Rig r;
  r.reserve(1);
  const std::uint32_t s = r.connected(1);
  // Killed inside close(): its count is down, the Op::close never went out.
  r.count(1, s) = 0;
  r.proc(1).pending = s;
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(20);
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::free);
  EXPECT_TRUE(r.peer_sees_eof(r.accepted.at(0)));
}

TEST(ChannelProcDeath, HostileCountsAndEntriesAreClamped) {
  Rig r;
  r.reserve(1);
  const std::uint32_t held = r.connected(1);
  const std::uint32_t alone = r.connected(1);
  // Huge counts everywhere in the dead row, a pending handle beyond the table, a garbled state
  // (counts as a holder) holding `held`.
  for (std::uint32_t i = 0; i < r.h.max_sockets; ++i) {
    *reinterpret_cast<std::uint32_t*>(r.base + c::count_off(r.h, 1, i)) = 0xffffffffu;
  }
  r.proc(1).pending = 0xfffffffeu;
  r.proc(3).state = 77;
  r.count(3, held) = 0x80000000u;
  ASSERT_TRUE(r.svc->proc_died_for_test(r.fam, 1));
  r.step(20);
  EXPECT_EQ(r.slot(c::handle_index(held)).state, c::SlotState::connected);
  EXPECT_EQ(r.slot(c::handle_index(alone)).state, c::SlotState::free);
  EXPECT_EQ(r.svc->stats().death_closes, 1u);
  EXPECT_FALSE(r.svc->proc_died_for_test(r.fam, r.h.max_procs));  // out of range
  // Registration: out of range, the shared entry, pid 0 are refused; nothing is watched.
  c::Command cmd;
  cmd.op = c::Op::proc_register;
  for (std::int32_t e : {-1, static_cast<std::int32_t>(r.h.max_procs), static_cast<std::int32_t>(c::proc_shared(r.h))}) {
    cmd.value = e;
    cmd.addr = static_cast<std::uint32_t>(getpid());
    EXPECT_EQ(r.call(cmd).err, EINVAL);
  }
  cmd.value = 2;
  cmd.addr = 0;
  EXPECT_EQ(r.call(cmd).err, EINVAL);
  EXPECT_EQ(r.svc->watched_procs(), 0);
  EXPECT_EQ(r.svc->dma_stats().out_of_bounds, 0u);
  EXPECT_EQ(r.svc->families(), 1u);
}

TEST(ChannelProcDeath, RegisteredChildKilledBySigkillIsSeenThroughItsPidfd) {
  Rig r;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();
  }
  r.reserve(1);
  const std::uint32_t s = r.connected(1);
  c::Command cmd;
  cmd.op = c::Op::proc_register;
  cmd.value = 1;
  cmd.addr = static_cast<std::uint32_t>(child);
  EXPECT_EQ(r.call(cmd).err, 0);
  EXPECT_EQ(r.svc->watched_procs(), 1);
  cmd.value = 1;  // already watched
  EXPECT_EQ(r.call(cmd).err, EBUSY);
  r.step(10);
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::connected);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  for (int k = 0; k < 50 && r.svc->stats().proc_deaths == 0; ++k) r.step(2);
  r.step(20);
  EXPECT_EQ(r.svc->stats().proc_deaths, 1u);
  EXPECT_EQ(r.svc->watched_procs(), 0);
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::free);
  EXPECT_TRUE(r.peer_sees_eof(r.accepted.at(0)));
}

TEST(ChannelProcDeath, ChildGoneBeforeItsRegistrationCountsAsDeadAtOnce) {
  Rig r;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);  // reaped: the pid no longer exists
  r.reserve(1);
  const std::uint32_t s = r.connected(1);
  c::Command cmd;
  cmd.op = c::Op::proc_register;
  cmd.value = 1;
  cmd.addr = static_cast<std::uint32_t>(child);
  EXPECT_EQ(r.call(cmd).err, 0);
  r.step(20);
  EXPECT_EQ(r.svc->stats().proc_deaths, 1u);
  EXPECT_EQ(r.slot(c::handle_index(s)).state, c::SlotState::free);
}
