// Test support shared by the stack's unit tests: a FrameSink that records what the stack sends, and
// builders that assemble Ethernet/ARP/IPv4/ICMP/TCP bytes independently of src/stack/wire (so a bug
// in the wire layer cannot hide itself in both the packet and its check).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/frame_sink.hh"

namespace pno::test {

using Bytes = std::vector<std::byte>;

/// Addresses the unit tests agree on (all in 198.18.0.0/15, the benchmarking range).
inline constexpr MacAddr kLocalMac{{0x02, 0x00, 0xc6, 0x12, 0x00, 0x01}};
inline constexpr MacAddr kPeerMac{{0x02, 0x00, 0xc6, 0x12, 0x00, 0x02}};
inline constexpr MacAddr kGatewayMac{{0x02, 0x00, 0xc6, 0x12, 0x00, 0xfe}};
inline constexpr Ipv4Addr kLocalIp = Ipv4Addr::from_octets(198, 18, 0, 1);
inline constexpr Ipv4Addr kPeerIp = Ipv4Addr::from_octets(198, 18, 0, 2);
inline constexpr Ipv4Addr kGatewayIp = Ipv4Addr::from_octets(198, 18, 0, 254);
inline constexpr Ipv4Addr kRemoteIp = Ipv4Addr::from_octets(198, 19, 7, 9);  ///< off the /24: via gateway
inline constexpr Ipv4Cidr kLocalCidr{kLocalIp, 24};

Bytes bytes_of(std::initializer_list<int> v);
/// "00 01 ff" style dump, for failure messages.
std::string hex(ByteSpan b);

// ---------------------------------------------------------------------------------------------
// Recording sink

struct SentFrame {
  Bytes bytes;
  TxMeta meta;
};

/// Records committed frames in order. `buffers_free` limits how many tx_begin() calls succeed
/// (default: unlimited), to test the stack's no-buffer paths. Misuse of the one-open-frame
/// protocol is reported as a gtest failure.
class RecordingSink : public FrameSink {
 public:
  MutByteSpan tx_begin(std::size_t max_len) override;
  void tx_commit(std::size_t len, const TxMeta& meta) override;
  void tx_abort() override;

  std::deque<SentFrame> frames;          ///< committed, oldest first
  std::optional<std::size_t> buffers_free;  ///< nullopt = unlimited
  std::size_t begins = 0, commits = 0, aborts = 0;
  [[nodiscard]] bool open() const { return open_; }

  /// Removes and returns the oldest frame; a gtest failure (and an empty frame) if none.
  SentFrame pop();
  [[nodiscard]] std::size_t size() const { return frames.size(); }
  [[nodiscard]] bool empty() const { return frames.empty(); }
  void clear() { frames.clear(); }

 private:
  Bytes buf_;
  bool open_ = false;
};

// ---------------------------------------------------------------------------------------------
// Builders (all fields network order on the wire; addresses in host order as in addr.hh)

inline constexpr std::uint16_t kEthIpv4 = 0x0800;
inline constexpr std::uint16_t kEthArp = 0x0806;

/// Ethernet II frame. `pad_to_min` pads with zeros to 60 bytes as a real NIC would.
Bytes eth_frame(MacAddr dst, MacAddr src, std::uint16_t ethertype, ByteSpan payload, bool pad_to_min = false);

struct ArpSpec {
  std::uint16_t oper = 1;  ///< 1 request, 2 reply
  MacAddr sha{};
  Ipv4Addr spa{};
  MacAddr tha{};
  Ipv4Addr tpa{};
  std::uint16_t htype = 1, ptype = 0x0800;
  std::uint8_t hlen = 6, plen = 4;
};
Bytes arp_packet(const ArpSpec& a);
/// ARP request/reply in a broadcast (request) or unicast (reply: to tha) Ethernet frame.
Bytes arp_request_frame(MacAddr sha, Ipv4Addr spa, Ipv4Addr tpa);
Bytes arp_reply_frame(MacAddr sha, Ipv4Addr spa, MacAddr tha, Ipv4Addr tpa);

struct Ipv4Spec {
  Ipv4Addr src{};
  Ipv4Addr dst{};
  std::uint8_t proto = 6;
  std::uint8_t ttl = 64;
  std::uint8_t tos = 0;
  std::uint16_t ident = 0;
  bool df = true;
  bool mf = false;
  std::uint16_t frag_offset = 0;  ///< 8-byte units
  Bytes options{};                  ///< raw option bytes; padded to 4 with zeros (End)
  // Overrides to build broken packets:
  std::uint8_t version = 4;
  std::optional<std::uint8_t> ihl{};          ///< default from options
  std::optional<std::uint16_t> total_len{};   ///< default header + payload
  std::optional<std::uint16_t> checksum{};    ///< default correct
};
Bytes ipv4_packet(const Ipv4Spec& s, ByteSpan payload);

/// ICMP echo (type 8 request, 0 reply) with a correct checksum unless `bad_checksum`.
Bytes icmp_echo(std::uint8_t type, std::uint16_t ident, std::uint16_t seq, ByteSpan data, bool bad_checksum = false);

inline constexpr std::uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpPsh = 0x08, kTcpAck = 0x10,
                              kTcpUrg = 0x20, kTcpEce = 0x40, kTcpCwr = 0x80;
struct TcpSpec {
  std::uint16_t sport = 0, dport = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 65535;
  std::uint16_t urgent = 0;
  Bytes options{};  ///< raw option bytes; padded to 4 with zeros (End of option list)
  std::optional<std::uint8_t> data_offset{};  ///< in 32-bit words; default from options
  bool bad_checksum = false;
};
/// TCP segment with the checksum over the pseudo-header of (src, dst).
Bytes tcp_segment(Ipv4Addr src, Ipv4Addr dst, const TcpSpec& t, ByteSpan payload);

/// Convenience: a whole Ethernet+IPv4 frame around `l4`.
Bytes ipv4_frame(MacAddr dst_mac, MacAddr src_mac, const Ipv4Spec& ip, ByteSpan l4, bool pad_to_min = true);

// ---------------------------------------------------------------------------------------------
// Independent decoding helpers for asserting on sent frames (no src/stack/wire involved).

struct DecodedEth {
  MacAddr dst{}, src{};
  std::uint16_t ethertype = 0;
  Bytes payload{};
};
std::optional<DecodedEth> decode_eth(ByteSpan frame);

struct DecodedArp {
  std::uint16_t oper = 0;
  MacAddr sha{}, tha{};
  Ipv4Addr spa{}, tpa{};
};
std::optional<DecodedArp> decode_arp(ByteSpan arp);

struct DecodedIpv4 {
  std::uint8_t ihl = 0, tos = 0, ttl = 0, proto = 0;
  std::uint16_t total_len = 0, ident = 0, checksum = 0;
  bool df = false, mf = false;
  std::uint16_t frag_offset = 0;
  Ipv4Addr src{}, dst{};
  bool checksum_ok = false;  ///< header checksum verifies
  Bytes payload{};             ///< cut at total_len
};
std::optional<DecodedIpv4> decode_ipv4(ByteSpan packet);

/// Internet checksum (RFC 1071) of `data`, plus an optional IPv4 pseudo-header when proto != 0.
std::uint16_t inet_checksum(ByteSpan data, Ipv4Addr src = {}, Ipv4Addr dst = {}, std::uint8_t proto = 0);

}  // namespace pno::test
