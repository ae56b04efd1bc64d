// pno-loadgen: the Linux-side partner of the engine in interop tests and benchmarks.
//
//   pno-loadgen stream    --connect A:P --bytes N [--mode echo|send|recv]   one stream, sha256 both ways
//   pno-loadgen halfclose --connect A:P --bytes N                          send all, SHUT_WR, then read
//   pno-loadgen serve     --listen A:P --mode echo|sink|source              a server (engine-client tests)
//   pno-loadgen conns     --connect A:P --n 1000 --bytes B                  N concurrent verified exchanges
//   pno-loadgen pingpong  --connect A:P --size 64 --count N                 round-trip latency percentiles
//
// Every subcommand prints one JSON object per line on stdout (the last line is the result) and exits 0
// only when the exchange was verified. See src/tools/README.md.
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <thread>

#include "tools/common.hh"

namespace pno::tools {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

void install_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int usage_error(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "pno-loadgen %s: %s (see --help)\n", cmd.c_str(), msg.c_str());
  return 64;
}

constexpr std::size_t kMaxChunk = 1 << 20;

// ------------------------------------------------------------------------------------------------
// stream / halfclose
// ------------------------------------------------------------------------------------------------

struct StreamOpts {
  sockaddr_in to{};
  std::string mode = "echo";
  std::uint64_t bytes = 1 << 20;
  std::uint64_t seed = 1;
  std::size_t chunk = 64 * 1024;
  double timeout = 120;
  bool shutdown_after_send = true;
  double read_delay_ms = 0;    ///< halfclose: read nothing until everything is sent and SHUT_WR done
  std::uint64_t rst_after = 0; ///< abort with RST after this many bytes sent (0 = never)
  double hold = 0;             ///< keep the connection open this long after the exchange
  bool linger0 = false;
  bool nodelay = false;
  bool expect_reset = false;   ///< a reset by the peer is the expected outcome
};

