// Calls that bypass the libc wrappers (syscall(SYS_...)) and glibc's fortified entry points
// (__read_chk, __recv_chk, __recvfrom_chk, __poll_chk, __ppoll_chk, __fdelt_chk): what apps built
// with -D_FORTIFY_SOURCE=2, or that make raw system calls, actually call.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

std::string id(int cid) { return std::to_string(cid); }

TEST(Syscall, ConnectionThroughRawSystemCalls) {
  Peer p;
  auto [lid, port] = p.listen();
  long s = ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0) << errname(errno);
  Fd guard(static_cast<int>(s));
  auto a = make_addr(env().peer_ip, port);
  ASSERT_EQ(::syscall(SYS_connect, s, &a, sizeof a), 0) << errname(errno);
  int cid = p.accept(lid);

  sockaddr_in me{};
  socklen_t len = sizeof me;
  ASSERT_EQ(::syscall(SYS_getsockname, s, &me, &len), 0);
  EXPECT_EQ(ip_of(me), env().local_ip);
  sockaddr_in them{};
  len = sizeof them;
  ASSERT_EQ(::syscall(SYS_getpeername, s, &them, &len), 0);
  EXPECT_EQ(port_of(them), port);

  int one = 1;
  ASSERT_EQ(::syscall(SYS_setsockopt, s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
  int v = 0;
  len = sizeof v;
  ASSERT_EQ(::syscall(SYS_getsockopt, s, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
  EXPECT_EQ(v, 1);

  EXPECT_EQ(::syscall(SYS_write, s, "raw-", 4), 4);
  EXPECT_EQ(::syscall(SYS_sendto, s, "send", 4, 0, nullptr, 0), 4);
  auto r = p.call("readhex " + id(cid) + " 8 5000");
  EXPECT_EQ(r[1], hex("raw-send"));

  p.call("sendhex " + id(cid) + " " + hex("reply!"));
  int avail = 0;
  for (int i = 0; i < 500 && avail < 6; ++i) {
    ASSERT_EQ(::syscall(SYS_ioctl, s, FIONREAD, &avail), 0);
    if (avail < 6) ::usleep(2000);
  }
  EXPECT_EQ(avail, 6);
  char b[16];
  EXPECT_EQ(::syscall(SYS_read, s, b, 3), 3);
  EXPECT_EQ(::syscall(SYS_recvfrom, s, b + 3, sizeof b - 3, 0, nullptr, nullptr), 3);
  EXPECT_EQ(std::string(b, 6), "reply!");

  long fl = ::syscall(SYS_fcntl, s, F_GETFL);
  ASSERT_GE(fl, 0);
  ASSERT_EQ(::syscall(SYS_fcntl, s, F_SETFL, fl | O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(::syscall(SYS_read, s, b, sizeof b), -1);
  EXPECT_EQ(errno, EAGAIN);

  ASSERT_EQ(::syscall(SYS_shutdown, s, SHUT_WR), 0);
  EXPECT_EQ(p.call("wait " + id(cid) + " 5000")[1], "eof");
  ASSERT_EQ(::syscall(SYS_close, guard.release()), 0);
  errno = 0;
  EXPECT_EQ(::syscall(SYS_close, s), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(Syscall, ListenerAcceptDupAndReadinessThroughRawSystemCalls) {
  Peer p;
  long l = ::syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ASSERT_GE(l, 0);
  Fd lguard(static_cast<int>(l));
  auto a = make_addr(env().local_ip, 0);
  ASSERT_EQ(::syscall(SYS_bind, l, &a, sizeof a), 0) << errname(errno);
  ASSERT_EQ(::syscall(SYS_listen, l, 8), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::syscall(SYS_getsockname, l, &a, &len), 0);

  long ep = ::syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  Fd epguard(static_cast<int>(ep));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 5;
  ASSERT_EQ(::syscall(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, l, &ev), 0);
  errno = 0;
  EXPECT_EQ(::syscall(SYS_accept4, l, nullptr, nullptr, 0), -1);
  EXPECT_EQ(errno, EAGAIN);

  auto r = p.call("connect " + env().local_ip + " " + std::to_string(port_of(a)) + " 5000");
  int cid = std::stoi(r[1]);
  epoll_event out{};
  ASSERT_EQ(::syscall(SYS_epoll_pwait, ep, &out, 1, 5000, nullptr, 8), 1);
  EXPECT_EQ(out.data.u64, 5u);
  long c = ::syscall(SYS_accept4, l, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(c, 0) << errname(errno);
  Fd cguard(static_cast<int>(c));

  long d = ::syscall(SYS_dup, c);
  ASSERT_GE(d, 0);
  Fd dguard(static_cast<int>(d));
  Fd spare = tcp_socket();
  ASSERT_EQ(::syscall(SYS_dup3, c, spare.get(), O_CLOEXEC), spare.get());
  ASSERT_EQ(::syscall(SYS_write, d, "d", 1), 1);
  ASSERT_EQ(::syscall(SYS_write, spare.get(), "3", 1), 1);
  EXPECT_EQ(p.call("readhex " + id(cid) + " 2 5000")[1], hex("d3"));

  p.call("sendhex " + id(cid) + " 00");
  pollfd pf{static_cast<int>(c), POLLIN, 0};
  timespec ts{5, 0};
  EXPECT_EQ(::syscall(SYS_ppoll, &pf, 1, &ts, nullptr, 8), 1);
  EXPECT_EQ(pf.revents, POLLIN);
}

TEST(Syscall, VectorAndMessageCallsThroughRawSystemCalls) {
  Peer p;
  auto [lid, port] = p.listen();
  long s = ::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  Fd guard(static_cast<int>(s));
  auto a = make_addr(env().peer_ip, port);
  ASSERT_EQ(::syscall(SYS_connect, s, &a, sizeof a), 0) << errname(errno);
  int cid = p.accept(lid);

  char x[] = "wv", y[] = "-sm", z[] = "-mm";
  iovec wv[2] = {{x, 1}, {x + 1, 1}};
  EXPECT_EQ(::syscall(SYS_writev, s, wv, 2), 2);
  iovec sv{y, 3};
  msghdr m{};
  m.msg_iov = &sv;
  m.msg_iovlen = 1;
  EXPECT_EQ(::syscall(SYS_sendmsg, s, &m, 0), 3);
  iovec mv{z, 3};
  mmsghdr mm{};
  mm.msg_hdr.msg_iov = &mv;
  mm.msg_hdr.msg_iovlen = 1;
  EXPECT_EQ(::syscall(SYS_sendmmsg, s, &mm, 1, 0), 1);
  char path[] = "/tmp/pno-semantics-sys-XXXXXX";
  Fd f(::mkstemp(path));
  ::unlink(path);
  ASSERT_EQ(::write(f, "-sf", 3), 3);
  off_t off = 0;
  EXPECT_EQ(::syscall(SYS_sendfile, s, f.get(), &off, 3), 3);
  EXPECT_EQ(p.call("readhex " + id(cid) + " 11 5000")[1], hex("wv-sm-mm-sf"));

  p.call("sendhex " + id(cid) + " " + hex("abcdefgh"));
  pollfd pf{static_cast<int>(s), POLLIN, 0};
  ASSERT_EQ(::syscall(SYS_poll, &pf, 1, 5000), 1);
  ASSERT_EQ(wait_readable_bytes(static_cast<int>(s), 8), 8);
  char b[8];
  iovec rv[2] = {{b, 1}, {b + 1, 1}};
  EXPECT_EQ(::syscall(SYS_readv, s, rv, 2), 2);
  iovec r1{b + 2, 2};
  msghdr rm{};
  rm.msg_iov = &r1;
  rm.msg_iovlen = 1;
  EXPECT_EQ(::syscall(SYS_recvmsg, s, &rm, 0), 2);
  iovec r2{b + 4, 4};
  mmsghdr rmm{};
  rmm.msg_hdr.msg_iov = &r2;
  rmm.msg_hdr.msg_iovlen = 1;
  EXPECT_EQ(::syscall(SYS_recvmmsg, s, &rmm, 1, MSG_DONTWAIT, nullptr), 1);
  EXPECT_EQ(rmm.msg_len, 4u);
  EXPECT_EQ(std::string(b, 8), "abcdefgh");

  // Readiness through select, pselect6, epoll_create, epoll_wait, epoll_pwait2.
  p.call("sendhex " + id(cid) + " 00");
  ASSERT_EQ(wait_readable_bytes(static_cast<int>(s), 1), 1);
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(static_cast<int>(s), &rd);
  timeval tv{1, 0};
  EXPECT_EQ(::syscall(SYS_select, s + 1, &rd, nullptr, nullptr, &tv), 1);
  FD_SET(static_cast<int>(s), &rd);
  timespec ts{1, 0};
  EXPECT_EQ(::syscall(SYS_pselect6, s + 1, &rd, nullptr, nullptr, &ts, nullptr), 1);
  long ep = ::syscall(SYS_epoll_create, 4);
  ASSERT_GE(ep, 0);
  Fd epguard(static_cast<int>(ep));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 9;
  ASSERT_EQ(::syscall(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, s, &ev), 0);
  epoll_event out{};
  EXPECT_EQ(::syscall(SYS_epoll_wait, ep, &out, 1, 1000), 1);
  EXPECT_EQ(out.data.u64, 9u);
  out = {};
  EXPECT_EQ(::syscall(SYS_epoll_pwait2, ep, &out, 1, &ts, nullptr, 8), 1);
  EXPECT_EQ(out.data.u64, 9u);

  // dup2 and a socketpair (which stays with the kernel).
  Fd spare = tcp_socket();
  ASSERT_EQ(::syscall(SYS_dup2, s, spare.get()), spare.get());
  ASSERT_EQ(::syscall(SYS_write, spare.get(), "2", 1), 1);
  EXPECT_EQ(p.call("readhex " + id(cid) + " 1 5000")[1], hex("2"));
  int sv2[2];
  ASSERT_EQ(::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv2), 0);
  Fd u0(sv2[0]), u1(sv2[1]);
  EXPECT_EQ(::syscall(SYS_write, sv2[0], "u", 1), 1);
  EXPECT_EQ(::syscall(SYS_read, sv2[1], b, 1), 1);
}

TEST(Syscall, ErrorsComeBackAsMinusOneAndErrno) {
  Fd s = tcp_socket();
  char b;
  errno = 0;
  EXPECT_EQ(::syscall(SYS_read, s.get(), &b, 1), -1);
  EXPECT_EQ(errno, ENOTCONN);
  errno = 0;
  EXPECT_EQ(::syscall(SYS_listen, -1, 1), -1);
  EXPECT_EQ(errno, EBADF);
  sockaddr_in a{};
  socklen_t len = sizeof a;
  errno = 0;
  EXPECT_EQ(::syscall(SYS_getpeername, s.get(), &a, &len), -1);
  EXPECT_EQ(errno, ENOTCONN);
  auto bad = make_addr("198.18.250.250", 0);
  errno = 0;
  EXPECT_EQ(::syscall(SYS_bind, s.get(), &bad, sizeof bad), -1);
  EXPECT_EQ(errno, EADDRNOTAVAIL);
}

TEST(Fortify, CheckedEntryPointsBehaveLikeThePlainOnes) {
  // Lengths the compiler cannot see, buffers whose size it can: glibc routes these calls through
  // __read_chk, __recv_chk, __recvfrom_chk, __poll_chk, __ppoll_chk and __fdelt_chk.
  volatile std::size_t n4 = 4, n2 = 2;
  volatile nfds_t one = 1;
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + std::to_string(c.cid) + " " + hex("abcdefghij"));
  pollfd pf[2] = {{c.fd, POLLIN, 0}, {-1, 0, 0}};
  ASSERT_EQ(::poll(pf, one, 5000), 1);
  ASSERT_EQ(wait_readable_bytes(c.fd, 10), 10);
  char buf[16];
  EXPECT_EQ(::read(c.fd, buf, n4), 4);
  EXPECT_EQ(::recv(c.fd, buf + 4, n4, 0), 4);
  sockaddr_in from{};
  socklen_t len = sizeof from;
  EXPECT_EQ(::recvfrom(c.fd, buf + 8, n2, 0, sa(from), &len), 2);
  EXPECT_EQ(std::string(buf, 10), "abcdefghij");
  timespec ts{0, 50 * 1000 * 1000};
  EXPECT_EQ(::ppoll(pf, one, &ts, nullptr), 0);
  volatile int fd = c.fd.get();
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(fd, &rd);
  timeval tv{0, 0};
  EXPECT_EQ(::select(fd + 1, nullptr, &rd, nullptr, &tv), 1) << "an established socket is writable";
  EXPECT_TRUE(FD_ISSET(fd, &rd));
  ASSERT_EQ(::fcntl(c.fd, F_SETFL, O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(::read(c.fd, buf, n4), -1);
  EXPECT_EQ(errno, EAGAIN);
}

}  // namespace
}  // namespace pno::semtest
