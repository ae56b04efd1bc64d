// pno-semantics-peer: the Linux end of the socket-semantics suite. It runs inside the peer network
// namespace and does what the suite asks over a Unix-domain control socket (a path, so it works
// across namespaces, and never TCP, so the shim never offloads it).
//
//   pno-semantics-peer --control PATH
//
// One text line per command, one per reply ("ok ..." or "err ERRNONAME ..."). Every control
// connection gets its own thread, and a connection's commands run in order, so the suite can leave
// a long command (echo, drain) running on one control connection and keep going on another, or
// send a command and collect its reply later. Connections and listeners are named by small ids.
//
//   ping                               ok
//   listen PORT                        ok LID PORT          (0.0.0.0:PORT, PORT 0 = ephemeral)
//   accept LID TIMEOUT_MS              ok CID IP PORT
//   connect IP PORT TIMEOUT_MS         ok CID LOCALPORT
//   send CID N                         ok N                 (N pattern bytes, blocking)
//   sendchunks CID N CHUNK DELAY_MS    ok N                 (in CHUNK pieces, DELAY_MS apart)
//   sendhex CID HEX                    ok N
//   recv CID N TIMEOUT_MS              ok COUNT EOF MATCH   (until N bytes, EOF or the timeout)
//   readhex CID N TIMEOUT_MS           ok HEX|- EOF
//   drain CID TIMEOUT_MS               ok COUNT MATCH       (until EOF)
//   echo CID TIMEOUT_MS                ok COUNT             (until EOF, then shutdown(SHUT_WR))
//   wait CID TIMEOUT_MS                ok data | ok eof     (first thing that arrives; not consumed)
//   shutwr CID | close CID | closelisten LID               ok
//   rst CID                            ok                   (SO_LINGER 0, close: an RST)
//   rcvbuf CID BYTES                   ok
//   drop PORT on|off                   ok                   (nftables: drop TCP to/from local PORT)
//
// Received bytes are checked against the pattern at their stream offset (MATCH 1/0); errors are
// replied as "err ECONNRESET COUNT" etc.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "protocol.hh"

namespace {

using Clock = std::chrono::steady_clock;
using pno::semtest::check_pattern;
using pno::semtest::fill_pattern;

struct Conn {
  int fd = -1;
  std::uint64_t tx_off = 0;  ///< pattern offset of the next byte sent
  std::uint64_t rx_off = 0;  ///< pattern offset of the next byte received
  bool rx_match = true;
};

std::mutex g_mu;
std::map<int, Conn> g_conns;
std::map<int, int> g_listeners;  // lid -> fd
int g_next_id = 1;

std::string err_reply(int e, const std::string& extra = {}) {
  const char* name = strerrorname_np(e);
  std::string r = "err ";
  r += name != nullptr ? name : std::to_string(e);
  if (!extra.empty()) r += " " + extra;
  return r;
}

Conn* conn(int cid) {
  std::lock_guard lk(g_mu);
  auto it = g_conns.find(cid);
  return it == g_conns.end() ? nullptr : &it->second;  // std::map nodes are stable
}

int add_conn(int fd) {
  std::lock_guard lk(g_mu);
  int id = g_next_id++;
  g_conns[id].fd = fd;
  return id;
}

/// Waits for `events` on `fd` until `deadline`: the revents, 0 on timeout.
short wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) left = 0;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return p.revents;
    if (n == 0) return 0;
    if (errno != EINTR) return POLLERR;
  }
}

Clock::time_point after_ms(long ms) { return Clock::now() + std::chrono::milliseconds(ms); }

std::string endpoint_ip(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return buf;
}

