// Descriptors: dup, dup2, dup3, fcntl F_DUPFD(_CLOEXEC), fd numbering, threads sharing a socket,
// and fork (parent and child both using inherited sockets).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

TEST(Dup, SharesTheConnectionAndFinWaitsForTheLastClose) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd d(::dup(c.fd));
  ASSERT_GE(d.get(), 0);
  EXPECT_NE(d.get(), c.fd.get());
  ASSERT_EQ(::write(d, "dup", 3), 3);
  EXPECT_EQ(peer_read(p, c, 3), hex("dup"));
  c.fd.reset();
  EXPECT_EQ(p.call("wait " + id(c) + " 300", true)[1], "ETIMEDOUT") << "FIN while a dup was still open";
  ASSERT_EQ(::write(d, "more", 4), 4);
  EXPECT_EQ(peer_read(p, c, 4), hex("more"));
  d.reset();
  EXPECT_EQ(p.call("wait " + id(c) + " 5000")[1], "eof");
}

TEST(Dup, SharesFileStatusFlagsButNotFdFlags) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd d(::dup(c.fd));
  ASSERT_EQ(::fcntl(c.fd, F_SETFL, O_NONBLOCK), 0);
  EXPECT_TRUE(::fcntl(d, F_GETFL) & O_NONBLOCK) << "O_NONBLOCK belongs to the open file";
  ASSERT_EQ(::fcntl(c.fd, F_SETFD, FD_CLOEXEC), 0);
  EXPECT_EQ(::fcntl(d, F_GETFD), 0) << "FD_CLOEXEC belongs to the descriptor";
}

TEST(Dup2, ReplacesTheTargetFd) {
  Peer p;
  Conn c = connect_to_peer(p);
  int pp[2];
  ASSERT_EQ(::pipe(pp), 0);
  Fd r(pp[0]), w(pp[1]);
  ASSERT_EQ(::dup2(c.fd, w), w.get());
  // The pipe's only write end was closed by dup2: its reader sees EOF.
  char b;
  EXPECT_EQ(::read(r, &b, 1), 0);
  ASSERT_EQ(::write(w, "via", 3), 3);
  EXPECT_EQ(peer_read(p, c, 3), hex("via"));
  EXPECT_EQ(::dup2(c.fd, c.fd), c.fd.get());
  int closed = ::dup(c.fd);
  ::close(closed);
  errno = 0;
  EXPECT_EQ(::dup2(closed, w), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(Dup2, OverASocketClosesTheConnection) {
  Peer p;
  Conn c = connect_to_peer(p);
  int pp[2];
  ASSERT_EQ(::pipe(pp), 0);
  Fd r(pp[0]), w(pp[1]);
  ASSERT_EQ(::dup2(r, c.fd), c.fd.get());
  EXPECT_EQ(p.call("wait " + id(c) + " 5000")[1], "eof");
  struct stat st {};
  ASSERT_EQ(::fstat(c.fd, &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the fd is the pipe now";
  ASSERT_EQ(::write(w, "p", 1), 1);
  char b;
  EXPECT_EQ(::read(c.fd, &b, 1), 1);
}

/// Numbers a program never opened but may name: the top 64 below RLIMIT_NOFILE and a few in the
/// middle of the table (where libraries that share the process tend to keep their own fds).
std::vector<int> unopened_numbers(const std::set<int>& mine) {
  rlimit rl{};
  long top = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) top = static_cast<long>(rl.rlim_cur);
  top = std::min<long>(top, 1L << 20);
  std::vector<int> v;
  long mid = std::min<long>(top, 65536) / 2;
  for (long n = mid; n < mid + 8 && n < top - 64; ++n) v.push_back(static_cast<int>(n));
  for (long n = std::max<long>(top - 64, 3); n < top; ++n) v.push_back(static_cast<int>(n));
  std::erase_if(v, [&](int n) { return mine.count(n) != 0; });
  return v;
}

/// The connection and a wait on it still work: data both ways, one blocking read that sleeps.
void expect_connection_works(Peer& p, Conn& c, int ep) {
  ASSERT_EQ(::write(c.fd, "after", 5), 5) << errname(errno);
  EXPECT_EQ(peer_read(p, c, 5), hex("after"));
  p.post("sendchunks " + id(c) + " 8 8 200");
  char b[8];
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_WAITALL), 8) << errname(errno);
  p.reply();
  p.post("sendchunks " + id(c) + " 3 3 200");
  epoll_event ev{};
  EXPECT_EQ(::epoll_wait(ep, &ev, 1, 5000), 1) << errname(errno);
  EXPECT_EQ(ev.data.u64, 77u);
  p.reply();
  EXPECT_EQ(::read(c.fd, b, sizeof b), 3);
}

// dup2(2): "If newfd was previously open, it is closed before being reused" — for any number
// below the limit, whoever else in the process might have used it.
TEST(Dup2, OntoAnyNumberBelowTheLimit) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 77;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), 0);
  std::vector<int> nums = unopened_numbers({c.fd.get(), ep.get()});
  for (int n : nums) {
    ASSERT_EQ(::dup2(c.fd, n), n) << "fd " << n << ": " << errname(errno);
    EXPECT_EQ(::fcntl(n, F_GETFD), 0) << "fd " << n;
    sockaddr_in a{}, b{};
    socklen_t la = sizeof a, lb = sizeof b;
    ASSERT_EQ(::getpeername(n, sa(a), &la), 0) << "fd " << n << ": " << errname(errno);
    ASSERT_EQ(::getpeername(c.fd, sa(b), &lb), 0);
    EXPECT_EQ(port_of(a), port_of(b)) << "fd " << n << " is the connection";
  }
  expect_connection_works(p, c, ep);
  for (int n : nums) EXPECT_EQ(::close(n), 0) << "fd " << n << ": " << errname(errno);
  expect_connection_works(p, c, ep);
  // A dup3 onto such a number with O_CLOEXEC as well.
  ASSERT_EQ(::dup3(c.fd, nums.back(), O_CLOEXEC), nums.back()) << errname(errno);
  EXPECT_EQ(::fcntl(nums.back(), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(::close(nums.back()), 0);
}

// close(2) of a number the program never opened: afterwards the number is closed (EBADF), whatever
// the call returned, and everything else keeps working.
TEST(Close, NumbersNeverOpenedAreClosedAfterwards) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 77;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), 0);
  for (int n : unopened_numbers({c.fd.get(), ep.get()})) {
    errno = 0;
    int r = ::close(n);
    EXPECT_TRUE(r == 0 || errno == EBADF) << "fd " << n << ": " << errname(errno);
    errno = 0;
    EXPECT_EQ(::fcntl(n, F_GETFD), -1) << "fd " << n << " still open after close";
    EXPECT_EQ(errno, EBADF);
  }
  expect_connection_works(p, c, ep);
  Conn c2 = connect_to_peer(p);
  ASSERT_EQ(::write(c2.fd, "new", 3), 3);
  EXPECT_EQ(peer_read(p, c2, 3), hex("new"));
}

