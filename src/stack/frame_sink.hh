// The boundary between the sans-IO stack and whatever moves frames: the engine's DPDK port, or a
// test's vector of frames.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/bytes.hh"

namespace pno {

/// What the port can do for the stack. These PMDs (af_xdp, af_packet) offer none of it; mlx5 does.
struct DeviceCaps {
  std::uint16_t mtu = 1500;
  bool tx_ipv4_checksum = false;  ///< port fills the IPv4 header checksum
  bool tx_tcp_checksum = false;   ///< port fills the TCP checksum (stack writes the pseudo-header sum)
};

/// Per-frame receive metadata from the port.
struct RxMeta {
  bool ipv4_checksum_good = false;  ///< port verified the IPv4 header checksum
  bool l4_checksum_good = false;    ///< port verified the TCP checksum
};

/// Per-frame transmit requests for the port.
struct TxMeta {
  bool ipv4_checksum = false;  ///< port must fill the IPv4 header checksum
  bool tcp_checksum = false;   ///< port must fill the TCP checksum
  std::uint16_t l2_len = 14, l3_len = 20;
};

/// Where the stack writes outgoing frames. Exactly one frame is open at a time:
/// tx_begin() returns its buffer, tx_commit() sends it, tx_abort() gives it back.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  /// A buffer for one frame of up to `max_len` bytes, or an empty span when none is free.
  virtual MutByteSpan tx_begin(std::size_t max_len) = 0;
  /// Sends the open frame, trimmed to `len` bytes.
  virtual void tx_commit(std::size_t len, const TxMeta& meta) = 0;
  /// Releases the open frame without sending it.
  virtual void tx_abort() = 0;
};

}  // namespace pno
