// getsockopt/setsockopt, fcntl and ioctl: values read back, errno for bad input, and the behaviour
// each option promises (timeouts, linger RST, keepalive, address reuse, TCP_INFO).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

void set_int(int fd, int level, int opt, int v) {
  EXPECT_EQ(::setsockopt(fd, level, opt, &v, sizeof v), 0) << errname(errno);
}

TEST(Sockopt, SocketIdentity) {
  Fd s = tcp_socket();
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_TYPE), SOCK_STREAM);
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_DOMAIN), AF_INET);
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP);
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_ACCEPTCONN), 0);
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_ERROR), 0);
}

TEST(Sockopt, NodelayRoundTripsAndSmallWritesFlow) {
  Peer p;
  Conn c = connect_to_peer(p);
  EXPECT_EQ(get_int_opt(c.fd, IPPROTO_TCP, TCP_NODELAY), 0);
  set_int(c.fd, IPPROTO_TCP, TCP_NODELAY, 1);
  EXPECT_EQ(get_int_opt(c.fd, IPPROTO_TCP, TCP_NODELAY), 1);
  for (char ch : std::string("nodelay")) ASSERT_EQ(::send(c.fd, &ch, 1, 0), 1);
  auto r = p.call("readhex " + id(c) + " 7 5000");
  EXPECT_EQ(r[1], hex("nodelay"));
  set_int(c.fd, IPPROTO_TCP, TCP_NODELAY, 0);
  EXPECT_EQ(get_int_opt(c.fd, IPPROTO_TCP, TCP_NODELAY), 0);
}

TEST(Sockopt, KeepaliveDefaultsAndValuesRoundTrip) {
  Fd s = tcp_socket();
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_KEEPALIVE), 0);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPIDLE), 7200);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPINTVL), 75);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPCNT), 9);
  set_int(s, SOL_SOCKET, SO_KEEPALIVE, 1);
  set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, 30);
  set_int(s, IPPROTO_TCP, TCP_KEEPINTVL, 5);
  set_int(s, IPPROTO_TCP, TCP_KEEPCNT, 3);
  EXPECT_EQ(get_int_opt(s, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPIDLE), 30);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPINTVL), 5);
  EXPECT_EQ(get_int_opt(s, IPPROTO_TCP, TCP_KEEPCNT), 3);
}

TEST(Sockopt, KeepaliveOutOfRangeIsEINVAL) {
  Fd s = tcp_socket();
  for (auto [opt, v] : {std::pair{TCP_KEEPIDLE, 0}, {TCP_KEEPIDLE, 40000}, {TCP_KEEPINTVL, 0}, {TCP_KEEPCNT, 0},
                        {TCP_KEEPCNT, 200}}) {
    errno = 0;
    EXPECT_EQ(::setsockopt(s, IPPROTO_TCP, opt, &v, sizeof v), -1) << opt << "=" << v;
    EXPECT_EQ(errno, EINVAL) << opt << "=" << v;
  }
}

