// The kernel path under libpno.so: with no engine reachable the shim must leave every call's
// behaviour exactly as the kernel's. The same binary runs without the shim (shim.fallback.plain)
// and with it preloaded and no engine (shim.fallback.preload, PNO_EXPECT_SHIM=1), so a difference
// between the two runs is the shim's fault.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  operator int() const { return fd; }  // NOLINT
};

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

/// A listening socket on 127.0.0.1 (or the wildcard) with its port.
int make_listener(std::uint16_t* port, bool wildcard = false) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(0);
  if (wildcard) a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  if (::listen(s, 16) != 0) return -1;
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return s;
}

int connect_to(std::uint16_t port) {
  int c = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  return c;
}

TEST(ShimFallback, ShimLoadedWhenExpected) {
  const char* expect = std::getenv("PNO_EXPECT_SHIM");
  std::ifstream maps("/proc/self/maps");
  std::string all((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  bool loaded = all.find("libpno.so") != std::string::npos;
  EXPECT_EQ(loaded, expect != nullptr && std::strcmp(expect, "1") == 0);
}

TEST(ShimFallback, LoopbackTcpEchoShutdownAndEof) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  ASSERT_GE(l.fd, 0);
  Fd c(connect_to(port));
  ASSERT_GE(c.fd, 0);
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  Fd a(::accept4(l, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC));
  ASSERT_GE(a.fd, 0);
  EXPECT_EQ(plen, sizeof peer);
  EXPECT_EQ(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_EQ(::fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ASSERT_EQ(::send(c, "hello", 5, 0), 5);
  char buf[16] = {};
  ASSERT_EQ(::recv(a, buf, 2, MSG_PEEK), 2);
  int avail = 0;
  ASSERT_EQ(::ioctl(a, FIONREAD, &avail), 0);
  EXPECT_EQ(avail, 5);
  ASSERT_EQ(::recv(a, buf, sizeof buf, MSG_WAITALL | MSG_DONTWAIT), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  ASSERT_EQ(::shutdown(c, SHUT_WR), 0);
  EXPECT_EQ(::read(a, buf, sizeof buf), 0);  // EOF
  EXPECT_EQ(::recv(a, buf, sizeof buf, MSG_DONTWAIT), 0);
}

TEST(ShimFallback, WildcardListenerWithoutEngineServesLoopback) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port, true));
  ASSERT_GE(l.fd, 0);
  Fd c(connect_to(port));
  ASSERT_GE(c.fd, 0);
  Fd a(::accept(l, nullptr, nullptr));
  EXPECT_GE(a.fd, 0);
}

TEST(ShimFallback, NonblockingConnectInProgressThenSoErrorZero) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  Fd c(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
  sockaddr_in a = loopback(port);
  int r = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ASSERT_TRUE(r == 0 || errno == EINPROGRESS);
  pollfd p{c, POLLOUT, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  int err = -1;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, 0);
}

TEST(ShimFallback, RefusedConnectReportsEconnrefused) {
  std::uint16_t port = 0;
  { Fd l(make_listener(&port)); }  // closed: nothing listens there now
  Fd c(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a = loopback(port);
  EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
}

TEST(ShimFallback, EpollEdgeAndLevelOverKernelFds) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_NONBLOCK), 0);
  Fd rd(p[0]), wr(p[1]);
  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = 77;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, rd, &ev), 0);
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, rd, &ev), -1);
  EXPECT_EQ(errno, EEXIST);
  epoll_event out[4];
  EXPECT_EQ(::epoll_wait(ep, out, 4, 0), 0);
  ASSERT_EQ(::write(wr, "x", 1), 1);
  ASSERT_EQ(::epoll_wait(ep, out, 4, 1000), 1);
  EXPECT_EQ(out[0].data.u64, 77u);
  EXPECT_EQ(::epoll_wait(ep, out, 4, 0), 0);  // edge consumed
  ev.events = EPOLLIN;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_MOD, rd, &ev), 0);
  EXPECT_EQ(::epoll_wait(ep, out, 4, 0), 1);  // level: still readable
  EXPECT_EQ(::epoll_wait(ep, out, 4, 0), 1);
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, rd, nullptr), 0);
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, rd, nullptr), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(::epoll_wait(ep, out, 0, 0), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(ShimFallback, NestedEpollReportsInnerReadiness) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd rd(p[0]), wr(p[1]);
  Fd inner(::epoll_create1(0)), outer(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(::epoll_ctl(inner, EPOLL_CTL_ADD, rd, &ev), 0);
  ev.data.u64 = 5;
  ASSERT_EQ(::epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev), 0);
  EXPECT_EQ(::epoll_ctl(inner, EPOLL_CTL_ADD, outer, &ev), -1);  // a loop
  EXPECT_EQ(errno, ELOOP);
  epoll_event out[2];
  EXPECT_EQ(::epoll_wait(outer, out, 2, 0), 0);
  ASSERT_EQ(::write(wr, "x", 1), 1);
  ASSERT_EQ(::epoll_wait(outer, out, 2, 1000), 1);
  EXPECT_EQ(out[0].data.u64, 5u);
}

