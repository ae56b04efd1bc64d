// Readiness: poll, ppoll, select, pselect, epoll_create(1), epoll_ctl, epoll_wait, epoll_pwait,
// epoll_pwait2; level and edge triggering, EPOLLONESHOT, EPOLLRDHUP, EPOLLEXCLUSIVE, one socket in
// several epoll sets, nested epoll, registrations that follow the open file.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

void ep_add(int ep, int fd, std::uint32_t events, std::uint64_t tag) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0) << errname(errno);
}

/// epoll_wait into a vector: the events seen (empty on timeout).
std::vector<epoll_event> ep_wait(int ep, int timeout_ms, int max = 16) {
  std::vector<epoll_event> evs(static_cast<std::size_t>(max));
  int n = ::epoll_wait(ep, evs.data(), max, timeout_ms);
  EXPECT_GE(n, 0) << errname(errno);
  evs.resize(static_cast<std::size_t>(std::max(n, 0)));
  return evs;
}

TEST(Poll, IdleConnectionIsWritableOnly) {
  Peer p;
  Conn c = connect_to_peer(p);
  short ev = poll_one(c.fd, POLLIN | POLLOUT | POLLRDHUP, 0);
  EXPECT_EQ(ev, POLLOUT);
}

TEST(Poll, ArrivingDataMakesItReadable) {
  Peer p;
  Conn c = connect_to_peer(p);
  EXPECT_EQ(poll_one(c.fd, POLLIN, 50), 0);
  p.call("sendhex " + id(c) + " 00");
  EXPECT_EQ(poll_one(c.fd, POLLIN, 5000), POLLIN);
}

TEST(Poll, ListenerIsReadableWithAPendingConnection) {
  Peer p;
  auto [l, port] = listen_local();
  EXPECT_EQ(poll_one(l, POLLIN | POLLOUT, 0), 0);
  p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  EXPECT_EQ(poll_one(l, POLLIN | POLLOUT, 5000), POLLIN);
}

TEST(Poll, PeerFinGivesPollinAndPollrdhup) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("shutwr " + id(c));
  short ev = poll_one(c.fd, POLLIN | POLLRDHUP, 5000);
  EXPECT_EQ(ev, POLLIN | POLLRDHUP);
  // Our direction is still open: writable, no POLLHUP.
  EXPECT_EQ(poll_one(c.fd, POLLOUT, 0), POLLOUT);
}

TEST(Poll, BothDirectionsClosedGivesPollhup) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("shutwr " + id(c));
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  short ev = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (!(ev & POLLHUP) && ms_since(t0) < 5000) ev = poll_one(c.fd, POLLIN, 100);
  EXPECT_TRUE(ev & POLLHUP) << ev;
  EXPECT_TRUE(ev & POLLIN) << ev;
}