int run_stream(const std::string& cmd, const StreamOpts& o) {
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout));
  Json out;
  out.s("cmd", cmd).s("mode", o.mode).s("peer", endpoint_str(o.to)).u("bytes", o.bytes).u("seed", o.seed);

  auto finish = [&](bool ok, const std::string& err, std::uint64_t sent, std::uint64_t recvd, Sha256& tx,
                    Sha256& rx, bool eof, bool reset, double connect_ms) {
    double secs = secs_since(t0);
    out.b("ok", ok).u("bytes_sent", sent).u("bytes_recv", recvd);
    out.s("sha256_sent", tx.hex()).s("sha256_recv", rx.hex());
    out.b("eof", eof).b("reset", reset).n("connect_ms", connect_ms).n("secs", secs);
    const double moved = static_cast<double>(std::max(sent, recvd));
    out.n("mbytes_per_s", secs > 0 ? moved / secs / 1e6 : 0);
    if (!err.empty()) out.s("error", err);
    out.print();
    return ok ? 0 : 1;
  };

  Sha256 tx, rx;
  std::uint64_t sent = 0, recvd = 0;
  bool eof = false, reset = false;
  Fd fd = start_connect(o.to);
  if (!fd.valid()) return finish(false, "socket/connect: " + errno_str(errno), 0, 0, tx, rx, false, false, 0);
  if (o.nodelay) set_nodelay(fd.get());

  // Wait for the handshake.
  {
    pollfd p{fd.get(), POLLOUT, 0};
    while (true) {
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (ms <= 0 || g_stop) return finish(false, "connect timed out", 0, 0, tx, rx, false, false, 0);
      int r = ::poll(&p, 1, std::min(ms, 200));
      if (r > 0) break;
    }
    if (int e = socket_error(fd.get()); e != 0)
      return finish(false, "connect: " + errno_str(e), 0, 0, tx, rx, false, e == ECONNRESET, 0);
  }
  const double connect_ms = secs_since(t0) * 1e3;

  ByteGen gen(o.seed);
  std::vector<std::uint8_t> wbuf(o.chunk), rbuf(std::max<std::size_t>(o.chunk, 64 * 1024));
  std::size_t woff = 0, wlen = 0;  // unsent part of wbuf
  const bool sending = o.mode != "recv";
  const std::uint64_t to_send = sending ? (o.rst_after ? std::min(o.rst_after, o.bytes) : o.bytes) : 0;
  bool wr_shut = false;
  bool reading_allowed = o.read_delay_ms <= 0;
  std::string err;

  while (true) {
    if (g_stop) {
      err = "interrupted";
      break;
    }
    if (Clock::now() > deadline) {
      err = "timed out";
      break;
    }
    // Done sending?
    if (sent == to_send && !wr_shut) {
      if (o.rst_after) {
        // Abortive close: the peer sees a RST (RFC 9293 §3.10.5); our side is finished here.
        set_linger0(fd.get());
        fd.reset();
        return finish(true, "", sent, recvd, tx, rx, false, false, connect_ms);
      }
      if (o.shutdown_after_send || o.mode == "send") ::shutdown(fd.get(), SHUT_WR);
      wr_shut = true;
      if (!reading_allowed) {
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(o.read_delay_ms));
        reading_allowed = true;
      }
    }
    // Finished?
    if (eof) break;
    if (o.mode == "echo" && !o.shutdown_after_send && wr_shut && recvd >= o.bytes) break;

    short events = 0;
    if (sent < to_send) events |= POLLOUT;
    if (reading_allowed) events |= POLLIN;
    pollfd p{fd.get(), events, 0};
    int r = ::poll(&p, 1, 200);
    if (r < 0 && errno != EINTR) {
      err = "poll: " + errno_str(errno);
      break;
    }
    if (r <= 0) continue;
    if ((p.revents & POLLIN) || (p.revents & (POLLERR | POLLHUP))) {
      if (reading_allowed) {
        ssize_t n = ::recv(fd.get(), rbuf.data(), rbuf.size(), 0);
        if (n > 0) {
          rx.update({rbuf.data(), static_cast<std::size_t>(n)});
          recvd += static_cast<std::uint64_t>(n);
        } else if (n == 0) {
          eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          reset = errno == ECONNRESET;
          err = "recv: " + errno_str(errno);
          break;
        }
      } else if (p.revents & POLLERR) {
        int e = socket_error(fd.get());
        reset = e == ECONNRESET;
        err = "socket error: " + errno_str(e);
        break;
      }
    }
    if ((p.revents & POLLOUT) && sent < to_send) {
      // Keep writing until the socket is full: one poll per 64 KiB is too slow for 1 GiB.
      for (int k = 0; k < 64 && sent < to_send; ++k) {
        if (woff == wlen) {
          wlen = static_cast<std::size_t>(std::min<std::uint64_t>(wbuf.size(), to_send - sent));
          gen.fill({wbuf.data(), wlen});
          tx.update({wbuf.data(), wlen});
          woff = 0;
        }
        ssize_t n = ::send(fd.get(), wbuf.data() + woff, wlen - woff, MSG_NOSIGNAL);
        if (n > 0) {
          woff += static_cast<std::size_t>(n);
          sent += static_cast<std::uint64_t>(n);
        } else {
          if (errno != EAGAIN && errno != EINTR) {
            reset = errno == ECONNRESET || errno == EPIPE;
            err = "send: " + errno_str(errno);
          }
          break;
        }
      }
      if (!err.empty()) break;
    }
  }

  bool ok = err.empty();
  if (ok) {
    if (o.mode == "echo") {
      ok = sent == o.bytes && recvd == o.bytes && tx.hex() == rx.hex();
      if (!ok) err = "echo mismatch";
    } else if (o.mode == "send") {
      ok = sent == o.bytes && recvd == 0 && eof;
      if (!ok) err = recvd ? "discard peer sent data" : "no EOF from peer";
    } else {
      ok = eof && (o.bytes == 0 || recvd == o.bytes);
      if (!ok) err = "short read";
    }
  }
  if (o.expect_reset) {
    // The test wanted a reset by the peer: success is seeing one.
    ok = reset;
    err = reset ? "" : (err.empty() ? "expected a reset, got none" : err);
  }
  if (ok && o.hold > 0) {
    Json().s("event", "holding").s("peer", endpoint_str(o.to)).print();
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.hold));
    while (Clock::now() < until && !g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (o.linger0) set_linger0(fd.get());
  fd.reset();
  return finish(ok, err, sent, recvd, tx, rx, eof, reset, connect_ms);
}

