// pno-bench-echo: a small TCP echo server for bench/run (the "echo" app).
//
//   pno-bench-echo ADDR PORT
//
// One thread, epoll, non-blocking sockets, TCP_NODELAY, a 256 KiB buffer per connection: it reads
// while there is room, writes back what it holds, and stops reading while its buffer is full (the
// peer's sends then wait on TCP flow control rather than on a full pipe, which is what deadlocks
// socat's PIPE echo on a long stream). It ends on SIGTERM/SIGINT with status 0. It does nothing but
// move bytes, so its CPU time is the cost of the socket calls and the stack under them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr std::size_t kBuf = 256 * 1024;

struct Conn {
  int fd = -1;
  std::vector<char> buf = std::vector<char>(kBuf);
  std::size_t head = 0, len = 0;
  bool eof = false;
  std::uint32_t interest = 0;
};

void set_interest(int ep, Conn& c) {
  std::uint32_t want = 0;
  if (!c.eof && c.len < c.buf.size()) want |= EPOLLIN;
  if (c.len > 0) want |= EPOLLOUT;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd;
  ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
  c.interest = want;
}

// Returns false when the connection is finished (peer closed and everything echoed, or an error).
bool service(Conn& c) {
  for (;;) {
    bool progress = false;
    if (!c.eof && c.len < c.buf.size()) {
      if (c.head > 0 && c.len > 0 && c.head + c.len == c.buf.size()) {
        std::memmove(c.buf.data(), c.buf.data() + c.head, c.len);
        c.head = 0;
      } else if (c.len == 0) {
        c.head = 0;
      }
      const std::size_t tail = c.head + c.len;
      const ssize_t r = ::recv(c.fd, c.buf.data() + tail, c.buf.size() - tail, 0);
      if (r > 0) {
        c.len += static_cast<std::size_t>(r);
        progress = true;
      } else if (r == 0) {
        c.eof = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
    }
    if (c.len > 0) {
      const ssize_t w = ::send(c.fd, c.buf.data() + c.head, c.len, MSG_NOSIGNAL);
      if (w > 0) {
        c.head += static_cast<std::size_t>(w);
        c.len -= static_cast<std::size_t>(w);
        progress = true;
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
    }
    if (c.eof && c.len == 0) return false;
    if (!progress) return true;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ADDR PORT\n", argv[0]);
    return 64;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);

  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[2])));
  if (::inet_pton(AF_INET, argv[1], &at.sin_addr) != 1) {
    std::fprintf(stderr, "bad address %s\n", argv[1]);
    return 64;
  }
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 || ::listen(lfd, 1024) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.fd = lfd;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  std::printf("listening on %s:%s\n", argv[1], argv[2]);
  std::fflush(stdout);

  std::unordered_map<int, std::unique_ptr<Conn>> conns;
  std::vector<epoll_event> evs(256);
  while (!g_stop) {
    const int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 500);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          const int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto c = std::make_unique<Conn>();
          c->fd = cfd;
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = cfd;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
          c->interest = EPOLLIN;
          conns.emplace(cfd, std::move(c));
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      if (!service(c)) {
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        conns.erase(it);
        continue;
      }
      set_interest(ep, c);
    }
  }
  for (auto& [fd, c] : conns) ::close(fd);
  ::close(ep);
  ::close(lfd);
  return 0;
}