TEST(Poll, ShutdownWriteOnAFullSendBufferPollsWritableAtOnce) {
  // tcp_poll: once SEND_SHUTDOWN is set the socket is writable (a write fails with EPIPE instead
  // of blocking), even while the unsent bytes and the FIN still wait for the peer's window.
  Peer p;
  Conn c = connect_to_peer(p, SOCK_NONBLOCK);
  std::vector<std::uint8_t> buf(256 * 1024);
  std::uint64_t off = 0;
  // Fill until the peer's window is shut too: no room comes back for 300 ms.
  for (int i = 0; i < 1000 && poll_one(c.fd, POLLOUT, 300) != 0; ++i) {
    fill_pattern(buf, off);
    ssize_t w = ::send(c.fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (w < 0) {
      ASSERT_EQ(errno, EAGAIN);
      continue;
    }
    off += static_cast<std::uint64_t>(w);
  }
  ASSERT_EQ(poll_one(c.fd, POLLOUT, 0), 0) << "full send buffer polled writable";
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  EXPECT_EQ(poll_one(c.fd, POLLOUT, 0), POLLOUT);
  EXPECT_EQ(::send(c.fd, buf.data(), 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Poll, TimeoutReturnsZeroAfterTheTimeout) {
  Peer p;
  Conn c = connect_to_peer(p);
  pollfd pf{c.fd, POLLIN, 0};
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::poll(&pf, 1, 150), 0);
  EXPECT_GE(ms_since(t0), 140);
  EXPECT_EQ(pf.revents, 0);
}

TEST(Poll, ClosedFdIsPollnvalNegativeFdIsIgnored) {
  Peer p;
  Conn c = connect_to_peer(p);
  int closed = ::socket(AF_INET, SOCK_STREAM, 0);
  ::close(closed);
  pollfd pf[3] = {{c.fd, POLLOUT, 0}, {closed, POLLIN, 0}, {-1, POLLIN, 0}};
  EXPECT_EQ(::poll(pf, 3, 0), 2);
  EXPECT_EQ(pf[0].revents, POLLOUT);
  EXPECT_EQ(pf[1].revents, POLLNVAL);
  EXPECT_EQ(pf[2].revents, 0);
}

TEST(Poll, ManySocketsReportOnlyTheReadyOnes) {
  Peer p;
  std::vector<Conn> conns;
  for (int i = 0; i < 6; ++i) conns.push_back(connect_to_peer(p));
  p.call("sendhex " + id(conns[1]) + " 01");
  p.call("sendhex " + id(conns[4]) + " 04");
  std::vector<pollfd> pf;
  for (auto& c : conns) pf.push_back({c.fd, POLLIN, 0});
  ASSERT_EQ(wait_readable_bytes(conns[4].fd, 1), 1);
  ASSERT_EQ(wait_readable_bytes(conns[1].fd, 1), 1);
  EXPECT_EQ(::poll(pf.data(), pf.size(), 1000), 2);
  for (std::size_t i = 0; i < pf.size(); ++i) EXPECT_EQ(pf[i].revents, (i == 1 || i == 4) ? POLLIN : 0) << i;
}

TEST(Ppoll, TimeoutAndReadiness) {
  Peer p;
  Conn c = connect_to_peer(p);
  pollfd pf{c.fd, POLLIN, 0};
  timespec ts{0, 100 * 1000 * 1000};
  sigset_t mask;
  sigemptyset(&mask);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::ppoll(&pf, 1, &ts, &mask), 0);
  EXPECT_GE(ms_since(t0), 90);
  p.call("sendhex " + id(c) + " 00");
  timespec longer{5, 0};
  EXPECT_EQ(::ppoll(&pf, 1, &longer, nullptr), 1);
  EXPECT_EQ(pf.revents, POLLIN);
}

TEST(Select, ReadAndWriteSets) {
  Peer p;
  Conn a = connect_to_peer(p), b = connect_to_peer(p);
  ASSERT_LT(a.fd.get(), FD_SETSIZE);
  ASSERT_LT(b.fd.get(), FD_SETSIZE);
  p.call("sendhex " + id(b) + " 00");
  ASSERT_EQ(wait_readable_bytes(b.fd, 1), 1);
  fd_set rd, wr;
  FD_ZERO(&rd);
  FD_ZERO(&wr);
  FD_SET(a.fd.get(), &rd);
  FD_SET(b.fd.get(), &rd);
  FD_SET(a.fd.get(), &wr);
  timeval tv{1, 0};
  int maxfd = std::max(a.fd.get(), b.fd.get());
  EXPECT_EQ(::select(maxfd + 1, &rd, &wr, nullptr, &tv), 2);
  EXPECT_FALSE(FD_ISSET(a.fd.get(), &rd));
  EXPECT_TRUE(FD_ISSET(b.fd.get(), &rd));
  EXPECT_TRUE(FD_ISSET(a.fd.get(), &wr));
}

TEST(Select, TimeoutReturnsZeroAndClearsTheSets) {
  Peer p;
  Conn c = connect_to_peer(p);
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(c.fd.get(), &rd);
  timeval tv{0, 100000};
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::select(c.fd.get() + 1, &rd, nullptr, nullptr, &tv), 0);
  EXPECT_GE(ms_since(t0), 90);
  EXPECT_FALSE(FD_ISSET(c.fd.get(), &rd));
}

