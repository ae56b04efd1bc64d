// exec(): Linux keeps sockets without FD_CLOEXEC open in the new program (inetd-style servers,
// nginx's binary upgrade, `socat EXEC:`, a shell handing a socket to a child program) and closes
// the FD_CLOEXEC ones; a failed exec changes nothing. The new program is this binary again, run as
// a small helper (`pno-semantics --exec-helper ...`, see exec_helper()) that checks what it
// inherited and talks to the peer on it.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {

namespace {

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  return buf;
}

int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

bool read_n(int fd, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_s(int fd, const char* s) {
  std::size_t n = std::strlen(s);
  return ::write(fd, s, n) == static_cast<ssize_t>(n);
}

}  // namespace

/// The new program of the exec tests. Exit status 0 when everything it inherited behaved.
///   --exec-helper KEEP KEEP2 GONE   KEEP/KEEP2: one connection (dup'ed), GONE: was FD_CLOEXEC.
///                                   Reads "hello" on KEEP, answers "world" on KEEP2, closes KEEP2
///                                   (no FIN: KEEP still refers to it), then "!" on KEEP.
///   --exec-accept LISTENER          accepts one connection on the inherited listener, writes "hi".
///   --exec-sleep CONN               writes "up" on the inherited connection, then sleeps until killed.
int exec_helper(int argc, char** argv) {
  ::alarm(10);
  std::string mode = argv[1];
  if (mode == "--exec-helper" && argc == 5) {
    int keep = std::atoi(argv[2]), keep2 = std::atoi(argv[3]), gone = std::atoi(argv[4]);
    if (::fcntl(gone, F_GETFD) != -1 || errno != EBADF) return 10;  // FD_CLOEXEC: closed by exec
    int fl = ::fcntl(keep, F_GETFD);
    if (fl < 0 || (fl & FD_CLOEXEC) != 0) return 11;
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(keep, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return 12;
    char buf[5];
    if (!read_n(keep, buf, 5) || std::memcmp(buf, "hello", 5) != 0) return 13;
    if (!write_s(keep2, "world")) return 14;
    if (::close(keep2) != 0) return 15;
    if (!write_s(keep, "!")) return 16;
    return 0;  // exit closes KEEP: the peer sees the FIN
  }
  if (mode == "--exec-sleep" && argc == 3) {
    if (!write_s(std::atoi(argv[2]), "up")) return 30;
    for (;;) ::pause();
  }
  if (mode == "--exec-accept" && argc == 3) {
    int l = std::atoi(argv[2]);
    int c = ::accept(l, nullptr, nullptr);
    if (c < 0) return 20;
    if (!write_s(c, "hi")) return 21;
    ::close(c);
    return 0;
  }
  return 2;
}

namespace {

TEST(Exec, InheritedConnectionServesTheNewProgramAndCloexecOnesClose) {
  std::string self = self_exe();
  ASSERT_FALSE(self.empty());
  Peer p;
  Conn keep = connect_to_peer(p);
  Conn gone = connect_to_peer(p, SOCK_CLOEXEC);
  Fd keep2(::dup(keep.fd));
  ASSERT_GE(keep2.get(), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string a = std::to_string(keep.fd.get()), b = std::to_string(keep2.get()),
                c = std::to_string(gone.fd.get());
    ::execl(self.c_str(), self.c_str(), "--exec-helper", a.c_str(), b.c_str(), c.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // From here on only the new program holds the two connections.
  keep.fd.reset();
  keep2.reset();
  gone.fd.reset();
  EXPECT_EQ(p.call("wait " + id(gone) + " 5000")[1], "eof") << "the FD_CLOEXEC socket did not close at exec";
  p.call("sendhex " + id(keep) + " " + hex("hello"));
  EXPECT_EQ(peer_read(p, keep, 6), hex("world!"));
  EXPECT_EQ(wait_child(pid), 0) << "the exec'd helper failed (its exit code says which check)";
  auto r = p.call("readhex " + id(keep) + " 100 5000");
  EXPECT_EQ(r[2], "1") << "no FIN after the exec'd program exited";
}

TEST(Exec, InheritedListenerAcceptsInTheNewProgram) {
  std::string self = self_exe();
  ASSERT_FALSE(self.empty());
  Peer p;
  auto [l, port] = listen_local();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string a = std::to_string(l.get());
    char* const argv[] = {const_cast<char*>(self.c_str()), const_cast<char*>("--exec-accept"),
                          const_cast<char*>(a.c_str()), nullptr};
    ::execve(self.c_str(), argv, environ);
    ::_exit(127);
  }
  l.reset();
  auto r = p.call("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  auto got = p.call("readhex " + r[1] + " 100 5000");
  EXPECT_EQ(got[1], hex("hi"));
  EXPECT_EQ(got[2], "1");
  EXPECT_EQ(wait_child(pid), 0);
}

TEST(Exec, FailedExecLeavesEverySocketAsItWas) {
  Peer p;
  Conn c = connect_to_peer(p);
  Conn cx = connect_to_peer(p, SOCK_CLOEXEC);
  int fds_before = open_fd_count();
  char* const argv[] = {const_cast<char*>("pno-no-such-program"), nullptr};
  errno = 0;
  EXPECT_EQ(::execv("/nonexistent/pno-no-such-program", argv), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(::execvp("pno-no-such-program-on-any-path", argv), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(::execl("/nonexistent/pno-no-such-program", "x", static_cast<char*>(nullptr)), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(open_fd_count(), fds_before) << "a failed exec leaked or closed descriptors";
  EXPECT_EQ(::fcntl(c.fd, F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(::fcntl(cx.fd, F_GETFD) & FD_CLOEXEC, 0);
  for (Conn* k : {&c, &cx}) {
    ASSERT_EQ(::write(k->fd, "still", 5), 5);
    EXPECT_EQ(peer_read(p, *k, 5), hex("still"));
    p.call("sendhex " + id(*k) + " " + hex("here"));
    auto b = read_exact(k->fd, 4);
    EXPECT_EQ(std::string(b.begin(), b.end()), "here");
  }
}

}  // namespace
namespace {

// exec keeps the process (and, under the shim, its process table entry): the new program killed by
// a signal closes the connection only it holds, within a second, as Linux's exit does.
TEST(Exec, NewProgramKilledBySignalClosesTheInheritedConnection) {
  std::string self = self_exe();
  ASSERT_FALSE(self.empty());
  Peer p;
  Conn c = connect_to_peer(p);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string fd = std::to_string(c.fd.get());
    ::execl(self.c_str(), self.c_str(), "--exec-sleep", fd.c_str(), static_cast<char*>(nullptr));
    ::_exit(99);
  }
  c.fd.reset();  // only the new program holds it
  EXPECT_EQ(peer_read(p, c, 2), hex("up"));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  EXPECT_EQ(p.call("wait " + id(c) + " 3000", true)[1], "eof");
  EXPECT_LE(ms_since(t0), 1000) << "the killed program's connection lingered";
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
}

}  // namespace

}  // namespace pno::semtest
