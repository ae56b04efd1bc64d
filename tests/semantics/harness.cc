#include "harness.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <sstream>

#include <gtest/gtest.h>

namespace pno::semtest {

Env& env() {
  static Env e;
  return e;
}

sockaddr_in make_addr(const std::string& ip, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) ADD_FAILURE() << "bad address " << ip;
  return a;
}

std::string ip_of(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return buf;
}

std::uint16_t port_of(const sockaddr_in& a) { return ntohs(a.sin_port); }

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string errname(int e) {
  const char* n = strerrorname_np(e);
  return n != nullptr ? n : std::to_string(e);
}

Peer::Peer() {
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, env().control.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    ADD_FAILURE() << "cannot reach the peer at " << env().control << ": " << errname(errno);
    fd_.reset();
  }
}

void Peer::post(const std::string& cmd) {
  std::string line = cmd + "\n";
  for (std::size_t off = 0; off < line.size();) {
    ssize_t k = ::write(fd_, line.data() + off, line.size() - off);
    if (k <= 0) {
      ADD_FAILURE() << "peer control write failed: " << errname(errno);
      return;
    }
    off += static_cast<std::size_t>(k);
  }
}

std::vector<std::string> Peer::reply() {
  std::size_t nl;
  while ((nl = buf_.find('\n')) == std::string::npos) {
    char chunk[4096];
    // No command takes longer than a minute; a peer that hangs must not hang the suite.
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) {
      ADD_FAILURE() << "peer control: no reply within 60 s";
      return {"err", "ETIMEDOUT"};
    }
    ssize_t k = ::read(fd_, chunk, sizeof chunk);
    if (k <= 0) {
      ADD_FAILURE() << "peer control connection lost";
      return {"err", "EPIPE"};
    }
    buf_.append(chunk, static_cast<std::size_t>(k));
  }
  std::string line = buf_.substr(0, nl);
  buf_.erase(0, nl + 1);
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.empty()) words.push_back("err");
  return words;
}

std::vector<std::string> Peer::call(const std::string& cmd, bool allow_err) {
  post(cmd);
  auto r = reply();
  if (!allow_err) {
    std::string joined;
    for (auto& w : r) joined += w + " ";
    EXPECT_EQ(r[0], "ok") << "peer: '" << cmd << "' -> " << joined;
  }
  return r;
}

std::pair<int, std::uint16_t> Peer::listen() {
  auto r = call("listen 0");
  if (r.size() < 3) return {0, 0};
  return {std::stoi(r[1]), static_cast<std::uint16_t>(std::stoi(r[2]))};
}

int Peer::accept(int lid, int timeout_ms) {
  auto r = call("accept " + std::to_string(lid) + " " + std::to_string(timeout_ms));
  return r.size() >= 2 && r[0] == "ok" ? std::stoi(r[1]) : 0;
}

Fd tcp_socket(int flags) { return Fd(::socket(AF_INET, SOCK_STREAM | flags, 0)); }

Conn connect_to_peer(Peer& p, int sock_flags) {
  auto [lid, port] = p.listen();
  Conn c;
  c.fd = tcp_socket(sock_flags);
  EXPECT_GE(c.fd.get(), 0) << errname(errno);
  auto a = make_addr(env().peer_ip, port);
  int rc = ::connect(c.fd, sa(a), sizeof a);
  if (rc < 0 && errno == EINPROGRESS) {
    EXPECT_TRUE(poll_one(c.fd, POLLOUT, 5000) & POLLOUT);
    rc = 0;
  }
  EXPECT_EQ(rc, 0) << "connect to the peer: " << errname(errno);
  c.cid = p.accept(lid);
  p.call("closelisten " + std::to_string(lid));
  return c;
}

std::pair<Fd, std::uint16_t> listen_local(int backlog, int sock_flags) {
  Fd l = tcp_socket(sock_flags);
  auto a = make_addr(env().local_ip, 0);
  EXPECT_EQ(::bind(l, sa(a), sizeof a), 0) << errname(errno);
  EXPECT_EQ(::listen(l, backlog), 0) << errname(errno);
  socklen_t len = sizeof a;
  EXPECT_EQ(::getsockname(l, sa(a), &len), 0);
  return {std::move(l), port_of(a)};
}

Conn accept_from_peer(Peer& p, int accept_flags) {
  auto [l, port] = listen_local();
  p.post("connect " + env().local_ip + " " + std::to_string(port) + " 5000");
  Conn c;
  c.fd.reset(::accept4(l, nullptr, nullptr, accept_flags));
  EXPECT_GE(c.fd.get(), 0) << "accept: " << errname(errno);
  auto r = p.reply();
  EXPECT_EQ(r[0], "ok");
  if (r.size() >= 2 && r[0] == "ok") c.cid = std::stoi(r[1]);
  return c;
}

short poll_one(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  int n;
  do {
    n = ::poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? p.revents : 0;
}

int wait_readable_bytes(int fd, int n, int timeout_ms) {
  auto t0 = std::chrono::steady_clock::now();
  int avail = 0;
  for (;;) {
    if (::ioctl(fd, FIONREAD, &avail) < 0) return -1;
    if (avail >= n || ms_since(t0) > timeout_ms) return avail;
    poll_one(fd, POLLIN, 10);
    ::usleep(1000);
  }
}

std::vector<std::uint8_t> read_exact(int fd, std::size_t n, int timeout_ms) {
  std::vector<std::uint8_t> out(n);
  std::size_t got = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (got < n) {
    if (!(poll_one(fd, POLLIN, 1000) & (POLLIN | POLLHUP | POLLERR))) {
      if (ms_since(t0) > timeout_ms) break;
      continue;
    }
    ssize_t k = ::recv(fd, out.data() + got, n - got, MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (k <= 0) break;
    got += static_cast<std::size_t>(k);
  }
  EXPECT_EQ(got, n) << "read_exact: short (" << errname(errno) << ")";
  out.resize(got);
  return out;
}

void write_all(int fd, const void* data, std::size_t n) {
  auto p = static_cast<const std::uint8_t*>(data);
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
      poll_one(fd, POLLOUT, 1000);
      continue;
    }
    if (k <= 0) {
      ADD_FAILURE() << "write_all: " << errname(errno);
      return;
    }
    p += k;
    n -= static_cast<std::size_t>(k);
  }
}

int get_int_opt(int fd, int level, int opt) {
  int v = -12345;
  socklen_t len = sizeof v;
  EXPECT_EQ(::getsockopt(fd, level, opt, &v, &len), 0) << errname(errno);
  EXPECT_EQ(len, sizeof v);
  return v;
}

std::vector<std::uint8_t> pattern(std::size_t n, std::uint64_t off) {
  std::vector<std::uint8_t> v(n);
  fill_pattern(v, off);
  return v;
}

std::string hex(const void* data, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  auto p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

namespace {
std::atomic<int> g_sigpipes{0};
void on_sigpipe(int) { g_sigpipes.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

void install_sigpipe_counter() {
  struct sigaction sa_ {};
  sa_.sa_handler = on_sigpipe;
  sigemptyset(&sa_.sa_mask);
  sa_.sa_flags = SA_RESTART;
  ::sigaction(SIGPIPE, &sa_, nullptr);
}

int sigpipe_count() { return g_sigpipes.load(std::memory_order_relaxed); }

long ms_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
}

std::string peer_read(Peer& p, const Conn& c, int n) {
  auto r = p.call("readhex " + id(c) + " " + std::to_string(n) + " 5000");
  return r.size() >= 2 ? r[1] : "";
}

int wait_child(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace pno::semtest
