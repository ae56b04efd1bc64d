// Stack counters: every drop has a named reason, every reason a counter. The list is one X-macro so
// the enum, the names printed by `--stats` and the tests all come from the same source.
// Layers may append entries to PNO_COUNTERS; keep names snake_case and prefixed by layer.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "base/counter_list.hh"

namespace pno {

// X(name, description)
#define PNO_COUNTERS(X)                                                                  \
  /* Ethernet */                                                                         \
  X(eth_rx, "frames received")                                                           \
  X(eth_tx, "frames sent")                                                               \
  X(eth_drop_truncated, "frame shorter than an Ethernet header")                         \
  X(eth_drop_not_for_us, "destination MAC neither ours nor broadcast")                   \
  X(eth_drop_unknown_type, "EtherType not handled")                                      \
  X(eth_tx_no_buffer, "no frame buffer for an outgoing frame")                           \
  X(eth_drop_looped, "frame with our own source MAC (our transmission seen again)")      \
  /* ARP */                                                                              \
  X(arp_rx_request, "ARP requests received")                                             \
  X(arp_rx_reply, "ARP replies received")                                                \
  X(arp_tx_request, "ARP requests sent")                                                 \
  X(arp_tx_reply, "ARP replies sent")                                                    \
  X(arp_drop_malformed, "ARP packet malformed or not Ethernet/IPv4")                     \
  X(arp_drop_not_for_us, "ARP target is not our address")                                \
  X(arp_queue_overflow, "packet dropped: too many queued while resolving")               \
  X(arp_resolve_failed, "packets dropped: ARP resolution timed out")                     \
  X(arp_tx_announce, "gratuitous ARP announcements sent (RFC 5227 §3)")                  \
  X(arp_rx_conflict, "ARP from another host using our IPv4 address")                     \
  /* IPv4 */                                                                             \
  X(ip_rx, "IPv4 packets received")                                                      \
  X(ip_tx, "IPv4 packets sent")                                                          \
  X(ip_drop_truncated, "IPv4 packet shorter than its headers claim")                     \
  X(ip_drop_bad_version, "IP version is not 4")                                          \
  X(ip_drop_bad_ihl, "IPv4 header length below 20 bytes")                                \
  X(ip_drop_bad_checksum, "IPv4 header checksum wrong")                                  \
  X(ip_drop_bad_total_len, "IPv4 total length inconsistent with frame")                  \
  X(ip_drop_fragment, "IPv4 fragments (not reassembled)")                                \
  X(ip_drop_not_for_us, "destination address not ours")                                 \
  X(ip_drop_bad_src, "source address broadcast, multicast or ours")                      \
  X(ip_drop_unknown_proto, "IP protocol not handled")                                    \
  X(ip_drop_options, "IPv4 options malformed")                                           \
  X(ip_drop_bad_ttl, "IPv4 TTL zero (no sender may emit it, RFC 1122 §3.2.1.7)")         \
  X(ip_drop_broadcast, "TCP segment or ICMP echo sent to a broadcast address")           \
  X(ip_tx_no_route, "packet not sent: destination off the subnet and no gateway")        \
  X(ip_tx_too_big, "packet not sent: larger than the MTU")                               \
  /* ICMP */                                                                             \
  X(icmp_rx_echo, "ICMP echo requests received")                                         \
  X(icmp_tx_echo_reply, "ICMP echo replies sent")                                        \
  X(icmp_drop_malformed, "ICMP message truncated or bad checksum")                       \
  X(icmp_drop_unhandled, "ICMP type not handled")                                        \
  /* TCP */                                                                              \
  X(tcp_rx, "TCP segments received")                                                     \
  X(tcp_tx, "TCP segments sent")                                                         \
  X(tcp_rx_bytes, "TCP payload bytes received in order")                                 \
  X(tcp_tx_bytes, "TCP payload bytes sent (first transmission)")                         \
  X(tcp_retransmits, "TCP segments retransmitted")                                       \
  X(tcp_rto_expired, "retransmission timeouts")                                          \
  X(tcp_fast_retransmits, "fast retransmits / SACK recovery entries")                    \
  X(tcp_loss_probes, "tail loss probes sent (RFC 8985 section 7)")                       \
  X(tcp_loss_probes_spurious, "tail loss probes a D-SACK showed needless")              \
  X(tcp_rack_marks, "holes marked lost after the reordering window (RFC 8985)")          \
  X(tcp_lost_retransmits, "retransmissions detected lost (data sent later was SACKed)")  \
  X(tcp_dsack_rx, "ACKs reporting a duplicate segment (D-SACK, RFC 2883)")               \
  X(tcp_reordering_seen, "connections that saw reordering: DupThresh off (RFC 8985 6.2)") \
  X(tcp_drop_truncated, "TCP header truncated or data offset invalid")                   \
  X(tcp_drop_bad_checksum, "TCP checksum wrong")                                         \
  X(tcp_drop_bad_flags, "illegal TCP flag combination")                                  \
  X(tcp_drop_bad_options, "TCP options malformed")                                       \
  X(tcp_drop_out_of_window, "segment outside the receive window")                        \
  X(tcp_drop_paws, "segment rejected by PAWS (RFC 7323 §5)")                             \
  X(tcp_drop_bad_ack, "ACK for data never sent")                                         \
  X(tcp_drop_no_socket, "no socket for segment (RST sent unless RST)")                   \
  X(tcp_drop_rst_invalid, "RST outside the window (RFC 5961 §3)")                        \
  X(tcp_drop_listen_overflow, "SYN or ACK dropped: accept queue full")                   \
  X(tcp_drop_bad_syn_cookie, "ACK with an invalid SYN cookie")                           \
  X(tcp_challenge_acks, "challenge ACKs sent (RFC 5961)")                                \
  X(tcp_rst_tx, "RSTs sent")                                                             \
  X(tcp_rst_rx, "RSTs accepted")                                                         \
  X(tcp_syn_cookies_sent, "SYN-ACKs carrying a SYN cookie")                              \
  X(tcp_ooo_segments, "out-of-order segments queued")                                    \
  X(tcp_rcv_budget_limited, "window offers the receive budget held below the free buffer")  \
  X(tcp_keepalive_probes, "keepalive probes sent")                                       \
  X(tcp_zero_window_probes, "zero-window probes sent")                                   \
  X(tcp_conn_active_opens, "connections opened actively")                                \
  X(tcp_conn_passive_opens, "connections accepted")                                      \
  X(tcp_conn_timeouts, "connections dropped after too many retransmissions/probes")      \
  X(tcp_conn_resets, "connections reset")                                                \
  X(tcp_tw_overflow, "TIME-WAIT skipped: tcp_max_tw_buckets reached (Linux TCPTimeWaitOverflow)")

enum class Counter : std::uint16_t { PNO_COUNTERS(PNO_COUNTER_ENUMERATOR) count_ };

inline constexpr std::size_t kCounterCount = static_cast<std::size_t>(Counter::count_);

inline constexpr std::array<std::string_view, kCounterCount> kCounterNames = {
    PNO_COUNTERS(PNO_COUNTER_NAME)};

inline constexpr std::array<std::string_view, kCounterCount> kCounterDescriptions = {
    PNO_COUNTERS(PNO_COUNTER_DESCRIPTION)};

/// One stack instance's counters (one per lcore later: no sharing, no atomics).
using Counters = CounterArray<Counter, kCounterCount>;

}  // namespace pno