bool send_all(Conn& c, const std::uint8_t* p, std::size_t n, int& err) {
  while (n > 0) {
    ssize_t k = ::send(c.fd, p, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool send_pattern(Conn& c, std::size_t n, int& err) {
  std::vector<std::uint8_t> buf(64 * 1024);
  while (n > 0) {
    std::size_t k = std::min(n, buf.size());
    fill_pattern({buf.data(), k}, c.tx_off);
    if (!send_all(c, buf.data(), k, err)) return false;
    c.tx_off += k;
    n -= k;
  }
  return true;
}

/// Reads up to `limit` bytes (or until EOF / error / deadline), checking the pattern. Returns the
/// count; `eof` set on EOF, `err` on an error or ETIMEDOUT when the deadline passed first.
std::size_t read_pattern(Conn& c, std::size_t limit, Clock::time_point deadline, bool& eof, int& err,
                         std::string* hex = nullptr) {
  std::vector<std::uint8_t> buf(64 * 1024);
  std::size_t got = 0;
  eof = false;
  err = 0;
  while (got < limit) {
    short r = wait_fd(c.fd, POLLIN, deadline);
    if (r == 0) {
      err = ETIMEDOUT;
      break;
    }
    ssize_t k = ::recv(c.fd, buf.data(), std::min(buf.size(), limit - got), MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      err = errno;
      break;
    }
    if (k == 0) {
      eof = true;
      break;
    }
    if (hex != nullptr) {
      static const char digits[] = "0123456789abcdef";
      for (ssize_t i = 0; i < k; ++i) {
        hex->push_back(digits[buf[i] >> 4]);
        hex->push_back(digits[buf[i] & 15]);
      }
    } else if (!check_pattern({buf.data(), static_cast<std::size_t>(k)}, c.rx_off)) {
      c.rx_match = false;
    }
    c.rx_off += static_cast<std::size_t>(k);
    got += static_cast<std::size_t>(k);
  }
  return got;
}

std::string nft(int port, bool on) {
  std::string table = "pnosem_" + std::to_string(port);
  std::string cmd;
  if (on) {
    cmd = "nft -f - <<'EOF'\ntable inet " + table + " {\n  chain in { type filter hook input priority 0; tcp dport " +
          std::to_string(port) + " drop; tcp sport " + std::to_string(port) +
          " drop; }\n  chain out { type filter hook output priority 0; tcp sport " + std::to_string(port) +
          " drop; tcp dport " + std::to_string(port) + " drop; }\n}\nEOF";
  } else {
    cmd = "nft delete table inet " + table;
  }
  int rc = std::system(cmd.c_str());
  return rc == 0 ? "ok" : "err EIO nft exited " + std::to_string(rc);
}

std::string handle(const std::string& line) {
  std::istringstream in(line);
  std::string op;
  in >> op;
  if (op == "ping") return "ok";
  if (op == "listen") {
    int port = 0;
    in >> port;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(fd, 128) < 0) {
      int e = errno;
      ::close(fd);
      return err_reply(e);
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    std::lock_guard lk(g_mu);
    int id = g_next_id++;
    g_listeners[id] = fd;
    return "ok " + std::to_string(id) + " " + std::to_string(ntohs(a.sin_port));
  }
  if (op == "accept") {
    int lid = 0;
    long ms = 0;
    in >> lid >> ms;
    int lfd;
    {
      std::lock_guard lk(g_mu);
      auto it = g_listeners.find(lid);
      if (it == g_listeners.end()) return err_reply(EBADF);
      lfd = it->second;
    }
    auto deadline = after_ms(ms);
    for (;;) {
      if (wait_fd(lfd, POLLIN, deadline) == 0) return err_reply(ETIMEDOUT);
      sockaddr_in a{};
      socklen_t len = sizeof a;
      int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
        return err_reply(errno);
      }
      // Blocking again: the data commands use poll with deadlines, and blocking sends.
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      int id = add_conn(fd);
      return "ok " + std::to_string(id) + " " + endpoint_ip(a) + " " + std::to_string(ntohs(a.sin_port));
    }
  }
  if (op == "connect") {
    std::string ip;
    int port = 0;
    long ms = 0;
    in >> ip >> port >> ms;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) {
      ::close(fd);
      return err_reply(EINVAL);
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 && errno != EINPROGRESS) {
      int e = errno;
      ::close(fd);
      return err_reply(e);
    }
    if (wait_fd(fd, POLLOUT, after_ms(ms)) == 0) {
      ::close(fd);
      return err_reply(ETIMEDOUT);
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
      ::close(fd);
      return err_reply(soerr);
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    int id = add_conn(fd);
    return "ok " + std::to_string(id) + " " + std::to_string(ntohs(a.sin_port));
  }
  if (op == "closelisten") {
    int lid = 0;
    in >> lid;
    std::lock_guard lk(g_mu);
    auto it = g_listeners.find(lid);
    if (it == g_listeners.end()) return err_reply(EBADF);
    ::close(it->second);
    g_listeners.erase(it);
    return "ok";
  }
  if (op == "drop") {
    int port = 0;
    std::string how;
    in >> port >> how;
    return nft(port, how == "on");
  }

  // Everything below works on a connection.
  int cid = 0;
  in >> cid;
  Conn* c = conn(cid);
  if (c == nullptr) return err_reply(EBADF, "no connection " + std::to_string(cid));
  if (op == "send") {
    std::size_t n = 0;
    in >> n;
    int e = 0;
    if (!send_pattern(*c, n, e)) return err_reply(e);
    return "ok " + std::to_string(n);
  }
  if (op == "sendchunks") {
    std::size_t n = 0, chunk = 1;
    long delay = 0;
    in >> n >> chunk >> delay;
    int e = 0;
    for (std::size_t sent = 0; sent < n;) {
      if (sent > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
      std::size_t k = std::min(chunk, n - sent);
      if (!send_pattern(*c, k, e)) return err_reply(e);
      sent += k;
    }
    return "ok " + std::to_string(n);
  }
  if (op == "sendhex") {
    std::string hex;
    in >> hex;
    std::vector<std::uint8_t> bytes;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      bytes.push_back(static_cast<std::uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    int e = 0;
    if (!send_all(*c, bytes.data(), bytes.size(), e)) return err_reply(e);
    c->tx_off += bytes.size();
    return "ok " + std::to_string(bytes.size());
  }
  if (op == "recv" || op == "readhex") {
    std::size_t n = 0;
    long ms = 0;
    in >> n >> ms;
    bool eof = false;
    int e = 0;
    std::string hex;
    std::size_t got = read_pattern(*c, n, after_ms(ms), eof, e, op == "readhex" ? &hex : nullptr);
    if (e != 0 && e != ETIMEDOUT) return err_reply(e, std::to_string(got));
    if (op == "readhex") return "ok " + (hex.empty() ? std::string("-") : hex) + " " + (eof ? "1" : "0");
    return "ok " + std::to_string(got) + " " + (eof ? "1" : "0") + " " + (c->rx_match ? "1" : "0");
  }
  if (op == "drain") {
    long ms = 0;
    in >> ms;
    bool eof = false;
    int e = 0;
    std::size_t got = read_pattern(*c, SIZE_MAX, after_ms(ms), eof, e);
    if (!eof) return err_reply(e, std::to_string(got));
    return "ok " + std::to_string(got) + " " + (c->rx_match ? "1" : "0");
  }
  if (op == "echo") {
    long ms = 0;
    in >> ms;
    auto deadline = after_ms(ms);
    std::vector<std::uint8_t> buf(64 * 1024);
    std::size_t total = 0;
    for (;;) {
      if (wait_fd(c->fd, POLLIN, deadline) == 0) return err_reply(ETIMEDOUT, std::to_string(total));
      ssize_t k = ::recv(c->fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (k < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return err_reply(errno, std::to_string(total));
      }
      if (k == 0) break;
      int e = 0;
      if (!send_all(*c, buf.data(), static_cast<std::size_t>(k), e)) return err_reply(e, std::to_string(total));
      total += static_cast<std::size_t>(k);
    }
    ::shutdown(c->fd, SHUT_WR);
    return "ok " + std::to_string(total);
  }
  if (op == "wait") {
    long ms = 0;
    in >> ms;
    if (wait_fd(c->fd, POLLIN, after_ms(ms)) == 0) return err_reply(ETIMEDOUT);
    char b;
    ssize_t k = ::recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k > 0) return "ok data";
    if (k == 0) return "ok eof";
    return err_reply(errno);
  }
  if (op == "shutwr") {
    if (::shutdown(c->fd, SHUT_WR) < 0) return err_reply(errno);
    return "ok";
  }
  if (op == "rcvbuf") {
    int bytes = 0;
    in >> bytes;
    if (::setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) < 0) return err_reply(errno);
    return "ok";
  }
  if (op == "close" || op == "rst") {
    if (op == "rst") {
      linger l{1, 0};
      ::setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(c->fd);
    std::lock_guard lk(g_mu);
    g_conns.erase(cid);
    return "ok";
  }
  return err_reply(EINVAL, "unknown command " + op);
}

void serve(int fd) {
  std::string buf;
  char chunk[4096];
  for (;;) {
    ssize_t k = ::read(fd, chunk, sizeof chunk);
    if (k <= 0) break;
    buf.append(chunk, static_cast<std::size_t>(k));
    std::size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      std::string reply = handle(line) + "\n";
      for (std::size_t off = 0; off < reply.size();) {
        ssize_t w = ::write(fd, reply.data() + off, reply.size() - off);
        if (w <= 0) {
          ::close(fd);
          return;
        }
        off += static_cast<std::size_t>(w);
      }
    }
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--control" && i + 1 < argc) path = argv[++i];
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: pno-semantics-peer --control PATH\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) {
    std::fprintf(stderr, "pno-semantics-peer: control path too long\n");
    return 2;
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(lfd, 16) < 0) {
    std::perror("pno-semantics-peer: control socket");
    return 1;
  }
  std::printf("pno-semantics-peer: ready on %s\n", path.c_str());
  std::fflush(stdout);
  for (;;) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      std::perror("pno-semantics-peer: accept");
      return 1;
    }
    std::thread(serve, fd).detach();
  }
}
