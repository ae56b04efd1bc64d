// Translation between the Linux socket API and the stack's types, free of system calls: socket
// options, socket addresses, struct tcp_info.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>

#include "base/addr.hh"
#include "base/errc.hh"
#include "base/socket.hh"

namespace pno::shim {

/// How the shim handles one (level, optname) pair on an offloaded socket.
enum class OptClass : std::uint8_t {
  unsupported,  ///< ENOPROTOOPT, as Linux answers options it does not know
  engine_int,   ///< an int option the engine keeps (SockOpt)
  linger,       ///< struct linger <-> SockOpt::linger
  rcvtimeo,     ///< struct timeval, kept by the shim
  sndtimeo,
  error,        ///< SO_ERROR (get only)
  type,         ///< SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN (get only)
  domain,
  protocol,
  acceptconn,
  tcp_info,     ///< TCP_INFO (get only)
  quickack,     ///< TCP_QUICKACK: a one-time hint in Linux too; remembered, no engine effect
};

struct OptInfo {
  OptClass cls = OptClass::unsupported;
  SockOpt opt = SockOpt::nodelay;  ///< for engine_int
  bool boolean = false;            ///< getsockopt reports 0/1
};

[[nodiscard]] OptInfo classify_opt(int level, int optname);

/// Linux's layout of struct tcp_info (include/uapi/linux/tcp.h) up to tcpi_snd_wnd, so tools that
/// read the newer fields (bytes_acked, snd_wnd) find them where the kernel puts them.
struct LinuxTcpInfo {
  std::uint8_t tcpi_state, tcpi_ca_state, tcpi_retransmits, tcpi_probes, tcpi_backoff, tcpi_options;
  std::uint8_t tcpi_wscale;  ///< snd_wscale : 4, rcv_wscale : 4 (low nibble = snd)
  std::uint8_t tcpi_delivery_rate_app_limited_etc;
  std::uint32_t tcpi_rto, tcpi_ato, tcpi_snd_mss, tcpi_rcv_mss;
  std::uint32_t tcpi_unacked, tcpi_sacked, tcpi_lost, tcpi_retrans, tcpi_fackets;
  std::uint32_t tcpi_last_data_sent, tcpi_last_ack_sent, tcpi_last_data_recv, tcpi_last_ack_recv;
  std::uint32_t tcpi_pmtu, tcpi_rcv_ssthresh, tcpi_rtt, tcpi_rttvar, tcpi_snd_ssthresh, tcpi_snd_cwnd;
  std::uint32_t tcpi_advmss, tcpi_reordering, tcpi_rcv_rtt, tcpi_rcv_space, tcpi_total_retrans;
  std::uint64_t tcpi_pacing_rate, tcpi_max_pacing_rate, tcpi_bytes_acked, tcpi_bytes_received;
  std::uint32_t tcpi_segs_out, tcpi_segs_in, tcpi_notsent_bytes, tcpi_min_rtt;
  std::uint32_t tcpi_data_segs_in, tcpi_data_segs_out;
  std::uint64_t tcpi_delivery_rate, tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited;
  std::uint32_t tcpi_delivered, tcpi_delivered_ce;
  std::uint64_t tcpi_bytes_sent, tcpi_bytes_retrans;
  std::uint32_t tcpi_dsack_dups, tcpi_reord_seen, tcpi_rcv_ooopack, tcpi_snd_wnd;
};

/// Fills Linux's struct tcp_info from the engine's snapshot. Linux counts cwnd, ssthresh and
/// unacked in segments; the engine in bytes.
[[nodiscard]] LinuxTcpInfo to_linux_tcp_info(const TcpInfo& in);

/// A sockaddr given to bind/connect: Errc::inval when too short, Errc::op_not_supp (the caller
/// maps it to EAFNOSUPPORT) for another family.
[[nodiscard]] Result<Endpoint> endpoint_from(const sockaddr* sa, socklen_t len);
/// Writes `ep` to the caller's buffer the way the kernel does: truncated to *len, *len set to the
/// full size.
void endpoint_to(const Endpoint& ep, sockaddr* sa, socklen_t* len);

/// Where a socket belongs, decided at hand-over.
enum class Route : std::uint8_t { kernel, engine };

struct EngineAddrs {
  const Ipv4Cidr* addrs = nullptr;
  std::size_t n = 0;
  [[nodiscard]] bool is_local(Ipv4Addr a) const;
  [[nodiscard]] bool routes(Ipv4Addr a) const;
};

/// bind(): the wildcard address and the engine's own addresses go to the engine; loopback and
/// every other address stay in the kernel.
[[nodiscard]] Route route_for_bind(const EngineAddrs& e, Ipv4Addr a);
/// connect(): destinations on the engine's subnets (or its own addresses) go to the engine.
[[nodiscard]] Route route_for_connect(const EngineAddrs& e, Ipv4Addr a);

/// struct timeval -> microseconds, with Linux's checks (EDOM for tv_usec out of range):
/// 0 = wait forever, -1 = never wait (a negative tv_sec).
[[nodiscard]] Result<std::int64_t> timeval_to_us(const void* optval, socklen_t optlen);

}  // namespace pno::shim
