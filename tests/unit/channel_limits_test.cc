// A family at one of its limits keeps its connections: with every socket slot taken, completed
// connections wait in TCP's accept queue (up to the backlog, as in the listener's accept queue on
// Linux, inet_csk_accept) and reach the app once it frees slots; none is reset for want of a slot.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
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

struct Rig : RegionRig {
  /// A listener on the engine's port `port` with `backlog`; returns its handle.
  std::uint32_t listener(std::uint16_t port, int backlog) {
    c::Command cmd;
    cmd.op = c::Op::socket;
    const auto l = static_cast<std::uint32_t>(call(cmd).value);
    cmd = {};
    cmd.op = c::Op::bind;
    cmd.sock = l;
    cmd.port = port;
    EXPECT_EQ(call(cmd).err, 0);
    cmd.op = c::Op::listen;
    cmd.value = backlog;
    EXPECT_EQ(call(cmd).err, 0);
    return l;
  }

  /// The host's accept(): the head entry of the listener's queue, or 0.
  std::uint32_t accept(std::uint32_t l) {
    c::SocketSlot& sl = slot(c::handle_index(l));
    if (sl.acc_tail == sl.acc_head) return 0;
    const std::uint32_t h = sl.accq[sl.acc_head % c::kAcceptQueue].sock;
    ++sl.acc_head;
    return h;
  }

  void close(std::uint32_t s) {
    c::Command cmd;
    cmd.op = c::Op::close;
    cmd.sock = s;
    cmd.tag = c::kNoReply;
    EXPECT_EQ(cmds().push(std::span(&cmd, 1)), 1u);
  }
};

}  // namespace

TEST(ChannelLimits, ConnectionsBeyondTheSlotCapWaitInTheBacklogAndNoneIsReset) {
  Rig r;
  const std::uint32_t l = r.listener(90, 32);
  const std::uint32_t slots = r.h.max_sockets;  // 16: the listener and 15 connections
  const std::uint32_t n = slots + 8;
  std::vector<SocketId> peers;
  for (std::uint32_t k = 0; k < n; ++k) {
    peers.push_back(*r.peer.tcp().socket());
    EXPECT_EQ(r.peer.tcp().connect(peers.back(), {kEngineIp, 90}), Errc::in_progress);
  }
  r.step(50);
  const auto resets = [&] {
    int bad = 0;
    for (SocketId p : peers) bad += (r.peer.tcp().readiness(p) & (kError | kHangup)) != 0 ? 1 : 0;
    return bad;
  };
  EXPECT_EQ(resets(), 0) << "connections the backlog had room for were reset";
  const c::SocketSlot& ls = r.slot(c::handle_index(l));
  EXPECT_EQ(ls.acc_tail - ls.acc_head, slots - 1);  // every free slot took one

  // The app accepts what is queued and closes ten: the waiting connections come in.
  std::set<std::uint32_t> got;
  std::vector<std::uint32_t> open;
  for (std::uint32_t h; (h = r.accept(l)) != 0;) got.insert(h), open.push_back(h);
  ASSERT_EQ(got.size(), slots - 1);
  for (int k = 0; k < 10; ++k) {
    r.close(open.back());
    open.pop_back();
  }
  r.step(50);
  std::uint32_t second = 0;
  for (std::uint32_t h; (h = r.accept(l)) != 0; ++second) open.push_back(h);
  EXPECT_EQ(second, n - (slots - 1));
  EXPECT_EQ(r.svc->stats().accepted, n);
  EXPECT_EQ(resets(), 0);

  // Every connection still open carries data end to end; the closed ones saw a FIN.
  int fins = 0;
  for (SocketId p : peers) {
    std::byte b[4];
    if (const auto m = r.peer.tcp().recv(p, b); m && *m == 0) {
      ++fins;
      continue;
    }
    ASSERT_TRUE(r.peer.tcp().send(p, as_bytes(std::span("x", 1))));
  }
  EXPECT_EQ(fins, 10);
  r.step(20);
  for (std::uint32_t h : open) EXPECT_EQ(r.slot(c::handle_index(h)).rcv_tail, 1u) << "handle " << h;
}
