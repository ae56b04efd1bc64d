// The contract between the IPv4 layer and the transport above it (TCP), in both directions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"

namespace pno {

inline constexpr std::uint8_t kIpProtoIcmp = 1;
inline constexpr std::uint8_t kIpProtoTcp = 6;
inline constexpr std::uint8_t kIpProtoUdp = 17;

/// What the IPv4 layer tells the transport about a received packet.
struct Ipv4RxInfo {
  Ipv4Addr src;
  Ipv4Addr dst;
  std::uint8_t ttl = 0;
  std::uint8_t tos = 0;
  bool l4_checksum_good = false;  ///< verified by the port: skip the software check
};

/// How the transport sends: it asks for room for its L4 bytes, fills them, commits.
/// One packet is open at a time. If the next hop is not yet resolved the IPv4 layer copies the
/// packet into its ARP pending queue, so the transport never waits.
class Ipv4Output {
 public:
  virtual ~Ipv4Output() = default;
  /// Room for `l4_len` bytes of protocol `proto` to `dst`, or an empty span (no buffer, no route).
  virtual MutByteSpan ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) = 0;
  /// Finishes the open packet: IPv4 header and checksum, then sends or queues for ARP.
  /// `l4_checksum_offload`: the transport wrote only the pseudo-header sum; the port completes it.
  virtual void ip_commit(bool l4_checksum_offload = false) = 0;
  /// Drops the open packet.
  virtual void ip_abort() = 0;
  /// Our address as seen by `dst` (the one interface address for now).
  [[nodiscard]] virtual Ipv4Addr local_addr() const = 0;
  /// Largest L4 payload for one packet (MTU minus IPv4 header).
  [[nodiscard]] virtual std::size_t max_l4_len() const = 0;
  /// Whether the port will finish TCP checksums (so the transport only writes the pseudo-header sum).
  [[nodiscard]] virtual bool tcp_checksum_offload() const = 0;
};

}  // namespace pno
