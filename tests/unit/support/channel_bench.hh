// Test support for the channel tests: the engine's Stack and a peer Stack wired back to back in
// memory, and the steps that move frames and TCP events between them and the engine's HostService.
// Header-only on purpose: pno_test_support links into every unit test, but only channel_*_test
// executables link the channel libraries (src/channel/CMakeLists.txt), so the channel code used
// here must be compiled into those tests and not into the shared library.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "channel/contract.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "base/addr.hh"
#include "stack/frame_sink.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::test::channel_bench {

/// The engine's address and the peer's, on one /24 in the benchmarking range.
inline constexpr Ipv4Addr kEngineIp = Ipv4Addr::from_octets(198, 18, 0, 1);
inline constexpr Ipv4Addr kPeerIp = Ipv4Addr::from_octets(198, 18, 0, 2);

/// One direction of an in-memory wire: frames queue here until deliver() hands them to a Stack.
class MemLink final : public FrameSink {
 public:
  MutByteSpan tx_begin(std::size_t max_len) override {
    open_.resize(max_len);
    return open_;
  }
  void tx_commit(std::size_t len, const TxMeta&) override {
    open_.resize(len);
    queue_.push_back(std::move(open_));
    open_ = {};
  }
  void tx_abort() override {}
  void deliver(Stack& to, Instant now) {
    while (!queue_.empty()) {
      std::vector<std::byte> f = std::move(queue_.front());
      queue_.pop_front();
      to.on_frame(f, now);
    }
  }

 private:
  std::vector<std::byte> open_;
  std::deque<std::vector<std::byte>> queue_;
};

/// The stack settings of one end of the in-memory link: address `a`/24, MAC 02:00:00:00:00:`m`.
inline StackConfig cfg_for(Ipv4Addr a, std::uint8_t m) {
  StackConfig cfg;
  cfg.mac = MacAddr{{2, 0, 0, 0, 0, m}};
  cfg.addr = Ipv4Cidr{a, 24};
  return cfg;
}

/// An in-process engine (no attach socket) with rings small enough that tests can fill them.
inline engine::HostServiceConfig small_in_process_config() {
  engine::HostServiceConfig hc;
  hc.socket_path = "";
  hc.geometry.max_sockets = 16;
  hc.geometry.stream_ring_bytes = 4096;
  hc.geometry.max_waiters = 4;
  hc.geometry.cmd_entries = 16;
  hc.geometry.cpl_entries = 16;
  hc.geometry.changed_entries = 16;
  hc.quiet = true;
  return hc;
}

/// A ring of a region the engine attached in process (HostService::attach_for_test), as the host
/// sees it: RingIndices at `off`, then from `off + kRingEntries` `entries` slots of T (channel/contract.hh).
template <class T>
channel::SpscRing<T> region_ring(std::byte* base, std::uint64_t off, std::uint32_t entries) {
  return {reinterpret_cast<channel::contract::RingIndices*>(base + off),
          reinterpret_cast<T*>(base + off + channel::contract::kRingEntries), entries};
}

/// Hands every pending TCP event of the engine's stack to the HostService.
inline void engine_events_to_service(Stack& eng, engine::HostService& svc, Instant now) {
  SocketEvent ev;
  while (eng.tcp().next_event(ev)) svc.on_event(eng.tcp(), ev, now);
}

/// One round: frames cross both ways, the engine's events reach `svc` (when there is one), then
/// `serve()` runs the service's own work (tick or ring service), both stacks poll and the engine's
/// new events reach `svc` again; the peer's events are dropped (its tests read sockets directly).
template <class Serve>
void step_engine_and_peer(Stack& eng, MemLink& eng_out, Stack& peer, MemLink& peer_out,
                          engine::HostService* svc, Instant now, Serve&& serve) {
  eng_out.deliver(peer, now);
  peer_out.deliver(eng, now);
  if (svc) {
    engine_events_to_service(eng, *svc, now);
    serve();
  }
  eng.poll(now);
  if (svc) engine_events_to_service(eng, *svc, now);
  peer.poll(now);
  SocketEvent ev;
  while (peer.tcp().next_event(ev)) {
  }
}

/// An engine with one in-process host region that the test reads and writes as a host would, and
/// a peer stack behind the in-memory link that listens on port 7 and collects what it accepts.
struct RegionRig {
  RegionRig() {
    svc = std::make_unique<engine::HostService>(small_in_process_config());
    EXPECT_EQ(svc->start(eng.tcp(), now), Errc::ok);
    fam = svc->attach_for_test(&base, &bytes);
    EXPECT_GE(fam, 0);
    std::memcpy(&h, base, sizeof(h));
    auto& pt = peer.tcp();
    pl = *pt.socket();
    pt.bind(pl, {Ipv4Addr::any(), 7});
    pt.listen(pl, 16);
  }
  RegionRig(const RegionRig&) = delete;
  RegionRig& operator=(const RegionRig&) = delete;
  ~RegionRig() { munmap(base, bytes); }

  /// n rounds of 100 µs: frames, events and the service's ring work; the peer accepts.
  void step(int n = 1) {
    for (int k = 0; k < n; ++k) {
      now += std::chrono::microseconds(100);
      step_engine_and_peer(eng, eo, peer, po, svc.get(), now, [&] { svc->service_for_test(now); });
      while (auto a = peer.tcp().accept(pl)) accepted.push_back(*a);
    }
  }

  channel::SpscRing<channel::contract::Command> cmds() {
    return region_ring<channel::contract::Command>(base, h.cmd_off, h.cmd_entries);
  }
  channel::SpscRing<channel::contract::Completion> cpls() {
    return region_ring<channel::contract::Completion>(base, h.cpl_off, h.cpl_entries);
  }
  channel::SpscRing<std::uint32_t> kicks() { return region_ring<std::uint32_t>(base, h.kick_off, h.kick_entries); }
  channel::contract::SocketSlot& slot(std::uint32_t i) {
    return *reinterpret_cast<channel::contract::SocketSlot*>(base + channel::contract::slot_off(h, i));
  }

  /// One command, one completion (as the host would do it).
  channel::contract::Completion call(channel::contract::Command cmd) {
    EXPECT_EQ(cmds().push(std::span(&cmd, 1)), 1u);
    step(2);
    channel::contract::Completion cp;
    EXPECT_EQ(cpls().pop(std::span(&cp, 1)), 1u);
    return cp;
  }

  Instant now = instant_from_ns(1'000'000'000);
  MemLink eo, po;
  Stack eng{cfg_for(kEngineIp, 1), eo, now};
  Stack peer{cfg_for(kPeerIp, 2), po, now};
  std::unique_ptr<engine::HostService> svc;
  int fam = -1;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  channel::contract::RegionHeader h{};
  SocketId pl = kInvalidSocket;
  std::vector<SocketId> accepted;
};

}  // namespace pno::test::channel_bench