TEST(Dup3, CloexecAndErrors) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd spare = tcp_socket();
  ASSERT_EQ(::dup3(c.fd, spare, O_CLOEXEC), spare.get());
  EXPECT_EQ(::fcntl(spare, F_GETFD), FD_CLOEXEC);
  ASSERT_EQ(::write(spare, "d3", 2), 2);
  EXPECT_EQ(peer_read(p, c, 2), hex("d3"));
  errno = 0;
  EXPECT_EQ(::dup3(c.fd, c.fd, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(::dup3(c.fd, spare, O_NONBLOCK), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(FcntlDupfd, MinimumNumberAndCloexec) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd d(::fcntl(c.fd, F_DUPFD, 100));
  EXPECT_GE(d.get(), 100);
  EXPECT_EQ(::fcntl(d, F_GETFD), 0);
  Fd e(::fcntl(c.fd, F_DUPFD_CLOEXEC, 200));
  EXPECT_GE(e.get(), 200);
  EXPECT_EQ(::fcntl(e, F_GETFD), FD_CLOEXEC);
  ASSERT_EQ(::write(d, "a", 1), 1);
  ASSERT_EQ(::write(e, "b", 1), 1);
  EXPECT_EQ(peer_read(p, c, 2), hex("ab"));
}

TEST(FdNumbers, LowestFreeNumberIsUsedAndFitsSelect) {
  Peer p;
  std::vector<Fd> socks;
  for (int i = 0; i < 5; ++i) socks.push_back(tcp_socket());
  for (auto& s : socks) EXPECT_LT(s.get(), FD_SETSIZE);
  int hole = socks[2].get();
  socks[2].reset();
  Fd again = tcp_socket();
  EXPECT_EQ(again.get(), hole);
  // accept() too takes the lowest free number.
  auto [l, port] = listen_local();
  int hole2 = socks[1].get();
  socks[1].reset();
  p.post("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Fd acc(::accept(l, nullptr, nullptr));
  p.reply();
  EXPECT_EQ(acc.get(), hole2);
}

TEST(FdNumbers, SocketAboveFdSetsizeWorksWithPollAndEpoll) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd high(::dup2(c.fd, 1500));
  ASSERT_EQ(high.get(), 1500) << errname(errno);
  c.fd.reset();
  ASSERT_EQ(::write(high, "hi", 2), 2);
  EXPECT_EQ(peer_read(p, c, 2), hex("hi"));
  p.call("sendhex " + id(c) + " 00");
  EXPECT_EQ(poll_one(high, POLLIN, 5000), POLLIN);
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = high;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, high, &ev), 0);
  epoll_event out{};
  ASSERT_EQ(::epoll_wait(ep, &out, 1, 1000), 1);
  EXPECT_EQ(out.data.fd, 1500);
}

