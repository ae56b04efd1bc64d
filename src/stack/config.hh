// What one Stack instance is configured with: its interface, ARP timing and queues, TCP defaults.
// Apart from stack.hh so that the layers under the façade (net/) can read their part of it without
// including the façade.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "base/addr.hh"
#include "base/time.hh"
#include "stack/frame_sink.hh"

namespace pno {

enum class CongestionAlgo : std::uint8_t { new_reno, cubic };

/// TCP tunables. Defaults follow Linux where it has one.
struct TcpConfig {
  Duration msl = std::chrono::seconds(30);         ///< TIME_WAIT lasts 2*msl (RFC 9293 §3.4.2)
  Duration rto_initial = std::chrono::seconds(1);  ///< RFC 6298 §2.1
  Duration rto_min = std::chrono::milliseconds(200);  ///< Linux TCP_RTO_MIN (RFC 6298 says 1 s)
  Duration rto_max = std::chrono::seconds(120);
  std::uint8_t syn_retries = 6;                    ///< tcp_syn_retries
  std::uint8_t synack_retries = 5;                 ///< tcp_synack_retries
  std::uint8_t retries2 = 15;                      ///< tcp_retries2
  Duration delayed_ack = std::chrono::milliseconds(40);
  std::uint32_t rcvbuf_initial = 128 * 1024;       ///< auto-tuning starts here
  std::uint32_t rcvbuf_max = 6 * 1024 * 1024;      ///< and grows up to here
  /// Receive-window budget for the whole layer (bytes; 0 = none): while more than one connection
  /// receives, the windows left open (right edge minus RCV.NXT, summed) stay within it, so a
  /// receiver with few frame buffers (e.g. an AF_XDP fill ring) never invites more than it can hold.
  std::uint64_t rcv_budget = 0;
  std::uint32_t rcv_budget_floor_segs = 4;         ///< each connection may always open this many segments
  std::uint32_t sndbuf_initial = 256 * 1024;
  std::uint32_t sndbuf_max = 4 * 1024 * 1024;
  bool timestamps = true;                          ///< RFC 7323
  bool sack = true;                                ///< RFC 2018
  bool window_scaling = true;                      ///< RFC 7323 §2
  CongestionAlgo congestion = CongestionAlgo::cubic;
  std::uint32_t max_sockets = 65536;
  std::uint32_t syn_backlog = 1024;                ///< SYN queue size per listener
  /// listen() backlogs are clamped to this (Linux net.core.somaxconn; at most 65535 here).
  std::uint32_t somaxconn = 4096;
  /// Connections held in TIME-WAIT at most (Linux tcp_max_tw_buckets); past it a connection that
  /// would enter TIME-WAIT is closed at once. Unset: max_sockets / 2 (Linux: half the established
  /// hash table). 0: never TIME-WAIT.
  std::optional<std::uint32_t> max_tw_buckets{};
  bool syn_cookies = true;                         ///< when the SYN queue is full
  std::uint16_t ephemeral_lo = 32768, ephemeral_hi = 60999;
  Duration keepalive_idle = std::chrono::seconds(7200);
  Duration keepalive_intvl = std::chrono::seconds(75);
  std::uint8_t keepalive_probes = 9;
};

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
