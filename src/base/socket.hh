// Types of the stack's native socket API: ids, readiness bits, options and configuration.
// The engine's built-in services use this API directly; the host shim reaches it through the rings.
#pragma once

#include <cstdint>

#include "stack/addr.hh"
#include "stack/time.hh"

namespace pno {

/// Opaque socket handle: slot index in the low 20 bits, generation above, so a stale id held after
/// close never reaches a socket that reused the slot.
using SocketId = std::uint32_t;
inline constexpr SocketId kInvalidSocket = 0;

/// Readiness bits; values equal Linux's EPOLL* bits so they pass through the shim unchanged.
enum Ready : std::uint32_t {
  kReadable = 0x001,   ///< EPOLLIN: data, EOF, or (listener) a connection to accept
  kWritable = 0x004,   ///< EPOLLOUT: send buffer has room (or connect finished)
  kError = 0x008,      ///< EPOLLERR: pending error (read it with so_error)
  kHangup = 0x010,     ///< EPOLLHUP: both directions closed, or reset
  kReadHangup = 0x2000 ///< EPOLLRDHUP: peer sent FIN
};

/// A change of readiness on a socket, reported once per change burst.
struct SocketEvent {
  SocketId id = kInvalidSocket;
  std::uint32_t ready = 0;  ///< current readiness bits (Ready)
};

enum class ShutdownHow : std::uint8_t { read, write, both };

/// Socket options the stack implements (the shim maps SOL_SOCKET/IPPROTO_TCP names onto these).
enum class SockOpt : std::uint8_t {
  nodelay,        ///< TCP_NODELAY (bool)
  cork,           ///< TCP_CORK (bool)
  keepalive,      ///< SO_KEEPALIVE (bool)
  keepidle,       ///< TCP_KEEPIDLE (seconds)
  keepintvl,      ///< TCP_KEEPINTVL (seconds)
  keepcnt,        ///< TCP_KEEPCNT (count)
  linger,         ///< SO_LINGER: -1 off, else seconds (0 = abortive close with RST)
  rcvbuf,         ///< SO_RCVBUF (bytes; 0 = auto-tuned)
  sndbuf,         ///< SO_SNDBUF (bytes)
  reuseaddr,      ///< SO_REUSEADDR (bool)
  reuseport,      ///< SO_REUSEPORT (bool)
  maxseg,         ///< TCP_MAXSEG (bytes)
  user_timeout,   ///< TCP_USER_TIMEOUT (ms)
};

enum class CongestionAlgo : std::uint8_t { new_reno, cubic };

/// A snapshot of a connection, with the fields `ss -ti` and TCP_INFO readers use.
struct TcpInfo {
  std::uint8_t state = 0;  ///< TcpState value
  std::uint32_t rto_us = 0, rtt_us = 0, rttvar_us = 0;
  std::uint32_t snd_mss = 0, rcv_mss = 0;
  std::uint32_t snd_cwnd = 0;       ///< bytes
  std::uint32_t snd_ssthresh = 0;   ///< bytes
  std::uint32_t snd_wnd = 0, rcv_wnd = 0;
  std::uint32_t unacked = 0;        ///< bytes in flight
  std::uint32_t retransmits = 0, total_retrans = 0;
  std::uint8_t snd_wscale = 0, rcv_wscale = 0;
  bool timestamps = false, sack = false;
  std::uint64_t bytes_acked = 0, bytes_received = 0;
};

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
  bool syn_cookies = true;                         ///< when the SYN queue is full
  std::uint16_t ephemeral_lo = 32768, ephemeral_hi = 60999;
  Duration keepalive_idle = std::chrono::seconds(7200);
  Duration keepalive_intvl = std::chrono::seconds(75);
  std::uint8_t keepalive_probes = 9;
};

}  // namespace pno
