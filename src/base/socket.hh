// The socket vocabulary every part shares: ids, readiness bits, shutdown, options, TCP_INFO.
// The stack's native socket API speaks it, the engine's built-in services use it directly, and the
// host shim reaches it through the channel's rings.
#pragma once

#include <cstdint>

#include "base/addr.hh"

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

}  // namespace pno
