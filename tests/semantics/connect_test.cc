// socket, socketpair, bind, listen, accept, accept4, connect (blocking and EINPROGRESS),
// getsockname, getpeername, shutdown, close: return values and errno as Linux gives them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

TEST(Socket, CreatesStreamSocketWithFlags) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  ASSERT_GE(s.get(), 0) << errname(errno);
  EXPECT_TRUE(::fcntl(s, F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(::fcntl(s, F_GETFD), FD_CLOEXEC);
  Fd b(::socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_GE(b.get(), 0);
  EXPECT_FALSE(::fcntl(b, F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(::fcntl(b, F_GETFD), 0);
}

TEST(Socket, WrongProtocolIsEPROTONOSUPPORT) {
  errno = 0;
  EXPECT_EQ(::socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), -1);
  EXPECT_EQ(errno, EPROTONOSUPPORT);
}

TEST(Socket, BadTypeFlagsAreEINVAL) {
  errno = 0;
  EXPECT_EQ(::socket(AF_INET, SOCK_STREAM | 0x40000000, 0), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Socketpair, UnixPairWorksInetPairIsEOPNOTSUPP) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Fd a(sv[0]), b(sv[1]);
  EXPECT_EQ(::write(a, "x", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(b, &c, 1), 1);
  EXPECT_EQ(c, 'x');
  errno = 0;
  EXPECT_EQ(::socketpair(AF_INET, SOCK_STREAM, 0, sv), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

TEST(Bind, EphemeralPortShowsInGetsockname) {
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, 0);
  ASSERT_EQ(::bind(s, sa(a), sizeof a), 0) << errname(errno);
  sockaddr_in got{};
  socklen_t len = sizeof got;
  ASSERT_EQ(::getsockname(s, sa(got), &len), 0);
  EXPECT_EQ(len, sizeof got);
  EXPECT_EQ(got.sin_family, AF_INET);
  EXPECT_EQ(ip_of(got), env().local_ip);
  EXPECT_NE(port_of(got), 0);
}

TEST(Bind, SecondBindOfSameSocketIsEINVAL) {
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, 0);
  ASSERT_EQ(::bind(s, sa(a), sizeof a), 0);
  errno = 0;
  EXPECT_EQ(::bind(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Bind, PortOfAListenerIsEADDRINUSE) {
  auto [l, port] = listen_local();
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, port);
  errno = 0;
  EXPECT_EQ(::bind(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EADDRINUSE);
}

TEST(Bind, ForeignAddressIsEADDRNOTAVAIL) {
  Fd s = tcp_socket();
  auto a = make_addr("198.18.250.250", 0);
  errno = 0;
  EXPECT_EQ(::bind(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EADDRNOTAVAIL);
}

TEST(Bind, ShortAddressIsEINVAL) {
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, 0);
  errno = 0;
  EXPECT_EQ(::bind(s, sa(a), sizeof a - 4), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Bind, WrongFamilyIsEAFNOSUPPORT) {
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, 0);
  a.sin_family = AF_INET6;
  errno = 0;
  EXPECT_EQ(::bind(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EAFNOSUPPORT);
}

TEST(Getsockname, UnboundSocketIsAnyAddressPortZero) {
  Fd s = tcp_socket();
  sockaddr_in got{};
  got.sin_port = 1234;
  socklen_t len = sizeof got;
  ASSERT_EQ(::getsockname(s, sa(got), &len), 0);
  EXPECT_EQ(got.sin_family, AF_INET);
  EXPECT_EQ(got.sin_addr.s_addr, 0u);
  EXPECT_EQ(got.sin_port, 0);
}

TEST(Getsockname, TruncatesToTheGivenLengthAndReportsTheFullOne) {
  auto [l, port] = listen_local();
  char buf[4] = {};
  socklen_t len = sizeof buf;
  ASSERT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(buf), &len), 0);
  EXPECT_EQ(len, sizeof(sockaddr_in));
  sa_family_t fam;
  std::memcpy(&fam, buf, sizeof fam);
  EXPECT_EQ(fam, AF_INET);
  std::uint16_t p;
  std::memcpy(&p, buf + 2, sizeof p);
  EXPECT_EQ(ntohs(p), port);
}

/// getsockname() of `fd`, failing the test if it fails.
sockaddr_in name_of(int fd) {
  sockaddr_in got{};
  socklen_t len = sizeof got;
  EXPECT_EQ(::getsockname(fd, sa(got), &len), 0) << errname(errno);
  EXPECT_EQ(len, sizeof got);
  EXPECT_EQ(got.sin_family, AF_INET);
  return got;
}

/// The peer connects to local_ip:port; the accepted socket's name is the concrete local address.
void expect_accepted_name_is_local(Peer& p, int l, std::uint16_t port) {
  p.post("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Fd c(::accept(l, nullptr, nullptr));
  ASSERT_GE(c.get(), 0) << errname(errno);
  ASSERT_EQ(p.reply()[0], "ok");
  sockaddr_in me = name_of(c);
  EXPECT_EQ(ip_of(me), env().local_ip);
  EXPECT_EQ(port_of(me), port);
}

TEST(Getsockname, WildcardListenerIsAnyAddressItsConnectionsTheLocalOne) {
  Peer p;
  Fd l = tcp_socket();
  auto any = make_addr("0.0.0.0", 0);
  ASSERT_EQ(::bind(l, sa(any), sizeof any), 0) << errname(errno);
  ASSERT_EQ(::listen(l, 16), 0) << errname(errno);
  sockaddr_in got = name_of(l);
  EXPECT_EQ(got.sin_addr.s_addr, htonl(INADDR_ANY)) << ip_of(got);
  const std::uint16_t port = port_of(got);
  ASSERT_NE(port, 0);
  expect_accepted_name_is_local(p, l, port);
  got = name_of(l);
  EXPECT_EQ(got.sin_addr.s_addr, htonl(INADDR_ANY)) << "after accept: " << ip_of(got);
  EXPECT_EQ(port_of(got), port);
}

TEST(Getsockname, ListenWithoutBindIsAnyAddressAndAnEphemeralPort) {
  Peer p;
  Fd l = tcp_socket();
  ASSERT_EQ(::listen(l, 16), 0) << errname(errno);
  sockaddr_in got = name_of(l);
  EXPECT_EQ(got.sin_addr.s_addr, htonl(INADDR_ANY)) << ip_of(got);
  const std::uint16_t port = port_of(got);
  ASSERT_NE(port, 0);
  expect_accepted_name_is_local(p, l, port);
}

TEST(Getsockname, ListenerBoundToTheLocalAddressReportsIt) {
  auto [l, port] = listen_local();
  sockaddr_in got = name_of(l);
  EXPECT_EQ(ip_of(got), env().local_ip);
  EXPECT_EQ(port_of(got), port);
}

TEST(Getpeername, UnconnectedIsENOTCONN) {
  Fd s = tcp_socket();
  sockaddr_in got{};
  socklen_t len = sizeof got;
  errno = 0;
  EXPECT_EQ(::getpeername(s, sa(got), &len), -1);
  EXPECT_EQ(errno, ENOTCONN);
}

TEST(Getsockname, NotASocketIsENOTSOCK) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd r(p[0]), w(p[1]);
  sockaddr_in got{};
  socklen_t len = sizeof got;
  errno = 0;
  EXPECT_EQ(::getsockname(r, sa(got), &len), -1);
  EXPECT_EQ(errno, ENOTSOCK);
}

TEST(Listen, AcceptOnNonListeningSocketIsEINVAL) {
  Fd s = tcp_socket();
  auto a = make_addr(env().local_ip, 0);
  ASSERT_EQ(::bind(s, sa(a), sizeof a), 0);
  errno = 0;
  EXPECT_EQ(::accept(s, nullptr, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Listen, ListenTwiceIsFineAndSoAcceptconnSaysSo) {
  auto [l, port] = listen_local();
  EXPECT_EQ(::listen(l, 64), 0);
  int v = 0;
  socklen_t len = sizeof v;
  ASSERT_EQ(::getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &len), 0);
  EXPECT_EQ(v, 1);
}

TEST(Listen, ListenOnConnectedSocketIsEINVAL) {
  Peer p;
  Conn c = connect_to_peer(p);
  errno = 0;
  EXPECT_EQ(::listen(c.fd, 16), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Accept, NonBlockingListenerWithoutConnectionIsEAGAIN) {
  auto [l, port] = listen_local(16, SOCK_NONBLOCK);
  errno = 0;
  EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(Accept, ReportsThePeerAddressAndBothNames) {
  Peer p;
  auto [l, port] = listen_local();
  p.post("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  sockaddr_in from{};
  socklen_t len = sizeof from;
  Fd c(::accept(l, sa(from), &len));
  ASSERT_GE(c.get(), 0) << errname(errno);
  auto r = p.reply();
  ASSERT_EQ(r[0], "ok");
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(len, sizeof from);
  EXPECT_EQ(ip_of(from), env().peer_ip);
  EXPECT_EQ(port_of(from), std::stoi(r[2]));
  sockaddr_in me{}, them{};
  len = sizeof me;
  ASSERT_EQ(::getsockname(c, sa(me), &len), 0);
  EXPECT_EQ(ip_of(me), env().local_ip);
  EXPECT_EQ(port_of(me), port);
  len = sizeof them;
  ASSERT_EQ(::getpeername(c, sa(them), &len), 0);
  EXPECT_EQ(ip_of(them), env().peer_ip);
  EXPECT_EQ(port_of(them), std::stoi(r[2]));
  // The accepted socket does not inherit O_NONBLOCK (Linux; unlike BSD).
  EXPECT_FALSE(::fcntl(c, F_GETFL) & O_NONBLOCK);
}

TEST(Accept, Accept4AppliesFlags) {
  Peer p;
  Conn c = accept_from_peer(p, SOCK_NONBLOCK | SOCK_CLOEXEC);
  EXPECT_TRUE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(::fcntl(c.fd, F_GETFD), FD_CLOEXEC);
}

TEST(Accept, Accept4BadFlagsAreEINVAL) {
  auto [l, port] = listen_local(16, SOCK_NONBLOCK);
  errno = 0;
  EXPECT_EQ(::accept4(l, nullptr, nullptr, 0x4), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Accept, ConnectionsQueuedBeforeAcceptAreAllDelivered) {
  Peer p;
  auto [l, port] = listen_local(16);
  for (int i = 0; i < 4; ++i) p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  for (int i = 0; i < 4; ++i) {
    Fd c(::accept(l, nullptr, nullptr));
    EXPECT_GE(c.get(), 0) << errname(errno);
  }
  ASSERT_EQ(::fcntl(l, F_SETFL, O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
  EXPECT_EQ(errno, EAGAIN);
}

/// Lowers RLIMIT_NOFILE to just above the lowest free descriptor and takes every number below it:
/// the next descriptor the process asks for is EMFILE. Restored on destruction.
class FdTableFull {
 public:
  FdTableFull() {
    EXPECT_EQ(::getrlimit(RLIMIT_NOFILE, &old_), 0);
    const int lowest = ::fcntl(0, F_DUPFD, 0);
    EXPECT_GE(lowest, 0);
    ::close(lowest);
    rlimit low = old_;
    low.rlim_cur = static_cast<rlim_t>(lowest) + 4;
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int k = 0; k < 8; ++k) {
      const int d = ::fcntl(0, F_DUPFD, 0);
      if (d < 0) break;
      held_.emplace_back(d);
    }
    errno = 0;
    EXPECT_EQ(::fcntl(0, F_DUPFD, 0), -1);
    EXPECT_EQ(errno, EMFILE);
  }
  ~FdTableFull() { restore(); }
  FdTableFull(const FdTableFull&) = delete;
  FdTableFull& operator=(const FdTableFull&) = delete;
  /// One number free again.
  void free_one() { held_.pop_back(); }
  void restore() {
    held_.clear();
    ::setrlimit(RLIMIT_NOFILE, &old_);
  }

 private:
  rlimit old_{};
  std::vector<Fd> held_;
};

// Linux reserves the new descriptor before it takes a connection (__sys_accept4_file():
// get_unused_fd_flags, then do_accept): at EMFILE the connection stays queued, so a server that
// retries (nginx, after closing idle connections) loses no client.
TEST(Accept, AtEmfileLeavesTheConnectionQueuedForALaterAccept) {
  Peer p;
  auto [l, port] = listen_local(16);
  auto r = p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  ASSERT_GE(r.size(), 2u);
  Conn c;
  c.cid = std::stoi(r[1]);
  ASSERT_TRUE(poll_one(l, POLLIN, 5000) & POLLIN);
  ASSERT_EQ(::fcntl(l, F_SETFL, O_NONBLOCK), 0);
  {
    FdTableFull full;
    for (int k = 0; k < 3; ++k) {
      errno = 0;
      EXPECT_EQ(::accept4(l, nullptr, nullptr, k == 1 ? SOCK_CLOEXEC : 0), -1);
      EXPECT_EQ(errno, EMFILE) << errname(errno);
    }
    EXPECT_TRUE(poll_one(l, POLLIN, 0) & POLLIN) << "the connection left the queue";
    full.free_one();
    c.fd.reset(::accept(l, nullptr, nullptr));
    ASSERT_GE(c.fd.get(), 0) << errname(errno);
  }
  // The peer saw nothing of the failed attempts (no EOF, no RST), and the connection works.
  auto w = p.call("wait " + id(c) + " 300", true);
  ASSERT_GE(w.size(), 2u);
  EXPECT_EQ(w[1], "ETIMEDOUT") << w[0] << " " << w[1];
  p.call("send " + id(c) + " 100");
  EXPECT_EQ(read_exact(c.fd, 100), pattern(100));
  const auto out = pattern(50);
  write_all(c.fd, out.data(), out.size());
  auto got = p.call("recv " + id(c) + " 50 5000");
  ASSERT_GE(got.size(), 4u);
  EXPECT_EQ(got[1], "50");
  EXPECT_EQ(got[3], "1");
  errno = 0;
  EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(Connect, BlockingConnectSucceedsAndNamesMatch) {
  Peer p;
  auto [lid, port] = p.listen();
  Fd s = tcp_socket();
  auto a = make_addr(env().peer_ip, port);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), 0) << errname(errno);
  auto r = p.call("accept " + std::to_string(lid) + " 5000");
  ASSERT_GE(r.size(), 4u);
  sockaddr_in me{}, them{};
  socklen_t len = sizeof me;
  ASSERT_EQ(::getsockname(s, sa(me), &len), 0);
  EXPECT_EQ(ip_of(me), env().local_ip);
  EXPECT_EQ(r[2], env().local_ip);
  EXPECT_EQ(std::to_string(port_of(me)), r[3]);
  len = sizeof them;
  ASSERT_EQ(::getpeername(s, sa(them), &len), 0);
  EXPECT_EQ(ip_of(them), env().peer_ip);
  EXPECT_EQ(port_of(them), port);
}

TEST(Connect, SecondConnectIsEISCONN) {
  Peer p;
  Conn c = connect_to_peer(p);
  sockaddr_in them{};
  socklen_t len = sizeof them;
  ASSERT_EQ(::getpeername(c.fd, sa(them), &len), 0);
  errno = 0;
  EXPECT_EQ(::connect(c.fd, sa(them), sizeof them), -1);
  EXPECT_EQ(errno, EISCONN);
}

TEST(Connect, NonBlockingIsEINPROGRESSThenWritableWithNoError) {
  Peer p;
  auto [lid, port] = p.listen();
  Fd s = tcp_socket(SOCK_NONBLOCK);
  auto a = make_addr(env().peer_ip, port);
  errno = 0;
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  short ev = poll_one(s, POLLOUT, 5000);
  EXPECT_TRUE(ev & POLLOUT);
  EXPECT_FALSE(ev & (POLLERR | POLLHUP));
  int err = -1;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, 0);
  // Linux: the first connect() after completion reports the outcome (0), later ones EISCONN.
  EXPECT_EQ(::connect(s, sa(a), sizeof a), 0) << errname(errno);
  errno = 0;
  EXPECT_EQ(::connect(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EISCONN);
  p.accept(lid);
}

TEST(Connect, NonBlockingWhileInProgressIsEALREADY) {
  // The peer drops the SYN, so the handshake stays in progress.
  Peer p;
  auto [lid, port] = p.listen();
  p.call("drop " + std::to_string(port) + " on");
  Fd s = tcp_socket(SOCK_NONBLOCK);
  auto a = make_addr(env().peer_ip, port);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  errno = 0;
  EXPECT_EQ(::connect(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EALREADY);
  EXPECT_EQ(poll_one(s, POLLOUT, 100), 0) << "writable before the handshake completed";
  p.call("drop " + std::to_string(port) + " off");
}

TEST(Connect, RefusedNonBlockingReportsSoErrorOnce) {
  Peer p;
  auto [lid, port] = p.listen();
  p.call("closelisten " + std::to_string(lid));
  Fd s = tcp_socket(SOCK_NONBLOCK);
  auto a = make_addr(env().peer_ip, port);
  errno = 0;
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  short ev = poll_one(s, POLLOUT, 5000);
  EXPECT_TRUE(ev & POLLERR) << ev;
  EXPECT_TRUE(ev & POLLHUP) << ev;
  int err = 0;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, ECONNREFUSED) << errname(err);
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, 0) << "SO_ERROR is cleared by reading it";
}

TEST(Connect, RefusedNonBlockingSecondConnectReportsTheError) {
  Peer p;
  auto [lid, port] = p.listen();
  p.call("closelisten " + std::to_string(lid));
  Fd s = tcp_socket(SOCK_NONBLOCK);
  auto a = make_addr(env().peer_ip, port);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  poll_one(s, POLLOUT, 5000);
  errno = 0;
  EXPECT_EQ(::connect(s, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
}

/// A refused connect whose error was taken by SO_ERROR: the socket stays as tcp_reset -> tcp_done
/// left it (TCP_CLOSE, SHUTDOWN_MASK): reads are EOF, poll and epoll show IN|OUT|HUP|RDHUP.
/// When connect() itself reported the error, Linux disconnected the socket (inet_stream_connect
/// -> tcp_disconnect clears the shutdown flags): reads are ENOTCONN, poll shows OUT|HUP.
void expect_refused_socket_state(int s, bool reported_by_connect) {
  const short want_poll = reported_by_connect ? (POLLOUT | POLLHUP) : (POLLIN | POLLOUT | POLLHUP | POLLRDHUP);
  pollfd pf{s, POLLIN | POLLOUT | POLLRDHUP, 0};
  ASSERT_EQ(::poll(&pf, 1, 0), 1);
  EXPECT_EQ(pf.revents, want_poll) << pf.revents;
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev), 0);
  epoll_event got{};
  ASSERT_EQ(::epoll_wait(ep, &got, 1, 0), 1);
  EXPECT_EQ(got.events, static_cast<std::uint32_t>(want_poll)) << got.events;
  char b;
  errno = 0;
  if (reported_by_connect) {
    EXPECT_EQ(::recv(s, &b, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, ENOTCONN) << errname(errno);
    errno = 0;
    EXPECT_EQ(::recv(s, &b, 1, 0), -1);
    EXPECT_EQ(errno, ENOTCONN) << errname(errno);
  } else {
    ASSERT_EQ(::recv(s, &b, 1, MSG_DONTWAIT), 0) << errname(errno);
    EXPECT_EQ(::recv(s, &b, 1, 0), 0) << errname(errno);  // blocking: no wait at EOF
  }
  int err = -1;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, 0);
}

/// A non-blocking connect to a closed port of the peer, refused (RST) by the time this returns.
Fd refused_nonblocking_connect(Peer& p, sockaddr_in* to) {
  auto [lid, port] = p.listen();
  p.call("closelisten " + std::to_string(lid));
  Fd s = tcp_socket(SOCK_NONBLOCK);
  *to = make_addr(env().peer_ip, port);
  EXPECT_EQ(::connect(s, sa(*to), sizeof *to), -1);
  EXPECT_EQ(errno, EINPROGRESS);
  EXPECT_TRUE(poll_one(s, POLLOUT, 5000) & POLLERR);
  return s;
}

TEST(Connect, RefusedThenSoErrorTakenReadsEofAndPollsInOutHupRdhup) {
  Peer p;
  sockaddr_in a{};
  Fd s = refused_nonblocking_connect(p, &a);
  int err = 0;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  ASSERT_EQ(err, ECONNREFUSED) << errname(err);
  expect_refused_socket_state(s, false);
}

TEST(Connect, RefusedReportedBySecondConnectThenRecvIsENOTCONNAndPollsOutHup) {
  Peer p;
  sockaddr_in a{};
  Fd s = refused_nonblocking_connect(p, &a);
  errno = 0;
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, ECONNREFUSED);
  expect_refused_socket_state(s, true);
}

// A blocking connect to a closed port fails with ECONNREFUSED, and the socket is left disconnected.
TEST(Connect, ClosedPortIsECONNREFUSEDThenRecvIsENOTCONNAndPollsOutHup) {
  Peer p;
  auto [lid, port] = p.listen();
  p.call("closelisten " + std::to_string(lid));
  Fd s = tcp_socket();
  auto a = make_addr(env().peer_ip, port);
  errno = 0;
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, ECONNREFUSED);
  expect_refused_socket_state(s, true);
}

TEST(Connect, ShortAddressIsEINVAL) {
  Fd s = tcp_socket();
  auto a = make_addr(env().peer_ip, 9);
  errno = 0;
  EXPECT_EQ(::connect(s, sa(a), 8), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Connect, OnListeningSocketIsEISCONN) {
  auto [l, port] = listen_local();
  auto a = make_addr(env().peer_ip, 9);
  errno = 0;
  EXPECT_EQ(::connect(l, sa(a), sizeof a), -1);
  // Linux: a listener is not in a state connect() accepts.
  EXPECT_EQ(errno, EISCONN);
}

TEST(Shutdown, UnconnectedIsENOTCONN) {
  Fd s = tcp_socket();
  errno = 0;
  EXPECT_EQ(::shutdown(s, SHUT_RDWR), -1);
  EXPECT_EQ(errno, ENOTCONN);
}

TEST(Shutdown, BadHowIsEINVAL) {
  Peer p;
  Conn c = connect_to_peer(p);
  errno = 0;
  EXPECT_EQ(::shutdown(c.fd, 7), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Shutdown, WriteSideGivesPeerEofAndKeepsReading) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::send(c.fd, "abc", 3, 0), 3);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  auto r = p.call("readhex " + std::to_string(c.cid) + " 100 5000");
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[1], hex("abc"));
  EXPECT_EQ(r[2], "1") << "no EOF at the peer";
  p.call("sendhex " + std::to_string(c.cid) + " " + hex("back"));
  auto got = read_exact(c.fd, 4);
  EXPECT_EQ(std::string(got.begin(), got.end()), "back");
  // Writing after SHUT_WR: EPIPE.
  errno = 0;
  EXPECT_EQ(::send(c.fd, "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Shutdown, ReadSideGivesEofAndPollIn) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::shutdown(c.fd, SHUT_RD), 0);
  short ev = poll_one(c.fd, POLLIN | POLLRDHUP, 1000);
  EXPECT_TRUE(ev & POLLIN);
  EXPECT_TRUE(ev & POLLRDHUP);
  char b[8];
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), 0);
  // The write side still works.
  ASSERT_EQ(::send(c.fd, "ok", 2, 0), 2);
  auto r = p.call("readhex " + std::to_string(c.cid) + " 2 5000");
  EXPECT_EQ(r[1], hex("ok"));
}

TEST(Shutdown, BothSidesThenShutdownAgainIsFine) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::shutdown(c.fd, SHUT_RDWR), 0);
  auto r = p.call("wait " + std::to_string(c.cid) + " 5000");
  EXPECT_EQ(r[1], "eof");
  EXPECT_EQ(::shutdown(c.fd, SHUT_WR), 0);
}

TEST(Close, ClosedFdIsEBADF) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  ASSERT_EQ(::close(s), 0);
  errno = 0;
  EXPECT_EQ(::close(s), -1);
  EXPECT_EQ(errno, EBADF);
  char b;
  errno = 0;
  EXPECT_EQ(::read(s, &b, 1), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(Close, GivesPeerEofAfterAllData) {
  Peer p;
  Conn c = connect_to_peer(p);
  auto data = pattern(300000);
  write_all(c.fd, data.data(), data.size());
  c.fd.reset();
  auto r = p.call("drain " + std::to_string(c.cid) + " 20000");
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[1], "300000");
  EXPECT_EQ(r[2], "1") << "pattern mismatch";
}

TEST(Close, WithUnreadDataSendsRst) {
  // RFC 2525 §2.17: closing with unread received data resets the connection.
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + std::to_string(c.cid) + " " + hex("unread"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 6), 6);
  c.fd.reset();
  auto r = p.call("wait " + std::to_string(c.cid) + " 5000", true);
  EXPECT_EQ(r[1], "ECONNRESET");
}

}  // namespace
}  // namespace pno::semtest