TEST(Select, ClosedFdIsEBADF) {
  int closed = ::socket(AF_INET, SOCK_STREAM, 0);
  ::close(closed);
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(closed, &rd);
  timeval tv{0, 0};
  errno = 0;
  EXPECT_EQ(::select(closed + 1, &rd, nullptr, nullptr, &tv), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(Select, ExceptSetAndPeerFin) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("shutwr " + id(c));
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(c.fd.get(), &rd);
  timeval tv{5, 0};
  EXPECT_EQ(::select(c.fd.get() + 1, &rd, nullptr, nullptr, &tv), 1);
  EXPECT_TRUE(FD_ISSET(c.fd.get(), &rd));
}

TEST(Pselect, TimeoutAndReadiness) {
  Peer p;
  Conn c = connect_to_peer(p);
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(c.fd.get(), &rd);
  timespec ts{0, 100 * 1000 * 1000};
  sigset_t mask;
  sigemptyset(&mask);
  EXPECT_EQ(::pselect(c.fd.get() + 1, &rd, nullptr, nullptr, &ts, &mask), 0);
  p.call("sendhex " + id(c) + " 00");
  FD_SET(c.fd.get(), &rd);
  timespec longer{5, 0};
  EXPECT_EQ(::pselect(c.fd.get() + 1, &rd, nullptr, nullptr, &longer, nullptr), 1);
  EXPECT_TRUE(FD_ISSET(c.fd.get(), &rd));
}

TEST(Epoll, CreateRulesAndCloexec) {
  errno = 0;
  EXPECT_EQ(::epoll_create(0), -1);
  EXPECT_EQ(errno, EINVAL);
  Fd a(::epoll_create(1));
  EXPECT_GE(a.get(), 0);
  EXPECT_EQ(::fcntl(a, F_GETFD), 0);
  Fd b(::epoll_create1(EPOLL_CLOEXEC));
  EXPECT_GE(b.get(), 0);
  EXPECT_EQ(::fcntl(b, F_GETFD), FD_CLOEXEC);
  errno = 0;
  EXPECT_EQ(::epoll_create1(0x1234), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Epoll, CtlErrors) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), 0);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), -1);
  EXPECT_EQ(errno, EEXIST);
  Fd other = tcp_socket();
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_MOD, other, &ev), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, other, nullptr), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, 99, c.fd, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(c.fd, EPOLL_CTL_ADD, other, &ev), -1) << "a socket used as an epoll fd";
  EXPECT_EQ(errno, EINVAL);
  Fd file(::open("/proc/self/status", O_RDONLY));
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr), 0);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST(Epoll, WaitArgumentErrors) {
  Fd ep(::epoll_create1(0));
  epoll_event ev;
  errno = 0;
  EXPECT_EQ(::epoll_wait(ep, &ev, 0, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  Fd s = tcp_socket();
  errno = 0;
  EXPECT_EQ(::epoll_wait(s, &ev, 1, 0), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Epoll, LevelTriggeredRepeatsUntilRead) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 42);
  EXPECT_TRUE(ep_wait(ep, 0).empty());
  p.call("sendhex " + id(c) + " " + hex("lt"));
  for (int i = 0; i < 3; ++i) {
    auto evs = ep_wait(ep, 5000);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLIN));
    EXPECT_EQ(evs[0].data.u64, 42u);
  }
  ASSERT_EQ(wait_readable_bytes(c.fd, 2), 2);
  char b[4];
  ASSERT_EQ(::read(c.fd, b, sizeof b), 2);
  EXPECT_TRUE(ep_wait(ep, 0).empty());
}

