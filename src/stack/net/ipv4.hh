// The network interface of one stack instance: Ethernet demux, ARP, IPv4 receive validation, ICMP
// echo, and the IPv4 output path TCP sends through (Ipv4Output).
//
// Receive: on_frame() validates each layer, counts every drop by reason, answers ARP and ping
// itself, and hands TCP payloads to a TransportRx. Send: ip_begin()/ip_commit() build the packet
// in place in the port's frame buffer when the next hop's MAC is known, or in a scratch buffer that
// is then copied into the ARP queue (so the transport never waits for ARP).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/counters.hh"
#include "stack/frame_sink.hh"
#include "stack/ip_output.hh"
#include "stack/net/arp_cache.hh"
#include "stack/config.hh"
#include "base/time.hh"

namespace pno::net {

/// Where validated transport packets go (TCP in the stack, a recorder in tests).
class TransportRx {
 public:
  /// One packet for protocol 6 addressed to our unicast address. `l4` is cut at the IPv4 total
  /// length. The IPv4 layer checked nothing above the IP header.
  virtual void on_ipv4(const Ipv4RxInfo& info, ByteSpan l4, Instant now) = 0;

 protected:
  ~TransportRx() = default;
};

/// RFC 5227 §1.1: ANNOUNCE_NUM announcements, ANNOUNCE_INTERVAL apart.
inline constexpr int kArpAnnounceNum = 2;
inline constexpr Duration kArpAnnounceInterval = std::chrono::seconds(2);

class NetIf final : public Ipv4Output, private ArpSender {
 public:
  /// Uses cfg.mac, cfg.addr, cfg.gateway, cfg.caps and cfg.arp. Sends nothing until called.
  NetIf(const StackConfig& cfg, FrameSink& sink, Counters& counters, Instant now);
  NetIf(const NetIf&) = delete;
  NetIf& operator=(const NetIf&) = delete;

  /// Where TCP packets go; nullptr drops them as ip_drop_unknown_proto.
  void set_transport(TransportRx* t) { transport_ = t; }

  /// One received Ethernet frame.
  void on_frame(ByteSpan frame, Instant now, const RxMeta& meta = {});
  /// Gratuitous ARP announcing our address now, and again by poll() (RFC 5227 §3).
  void announce();
  /// ARP retries and failures, pending announcements.
  void poll(Instant now);
  [[nodiscard]] Instant next_deadline() const;

  [[nodiscard]] ArpCache& arp() { return arp_; }
  [[nodiscard]] const ArpCache& arp() const { return arp_; }

  // --- Ipv4Output ---
  MutByteSpan ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) override;
  void ip_commit(bool l4_checksum_offload = false) override;
  void ip_abort() override;
  [[nodiscard]] Ipv4Addr local_addr() const override { return addr_.addr; }
  [[nodiscard]] std::size_t max_l4_len() const override;
  [[nodiscard]] bool tcp_checksum_offload() const override { return caps_.tx_tcp_checksum; }

 private:
  enum class Open : std::uint8_t { none, direct, scratch };

  void on_arp(ByteSpan payload, Instant now);
  void on_ipv4(const MacAddr& eth_src, ByteSpan payload, Instant now, const RxMeta& meta);
  void on_icmp(const MacAddr& eth_src, Ipv4Addr src, std::uint8_t tos, bool to_broadcast, ByteSpan message);
  [[nodiscard]] bool is_broadcast(Ipv4Addr a) const;
  void send_arp(std::uint16_t oper, const MacAddr& eth_dst, const MacAddr& tha, Ipv4Addr tpa);
  /// Next hop for `dst`: itself on the subnet, else the gateway; nullopt without a route.
  [[nodiscard]] std::optional<Ipv4Addr> next_hop(Ipv4Addr dst) const;

  // ArpSender
  void arp_send_request(Ipv4Addr target, const MacAddr* unicast_to) override;
  void arp_send_queued(const MacAddr& dst, ByteSpan packet, const TxMeta& meta) override;

  MacAddr mac_;
  Ipv4Cidr addr_;
  std::optional<Ipv4Addr> gateway_;
  DeviceCaps caps_;
  FrameSink& sink_;
  Counters& counters_;
  ArpCache arp_;
  TransportRx* transport_ = nullptr;
  Instant now_;

  std::uint16_t next_ident_ = 0;  ///< IPv4 identification; DF is always set (RFC 6864 §4.1)
  int announcements_left_ = 0;
  Instant next_announce_ = kNever;

  // The one open output packet.
  Open open_ = Open::none;
  MutByteSpan open_buf_;  ///< direct: the whole frame; scratch: IPv4 header + L4
  Ipv4Addr open_dst_;
  Ipv4Addr open_next_hop_;
  MacAddr open_mac_;
  std::uint8_t open_proto_ = 0;
  std::size_t open_l4_len_ = 0;
  std::vector<std::byte> scratch_;  ///< one MTU, allocated once
};

}  // namespace pno::net
