// One network stack instance: Ethernet, ARP, IPv4, ICMP and TCP for one interface address.
// Sans-IO: the caller passes frames and time in, and gets frames (through FrameSink), readiness
// events and the next deadline out. One instance per lcore; no global mutable state.
#pragma once

#include <memory>
#include <optional>

#include "stack/addr.hh"
#include "stack/counters.hh"
#include "stack/errc.hh"
#include "stack/frame_sink.hh"
#include "stack/socket.hh"
#include "stack/time.hh"

namespace pno {

namespace tcp {
class TcpLayer;
}

/// Largest packet that fits a small ARP queue buffer: IPv4 + TCP headers with the most options.
inline constexpr std::size_t kArpSmallPacket = 128;

struct ArpConfig {
  Duration entry_ttl = std::chrono::seconds(60);        ///< a resolved entry is re-verified after this
  Duration retry_interval = std::chrono::seconds(1);    ///< between requests while resolving
  std::uint8_t max_retries = 3;                         ///< then queued packets are dropped
  /// Packets held per destination while it resolves. Sized for a burst of connect()s to one fresh
  /// neighbour: every SYN waits here, none is lost to a 1 s SYN retransmission.
  std::size_t max_queued_per_dest = 2048;
  /// Shared buffers for queued packets of at most kArpSmallPacket bytes (SYNs, ACKs, RSTs).
  std::size_t queue_small_packets = 4096;
  /// Shared buffers for larger queued packets (up to the MTU).
  std::size_t queue_large_packets = 256;
  std::size_t max_entries = 1024;
};

struct StackConfig {
  MacAddr mac;
  Ipv4Cidr addr;                       ///< our address and the link's subnet
  std::optional<Ipv4Addr> gateway;     ///< next hop for destinations off the subnet
  DeviceCaps caps;
  ArpConfig arp;
  TcpConfig tcp;
  std::uint64_t secret = 0;            ///< keys ISNs and SYN cookies: pass random bytes
};

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