TEST(Epoll, EdgeTriggeredReportsEachArrivalOnce) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN | EPOLLET, 1);
  p.call("sendhex " + id(c) + " 01");
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].events & EPOLLIN);
  EXPECT_TRUE(ep_wait(ep, 100).empty()) << "reported again without new data";
  p.call("sendhex " + id(c) + " 02");
  evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u) << "new data after the edge was not reported";
  EXPECT_TRUE(ep_wait(ep, 100).empty());
  // Draining to EAGAIN, then new data: reported.
  char b[8];
  ASSERT_EQ(wait_readable_bytes(c.fd, 2), 2);
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), 2);
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), -1);
  p.call("sendhex " + id(c) + " 03");
  EXPECT_EQ(ep_wait(ep, 5000).size(), 1u);
}

TEST(Epoll, EdgeTriggeredWritableAgainAfterThePeerDrains) {
  Peer p, drain;
  Conn c = connect_to_peer(p, SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLOUT | EPOLLET, 7);
  auto evs = ep_wait(ep, 1000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].events & EPOLLOUT);
  std::vector<std::uint8_t> buf(256 * 1024);
  std::uint64_t off = 0;
  for (;;) {
    fill_pattern(buf, off);
    ssize_t w = ::send(c.fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (w < 0) {
      ASSERT_EQ(errno, EAGAIN);
      break;
    }
    off += static_cast<std::uint64_t>(w);
  }
  ep_wait(ep, 0);  // an edge from the last partial write may still be pending
  drain.post("drain " + id(c) + " 20000");
  evs = ep_wait(ep, 10000);
  ASSERT_EQ(evs.size(), 1u) << "EPOLLOUT did not come back after the peer read";
  EXPECT_TRUE(evs[0].events & EPOLLOUT);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  auto r = drain.reply();
  EXPECT_EQ(r[1], std::to_string(off));
}

TEST(Epoll, OneshotNeedsRearming) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN | EPOLLONESHOT, 5);
  p.call("sendhex " + id(c) + " 01");
  ASSERT_EQ(ep_wait(ep, 5000).size(), 1u);
  EXPECT_TRUE(ep_wait(ep, 100).empty()) << "reported again while disarmed";
  p.call("sendhex " + id(c) + " 02");
  EXPECT_TRUE(ep_wait(ep, 100).empty()) << "new data re-armed a oneshot registration";
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.u64 = 6;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev), 0);
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 6u);
}

TEST(Epoll, RdhupOnPeerFin) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN | EPOLLRDHUP, 9);
  p.call("shutwr " + id(c));
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLIN | EPOLLRDHUP));
}

TEST(Epoll, ResetReportsErrAndHupEvenUnrequested) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, 0, 3);
  p.call("rst " + id(c));
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].events & EPOLLERR) << evs[0].events;
  EXPECT_TRUE(evs[0].events & EPOLLHUP) << evs[0].events;
  EXPECT_FALSE(evs[0].events & EPOLLIN) << "EPOLLIN was not requested";
}

TEST(Epoll, ListenerAndConnectCompletion) {
  Peer p;
  auto [l, port] = listen_local(16, SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  ep_add(ep, l, EPOLLIN, 100);
  p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 100u);
  Fd acc(::accept(l, nullptr, nullptr));
  EXPECT_GE(acc.get(), 0);

  auto [lid, pport] = p.listen();
  Fd s = tcp_socket(SOCK_NONBLOCK);
  auto a = make_addr(env().peer_ip, pport);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  ep_add(ep, s, EPOLLOUT | EPOLLET, 200);
  evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 200u);
  EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLOUT));
  p.accept(lid);
}