int cmd_stream(const std::string& cmd, int argc, char** argv) {
  Args a(argc, argv, {"no-shutdown", "linger0", "nodelay", "expect-reset"},
         {"connect", "mode", "bytes", "seed", "chunk", "timeout", "read-delay-ms", "rst-after", "hold"});
  if (!a.ok()) return usage_error(cmd, a.error());
  StreamOpts o;
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error(cmd, "--connect ADDR:PORT required");
  o.to = *to;
  o.mode = a.str("mode", "echo");
  if (o.mode != "echo" && o.mode != "send" && o.mode != "recv") return usage_error(cmd, "bad --mode");
  o.bytes = a.u64("bytes", cmd == "halfclose" ? 256 * 1024 : 1 << 20);
  o.seed = a.u64("seed", 1);
  o.chunk = std::clamp<std::size_t>(a.u64("chunk", 64 * 1024), 1, kMaxChunk);
  o.timeout = a.num("timeout", 120);
  o.shutdown_after_send = !a.flag("no-shutdown");
  o.read_delay_ms = a.num("read-delay-ms", cmd == "halfclose" ? 300 : 0);
  o.rst_after = a.u64("rst-after", 0);
  o.hold = a.num("hold", 0);
  o.linger0 = a.flag("linger0");
  o.nodelay = a.flag("nodelay");
  o.expect_reset = a.flag("expect-reset");
  if (cmd == "halfclose") {
    o.mode = "echo";
    o.shutdown_after_send = true;
  }
  return run_stream(cmd, o);
}

// ------------------------------------------------------------------------------------------------
// serve
// ------------------------------------------------------------------------------------------------

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

  const auto t_start = Clock::now();
  Fd lfd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(lfd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd.get(), reinterpret_cast<const sockaddr*>(&o.at), sizeof o.at) != 0 ||
      ::listen(lfd.get(), 4096) != 0) {
    Json().s("event", "error").s("error", "bind/listen " + endpoint_str(o.at) + ": " + errno_str(errno)).print();
    return 1;
  }
  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.u64 = 0;
  ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, lfd.get(), &lev);
  Json().s("event", "listening").s("addr", endpoint_str(o.at)).s("mode", o.mode).print();
  if (!o.ready_file.empty()) {
    if (FILE* f = std::fopen(o.ready_file.c_str(), "w")) {
      std::fputs("ready\n", f);
      std::fclose(f);
    }
  }

  std::map<std::uint64_t, std::unique_ptr<ServeConn>> conns;
  std::uint64_t next_id = 1, finished = 0, errors = 0, total_rx = 0, total_tx = 0;

  auto update_interest = [&](std::uint64_t id, ServeConn& c) {
    std::uint32_t want = 0;
    const bool room = c.len < c.buf.size();
    if (!c.rd_eof && (o.mode != "echo" || room)) want |= EPOLLIN;
    if (c.len > 0 || (o.mode == "source" && c.bytes_tx < o.bytes && !c.wr_shut)) want |= EPOLLOUT;
    if (want != c.interest) {
      epoll_event ev{};
      ev.events = want;
      ev.data.u64 = id;
      ::epoll_ctl(ep.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
      c.interest = want;
    }
  };

  auto close_conn = [&](std::uint64_t id, const std::string& err, bool reset_by_us) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    ServeConn& c = *it->second;
    if (reset_by_us || o.linger0) set_linger0(c.fd.get());
    ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    c.fd.reset();
    const double secs = secs_since(c.t0);
    bool ok = err.empty();
    if (ok && o.mode == "source") ok = c.bytes_tx == o.bytes;
    if (!ok) ++errors;
    total_rx += c.bytes_rx;
    total_tx += c.bytes_tx;
    if (!o.quiet || !ok) {
      Json j;
      j.s("event", "conn").s("peer", c.peer).s("mode", o.mode).b("ok", ok);
      j.u("bytes_recv", c.bytes_rx).s("sha256_recv", c.rx.hex());
      j.u("bytes_sent", c.bytes_tx).s("sha256_sent", c.tx.hex());
      j.b("eof", c.rd_eof).b("reset_by_us", reset_by_us).n("secs", secs);
      j.n("mbytes_per_s", secs > 0 ? static_cast<double>(std::max(c.bytes_rx, c.bytes_tx)) / secs / 1e6 : 0);
      if (!err.empty()) j.s("error", err);
      j.print();
    }
    ++finished;
    conns.erase(it);
  };

  std::vector<epoll_event> evs(256);
  std::vector<std::uint8_t> scratch(o.buf);
  bool timed_out = false;
  while (!g_stop && (o.count == 0 || finished < o.count)) {
    if (o.timeout > 0 && secs_since(t_start) > o.timeout) {
      timed_out = true;
      break;
    }
    int n = ::epoll_wait(ep.get(), evs.data(), static_cast<int>(evs.size()), 200);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t id = evs[i].data.u64;
      if (id == 0) {
        while (true) {
          sockaddr_in peer{};
          socklen_t pl = sizeof peer;
          int cfd = ::accept4(lfd.get(), reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          auto c = std::make_unique<ServeConn>();
          c->fd = Fd(cfd);
          if (o.nodelay) set_nodelay(cfd);
          if (o.ka_idle > 0) {
            int on = 1;
            ::setsockopt(cfd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
            ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPIDLE, &o.ka_idle, sizeof o.ka_idle);
            ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPINTVL, &o.ka_intvl, sizeof o.ka_intvl);
            ::setsockopt(cfd, IPPROTO_TCP, TCP_KEEPCNT, &o.ka_cnt, sizeof o.ka_cnt);
          }
          c->peer = endpoint_str(peer);
          c->t0 = Clock::now();
          c->gen = ByteGen(o.seed);
          c->buf.resize(o.buf);
          const std::uint64_t cid = next_id++;
          epoll_event ev{};
          ev.events = 0;
          ev.data.u64 = cid;
          ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, cfd, &ev);
          update_interest(cid, *c);
          conns.emplace(cid, std::move(c));
        }
        continue;
      }
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      ServeConn& c = *it->second;
      std::string err;
      bool abort_now = false;
      // Read.
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        while (!c.rd_eof) {
          std::uint8_t* dst;
          std::size_t room;
          if (o.mode == "echo") {
            if (c.len == c.buf.size()) break;
            // Compact the buffer so free space is contiguous at the end.
            if (c.head > 0) {
              std::memmove(c.buf.data(), c.buf.data() + c.head, c.len);
              c.head = 0;
            }
            dst = c.buf.data() + c.len;
            room = c.buf.size() - c.len;
          } else {
            dst = scratch.data();
            room = scratch.size();
          }
          ssize_t r = ::recv(c.fd.get(), dst, room, 0);
          if (r > 0) {
            c.rx.update({dst, static_cast<std::size_t>(r)});
            c.bytes_rx += static_cast<std::uint64_t>(r);
            if (o.mode == "echo") c.len += static_cast<std::size_t>(r);
            if (o.rst_after && c.bytes_rx >= o.rst_after) {
              abort_now = true;
              break;
            }
          } else if (r == 0) {
            c.rd_eof = true;
          } else {
            if (errno != EAGAIN && errno != EINTR) err = "recv: " + errno_str(errno);
            break;
          }
        }
      }
      // Write.
      if (err.empty() && !abort_now) {
        while (true) {
          if (c.len == 0 && o.mode == "source" && c.bytes_tx < o.bytes) {
            std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(c.buf.size(), o.bytes - c.bytes_tx));
            c.gen.fill({c.buf.data(), k});
            c.tx.update({c.buf.data(), k});
            c.head = 0;
            c.len = k;
          }
          if (c.len == 0) break;
          ssize_t w = ::send(c.fd.get(), c.buf.data() + c.head, c.len, MSG_NOSIGNAL);
          if (w > 0) {
            if (o.mode == "echo") c.tx.update({c.buf.data() + c.head, static_cast<std::size_t>(w)});
            c.bytes_tx += static_cast<std::uint64_t>(w);
            c.head += static_cast<std::size_t>(w);
            c.len -= static_cast<std::size_t>(w);
            if (c.len == 0) c.head = 0;
          } else {
            if (errno != EAGAIN && errno != EINTR) err = "send: " + errno_str(errno);
            break;
          }
        }
      }
      if (abort_now) {
        close_conn(id, "", true);
        continue;
      }
      if (!err.empty()) {
        close_conn(id, err, false);
        continue;
      }
      // Half-close handling: echo/sink answer the peer's FIN with ours once everything is sent;
      // source sends its FIN after the last byte and then waits for the peer's FIN.
      const bool all_sent = c.len == 0 && (o.mode != "source" || c.bytes_tx == o.bytes);
      if (all_sent && !c.wr_shut && (o.mode == "source" || c.rd_eof)) {
        ::shutdown(c.fd.get(), SHUT_WR);
        c.wr_shut = true;
      }
      if (c.wr_shut && c.rd_eof) {
        close_conn(id, "", false);
        continue;
      }
      update_interest(id, c);
    }
  }
  // Connections still open at exit are reported as unfinished.
  while (!conns.empty()) close_conn(conns.begin()->first, "unfinished at exit", false);
  Json j;
  j.s("event", "summary").u("conns", finished).u("errors", errors).u("bytes_recv", total_rx).u("bytes_sent", total_tx);
  j.b("timed_out", timed_out).n("secs", secs_since(t_start));
  j.b("ok", errors == 0 && !timed_out);
  j.print();
  return errors == 0 && !timed_out ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// conns
// ------------------------------------------------------------------------------------------------

struct Conn {
  Fd fd;
  enum class St { connecting, exchanging, done, failed } st = St::connecting;
  std::uint64_t sent = 0, recvd = 0;
  ByteGen gen{0};
  Sha256 tx, rx;
  std::vector<std::uint8_t> pending;  // generated, not yet sent
  std::size_t poff = 0;
  double connect_ms = 0;
  std::uint32_t interest = 0;
};

int cmd_conns(int argc, char** argv) {
  Args a(argc, argv, {"no-hold"}, {"connect", "n", "bytes", "seed", "timeout", "ramp"});
  if (!a.ok()) return usage_error("conns", a.error());
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error("conns", "--connect ADDR:PORT required");
  const std::uint64_t n = a.u64("n", 1000);
  const std::uint64_t bytes = a.u64("bytes", 4096);
  const std::uint64_t seed = a.u64("seed", 1);
  const double timeout = a.num("timeout", 120);
  const std::uint64_t ramp = a.u64("ramp", n);  // connects started per 10 ms batch
  const bool hold = !a.flag("no-hold");
  raise_fd_limit();

  const auto t0 = Clock::now();
  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  std::vector<Conn> cs(n);
  std::map<std::string, std::uint64_t> errs;
  std::uint64_t started = 0, established = 0, done = 0, failed = 0, open_now = 0, peak_open = 0;
  std::vector<double> connect_times;

  auto fail = [&](std::size_t i, const std::string& why) {
    Conn& c = cs[i];
    if (c.st == Conn::St::failed || c.st == Conn::St::done) return;
    c.st = Conn::St::failed;
    ++failed;
    ++errs[why];
    if (c.fd.valid()) {
      ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
      c.fd.reset();
      --open_now;
    }
  };
  auto set_interest = [&](std::size_t i, std::uint32_t want) {
    Conn& c = cs[i];
    if (want == c.interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = i;
    ::epoll_ctl(ep.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    c.interest = want;
  };

  std::vector<epoll_event> evs(1024);
  std::vector<std::uint8_t> rbuf(64 * 1024);
  std::string err;
  while (done + failed < n) {
    if (g_stop) {
      err = "interrupted";
      break;
    }
    if (secs_since(t0) > timeout) {
      err = "timed out";
      break;
    }
    // Start connects in batches so a SYN burst can be paced with --ramp.
    for (std::uint64_t k = 0; k < ramp && started < n; ++k) {
      Conn& c = cs[started];
      c.gen = ByteGen(seed + started);
      c.fd = start_connect(*to);
      if (!c.fd.valid()) {
        c.st = Conn::St::failed;
        ++failed;
        ++errs["connect: " + errno_str(errno)];
      } else {
        ++open_now;
        peak_open = std::max(peak_open, open_now);
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = started;
        c.interest = EPOLLOUT;
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
      }
      ++started;
    }
    int m = ::epoll_wait(ep.get(), evs.data(), static_cast<int>(evs.size()), started < n ? 10 : 200);
    if (m < 0 && errno != EINTR) {
      err = "epoll_wait: " + errno_str(errno);
      break;
    }
    for (int e = 0; e < m; ++e) {
      const std::size_t i = evs[e].data.u64;
      Conn& c = cs[i];
      if (!c.fd.valid()) continue;
      if (c.st == Conn::St::connecting) {
        if (int se = socket_error(c.fd.get()); se != 0) {
          fail(i, "connect: " + errno_str(se));
          continue;
        }
        c.st = Conn::St::exchanging;
        c.connect_ms = secs_since(t0) * 1e3;
        connect_times.push_back(c.connect_ms);
        ++established;
      }
      if (c.st != Conn::St::exchanging) continue;
      // Send.
      while (c.sent < bytes) {
        if (c.poff == c.pending.size()) {
          c.pending.resize(static_cast<std::size_t>(std::min<std::uint64_t>(16 * 1024, bytes - c.sent)));
          c.gen.fill(c.pending);
          c.tx.update(c.pending);
          c.poff = 0;
        }
        ssize_t w = ::send(c.fd.get(), c.pending.data() + c.poff, c.pending.size() - c.poff, MSG_NOSIGNAL);
        if (w > 0) {
          c.poff += static_cast<std::size_t>(w);
          c.sent += static_cast<std::uint64_t>(w);
        } else {
          if (errno != EAGAIN && errno != EINTR) fail(i, "send: " + errno_str(errno));
          break;
        }
      }
      if (c.st != Conn::St::exchanging) continue;
      // Receive.
      while (true) {
        ssize_t r = ::recv(c.fd.get(), rbuf.data(), rbuf.size(), 0);
        if (r > 0) {
          c.rx.update({rbuf.data(), static_cast<std::size_t>(r)});
          c.recvd += static_cast<std::uint64_t>(r);
        } else if (r == 0) {
          fail(i, c.recvd < bytes ? "early EOF" : "EOF before close");
          break;
        } else {
          if (errno != EAGAIN && errno != EINTR) fail(i, "recv: " + errno_str(errno));
          break;
        }
      }
      if (c.st != Conn::St::exchanging) continue;
      if (c.recvd > bytes) {
        fail(i, "echo longer than sent");
      } else if (c.recvd == bytes && c.sent == bytes) {
        if (c.tx.hex() != c.rx.hex()) {
          fail(i, "echo sha256 mismatch");
        } else {
          c.st = Conn::St::done;
          ++done;
          set_interest(i, 0);
          if (!hold) {
            ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
            c.fd.reset();
            --open_now;
          }
        }
      } else {
        set_interest(i, EPOLLIN | (c.sent < bytes ? EPOLLOUT : 0u));
      }
    }
  }
  const double exchange_secs = secs_since(t0);
  // Close everything at once: the peer sees up to N FINs together.
  const std::uint64_t held = open_now;
  for (auto& c : cs) c.fd.reset();
  std::sort(connect_times.begin(), connect_times.end());
  auto pct = [&](double p) {
    if (connect_times.empty()) return 0.0;
    return connect_times[std::min(connect_times.size() - 1, static_cast<std::size_t>(p * connect_times.size()))];
  };
  const bool ok = err.empty() && done == n;
  Json j;
  j.s("cmd", "conns").s("peer", endpoint_str(*to)).b("ok", ok).u("n", n).u("bytes_each", bytes);
  j.u("established", established).u("verified", done).u("failed", failed).u("peak_open", peak_open);
  j.u("held_open_at_end", held);
  j.n("connect_p50_ms", pct(0.5)).n("connect_p99_ms", pct(0.99)).n("connect_max_ms", pct(1.0));
  j.n("secs", exchange_secs);
  std::string e = "{";
  for (const auto& [k, v] : errs) {
    if (e.size() > 1) e += ',';
    Json tmp;
    tmp.u(k, v);
    e += tmp.str().substr(1, tmp.str().size() - 2);
  }
  e += "}";
  j.raw("errors", e);
  if (!err.empty()) j.s("error", err);
  j.print();
  return ok ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// pingpong
// ------------------------------------------------------------------------------------------------

int cmd_pingpong(int argc, char** argv) {
  Args a(argc, argv, {}, {"connect", "size", "count", "warmup", "timeout"});
  if (!a.ok()) return usage_error("pingpong", a.error());
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error("pingpong", "--connect ADDR:PORT required");
  const std::size_t size = std::clamp<std::size_t>(a.u64("size", 64), 1, kMaxChunk);
  const std::uint64_t count = a.u64("count", 10000);
  const std::uint64_t warmup = a.u64("warmup", 100);
  const double timeout = a.num("timeout", 60);
  const auto t0 = Clock::now();
  Json j;
  j.s("cmd", "pingpong").s("peer", endpoint_str(*to)).u("size", size).u("count", count);

  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{static_cast<time_t>(timeout), 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*to), sizeof *to) != 0) {
    j.b("ok", false).s("error", "connect: " + errno_str(errno)).print();
    return 1;
  }
  set_nodelay(fd.get());
  std::vector<std::uint8_t> msg(size), back(size);
  ByteGen(7).fill(msg);
  std::vector<double> rtts;
  rtts.reserve(count);
  std::string err;
  for (std::uint64_t i = 0; i < warmup + count && err.empty(); ++i) {
    if (secs_since(t0) > timeout) {
      err = "timed out";
      break;
    }
    msg[0] = static_cast<std::uint8_t>(i);
    const auto s = Clock::now();
    if (::send(fd.get(), msg.data(), size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) {
      err = "send: " + errno_str(errno);
      break;
    }
    std::size_t got = 0;
    while (got < size) {
      ssize_t r = ::recv(fd.get(), back.data() + got, size - got, 0);
      if (r <= 0) {
        err = r == 0 ? "EOF" : "recv: " + errno_str(errno);
        break;
      }
      got += static_cast<std::size_t>(r);
    }
    if (!err.empty()) break;
    if (std::memcmp(msg.data(), back.data(), size) != 0) {
      err = "echo mismatch";
      break;
    }
    if (i >= warmup) rtts.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
  }
  ::shutdown(fd.get(), SHUT_WR);
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double p) {
    if (rtts.empty()) return 0.0;
    return rtts[std::min(rtts.size() - 1, static_cast<std::size_t>(p * rtts.size()))];
  };
  double sum = 0;
  for (double r : rtts) sum += r;
  const bool ok = err.empty() && rtts.size() == count;
  j.b("ok", ok).u("samples", rtts.size());
  j.n("rtt_min_us", pct(0)).n("rtt_p50_us", pct(0.5)).n("rtt_p90_us", pct(0.9)).n("rtt_p99_us", pct(0.99));
  j.n("rtt_max_us", pct(1.0)).n("rtt_mean_us", rtts.empty() ? 0 : sum / static_cast<double>(rtts.size()));
  j.n("secs", secs_since(t0));
  if (!err.empty()) j.s("error", err);
  j.print();
  return ok ? 0 : 1;
}

void print_help() {
  std::puts(
      "pno-loadgen: Linux-side load generator and servers for PnO interop tests and benchmarks.\n"
      "Each command prints JSON lines on stdout (the last one is the result) and exits 0 only when\n"
      "every byte was verified.\n"
      "\n"
      "  stream    --connect A:P [--mode echo|send|recv] [--bytes N] [--seed S] [--chunk B]\n"
      "            [--no-shutdown] [--rst-after N] [--hold SECS] [--linger0] [--nodelay]\n"
      "            [--expect-reset] [--timeout SECS]\n"
      "      echo: send N seeded bytes, read the echo, compare sha256 (SHUT_WR after the last byte,\n"
      "            then read to EOF, unless --no-shutdown). send: send N, SHUT_WR, expect EOF and no\n"
      "            data (discard). recv: read to EOF (--bytes checks the count).\n"
      "            --rst-after N: after N bytes, close with SO_LINGER 0 (the peer gets a RST).\n"
      "            --hold SECS: keep the connection open after the exchange (keepalive tests).\n"
      "  halfclose --connect A:P [--bytes N] [--read-delay-ms MS]\n"
      "            send everything, SHUT_WR, wait, then read the whole echo and the peer's FIN.\n"
      "  serve     --listen A:P | --port P  --mode echo|sink|source [--bytes N] [--seed S]\n"
      "            [--count K] [--rst-after N] [--linger0] [--buf B] [--timeout SECS]\n"
      "            [--ready-file PATH] [--quiet] [--keepalive IDLE:INTVL:CNT]\n"
      "            one JSON line per finished connection (bytes and sha256 each way), a summary at\n"
      "            exit (after K connections, SIGTERM or --timeout).\n"
      "  conns     --connect A:P [--n N] [--bytes B] [--ramp K] [--no-hold] [--timeout SECS]\n"
      "            N concurrent connections, each echoing B seeded bytes; all are held open until\n"
      "            every one is verified, then closed together.\n"
      "  pingpong  --connect A:P [--size 64] [--count N] [--warmup W]\n"
      "            request/response round trips on one connection: RTT min/p50/p90/p99/max in us.\n"
      "\n"
      "Sizes accept K, M, G suffixes (binary). Exit status: 0 ok, 1 failed, 64 usage.");
}

}  // namespace
}  // namespace pno::tools

int main(int argc, char** argv) {
  using namespace pno::tools;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_help();
    return argc < 2 ? 64 : 0;
  }
  install_signals();
  const std::string cmd = argv[1];
  if (cmd == "stream" || cmd == "halfclose") return cmd_stream(cmd, argc - 2, argv + 2);
  if (cmd == "serve") return cmd_serve(argc - 2, argv + 2);
  if (cmd == "conns") return cmd_conns(argc - 2, argv + 2);
  if (cmd == "pingpong") return cmd_pingpong(argc - 2, argv + 2);
  std::fprintf(stderr, "pno-loadgen: unknown command %s (see --help)\n", cmd.c_str());
  return 64;
}