TEST(FdNumbers, TwoFdsOfOneSocketInOneEpollSet) {
  Peer p;
  Conn c = connect_to_peer(p);
  Fd d(::dup(c.fd));
  Fd ep(::epoll_create1(0));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 1;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), 0);
  ev.data.u64 = 2;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev), 0) << "a second fd of the same socket is its own entry";
  p.call("sendhex " + id(c) + " 00");
  epoll_event out[4];
  int n = ::epoll_wait(ep, out, 4, 5000);
  if (n == 1) n += ::epoll_wait(ep, out + 1, 3, 1000);  // the two entries may wake separately
  ASSERT_EQ(n, 2);
  EXPECT_EQ(out[0].data.u64 + out[1].data.u64, 3u);
}

TEST(Threads, ReaderAndWriterShareOneSocket) {
  Peer p, sender, drain;
  Conn c = connect_to_peer(p);
  const std::size_t n = 2 << 20;
  sender.post("send " + id(c) + " " + std::to_string(n));
  drain.post("drain " + id(c) + " 30000");
  std::vector<std::uint8_t> got;
  std::thread reader([&] { got = read_exact(c.fd, n, 30000); });
  std::thread writer([&] {
    auto data = pattern(n);
    write_all(c.fd, data.data(), data.size());
    ::shutdown(c.fd, SHUT_WR);
  });
  reader.join();
  writer.join();
  EXPECT_TRUE(check_pattern(got, 0));
  EXPECT_EQ(sender.reply()[0], "ok");
  auto r = drain.reply();
  EXPECT_EQ(r[1], std::to_string(n));
  EXPECT_EQ(r[2], "1");
}

