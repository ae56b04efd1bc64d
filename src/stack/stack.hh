// One network stack instance: Ethernet, ARP, IPv4, ICMP and TCP for one interface address.
// Sans-IO: the caller passes frames and time in, and gets frames (through FrameSink), readiness
// events and the next deadline out. One instance per lcore; no global mutable state.
#pragma once

#include <memory>

#include "stack/config.hh"
#include "stack/counters.hh"
#include "base/errc.hh"
#include "stack/frame_sink.hh"
#include "base/time.hh"

namespace pno {

namespace tcp {
class TcpLayer;
}

class Stack {
 public:
  Stack(const StackConfig& cfg, FrameSink& sink, Instant now);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  /// Sends a gratuitous ARP announcing our address (RFC 5227 §3).
  void announce();
  /// One received Ethernet frame.
  void on_frame(ByteSpan frame, Instant now, const RxMeta& meta = {});
  /// Fires due timers, sends everything pending; returns the next deadline (kNever if none).
  Instant poll(Instant now);
  /// Earliest time poll() has work.
  [[nodiscard]] Instant next_deadline() const;

  /// The TCP socket API (see tcp/tcp_layer.hh).
  tcp::TcpLayer& tcp();
  [[nodiscard]] const tcp::TcpLayer& tcp() const;

  [[nodiscard]] const Counters& counters() const;
  [[nodiscard]] const StackConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pno
