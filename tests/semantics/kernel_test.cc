// What stays with the kernel behaves as it always did: AF_UNIX, UDP on loopback, pipes, TCP to
// 127.0.0.1. And kernel fds mix with TCP sockets in one epoll set, poll() and select() call.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

TEST(KernelFds, UnixStreamListenerAtAPath) {
  std::string path = "/tmp/pno-semantics-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  Fd l(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << errname(errno);
  ASSERT_EQ(::listen(l, 4), 0);
  Fd c(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  Fd s(::accept(l, nullptr, nullptr));
  ASSERT_GE(s.get(), 0);
  ASSERT_EQ(::send(c, "unix", 4, 0), 4);
  char b[8];
  EXPECT_EQ(::recv(s, b, sizeof b, 0), 4);
  sockaddr_un got{};
  socklen_t len = sizeof got;
  ASSERT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&got), &len), 0);
  EXPECT_EQ(got.sun_family, AF_UNIX);
  EXPECT_STREQ(got.sun_path, path.c_str());
  c.reset();
  EXPECT_EQ(::recv(s, b, sizeof b, 0), 0);
  ::unlink(path.c_str());
}

TEST(KernelFds, UdpOnLoopback) {
  Fd a(::socket(AF_INET, SOCK_DGRAM, 0)), b(::socket(AF_INET, SOCK_DGRAM, 0));
  auto la = make_addr("127.0.0.1", 0), lb = make_addr("127.0.0.1", 0);
  ASSERT_EQ(::bind(a, sa(la), sizeof la), 0);
  ASSERT_EQ(::bind(b, sa(lb), sizeof lb), 0);
  socklen_t len = sizeof la;
  ASSERT_EQ(::getsockname(a, sa(la), &len), 0);
  ASSERT_EQ(::getsockname(b, sa(lb), &len), 0);
  ASSERT_EQ(::sendto(a, "dgram", 5, 0, sa(lb), sizeof lb), 5);
  char buf[16];
  sockaddr_in from{};
  len = sizeof from;
  EXPECT_EQ(::recvfrom(b, buf, sizeof buf, 0, sa(from), &len), 5);
  EXPECT_EQ(len, sizeof from);
  EXPECT_EQ(port_of(from), port_of(la));
  EXPECT_EQ(ip_of(from), "127.0.0.1");
  // Datagram boundaries hold: two sends, two receives.
  ASSERT_EQ(::sendto(a, "one", 3, 0, sa(lb), sizeof lb), 3);
  ASSERT_EQ(::sendto(a, "two", 3, 0, sa(lb), sizeof lb), 3);
  EXPECT_EQ(::recv(b, buf, sizeof buf, 0), 3);
  EXPECT_EQ(::recv(b, buf, sizeof buf, 0), 3);
  EXPECT_EQ(get_int_opt(b, SOL_SOCKET, SO_TYPE), SOCK_DGRAM);
}