// epoll_ctl(7): an entry belongs to the open file from EPOLL_CTL_ADD on; what the socket does later
// (connect, listen) does not remove it.
TEST(Epoll, SocketAddedBeforeConnectReportsTheCompletion) {
  Peer p;
  auto [lid, pport] = p.listen();
  Fd s = tcp_socket(SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  ep_add(ep, s, EPOLLOUT, 300);
  auto a = make_addr(env().peer_ip, pport);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u) << "one entry, reported once";
  EXPECT_EQ(evs[0].data.u64, 300u);
  EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLOUT));
  int cid = p.accept(lid);
  // Still the same entry: ADD again is EEXIST, MOD changes it, data arrival reports with the new tag.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 301;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev), -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev), 0) << errname(errno);
  EXPECT_TRUE(ep_wait(ep, 100).empty());
  p.call("send " + std::to_string(cid) + " 5");
  evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 301u);
  EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLIN));
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr), 0) << errname(errno);
}

TEST(Epoll, SocketAddedBeforeListenReportsIncomingConnections) {
  Peer p;
  Fd l = tcp_socket(SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  Fd ep2(::epoll_create1(0));
  ep_add(ep, l, EPOLLIN, 400);
  ep_add(ep2, l, EPOLLIN | EPOLLET, 401);
  ASSERT_EQ(::listen(l, 16), 0) << errname(errno);
  sockaddr_in me{};
  socklen_t len = sizeof me;
  ASSERT_EQ(::getsockname(l, sa(me), &len), 0);
  EXPECT_TRUE(ep_wait(ep, 100).empty()) << "a listener without connections is not readable";
  p.call("connect " + env().local_ip + " " + std::to_string(port_of(me)) + " 5000");
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 400u);
  EXPECT_EQ(evs[0].events, static_cast<std::uint32_t>(EPOLLIN));
  evs = ep_wait(ep2, 5000);
  ASSERT_EQ(evs.size(), 1u) << "the second set keeps its own entry";
  EXPECT_EQ(evs[0].data.u64, 401u);
  EXPECT_TRUE(ep_wait(ep2, 0).empty()) << "edge-triggered: once";
  EXPECT_EQ(ep_wait(ep, 0).size(), 1u) << "level-triggered: again until accepted";
  Fd acc(::accept(l, nullptr, nullptr));
  EXPECT_GE(acc.get(), 0) << errname(errno);
  EXPECT_TRUE(ep_wait(ep, 0).empty());
}

TEST(Epoll, SocketRemovedBeforeConnectStaysRemoved) {
  Peer p;
  auto [lid, pport] = p.listen();
  Fd s = tcp_socket(SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  ep_add(ep, s, EPOLLOUT, 500);
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr), 0) << errname(errno);
  auto a = make_addr(env().peer_ip, pport);
  ASSERT_EQ(::connect(s, sa(a), sizeof a), -1);
  ASSERT_EQ(errno, EINPROGRESS);
  EXPECT_TRUE(poll_one(s, POLLOUT, 5000) & POLLOUT);
  EXPECT_TRUE(ep_wait(ep, 100).empty());
  p.accept(lid);
}

TEST(Epoll, ExclusiveFlagRules) {
  Peer p;
  auto [l, port] = listen_local(16, SOCK_NONBLOCK);
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT;
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev), 0);
  errno = 0;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(Epoll, ExclusiveWaitersShareAListener) {
  Peer p;
  auto [l, port] = listen_local(16, SOCK_NONBLOCK);
  Fd ep1(::epoll_create1(0)), ep2(::epoll_create1(0));
  ep_add(ep1, l, EPOLLIN | EPOLLEXCLUSIVE, 1);
  ep_add(ep2, l, EPOLLIN | EPOLLEXCLUSIVE, 2);
  std::atomic<int> woke{0}, accepted{0};
  auto waiter = [&](int ep) {
    epoll_event ev;
    if (::epoll_wait(ep, &ev, 1, 3000) == 1) {
      ++woke;
      int c = ::accept(l, nullptr, nullptr);
      if (c >= 0) {
        ++accepted;
        ::close(c);
      }
    }
  };
  std::thread t1(waiter, ep1.get()), t2(waiter, ep2.get());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  t1.join();
  t2.join();
  EXPECT_GE(woke.load(), 1);
  EXPECT_EQ(accepted.load(), 1);
}