TEST(ShimFallback, PollAndSelectMixSocketsAndPipes) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  Fd c(connect_to(port));
  Fd a(::accept(l, nullptr, nullptr));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd rd(p[0]), wr(p[1]);
  ASSERT_EQ(::write(c, "z", 1), 1);
  pollfd fds[3] = {{a, POLLIN, 0}, {rd, POLLIN, 0}, {-1, POLLIN, 0}};
  ASSERT_EQ(::poll(fds, 3, 1000), 1);
  EXPECT_EQ(fds[0].revents, POLLIN);
  EXPECT_EQ(fds[1].revents, 0);
  fd_set r;
  FD_ZERO(&r);
  FD_SET(a.fd, &r);
  FD_SET(rd.fd, &r);
  timeval tv{1, 0};
  ASSERT_EQ(::select(std::max(a.fd, rd.fd) + 1, &r, nullptr, nullptr, &tv), 1);
  EXPECT_TRUE(FD_ISSET(a.fd, &r));
  EXPECT_FALSE(FD_ISSET(rd.fd, &r));
  fds[0].fd = 1 << 20;  // not open
  fds[0].events = POLLIN;
  EXPECT_EQ(::poll(fds, 1, 0), 1);
  EXPECT_EQ(fds[0].revents, POLLNVAL);
}

TEST(ShimFallback, Dup2OverASocketClosesIt) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  Fd c(connect_to(port));
  Fd a(::accept(l, nullptr, nullptr));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd rd(p[0]), wr(p[1]);
  ASSERT_EQ(::dup2(rd, a), a.fd);  // the accepted socket is gone: the peer sees EOF
  char b;
  EXPECT_EQ(::read(c, &b, 1), 0);
  int d = ::fcntl(c, F_DUPFD_CLOEXEC, 100);
  ASSERT_GE(d, 100);
  EXPECT_EQ(::fcntl(d, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(::close(d), 0);
  EXPECT_EQ(::close(d), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(ShimFallback, ForkedChildAcceptsOnTheInheritedListener) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int a = ::accept(l, nullptr, nullptr);
    char b = 0;
    bool ok = a >= 0 && ::read(a, &b, 1) == 1 && b == 'k' && ::write(a, "K", 1) == 1;
    ::_exit(ok ? 0 : 1);
  }
  Fd c(connect_to(port));
  ASSERT_EQ(::write(c, "k", 1), 1);
  char b = 0;
  EXPECT_EQ(::read(c, &b, 1), 1);
  EXPECT_EQ(b, 'K');
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ShimFallback, UdpAndUnixSocketsUntouched) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Fd u0(sv[0]), u1(sv[1]);
  ASSERT_EQ(::write(u0, "u", 1), 1);
  char b = 0;
  EXPECT_EQ(::read(u1, &b, 1), 1);
  Fd s(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in a = loopback(0);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ASSERT_EQ(::sendto(s, "d", 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof a), 1);
  sockaddr_in from{};
  len = sizeof from;
  EXPECT_EQ(::recvfrom(s, &b, 1, 0, reinterpret_cast<sockaddr*>(&from), &len), 1);
  EXPECT_EQ(len, sizeof from);
  EXPECT_EQ(from.sin_port, a.sin_port);
}

TEST(ShimFallback, SocketOptionsBehaveAsTheKernelSays) {
  Fd s(::socket(AF_INET, SOCK_STREAM, 0));
  int one = 1, v = 0;
  socklen_t len = sizeof v;
  ASSERT_EQ(::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
  ASSERT_EQ(::getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
  EXPECT_EQ(v, 1);
  EXPECT_EQ(::setsockopt(s, IPPROTO_TCP, 9999, &one, sizeof one), -1);
  EXPECT_EQ(errno, ENOPROTOOPT);
  EXPECT_EQ(::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, 1), -1);
  EXPECT_EQ(errno, EINVAL);
  len = sizeof v;
  ASSERT_EQ(::getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &len), 0);
  EXPECT_EQ(v, SOCK_STREAM);
}

TEST(ShimFallback, SyscallEntryPointStillWorks) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  Fd rd(p[0]), wr(p[1]);
  ASSERT_EQ(::syscall(SYS_write, wr.fd, "s", 1), 1);
  char b = 0;
  EXPECT_EQ(::syscall(SYS_read, rd.fd, &b, 1), 1);
  EXPECT_EQ(b, 's');
  EXPECT_EQ(::syscall(SYS_getpid), ::getpid());
  EXPECT_EQ(::syscall(SYS_close, 1 << 20), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(ShimFallback, WriteToAClosedPeerRaisesSigpipeUnlessNosignal) {
  std::uint16_t port = 0;
  Fd l(make_listener(&port));
  Fd c(connect_to(port));
  { Fd a(::accept(l, nullptr, nullptr)); }
  ::usleep(20000);
  // The first write draws the RST, later ones EPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  (void)::send(c, "x", 1, MSG_NOSIGNAL);
  ::usleep(20000);
  EXPECT_EQ(::send(c, "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_TRUE(errno == EPIPE || errno == ECONNRESET);
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  ::signal(SIGPIPE, SIG_DFL);
  ::pthread_sigmask(SIG_BLOCK, &set, &old);
  EXPECT_EQ(::write(c, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_TRUE(sigismember(&pending, SIGPIPE));
  int sig = 0;
  timespec zero{0, 0};
  (void)zero;
  sigwait(&set, &sig);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace
