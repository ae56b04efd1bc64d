// pno-loadgen serve: an epoll server for the tests where the engine is the client. echo sends back
// what arrives, sink reads, source sends --bytes seeded bytes then FIN; one result line per
// connection (bytes and SHA-256 each way) and a summary at exit.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "tools/common.hh"
#include "tools/loadgen.hh"

namespace pno::tools {
namespace {

struct ServeOpts {
  sockaddr_in at{};
  std::string mode = "echo";
  std::uint64_t bytes = 1 << 20;  ///< source: bytes to send per connection
  std::uint64_t seed = 1;
  std::uint64_t count = 0;        ///< exit after this many connections finished (0 = run until signalled)
  std::uint64_t rst_after = 0;    ///< abort a connection with RST once this many bytes arrived
  bool linger0 = false;
  std::size_t buf = 64 * 1024;
  double timeout = 0;
  std::string ready_file;
  bool quiet = false;
  bool nodelay = false;
  int ka_idle = 0, ka_intvl = 0, ka_cnt = 0;  ///< --keepalive IDLE:INTVL:CNT (seconds, seconds, probes)
};

struct ServeConn {
  Fd fd;
  std::string peer;
  Clock::time_point t0;
  Sha256 tx, rx;
  std::uint64_t bytes_tx = 0, bytes_rx = 0;
  std::vector<std::uint8_t> buf;  // echo: received, not yet sent back; source: generated, not yet sent
  std::size_t head = 0, len = 0;  // valid bytes are buf[head, head+len)
  bool rd_eof = false, wr_shut = false;
  ByteGen gen{0};
  std::uint32_t interest = 0;
};

/// The server: the listening socket, its epoll set and every open connection.
class Server {
 public:
  explicit Server(const ServeOpts& o) : o_(o), t_start_(Clock::now()) {}

  /// Serves until --count connections finished, a signal, or --timeout; returns the exit status.
  int run();

 private:
  /// Socket, bind, listen, epoll; the "listening" line and the ready file. False: error printed.
  bool listen();
  void accept_all();
  void on_event(std::uint64_t id, std::uint32_t events);
  /// Reads what the socket holds (echo: into the connection's buffer); `abort_now` once
  /// --rst-after bytes arrived. Returns an error, empty if none.
  std::string read_conn(ServeConn& c, bool& abort_now);
  /// Sends the buffer (echo: what arrived; source: seeded bytes). Returns an error, empty if none.
  std::string write_conn(ServeConn& c);
  void update_interest(std::uint64_t id, ServeConn& c);
  /// Closes the connection and prints its line (errors always, the rest unless --quiet).
  void close_conn(std::uint64_t id, const std::string& err, bool reset_by_us);

  const ServeOpts& o_;
  const Clock::time_point t_start_;
  Fd lfd_, ep_;
  std::map<std::uint64_t, std::unique_ptr<ServeConn>> conns_;
  std::uint64_t next_id_ = 1, finished_ = 0, errors_ = 0, total_rx_ = 0, total_tx_ = 0;
  std::vector<std::uint8_t> scratch_;
};

int Server::run() {
  if (!listen()) return 1;
  std::vector<epoll_event> evs(256);
  scratch_.resize(o_.buf);
  bool timed_out = false;
  while (!g_stop && (o_.count == 0 || finished_ < o_.count)) {
    if (o_.timeout > 0 && secs_since(t_start_) > o_.timeout) {
      timed_out = true;
      break;
    }
    int n = ::epoll_wait(ep_.get(), evs.data(), static_cast<int>(evs.size()), 200);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t id = evs[i].data.u64;
      if (id == 0) {
        accept_all();
      } else {
        on_event(id, evs[i].events);
      }
    }
  }
  // Connections still open at exit are reported as unfinished.
  while (!conns_.empty()) close_conn(conns_.begin()->first, "unfinished at exit", false);
  Json j;
  j.s("event", "summary").u("conns", finished_).u("errors", errors_);
  j.u("bytes_recv", total_rx_).u("bytes_sent", total_tx_);
  j.b("timed_out", timed_out).n("secs", secs_since(t_start_));
  j.b("ok", errors_ == 0 && !timed_out);
  j.print();
  return errors_ == 0 && !timed_out ? 0 : 1;
}

bool Server::listen() {
  lfd_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(lfd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd_.get(), reinterpret_cast<const sockaddr*>(&o_.at), sizeof o_.at) != 0 ||
      ::listen(lfd_.get(), 4096) != 0) {
    Json().s("event", "error").s("error", "bind/listen " + endpoint_str(o_.at) + ": " + errno_str(errno)).print();
    return false;
  }
  ep_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.u64 = 0;
  ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, lfd_.get(), &lev);
  Json().s("event", "listening").s("addr", endpoint_str(o_.at)).s("mode", o_.mode).print();
  if (!o_.ready_file.empty()) {
    if (FILE* f = std::fopen(o_.ready_file.c_str(), "w")) {
      std::fputs("ready\n", f);
      std::fclose(f);
    }
  }
  return true;
}

void Server::accept_all() {
  while (true) {
    sockaddr_in peer{};
    socklen_t pl = sizeof peer;
    int cfd = ::accept4(lfd_.get(), reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) break;
    auto c = std::make_unique<ServeConn>();
    c->fd = Fd(cfd);
    if (o_.nodelay) set_nodelay(cfd);
    if (o_.ka_idle > 0) {
      int on = 1;
      ::setsockopt(cfd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
      ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPIDLE, &o_.ka_idle, sizeof o_.ka_idle);
      ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPINTVL, &o_.ka_intvl, sizeof o_.ka_intvl);
      ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPCNT, &o_.ka_cnt, sizeof o_.ka_cnt);
    }
    c->peer = endpoint_str(peer);
    c->t0 = Clock::now();
    c->gen = ByteGen(o_.seed);
    c->buf.resize(o_.buf);
    const std::uint64_t cid = next_id_++;
    epoll_event ev{};
    ev.events = 0;
    ev.data.u64 = cid;
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, cfd, &ev);
    update_interest(cid, *c);
    conns_.emplace(cid, std::move(c));
  }
}

void Server::on_event(std::uint64_t id, std::uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ServeConn& c = *it->second;
  std::string err;
  bool abort_now = false;
  // Read.
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) err = read_conn(c, abort_now);
  // Write.
  if (err.empty() && !abort_now) err = write_conn(c);
  if (abort_now) {
    close_conn(id, "", true);
    return;
  }
  if (!err.empty()) {
    close_conn(id, err, false);
    return;
  }
  // Half-close handling: echo/sink answer the peer's FIN with ours once everything is sent;
  // source sends its FIN after the last byte and then waits for the peer's FIN.
  const bool all_sent = c.len == 0 && (o_.mode != "source" || c.bytes_tx == o_.bytes);
  if (all_sent && !c.wr_shut && (o_.mode == "source" || c.rd_eof)) {
    ::shutdown(c.fd.get(), SHUT_WR);
    c.wr_shut = true;
  }
  if (c.wr_shut && c.rd_eof) {
    close_conn(id, "", false);
    return;
  }
  update_interest(id, c);
}

std::string Server::read_conn(ServeConn& c, bool& abort_now) {
  while (!c.rd_eof) {
    std::uint8_t* dst;
    std::size_t room;
    if (o_.mode == "echo") {
      if (c.len == c.buf.size()) break;
      // Compact the buffer so free space is contiguous at the end.
      if (c.head > 0) {
        std::memmove(c.buf.data(), c.buf.data() + c.head, c.len);
        c.head = 0;
      }
      dst = c.buf.data() + c.len;
      room = c.buf.size() - c.len;
    } else {
      dst = scratch_.data();
      room = scratch_.size();
    }
    ssize_t r = ::recv(c.fd.get(), dst, room, 0);
    if (r > 0) {
      c.rx.update({dst, static_cast<std::size_t>(r)});
      c.bytes_rx += static_cast<std::uint64_t>(r);
      if (o_.mode == "echo") c.len += static_cast<std::size_t>(r);
      if (o_.rst_after && c.bytes_rx >= o_.rst_after) {
        abort_now = true;
        break;
      }
    } else if (r == 0) {
      c.rd_eof = true;
    } else {
      if (errno != EAGAIN && errno != EINTR) return "recv: " + errno_str(errno);
      break;
    }
  }
  return {};
}

std::string Server::write_conn(ServeConn& c) {
  while (true) {
    if (c.len == 0 && o_.mode == "source" && c.bytes_tx < o_.bytes) {
      std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(c.buf.size(), o_.bytes - c.bytes_tx));
      c.gen.fill({c.buf.data(), k});
      c.tx.update({c.buf.data(), k});
      c.head = 0;
      c.len = k;
    }
    if (c.len == 0) break;
    ssize_t w = ::send(c.fd.get(), c.buf.data() + c.head, c.len, MSG_NOSIGNAL);
    if (w > 0) {
      if (o_.mode == "echo") c.tx.update({c.buf.data() + c.head, static_cast<std::size_t>(w)});
      c.bytes_tx += static_cast<std::uint64_t>(w);
      c.head += static_cast<std::size_t>(w);
      c.len -= static_cast<std::size_t>(w);
      if (c.len == 0) c.head = 0;
    } else {
      if (errno != EAGAIN && errno != EINTR) return "send: " + errno_str(errno);
      break;
    }
  }
  return {};
}

void Server::update_interest(std::uint64_t id, ServeConn& c) {
  std::uint32_t want = 0;
  const bool room = c.len < c.buf.size();
  if (!c.rd_eof && (o_.mode != "echo" || room)) want |= EPOLLIN;
  if (c.len > 0 || (o_.mode == "source" && c.bytes_tx < o_.bytes && !c.wr_shut)) want |= EPOLLOUT;
  if (want != c.interest) {
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = id;
    ::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    c.interest = want;
  }
}

void Server::close_conn(std::uint64_t id, const std::string& err, bool reset_by_us) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ServeConn& c = *it->second;
  if (reset_by_us || o_.linger0) set_linger0(c.fd.get());
  ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  c.fd.reset();
  const double secs = secs_since(c.t0);
  bool ok = err.empty();
  if (ok && o_.mode == "source") ok = c.bytes_tx == o_.bytes;
  if (!ok) ++errors_;
  total_rx_ += c.bytes_rx;
  total_tx_ += c.bytes_tx;
  if (!o_.quiet || !ok) {
    Json j;
    j.s("event", "conn").s("peer", c.peer).s("mode", o_.mode).b("ok", ok);
    j.u("bytes_recv", c.bytes_rx).s("sha256_recv", c.rx.hex());
    j.u("bytes_sent", c.bytes_tx).s("sha256_sent", c.tx.hex());
    j.b("eof", c.rd_eof).b("reset_by_us", reset_by_us).n("secs", secs);
    j.n("mbytes_per_s", secs > 0 ? static_cast<double>(std::max(c.bytes_rx, c.bytes_tx)) / secs / 1e6 : 0);
    if (!err.empty()) j.s("error", err);
    j.print();
  }
  ++finished_;
  conns_.erase(it);
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  Args a(argc, argv, {"linger0", "quiet", "nodelay"},
         {"listen", "port", "mode", "bytes", "seed", "count", "rst-after", "buf", "timeout", "ready-file",
          "keepalive"});
  if (!a.ok()) return usage_error("serve", a.error());
  ServeOpts o;
  std::string listen = a.str("listen", "");
  if (listen.empty()) listen = "0.0.0.0:" + a.str("port", "");
  auto at = parse_endpoint(listen);
  if (!at) return usage_error("serve", "--listen ADDR:PORT or --port P required");
  o.at = *at;
  o.mode = a.str("mode", "echo");
  if (o.mode == "discard") o.mode = "sink";
  if (o.mode != "echo" && o.mode != "sink" && o.mode != "source") return usage_error("serve", "bad --mode");
  o.bytes = a.u64("bytes", 1 << 20);
  o.seed = a.u64("seed", 1);
  o.count = a.u64("count", 0);
  o.rst_after = a.u64("rst-after", 0);
  o.linger0 = a.flag("linger0");
  o.buf = std::clamp<std::size_t>(a.u64("buf", 64 * 1024), 1024, kMaxChunk);
  o.timeout = a.num("timeout", 0);
  o.ready_file = a.str("ready-file", "");
  o.quiet = a.flag("quiet");
  o.nodelay = a.flag("nodelay");
  if (auto ka = a.get("keepalive")) {
    if (std::sscanf(ka->c_str(), "%d:%d:%d", &o.ka_idle, &o.ka_intvl, &o.ka_cnt) != 3 || o.ka_idle <= 0 ||
        o.ka_intvl <= 0 || o.ka_cnt <= 0)
      return usage_error("serve", "--keepalive IDLE:INTVL:CNT");
  }
  return Server(o).run();
}

}  // namespace pno::tools