TEST(Epoll, OneSocketInTwoSets) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep1(::epoll_create1(0)), ep2(::epoll_create1(0));
  ep_add(ep1, c.fd, EPOLLIN, 11);
  ep_add(ep2, c.fd, EPOLLIN | EPOLLET, 22);
  p.call("sendhex " + id(c) + " 00");
  auto a = ep_wait(ep1, 5000), b = ep_wait(ep2, 5000);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].data.u64, 11u);
  EXPECT_EQ(b[0].data.u64, 22u);
  // Removing it from one set leaves the other.
  ASSERT_EQ(::epoll_ctl(ep2, EPOLL_CTL_DEL, c.fd, nullptr), 0);
  EXPECT_EQ(ep_wait(ep1, 1000).size(), 1u);
  EXPECT_TRUE(ep_wait(ep2, 0).empty());
}

/// Waits until `ep` has reported every tag in `want` (the socket stays ready, so each wait returns
/// at once), or 50 waits passed; returns the tags seen.
std::set<std::uint64_t> tags_within(int ep, const std::set<std::uint64_t>& want) {
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 50 && seen != want; ++i) {
    for (const auto& e : ep_wait(ep, 1000)) seen.insert(e.data.u64);
  }
  return seen;
}

TEST(Epoll, PipeBesideAReadySocketIsReported) {
  // The socket stays readable (level-triggered, never read), so no wait ever sleeps: the pipe's
  // readiness must be collected from the kernel set beside it.
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  int pfd[2];
  ASSERT_EQ(::pipe(pfd), 0);
  Fd r(pfd[0]), w(pfd[1]);
  ep_add(ep, c.fd, EPOLLIN, 1);
  p.call("sendhex " + id(c) + " 00");
  EXPECT_EQ(tags_within(ep, {1}), (std::set<std::uint64_t>{1}));
  ep_add(ep, r, EPOLLIN, 2);
  ASSERT_EQ(::write(w, "x", 1), 1);
  EXPECT_EQ(tags_within(ep, {1, 2}), (std::set<std::uint64_t>{1, 2}));
  // Deleted and added again: still reported.
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_DEL, r, nullptr), 0);
  ep_add(ep, r, EPOLLIN, 3);
  EXPECT_EQ(tags_within(ep, {1, 3}), (std::set<std::uint64_t>{1, 3}));
}

TEST(Epoll, SetSharedByForkReportsAPipeTheChildAdded) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 1);
  p.call("sendhex " + id(c) + " 00");
  EXPECT_EQ(tags_within(ep, {1}), (std::set<std::uint64_t>{1}));
  int pfd[2];
  ASSERT_EQ(::pipe(pfd), 0);
  Fd r(pfd[0]), w(pfd[1]);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);  // a child stuck on a failed expectation must not outlive the test
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 2;
    // One epoll instance for both processes (as on Linux): the parent must see this entry.
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, r, &ev) != 0) ::_exit(1);
    ::_exit(::write(w, "x", 1) == 1 ? 0 : 2);
  }
  ASSERT_EQ(wait_child(pid), 0);
  EXPECT_EQ(tags_within(ep, {1, 2}), (std::set<std::uint64_t>{1, 2}));
}

TEST(Epoll, NestedEpollPropagatesReadiness) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd inner(::epoll_create1(0)), outer(::epoll_create1(0));
  ep_add(inner, c.fd, EPOLLIN, 1);
  ep_add(outer, inner, EPOLLIN, 2);
  EXPECT_TRUE(ep_wait(outer, 0).empty());
  EXPECT_EQ(poll_one(inner, POLLIN, 0), 0);
  p.call("sendhex " + id(c) + " 00");
  auto evs = ep_wait(outer, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 2u);
  EXPECT_EQ(poll_one(inner, POLLIN, 0), POLLIN) << "an epoll fd with ready members polls readable";
  evs = ep_wait(inner, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 1u);
}