TEST(KernelFds, ConnectedUdpSeesPortUnreachable) {
  Fd gone(::socket(AF_INET, SOCK_DGRAM, 0));
  auto ga = make_addr("127.0.0.1", 0);
  ASSERT_EQ(::bind(gone, sa(ga), sizeof ga), 0);
  socklen_t len = sizeof ga;
  ASSERT_EQ(::getsockname(gone, sa(ga), &len), 0);
  gone.reset();
  Fd u(::socket(AF_INET, SOCK_DGRAM, 0));
  ASSERT_EQ(::connect(u, sa(ga), sizeof ga), 0);
  ASSERT_EQ(::send(u, "x", 1, 0), 1);
  char b;
  errno = 0;
  pollfd pf{u, POLLIN, 0};
  ::poll(&pf, 1, 1000);
  EXPECT_EQ(::recv(u, &b, 1, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
}

TEST(KernelFds, Pipe) {
  int pp[2];
  ASSERT_EQ(::pipe2(pp, O_NONBLOCK), 0);
  Fd r(pp[0]), w(pp[1]);
  char b[8];
  errno = 0;
  EXPECT_EQ(::read(r, b, sizeof b), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::write(w, "pipe", 4), 4);
  EXPECT_EQ(::read(r, b, sizeof b), 4);
  r.reset();
  int before = sigpipe_count();
  errno = 0;
  EXPECT_EQ(::write(w, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(sigpipe_count(), before + 1);
}

TEST(KernelFds, TcpOverLoopback) {
  Fd l(::socket(AF_INET, SOCK_STREAM, 0));
  auto a = make_addr("127.0.0.1", 0);
  ASSERT_EQ(::bind(l, sa(a), sizeof a), 0);
  ASSERT_EQ(::listen(l, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(l, sa(a), &len), 0);
  Fd c(::socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_EQ(::connect(c, sa(a), sizeof a), 0);
  sockaddr_in from{};
  len = sizeof from;
  Fd s(::accept(l, sa(from), &len));
  ASSERT_GE(s.get(), 0);
  EXPECT_EQ(ip_of(from), "127.0.0.1");
  const std::size_t n = 1 << 20;
  auto data = pattern(n);
  std::thread writer([&] {
    write_all(c, data.data(), n);
    ::shutdown(c, SHUT_WR);
  });
  auto got = read_exact(s, n);
  writer.join();
  EXPECT_TRUE(got == data);
  char b;
  EXPECT_EQ(::read(s, &b, 1), 0);
  sockaddr_in peer{};
  len = sizeof peer;
  ASSERT_EQ(::getpeername(c, sa(peer), &len), 0);
  EXPECT_EQ(port_of(peer), port_of(a));
}

TEST(KernelFds, MixedEpollSetReportsExactlyTheReadyOne) {
  Peer p;
  Conn tcp = connect_to_peer(p);
  int pp[2];
  ASSERT_EQ(::pipe(pp), 0);
  Fd pr(pp[0]), pw(pp[1]);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Fd ua(sv[0]), ub(sv[1]);
  Fd udp(::socket(AF_INET, SOCK_DGRAM, 0)), udp_tx(::socket(AF_INET, SOCK_DGRAM, 0));
  auto la = make_addr("127.0.0.1", 0);
  ASSERT_EQ(::bind(udp, sa(la), sizeof la), 0);
  socklen_t len = sizeof la;
  ASSERT_EQ(::getsockname(udp, sa(la), &len), 0);

  Fd ep(::epoll_create1(0));
  struct Member {
    int fd;
    std::uint64_t tag;
  };
  Member members[] = {{tcp.fd, 1}, {pr, 2}, {ub, 3}, {udp, 4}};
  for (auto m : members) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = m.tag;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, m.fd, &ev), 0);
  }
  auto expect_only = [&](std::uint64_t tag) {
    epoll_event evs[8];
    int n = ::epoll_wait(ep, evs, 8, 5000);
    ASSERT_EQ(n, 1) << "tag " << tag;
    EXPECT_EQ(evs[0].data.u64, tag);
    EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLIN));
    // poll() and select() on the same mix agree.
    pollfd pf[4];
    fd_set rd;
    FD_ZERO(&rd);
    int maxfd = 0;
    for (int i = 0; i < 4; ++i) {
      pf[i] = {members[i].fd, POLLIN, 0};
      FD_SET(members[i].fd, &rd);
      maxfd = std::max(maxfd, members[i].fd);
    }
    EXPECT_EQ(::poll(pf, 4, 0), 1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(pf[i].revents, members[i].tag == tag ? POLLIN : 0) << i;
    timeval tv{0, 0};
    EXPECT_EQ(::select(maxfd + 1, &rd, nullptr, nullptr, &tv), 1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(FD_ISSET(members[i].fd, &rd) != 0, members[i].tag == tag) << i;
  };
  char b[16];
  EXPECT_EQ(::epoll_wait(ep, reinterpret_cast<epoll_event*>(b), 1, 0), 0);

  p.call("sendhex " + std::to_string(tcp.cid) + " 00");
  ASSERT_EQ(wait_readable_bytes(tcp.fd, 1), 1);
  expect_only(1);
  ASSERT_EQ(::read(tcp.fd, b, sizeof b), 1);

  ASSERT_EQ(::write(pw, "p", 1), 1);
  expect_only(2);
  ASSERT_EQ(::read(pr, b, sizeof b), 1);

  ASSERT_EQ(::write(ua, "u", 1), 1);
  expect_only(3);
  ASSERT_EQ(::read(ub, b, sizeof b), 1);

  ASSERT_EQ(::sendto(udp_tx, "d", 1, 0, sa(la), sizeof la), 1);
  expect_only(4);
  ASSERT_EQ(::recv(udp, b, sizeof b, 0), 1);

  EXPECT_EQ(::epoll_wait(ep, reinterpret_cast<epoll_event*>(b), 1, 0), 0);
}

}  // namespace
}  // namespace pno::semtest
