#include "shim/options.hh"

#include <netinet/tcp.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

namespace pno::shim {

OptInfo classify_opt(int level, int optname) {
  auto eng = [](SockOpt o, bool boolean) { return OptInfo{OptClass::engine_int, o, boolean}; };
  if (level == SOL_SOCKET) {
    switch (optname) {
      case SO_REUSEADDR: return eng(SockOpt::reuseaddr, true);
      case SO_REUSEPORT: return eng(SockOpt::reuseport, true);
      case SO_KEEPALIVE: return eng(SockOpt::keepalive, true);
      case SO_RCVBUF: return eng(SockOpt::rcvbuf, false);
      case SO_SNDBUF: return eng(SockOpt::sndbuf, false);
      case SO_LINGER: return {OptClass::linger};
      case SO_RCVTIMEO_OLD: return {OptClass::rcvtimeo};
      case SO_SNDTIMEO_OLD: return {OptClass::sndtimeo};
      case SO_ERROR: return {OptClass::error};
      case SO_TYPE: return {OptClass::type};
      case SO_DOMAIN: return {OptClass::domain};
      case SO_PROTOCOL: return {OptClass::protocol};
      case SO_ACCEPTCONN: return {OptClass::acceptconn};
      default: return {};
    }
  }
  if (level == IPPROTO_TCP) {
    switch (optname) {
      case TCP_NODELAY: return eng(SockOpt::nodelay, true);
      case TCP_CORK: return eng(SockOpt::cork, true);
      case TCP_KEEPIDLE: return eng(SockOpt::keepidle, false);
      case TCP_KEEPINTVL: return eng(SockOpt::keepintvl, false);
      case TCP_KEEPCNT: return eng(SockOpt::keepcnt, false);
      case TCP_MAXSEG: return eng(SockOpt::maxseg, false);
      case TCP_USER_TIMEOUT: return eng(SockOpt::user_timeout, false);
      case TCP_INFO: return {OptClass::tcp_info};
      case TCP_QUICKACK: return {OptClass::quickack};
      default: return {};
    }
  }
  return {};
}

LinuxTcpInfo to_linux_tcp_info(const TcpInfo& in) {
  LinuxTcpInfo out{};
  out.tcpi_state = in.state;  // the stack numbers its states as Linux does (TCP_ESTABLISHED = 1...)
  out.tcpi_retransmits = static_cast<std::uint8_t>(std::min<std::uint32_t>(in.retransmits, 255));
  std::uint8_t opts = 0;
  if (in.timestamps) opts |= TCPI_OPT_TIMESTAMPS;
  if (in.sack) opts |= TCPI_OPT_SACK;
  if (in.snd_wscale != 0 || in.rcv_wscale != 0) opts |= TCPI_OPT_WSCALE;
  out.tcpi_options = opts;
  out.tcpi_wscale = static_cast<std::uint8_t>((in.snd_wscale & 0xf) | ((in.rcv_wscale & 0xf) << 4));
  out.tcpi_rto = in.rto_us;
  out.tcpi_snd_mss = in.snd_mss;
  out.tcpi_rcv_mss = in.rcv_mss;
  std::uint32_t mss = in.snd_mss != 0 ? in.snd_mss : 536;
  auto segs = [mss](std::uint32_t bytes) { return (bytes + mss - 1) / mss; };
  out.tcpi_unacked = segs(in.unacked);
  out.tcpi_rtt = in.rtt_us;
  out.tcpi_rttvar = in.rttvar_us;
  out.tcpi_snd_ssthresh = in.snd_ssthresh >= 0x7fffffffu ? 0x7fffffffu : in.snd_ssthresh / mss;
  out.tcpi_snd_cwnd = in.snd_cwnd / mss;
  out.tcpi_advmss = in.rcv_mss;
  out.tcpi_reordering = 3;
  out.tcpi_rcv_space = in.rcv_wnd;
  out.tcpi_total_retrans = in.total_retrans;
  out.tcpi_bytes_acked = in.bytes_acked;
  out.tcpi_bytes_received = in.bytes_received;
  out.tcpi_snd_wnd = in.snd_wnd;
  return out;
}

Result<Endpoint> endpoint_from(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) return Errc::inval;
  sa_family_t fam;
  std::memcpy(&fam, sa, sizeof fam);
  if (fam != AF_INET) return Errc::op_not_supp;
  if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) return Errc::inval;
  sockaddr_in sin;
  std::memcpy(&sin, sa, sizeof sin);
  return Endpoint{Ipv4Addr{ntohl(sin.sin_addr.s_addr)}, ntohs(sin.sin_port)};
}

void endpoint_to(const Endpoint& ep, sockaddr* sa, socklen_t* len) {
  if (sa == nullptr || len == nullptr) return;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(ep.port);
  sin.sin_addr.s_addr = htonl(ep.addr.v);
  if (*len > 0) {
    std::memcpy(sa, &sin, std::min<std::size_t>(static_cast<std::size_t>(*len), sizeof sin));
  }
  *len = sizeof sin;
}

bool EngineAddrs::is_local(Ipv4Addr a) const {
  return std::any_of(addrs, addrs + n, [a](const Ipv4Cidr& c) { return c.addr == a; });
}

bool EngineAddrs::routes(Ipv4Addr a) const {
  return std::any_of(addrs, addrs + n, [a](const Ipv4Cidr& c) { return c.contains(a); });
}

Route route_for_bind(const EngineAddrs& e, Ipv4Addr a) {
  if (a.is_any() || e.is_local(a)) return Route::engine;
  return Route::kernel;
}

Route route_for_connect(const EngineAddrs& e, Ipv4Addr a) {
  if (a.is_loopback() || a.is_any() || a.is_multicast() || a == Ipv4Addr::broadcast()) return Route::kernel;
  if (e.is_local(a) || e.routes(a)) return Route::engine;
  return Route::kernel;
}

Result<std::int64_t> timeval_to_us(const void* optval, socklen_t optlen) {
  if (optval == nullptr) return Errc::inval;  // the kernel answers EFAULT; caller maps
  if (optlen < static_cast<socklen_t>(sizeof(timeval))) return Errc::inval;
  timeval tv;
  std::memcpy(&tv, optval, sizeof tv);
  if (tv.tv_usec < 0 || tv.tv_usec >= 1000000) return static_cast<Errc>(EDOM);
  // net/core/sock.c sock_set_timeout(): a negative time means "do not wait at all", {0, 0}
  // means "wait forever". -1 encodes the first, 0 the second.
  if (tv.tv_sec < 0) return std::int64_t{-1};
  std::int64_t us = static_cast<std::int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  return us;
}

}  // namespace pno::shim