TEST(Threads, ShutdownWakesABlockedReader) {
  Peer p;
  Conn c = connect_to_peer(p);
  std::atomic<ssize_t> rc{-2};
  std::thread reader([&] {
    char b;
    rc = ::recv(c.fd, &b, 1, 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(rc.load(), -2) << "recv returned without data";
  ASSERT_EQ(::shutdown(c.fd, SHUT_RDWR), 0);
  auto t0 = std::chrono::steady_clock::now();
  while (rc.load() == -2 && ms_since(t0) < 3000) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (rc.load() == -2) {
    // Unblock it anyway, so the test can end.
    p.call("sendhex " + id(c) + " 00", true);
    p.call("close " + id(c), true);
  }
  reader.join();
  EXPECT_EQ(rc.load(), 0) << "shutdown() did not wake the reader with EOF";
}

TEST(Threads, BlockedReaderGetsDataSentFromAnotherThread) {
  Peer p;
  Conn c = connect_to_peer(p);
  std::string got;
  std::thread reader([&] {
    auto v = read_exact(c.fd, 5);
    got.assign(v.begin(), v.end());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  p.call("sendhex " + id(c) + " " + hex("wake!"));
  reader.join();
  EXPECT_EQ(got, "wake!");
}

TEST(Threads, TwoThreadsAcceptFromOneListener) {
  Peer p;
  auto [l, port] = listen_local();
  std::atomic<int> ok{0};
  auto acceptor = [&] {
    int c = ::accept(l, nullptr, nullptr);
    if (c >= 0) {
      ++ok;
      ::close(c);
    }
  };
  std::thread a(acceptor), b(acceptor);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  a.join();
  b.join();
  EXPECT_EQ(ok.load(), 2);
}

TEST(Fork, ParentAndChildAcceptOnTheInheritedListener) {
  Peer p;
  auto [l, port] = listen_local();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);  // a child stuck on a failed expectation must not outlive the test
    int c = ::accept(l, nullptr, nullptr);
    if (c < 0) ::_exit(10);
    if (::write(c, "child", 5) != 5) ::_exit(11);
    ::close(c);
    ::_exit(0);
  }
  std::string target = "connect " + env().local_ip + " " + std::to_string(port) + " 5000";
  // Both connections first: whichever process accepts first must not leave the other waiting.
  auto r1 = p.call(target);
  auto r2 = p.call(target);
  Fd mine(::accept(l, nullptr, nullptr));
  ASSERT_GE(mine.get(), 0);
  ASSERT_EQ(::write(mine, "parent", 6), 6);
  // Child and parent each took one of the two connections, whichever came first.
  std::set<std::string> seen;
  for (auto& r : {r1, r2}) {
    auto got = p.call("readhex " + r[1] + " 6 5000");
    seen.insert(got[1]);
  }
  EXPECT_EQ(seen, (std::set<std::string>{hex("child"), hex("parent")}));
  EXPECT_EQ(wait_child(pid), 0);
  // The child (and its copy of the listener) is gone: the parent's listener still works.
  auto r3 = p.call(target);
  Fd third(::accept(l, nullptr, nullptr));
  EXPECT_GE(third.get(), 0) << errname(errno);
  ASSERT_EQ(::write(third, "3", 1), 1);
  EXPECT_EQ(p.call("readhex " + r3[1] + " 1 5000")[1], hex("3"));
}

TEST(Fork, ChildClosingAnInheritedConnectionDoesNotEndIt) {
  Peer p;
  Conn c = connect_to_peer(p);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);  // a child stuck on a failed expectation must not outlive the test
    ::_exit(::close(c.fd) == 0 ? 0 : 1);
  }
  EXPECT_EQ(wait_child(pid), 0);
  EXPECT_EQ(p.call("wait " + id(c) + " 300", true)[1], "ETIMEDOUT") << "FIN although the parent holds it";
  ASSERT_EQ(::write(c.fd, "still", 5), 5);
  EXPECT_EQ(peer_read(p, c, 5), hex("still"));
  p.call("sendhex " + id(c) + " " + hex("back"));
  auto back = read_exact(c.fd, 4);
  EXPECT_EQ(std::string(back.begin(), back.end()), "back");
  c.fd.reset();
  EXPECT_EQ(p.call("wait " + id(c) + " 5000")[1], "eof");
}

TEST(Fork, ChildAndParentWriteOnOneConnectionInTurn) {
  Peer p;
  Conn c = connect_to_peer(p);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);  // a child stuck on a failed expectation must not outlive the test
    if (::write(c.fd, "from-child;", 11) != 11) ::_exit(1);
    char b[4];
    // The child also reads from it: the peer's reply to the child.
    ssize_t k = ::recv(c.fd, b, 4, MSG_WAITALL);
    ::_exit(k == 4 && std::string(b, 4) == "kid!" ? 0 : 2);
  }
  EXPECT_EQ(peer_read(p, c, 11), hex("from-child;"));
  p.call("sendhex " + id(c) + " " + hex("kid!"));
  EXPECT_EQ(wait_child(pid), 0);
  ASSERT_EQ(::write(c.fd, "from-parent", 11), 11);
  EXPECT_EQ(peer_read(p, c, 11), hex("from-parent"));
}

TEST(Fork, ChildClosesTheInheritedListenerAndTheParentsStillAccepts) {
  Peer p;
  auto [l, port] = listen_local();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);
    int rc = ::close(l);
    // Linger a little after the close, so the parent's accept runs while the child still lives.
    ::usleep(200 * 1000);
    ::_exit(rc == 0 ? 0 : 1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Fd c(::accept(l, nullptr, nullptr));
  ASSERT_GE(c.get(), 0) << errname(errno);
  ASSERT_EQ(::write(c, "ok", 2), 2);
  EXPECT_EQ(p.call("readhex " + r[1] + " 2 5000")[1], hex("ok"));
  EXPECT_EQ(wait_child(pid), 0);
  auto r2 = p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Fd c2(::accept(l, nullptr, nullptr));
  EXPECT_GE(c2.get(), 0) << "after the child exited: " << errname(errno);
}

TEST(Fork, ChildExitingWithoutCloseEndsItsConnection) {
  // The process's exit closes its descriptors: the peer gets the data, then the FIN.
  Peer p;
  auto [lid, port] = p.listen();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    auto a = make_addr(env().peer_ip, port);
    if (::connect(s, sa(a), sizeof a) != 0) ::_exit(1);
    if (::write(s, "bye", 3) != 3) ::_exit(2);
    ::_exit(0);
  }
  int cid = p.accept(lid);
  EXPECT_EQ(wait_child(pid), 0);
  auto r = p.call("readhex " + std::to_string(cid) + " 100 5000");
  EXPECT_EQ(r[1], hex("bye"));
  EXPECT_EQ(r[2], "1") << "no FIN after the child exited";
}

