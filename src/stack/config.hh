// What one Stack instance is configured with: its interface, ARP timing and queues, TCP defaults.
// Apart from stack.hh so that the layers under the façade (net/) can read their part of it without
// including the façade.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "stack/addr.hh"
#include "stack/frame_sink.hh"
#include "stack/socket.hh"
#include "stack/time.hh"

namespace pno {

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

}  // namespace pno
