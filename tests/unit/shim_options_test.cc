// Translation between the Linux socket API and the stack: options, addresses, tcp_info, and the
// offload decision at bind/connect.
#include <gtest/gtest.h>

#include <netinet/tcp.h>
#include <sys/time.h>

#include <cstddef>
#include <cstring>

#include "shim/options.hh"

namespace pno::shim {
namespace {

TEST(ShimOptions, EngineOptionsMapToTheirSockOpt) {
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_NODELAY).cls, OptClass::engine_int);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_NODELAY).opt, SockOpt::nodelay);
  EXPECT_TRUE(classify_opt(IPPROTO_TCP, TCP_NODELAY).boolean);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_REUSEADDR).opt, SockOpt::reuseaddr);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_REUSEPORT).opt, SockOpt::reuseport);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_KEEPALIVE).opt, SockOpt::keepalive);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_KEEPIDLE).opt, SockOpt::keepidle);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_KEEPINTVL).opt, SockOpt::keepintvl);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_KEEPCNT).opt, SockOpt::keepcnt);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_RCVBUF).opt, SockOpt::rcvbuf);
  EXPECT_FALSE(classify_opt(SOL_SOCKET, SO_RCVBUF).boolean);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_SNDBUF).opt, SockOpt::sndbuf);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_MAXSEG).opt, SockOpt::maxseg);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_LINGER).cls, OptClass::linger);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_RCVTIMEO).cls, OptClass::rcvtimeo);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_SNDTIMEO).cls, OptClass::sndtimeo);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_ERROR).cls, OptClass::error);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_ACCEPTCONN).cls, OptClass::acceptconn);
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_INFO).cls, OptClass::tcp_info);
}

TEST(ShimOptions, UnknownOptionsAreUnsupportedNotIgnored) {
  EXPECT_EQ(classify_opt(IPPROTO_TCP, TCP_CONGESTION).cls, OptClass::unsupported);
  EXPECT_EQ(classify_opt(IPPROTO_IP, IP_TOS).cls, OptClass::unsupported);
  EXPECT_EQ(classify_opt(SOL_SOCKET, SO_BINDTODEVICE).cls, OptClass::unsupported);
  EXPECT_EQ(classify_opt(12345, 1).cls, OptClass::unsupported);
}

TEST(ShimOptions, TcpInfoUsesLinuxLayoutAndSegmentUnits) {
  // Offsets of include/uapi/linux/tcp.h that tools (ss, iperf3) read.
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_rto), 8u);
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_rtt), 68u);
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_snd_cwnd), 80u);
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_total_retrans), 100u);
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_bytes_acked), 120u);
  EXPECT_EQ(offsetof(LinuxTcpInfo, tcpi_snd_wnd), 228u);
  // glibc's struct tcp_info agrees on the common prefix.
  EXPECT_EQ(offsetof(tcp_info, tcpi_rtt), offsetof(LinuxTcpInfo, tcpi_rtt));
  EXPECT_EQ(offsetof(tcp_info, tcpi_total_retrans), offsetof(LinuxTcpInfo, tcpi_total_retrans));

  TcpInfo in;
  in.state = 1;
  in.snd_mss = 1448;
  in.snd_cwnd = 10 * 1448;
  in.snd_ssthresh = 20 * 1448;
  in.unacked = 3 * 1448 - 10;
  in.rtt_us = 250;
  in.rto_us = 201000;
  in.timestamps = true;
  in.sack = true;
  in.snd_wscale = 7;
  in.rcv_wscale = 9;
  in.total_retrans = 4;
  in.bytes_acked = 1 << 20;
  in.snd_wnd = 65535;
  LinuxTcpInfo li = to_linux_tcp_info(in);
  EXPECT_EQ(li.tcpi_state, 1);  // TCP_ESTABLISHED
  EXPECT_EQ(li.tcpi_snd_cwnd, 10u);
  EXPECT_EQ(li.tcpi_snd_ssthresh, 20u);
  EXPECT_EQ(li.tcpi_unacked, 3u);
  EXPECT_EQ(li.tcpi_rtt, 250u);
  EXPECT_EQ(li.tcpi_rto, 201000u);
  EXPECT_EQ(li.tcpi_options, TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE);
  EXPECT_EQ(li.tcpi_wscale & 0xf, 7);
  EXPECT_EQ(li.tcpi_wscale >> 4, 9);
  EXPECT_EQ(li.tcpi_total_retrans, 4u);
  EXPECT_EQ(li.tcpi_bytes_acked, 1u << 20);
  EXPECT_EQ(li.tcpi_snd_wnd, 65535u);
}