TEST(Fork, ChildCreatesItsOwnConnections) {
  Peer p;
  auto [lid, port] = p.listen();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(10);  // a child stuck on a failed expectation must not outlive the test
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    auto a = make_addr(env().peer_ip, port);
    if (::connect(s, sa(a), sizeof a) != 0) ::_exit(1);
    if (::write(s, "new", 3) != 3) ::_exit(2);
    ::close(s);
    ::_exit(0);
  }
  int cid = p.accept(lid);
  auto r = p.call("readhex " + std::to_string(cid) + " 100 5000");  // until EOF
  EXPECT_EQ(r[1], hex("new"));
  EXPECT_EQ(r[2], "1") << "no FIN after the child closed";
  EXPECT_EQ(wait_child(pid), 0);
}


// A forked child that dies by a signal: its descriptors are closed as at any exit, within a second
// (Linux closes them in do_exit; the engine sees the death through the child's pidfd).

/// A forked child that only sleeps until it is killed.
pid_t fork_sleeper() {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(20);  // never outlives the test
    for (;;) ::pause();
  }
  return pid;
}

TEST(ForkKill, ChildKilledAloneHoldingAConnectionEndsItWithFinWithinOneSecond) {
  Peer p;
  Conn c = connect_to_peer(p);
  pid_t pid = fork_sleeper();
  ASSERT_GT(pid, 0);
  c.fd.reset();  // only the child holds it now
  EXPECT_EQ(p.call("wait " + id(c) + " 200", true)[1], "ETIMEDOUT") << "FIN although the child holds it";
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto r = p.call("wait " + id(c) + " 3000", true);
  EXPECT_EQ(r[1], "eof");
  EXPECT_LE(ms_since(t0), 1000) << "the killed child's connection lingered";
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
}

TEST(ForkKill, ChildKilledWithUnreadDataResetsItsConnection) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + id(c) + " " + hex("never read"));
  ASSERT_NE(poll_one(c.fd, POLLIN, 5000) & POLLIN, 0);  // arrived, left unread
  pid_t pid = fork_sleeper();
  ASSERT_GT(pid, 0);
  c.fd.reset();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto r = p.call("wait " + id(c) + " 3000", true);
  EXPECT_EQ(r[0], "err");
  EXPECT_EQ(r[1], "ECONNRESET") << "RFC 2525 §2.17: closing with unread data resets";
  EXPECT_LE(ms_since(t0), 1000);
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
}

TEST(ForkKill, ConnectionSharedWithAKilledChildKeepsWorkingInTheParent) {
  Peer p;
  Conn c = connect_to_peer(p);
  pid_t pid = fork_sleeper();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
  EXPECT_EQ(p.call("wait " + id(c) + " 500", true)[1], "ETIMEDOUT") << "FIN although the parent holds it";
  ASSERT_EQ(::write(c.fd, "still", 5), 5);
  EXPECT_EQ(peer_read(p, c, 5), hex("still"));
  p.call("sendhex " + id(c) + " " + hex("back"));
  auto back = read_exact(c.fd, 4);
  EXPECT_EQ(std::string(back.begin(), back.end()), "back");
  c.fd.reset();
  EXPECT_EQ(p.call("wait " + id(c) + " 5000")[1], "eof");
}

TEST(ForkKill, ListenerHeldOnlyByAKilledChildIsFreedWithinOneSecond) {
  auto [l, port] = listen_local();
  pid_t pid = fork_sleeper();
  ASSERT_GT(pid, 0);
  l.reset();
  // The child still listens: the port is taken.
  Fd probe = tcp_socket();
  auto a = make_addr(env().local_ip, port);
  EXPECT_EQ(::bind(probe, sa(a), sizeof a), -1);
  EXPECT_EQ(errno, EADDRINUSE);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  bool bound = false;
  while (!bound && ms_since(t0) < 2000) {
    Fd s = tcp_socket();
    bound = ::bind(s, sa(a), sizeof a) == 0 && ::listen(s, 4) == 0;
    if (!bound) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(bound) << errname(errno);
  EXPECT_LE(ms_since(t0), 1000) << "the killed child's listener kept the port";
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
}

}  // namespace
}  // namespace pno::semtest