TEST(Epoll, PwaitAndPwait2) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 1);
  sigset_t mask;
  sigemptyset(&mask);
  epoll_event ev;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::epoll_pwait(ep, &ev, 1, 100, &mask), 0);
  EXPECT_GE(ms_since(t0), 90);
  timespec ts{0, 100 * 1000 * 1000};
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::epoll_pwait2(ep, &ev, 1, &ts, &mask), 0);
  EXPECT_GE(ms_since(t0), 90);
  p.call("sendhex " + id(c) + " 00");
  timespec longer{5, 0};
  EXPECT_EQ(::epoll_pwait2(ep, &ev, 1, &longer, nullptr), 1);
  EXPECT_EQ(ev.data.u64, 1u);
  EXPECT_EQ(::epoll_pwait(ep, &ev, 1, 0, nullptr), 1);
}

TEST(Epoll, SmallMaxeventsRotatesThroughReadySockets) {
  // Level-triggered entries go to the back of the ready list once reported, so with maxevents 1
  // repeated waits visit every ready socket instead of starving all but the first.
  Peer p;
  std::vector<Conn> conns;
  Fd ep(::epoll_create1(0));
  for (std::uint64_t i = 0; i < 3; ++i) {
    conns.push_back(connect_to_peer(p));
    ep_add(ep, conns.back().fd, EPOLLIN, i);
    p.call("sendhex " + id(conns.back()) + " 00");
  }
  for (auto& c : conns) ASSERT_EQ(wait_readable_bytes(c.fd, 1), 1);
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 3; ++i) {
    auto evs = ep_wait(ep, 1000, 1);
    ASSERT_EQ(evs.size(), 1u);
    seen.insert(evs[0].data.u64);
  }
  EXPECT_EQ(seen.size(), 3u) << "a ready socket was starved";
}

TEST(Epoll, RegistrationFollowsTheOpenFileNotTheFd) {
  // Linux keys registrations by (file, fd): closing one fd of a dup'ed socket keeps the file
  // registered and reported under the closed fd's data.
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 77);
  Fd other(::dup(c.fd));
  c.fd.reset();
  p.call("sendhex " + id(c) + " 00");
  auto evs = ep_wait(ep, 5000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data.u64, 77u);
  // The last close removes it.
  other.reset();
  EXPECT_TRUE(ep_wait(ep, 100).empty());
}

TEST(Epoll, ClosedSocketLeavesTheSet) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 1);
  int num = c.fd.get();
  c.fd.reset();
  Fd again = tcp_socket();
  ASSERT_EQ(again.get(), num) << "the lowest free fd number was not reused";
  epoll_event ev{};
  ev.events = EPOLLOUT;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, again, &ev), 0) << "closed socket still registered: " << errname(errno);
}

// The number of a closed member comes back as another connected socket (accept or connect): it is a
// new entry, keyed by (file, fd) as Linux's ep_find does, and reports under its own data.
TEST(Epoll, ClosedMemberNumberReusedByAConnectedSocketIsANewEntry) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  ep_add(ep, c.fd, EPOLLIN, 1);
  const int num = c.fd.get();
  c.fd.reset();
  Conn d = connect_to_peer(p);
  ASSERT_EQ(d.fd.get(), num) << "the lowest free fd number was not reused";
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = 2;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, d.fd, &ev), 0) << "closed socket still registered: " << errname(errno);
  epoll_event out[4]{};
  ASSERT_EQ(::epoll_wait(ep, out, 4, 2000), 1);
  EXPECT_EQ(out[0].data.u64, 2u);
  EXPECT_TRUE(out[0].events & EPOLLOUT);
}

}  // namespace
}  // namespace pno::semtest