TEST(ShimOptions, SockaddrParsingChecksFamilyAndLength) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(6379);
  sin.sin_addr.s_addr = htonl(0xC6120001);  // 198.18.0.1
  Result<Endpoint> ep = endpoint_from(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  ASSERT_TRUE(ep);
  EXPECT_EQ((*ep).port, 6379);
  EXPECT_EQ((*ep).addr, Ipv4Addr::from_octets(198, 18, 0, 1));
  EXPECT_EQ(endpoint_from(reinterpret_cast<sockaddr*>(&sin), sizeof sin - 1).error(), Errc::inval);
  sin.sin_family = AF_INET6;
  EXPECT_EQ(endpoint_from(reinterpret_cast<sockaddr*>(&sin), sizeof sin).error(), Errc::op_not_supp);
}

TEST(ShimOptions, SockaddrOutputTruncatesAndReportsFullLength) {
  Endpoint ep{Ipv4Addr::from_octets(198, 18, 0, 2), 80};
  sockaddr_in sin{};
  socklen_t len = sizeof sin;
  endpoint_to(ep, reinterpret_cast<sockaddr*>(&sin), &len);
  EXPECT_EQ(len, sizeof sin);
  EXPECT_EQ(sin.sin_family, AF_INET);
  EXPECT_EQ(ntohs(sin.sin_port), 80);
  EXPECT_EQ(ntohl(sin.sin_addr.s_addr), ep.addr.v);
  unsigned char small[4];
  std::memset(small, 0xee, sizeof small);
  len = 2;
  endpoint_to(ep, reinterpret_cast<sockaddr*>(small), &len);
  EXPECT_EQ(len, sizeof(sockaddr_in));  // the kernel reports the size it would have written
  EXPECT_EQ(small[2], 0xee);            // and writes no more than asked
}

TEST(ShimOptions, OffloadDecisionFollowsTheEngineAddresses) {
  Ipv4Cidr a[1] = {{Ipv4Addr::from_octets(198, 18, 0, 1), 24}};
  EngineAddrs e{a, 1};
  EXPECT_EQ(route_for_bind(e, Ipv4Addr::any()), Route::engine);  // wildcard: the engine's
  EXPECT_EQ(route_for_bind(e, Ipv4Addr::from_octets(198, 18, 0, 1)), Route::engine);
  EXPECT_EQ(route_for_bind(e, Ipv4Addr::from_octets(127, 0, 0, 1)), Route::kernel);
  EXPECT_EQ(route_for_bind(e, Ipv4Addr::from_octets(198, 18, 0, 7)), Route::kernel);  // not ours
  EXPECT_EQ(route_for_connect(e, Ipv4Addr::from_octets(198, 18, 0, 2)), Route::engine);
  EXPECT_EQ(route_for_connect(e, Ipv4Addr::from_octets(198, 18, 0, 1)), Route::engine);
  EXPECT_EQ(route_for_connect(e, Ipv4Addr::from_octets(127, 0, 0, 1)), Route::kernel);
  EXPECT_EQ(route_for_connect(e, Ipv4Addr::from_octets(198, 18, 1, 2)), Route::kernel);  // other subnet
  EXPECT_EQ(route_for_connect(e, Ipv4Addr::from_octets(10, 0, 0, 1)), Route::kernel);
  EngineAddrs none{nullptr, 0};
  EXPECT_EQ(route_for_connect(none, Ipv4Addr::from_octets(198, 18, 0, 2)), Route::kernel);
}

TEST(ShimOptions, TimevalFollowsSockSetTimeout) {
  timeval tv{1, 500000};
  EXPECT_EQ(*timeval_to_us(&tv, sizeof tv), 1500000);
  tv = {0, 0};
  EXPECT_EQ(*timeval_to_us(&tv, sizeof tv), 0);  // wait forever
  tv = {-1, 0};
  EXPECT_EQ(*timeval_to_us(&tv, sizeof tv), -1);  // never wait
  tv = {0, 1000000};
  EXPECT_EQ(timeval_to_us(&tv, sizeof tv).error(), static_cast<Errc>(EDOM));
  EXPECT_EQ(timeval_to_us(&tv, sizeof tv - 1).error(), Errc::inval);
}

}  // namespace
}  // namespace pno::shim
