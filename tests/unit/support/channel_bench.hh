// Test support for the channel tests: the engine's Stack and a peer Stack wired back to back in
// memory, and the steps that move frames and TCP events between them and the engine's HostService.
// Header-only on purpose: pno_test_support links into every unit test, but only channel_*_test
// executables link the channel libraries (src/channel/CMakeLists.txt), so the channel code used
// here must be compiled into those tests and not into the shared library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "channel/contract.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "stack/addr.hh"
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
/// sees it: RingIndices at `off`, then `entries` slots of T (the layout in channel/contract.hh).
template <class T>
channel::SpscRing<T> region_ring(std::byte* base, std::uint64_t off, std::uint32_t entries) {
  return {reinterpret_cast<channel::contract::RingIndices*>(base + off),
          reinterpret_cast<T*>(base + off + sizeof(channel::contract::RingIndices)), entries};
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

}  // namespace pno::test::channel_bench