TEST(Sockopt, KeepaliveDetectsAVanishedPeerWithETIMEDOUT) {
  Peer p;
  Conn c = connect_to_peer(p);
  sockaddr_in them{};
  socklen_t len = sizeof them;
  ASSERT_EQ(::getpeername(c.fd, sa(them), &len), 0);
  set_int(c.fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  set_int(c.fd, IPPROTO_TCP, TCP_KEEPIDLE, 1);
  set_int(c.fd, IPPROTO_TCP, TCP_KEEPINTVL, 1);
  set_int(c.fd, IPPROTO_TCP, TCP_KEEPCNT, 2);
  std::string port = std::to_string(port_of(them));
  p.call("drop " + port + " on");
  auto t0 = std::chrono::steady_clock::now();
  short ev = poll_one(c.fd, POLLIN, 20000);
  long took = ms_since(t0);
  p.call("drop " + port + " off");
  EXPECT_TRUE(ev & POLLERR) << "no error within 20 s (revents " << ev << ")";
  EXPECT_GE(took, 1500) << "gave up before idle + probes";
  char b;
  errno = 0;
  EXPECT_EQ(::read(c.fd, &b, 1), -1);
  EXPECT_EQ(errno, ETIMEDOUT) << errname(errno);
}

TEST(Sockopt, ReuseaddrAllowsBindingAPortInTimeWait) {
  Peer p;
  auto [l, port] = listen_local();
  set_int(l, SOL_SOCKET, SO_REUSEADDR, 1);  // accepted sockets inherit it, so their TIME_WAIT does
  p.post("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Fd c(::accept(l, nullptr, nullptr));
  ASSERT_GE(c.get(), 0);
  auto r = p.reply();
  ASSERT_EQ(r[0], "ok");
  std::string cid = r[1];
  // Active close here: after the peer's FIN this side sits in TIME_WAIT (RFC 9293 §3.6).
  c.reset();
  EXPECT_EQ(p.call("wait " + cid + " 5000")[1], "eof");
  p.call("close " + cid);
  l.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  auto a = make_addr(env().local_ip, port);
  Fd plain = tcp_socket();
  errno = 0;
  EXPECT_EQ(::bind(plain, sa(a), sizeof a), -1) << "the TIME_WAIT connection holds the port";
  EXPECT_EQ(errno, EADDRINUSE);
  Fd reuse = tcp_socket();
  set_int(reuse, SOL_SOCKET, SO_REUSEADDR, 1);
  EXPECT_EQ(get_int_opt(reuse, SOL_SOCKET, SO_REUSEADDR), 1);
  EXPECT_EQ(::bind(reuse, sa(a), sizeof a), 0) << errname(errno);
  EXPECT_EQ(::listen(reuse, 4), 0) << errname(errno);
}

TEST(Sockopt, ReuseportSharesAListeningPort) {
  Peer p;
  Fd a1 = tcp_socket(SOCK_NONBLOCK), a2 = tcp_socket(SOCK_NONBLOCK), a3 = tcp_socket();
  set_int(a1, SOL_SOCKET, SO_REUSEPORT, 1);
  set_int(a2, SOL_SOCKET, SO_REUSEPORT, 1);
  EXPECT_EQ(get_int_opt(a2, SOL_SOCKET, SO_REUSEPORT), 1);
  auto a = make_addr(env().local_ip, 0);
  ASSERT_EQ(::bind(a1, sa(a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(a1, sa(a), &len), 0);
  ASSERT_EQ(::listen(a1, 16), 0);
  ASSERT_EQ(::bind(a2, sa(a), sizeof a), 0) << errname(errno);
  ASSERT_EQ(::listen(a2, 16), 0);
  errno = 0;
  EXPECT_EQ(::bind(a3, sa(a), sizeof a), -1) << "a socket without SO_REUSEPORT joined";
  EXPECT_EQ(errno, EADDRINUSE);
  const int n = 8;
  for (int i = 0; i < n; ++i) p.call("connect " + env().local_ip + " " + std::to_string(port_of(a)) + " 5000");
  int accepted = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (accepted < n && ms_since(t0) < 5000) {
    for (int l : {a1.get(), a2.get()}) {
      int c = ::accept(l, nullptr, nullptr);
      if (c >= 0) {
        ++accepted;
        ::close(c);
      }
    }
    ::usleep(1000);
  }
  EXPECT_EQ(accepted, n);
}

TEST(Sockopt, BufferSizesAreReadableAndSettable) {
  Peer p;
  Conn c = connect_to_peer(p);
  EXPECT_GT(get_int_opt(c.fd, SOL_SOCKET, SO_RCVBUF), 0);
  EXPECT_GT(get_int_opt(c.fd, SOL_SOCKET, SO_SNDBUF), 0);
  set_int(c.fd, SOL_SOCKET, SO_RCVBUF, 65536);
  set_int(c.fd, SOL_SOCKET, SO_SNDBUF, 65536);
  EXPECT_GE(get_int_opt(c.fd, SOL_SOCKET, SO_RCVBUF), 65536);
  EXPECT_GE(get_int_opt(c.fd, SOL_SOCKET, SO_SNDBUF), 65536);
  // Still moves data both ways.
  Peer sender;
  sender.post("send " + id(c) + " 1000000");
  auto got = read_exact(c.fd, 1000000, 20000);
  EXPECT_TRUE(check_pattern(got, 0));
  sender.reply();
}

TEST(Sockopt, RcvtimeoEndsABlockingReadWithEAGAIN) {
  Peer p;
  Conn c = connect_to_peer(p);
  timeval tv{0, 200000};
  ASSERT_EQ(::setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  timeval got{};
  socklen_t len = sizeof got;
  ASSERT_EQ(::getsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &got, &len), 0);
  EXPECT_EQ(got.tv_sec, 0);
  EXPECT_NEAR(got.tv_usec, 200000, 10000);
  auto t0 = std::chrono::steady_clock::now();
  char b[8];
  errno = 0;
  EXPECT_EQ(::recv(c.fd, b, sizeof b, 0), -1);
  EXPECT_EQ(errno, EAGAIN);
  long took = ms_since(t0);
  EXPECT_GE(took, 180);
  EXPECT_LT(took, 2000);
  // Data that arrives within the timeout is returned.
  Peer later;
  later.post("sendchunks " + id(c) + " 2 1 50");
  EXPECT_EQ(::recv(c.fd, b, 1, 0), 1);
  EXPECT_EQ(::recv(c.fd, b, 1, 0), 1);
  later.reply();
}

TEST(Sockopt, SndtimeoGivesAPartialWriteThenEAGAIN) {
  Peer p;
  Conn c = connect_to_peer(p);  // the peer never reads
  timeval tv{0, 300000};
  ASSERT_EQ(::setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  std::vector<std::uint8_t> big(32 << 20);
  auto t0 = std::chrono::steady_clock::now();
  ssize_t k = ::send(c.fd, big.data(), big.size(), MSG_NOSIGNAL);
  long took = ms_since(t0);
  EXPECT_GT(k, 0) << errname(errno);
  EXPECT_LT(k, static_cast<ssize_t>(big.size()));
  EXPECT_GE(took, 250);
  // Later sends wait out the timeout too: each returns what found room meanwhile (a stack with more
  // than one buffer level may free a little), and once nothing does, EAGAIN.
  bool eagain = false;
  for (int i = 0; i < 20 && !eagain; ++i) {
    t0 = std::chrono::steady_clock::now();
    errno = 0;
    k = ::send(c.fd, big.data(), big.size(), MSG_NOSIGNAL);
    took = ms_since(t0);
    EXPECT_GE(took, 250) << "send " << i << " returned " << k << " before the timeout";
    EXPECT_LT(took, 3000);
    if (k < 0) {
      EXPECT_EQ(errno, EAGAIN) << errname(errno);
      eagain = true;
    }
  }
  EXPECT_TRUE(eagain) << "no EAGAIN although the peer never reads";
}

TEST(Sockopt, LingerDefaultsOffAndRoundTrips) {
  Fd s = tcp_socket();
  linger l{7, 7};
  socklen_t len = sizeof l;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &len), 0);
  EXPECT_EQ(len, sizeof l);
  EXPECT_EQ(l.l_onoff, 0);
  EXPECT_EQ(l.l_linger, 0);
  linger set{1, 5};
  ASSERT_EQ(::setsockopt(s, SOL_SOCKET, SO_LINGER, &set, sizeof set), 0);
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &len), 0);
  EXPECT_NE(l.l_onoff, 0);
  EXPECT_EQ(l.l_linger, 5);
}

TEST(Sockopt, LingerZeroCloseResetsThePeer) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::send(c.fd, "data", 4, 0), 4);
  linger l{1, 0};
  ASSERT_EQ(::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
  c.fd.reset();
  // The peer may first see the data; after it, the RST.
  auto r = p.call("recv " + id(c) + " 100 5000", true);
  if (r[0] == "ok") r = p.call("wait " + id(c) + " 5000", true);
  EXPECT_EQ(r[1], "ECONNRESET");
}

