// The semantics suite's helpers: where to reach the peer, an owning fd, the peer's control client,
// and the few steps almost every test starts with (a connection to or from the peer).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "protocol.hh"

namespace pno::semtest {

/// The suite's parameters (set from the command line before the tests run).
struct Env {
  std::string local_ip;   ///< the address the app's TCP sockets use (kernel link or engine)
  std::string peer_ip;    ///< the Linux peer's address
  std::string control;    ///< the peer's control socket path
};
Env& env();

sockaddr_in make_addr(const std::string& ip, std::uint16_t port);
inline sockaddr* sa(sockaddr_in& a) { return reinterpret_cast<sockaddr*>(&a); }
inline const sockaddr* sa(const sockaddr_in& a) { return reinterpret_cast<const sockaddr*>(&a); }
std::string ip_of(const sockaddr_in& a);
std::uint16_t port_of(const sockaddr_in& a);

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  [[nodiscard]] int get() const { return fd_; }
  operator int() const { return fd_; }  // NOLINT: reads like a plain fd in socket calls
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

/// One control connection to pno-semantics-peer. call() sends a command and waits for its reply;
/// post() and reply() split that, so the peer can work on a command while the test does its part.
class Peer {
 public:
  Peer();
  /// Sends `cmd`, returns the reply split in words. Fails the test on "err" unless `allow_err`.
  std::vector<std::string> call(const std::string& cmd, bool allow_err = false);
  void post(const std::string& cmd);
  std::vector<std::string> reply();

  /// listen on an ephemeral port: (lid, port)
  std::pair<int, std::uint16_t> listen();
  /// accept on `lid`: the connection id
  int accept(int lid, int timeout_ms = 5000);

 private:
  Fd fd_;
  std::string buf_;
};

/// A TCP connection between the suite (fd) and the peer (cid).
struct Conn {
  Fd fd;
  int cid = 0;
};

/// The peer's id of a connection, as its commands take it.
inline std::string id(const Conn& c) { return std::to_string(c.cid); }
/// The peer reads n bytes of `c` (5 s at most): their hex, empty when it got none.
std::string peer_read(Peer& p, const Conn& c, int n);
/// Waits for a forked child: its exit status, 128 + signal when killed (children report failures
/// as non-zero codes), -1 when waitpid fails.
int wait_child(pid_t pid);

/// A TCP socket on the local address (not yet bound when port < 0; bound to local_ip:port else).
Fd tcp_socket(int flags = 0);
/// The suite connects (blocking) to a fresh peer listener.
Conn connect_to_peer(Peer& p, int sock_flags = 0);
/// The peer connects to a fresh listener of the suite.
Conn accept_from_peer(Peer& p, int accept_flags = 0);
/// A listener of the suite on local_ip, ephemeral port: (fd, port)
std::pair<Fd, std::uint16_t> listen_local(int backlog = 16, int sock_flags = 0);

/// poll() on one fd for `events` for up to `timeout_ms`: the revents (0 on timeout).
short poll_one(int fd, short events, int timeout_ms);
/// Waits until FIONREAD on `fd` reaches `n` (or the timeout): the last value seen.
int wait_readable_bytes(int fd, int n, int timeout_ms = 5000);
/// Reads exactly n bytes (blocking loop) or fails the test: the bytes.
std::vector<std::uint8_t> read_exact(int fd, std::size_t n, int timeout_ms = 10000);
/// Writes all of `data` (handles short writes and EAGAIN by polling).
void write_all(int fd, const void* data, std::size_t n);
std::vector<std::uint8_t> pattern(std::size_t n, std::uint64_t off = 0);
std::string hex(const void* data, std::size_t n);
inline std::string hex(const std::string& s) { return hex(s.data(), s.size()); }

/// getsockopt of an int option: the value, or -12345 on failure (the test fails too).
int get_int_opt(int fd, int level, int opt);

/// SIGPIPE handler that counts deliveries (installed by main for the whole run).
void install_sigpipe_counter();
int sigpipe_count();

/// Milliseconds since `t0`.
long ms_since(std::chrono::steady_clock::time_point t0);

/// errno name ("ECONNRESET") for failure messages.
std::string errname(int e);

}  // namespace pno::semtest