TEST(Sockopt, TcpInfoDescribesTheConnection) {
  Peer p;
  Conn c = connect_to_peer(p);
  Peer echo;
  echo.post("echo " + id(c) + " 10000");
  auto data = pattern(100000);
  write_all(c.fd, data.data(), data.size());
  auto back = read_exact(c.fd, data.size());
  EXPECT_TRUE(back == data);
  tcp_info ti{};
  socklen_t len = sizeof ti;
  ASSERT_EQ(::getsockopt(c.fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
  EXPECT_GT(len, 0u);
  EXPECT_LE(len, sizeof ti);
  EXPECT_EQ(ti.tcpi_state, TCP_ESTABLISHED);
  EXPECT_GE(ti.tcpi_snd_mss, 500u);
  EXPECT_LE(ti.tcpi_snd_mss, 1460u);
  EXPECT_GT(ti.tcpi_rcv_mss, 0u);
  EXPECT_GT(ti.tcpi_rtt, 0u);
  EXPECT_GT(ti.tcpi_rto, 0u);
  EXPECT_GT(ti.tcpi_snd_cwnd, 0u);
  // Linux peers offer all three, so the connection has them (RFC 7323, RFC 2018).
  EXPECT_TRUE(ti.tcpi_options & TCPI_OPT_TIMESTAMPS);
  EXPECT_TRUE(ti.tcpi_options & TCPI_OPT_SACK);
  EXPECT_TRUE(ti.tcpi_options & TCPI_OPT_WSCALE);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  EXPECT_EQ(echo.reply()[0], "ok");
}

TEST(Sockopt, TcpInfoStatesOfListenerAndHalfClosed) {
  auto [l, port] = listen_local();
  tcp_info ti{};
  socklen_t len = sizeof ti;
  ASSERT_EQ(::getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
  EXPECT_EQ(ti.tcpi_state, TCP_LISTEN);
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("shutwr " + id(c));
  char b;
  EXPECT_EQ(::read(c.fd, &b, 1), 0);
  ASSERT_EQ(::getsockopt(c.fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
  EXPECT_EQ(ti.tcpi_state, TCP_CLOSE_WAIT);
  // A short buffer gets the first bytes.
  std::uint8_t first = 0xff;
  socklen_t one = 1;
  ASSERT_EQ(::getsockopt(c.fd, IPPROTO_TCP, TCP_INFO, &first, &one), 0);
  EXPECT_EQ(one, 1u);
  EXPECT_EQ(first, TCP_CLOSE_WAIT);
}

TEST(Sockopt, MaxsegOfAConnection) {
  Peer p;
  Conn c = connect_to_peer(p);
  int mss = get_int_opt(c.fd, IPPROTO_TCP, TCP_MAXSEG);
  EXPECT_GE(mss, 500);
  EXPECT_LE(mss, 1460);
}

TEST(Sockopt, UnknownOptionIsENOPROTOOPT) {
  Fd s = tcp_socket();
  int v = 1;
  socklen_t len = sizeof v;
  errno = 0;
  EXPECT_EQ(::getsockopt(s, SOL_SOCKET, 9999, &v, &len), -1);
  EXPECT_EQ(errno, ENOPROTOOPT);
  errno = 0;
  EXPECT_EQ(::setsockopt(s, IPPROTO_TCP, 9999, &v, sizeof v), -1);
  EXPECT_EQ(errno, ENOPROTOOPT);
}

TEST(Sockopt, ShortOptionValueIsEINVAL) {
  Fd s = tcp_socket();
  int v = 1;
  errno = 0;
  EXPECT_EQ(::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, 2), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(::setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &v, 2), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Fcntl, NonblockFlagControlsReads) {
  Peer p;
  Conn c = connect_to_peer(p);
  int fl = ::fcntl(c.fd, F_GETFL);
  ASSERT_GE(fl, 0);
  EXPECT_EQ(fl & O_ACCMODE, O_RDWR);
  EXPECT_FALSE(fl & O_NONBLOCK);
  ASSERT_EQ(::fcntl(c.fd, F_SETFL, fl | O_NONBLOCK), 0);
  EXPECT_TRUE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK);
  char b;
  errno = 0;
  EXPECT_EQ(::read(c.fd, &b, 1), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::fcntl(c.fd, F_SETFL, fl), 0);
  EXPECT_FALSE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK);
  // Blocking again: the read waits for the data.
  Peer later;
  later.post("sendchunks " + id(c) + " 2 1 100");
  EXPECT_EQ(::read(c.fd, &b, 1), 1);
  later.reply();
}

TEST(Fcntl, CloexecFlag) {
  Fd s = tcp_socket();
  EXPECT_EQ(::fcntl(s, F_GETFD), 0);
  ASSERT_EQ(::fcntl(s, F_SETFD, FD_CLOEXEC), 0);
  EXPECT_EQ(::fcntl(s, F_GETFD), FD_CLOEXEC);
}

TEST(Ioctl, FionreadCountsQueuedBytes) {
  Peer p;
  Conn c = connect_to_peer(p);
  int avail = -1;
  ASSERT_EQ(::ioctl(c.fd, FIONREAD, &avail), 0);
  EXPECT_EQ(avail, 0);
  p.call("send " + id(c) + " 123");
  EXPECT_EQ(wait_readable_bytes(c.fd, 123), 123);
  char b[23];
  ASSERT_EQ(::read(c.fd, b, sizeof b), 23);
  ASSERT_EQ(::ioctl(c.fd, FIONREAD, &avail), 0);
  EXPECT_EQ(avail, 100);
}

TEST(Ioctl, FionreadOnListenerIsEINVAL) {
  auto [l, port] = listen_local();
  int avail = 0;
  errno = 0;
  EXPECT_EQ(::ioctl(l, FIONREAD, &avail), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Ioctl, FionbioTogglesNonBlocking) {
  Peer p;
  Conn c = connect_to_peer(p);
  int on = 1;
  ASSERT_EQ(::ioctl(c.fd, FIONBIO, &on), 0);
  EXPECT_TRUE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK);
  char b;
  errno = 0;
  EXPECT_EQ(::recv(c.fd, &b, 1, 0), -1);
  EXPECT_EQ(errno, EAGAIN);
  int off = 0;
  ASSERT_EQ(::ioctl(c.fd, FIONBIO, &off), 0);
  EXPECT_FALSE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK);
}

}  // namespace
}  // namespace pno::semtest
