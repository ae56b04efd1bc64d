// The channel end to end without DPDK: the engine's HostService on one Stack, wired back to back in
// memory with a second Stack that plays the Linux peer, all driven by this process; the host side
// runs in forked children through HostChannel, exactly as libpno.so would use it.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <atomic>
#include <vector>

#include "channel/contract.hh"
#include "channel/fd_passing.hh"
#include "channel/host.hh"
#include "engine/host_service.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/channel_bench.hh"

using namespace pno;
using namespace pno::channel;
using pno::engine::HostService;
using pno::engine::HostServiceConfig;
namespace c = pno::channel::contract;
using namespace pno::test::channel_bench;

namespace {

StackConfig stack_config(Ipv4Addr a, std::uint8_t mac) {
  StackConfig cfg;
  cfg.mac = MacAddr{{2, 0, 0, 0, 0, mac}};
  cfg.addr = Ipv4Cidr{a, 24};
  cfg.secret = mac;
  cfg.tcp.msl = std::chrono::milliseconds(100);
  return cfg;
}

Instant wall() {
  return instant_from_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

/// The engine and the peer, stepped by the test process.
struct Bench {
  explicit Bench(c::Geometry g = {}) {
    path = "/tmp/pnoc-e2e-" + std::to_string(getpid()) + "-" + std::to_string(++counter) + ".sock";
    HostServiceConfig cfg;
    cfg.socket_path = path;
    cfg.geometry = g;
    cfg.addrs = {Ipv4Cidr{kEngineIp, 24}};
    cfg.quiet = true;
    svc = std::make_unique<HostService>(cfg);
    EXPECT_EQ(svc->start(eng.tcp(), wall()), Errc::ok);
  }

  void step() {
    const Instant now = wall();
    step_engine_and_peer(eng, eng_out, peer, peer_out, svc.get(), now, [&] { svc->on_tick(eng.tcp(), now); });
    if (on_step) on_step();
  }

  /// Steps until `done` or `seconds` pass.
  bool run_until(const std::function<bool()>& done, double seconds = 20) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      step();
      if (done()) return true;
    }
    return false;
  }

  /// Runs the engine until child `pid` exits; returns its exit status (or -1 on timeout).
  int run_child(pid_t pid, double seconds = 30) {
    int status = -1;
    const bool ok = run_until([&] {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        status = st;
        return true;
      }
      return false;
    }, seconds);
    if (!ok) {
      const auto& st = svc->stats();
      std::fprintf(stderr, "engine: commands=%llu kicks=%llu to_tcp=%llu to_host=%llu wakeups=%llu sockets=%zu\n",
                   (unsigned long long)st.commands, (unsigned long long)st.kicks, (unsigned long long)st.bytes_to_tcp,
                   (unsigned long long)st.bytes_to_host, (unsigned long long)st.wakeups, svc->sockets());
      svc->dump(stderr);
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  static inline int counter = 0;
  std::string path;
  MemLink eng_out, peer_out;
  Stack eng{stack_config(kEngineIp, 1), eng_out, wall()};
  Stack peer{stack_config(kPeerIp, 2), peer_out, wall()};
  std::unique_ptr<HostService> svc;
  std::function<void()> on_step;
};

// ------------------------------------------------------------------------- helpers for children

#define CHILD_CHECK(cond)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond);   \
      _exit(1);                                                                        \
    }                                                                                  \
  } while (0)

std::unique_ptr<HostChannel> child_attach(const std::string& path) {
  char why[256] = {};
  auto ch = HostChannel::attach(path.c_str(), why);
  if (!ch) std::fprintf(stderr, "attach: %s\n", why);
  return ch;
}

/// Blocks (through the thread's Waiter) until `s` shows any of `mask`; false on timeout or death.
bool wait_ready(HostChannel& ch, HostSocket s, std::uint32_t mask, int timeout_ms = 10000) {
  Waiter* w = ch.thread_waiter();
  if (w == nullptr) return false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if ((ch.readiness(s) & mask) != 0) return true;
    ch.arm(*w);
    if ((ch.readiness(s) & mask) != 0) {
      ch.disarm(*w);
      return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ch.disarm(*w);
      return false;
    }
    pollfd p[2] = {{w->fd(), POLLIN, 0}, {ch.control_fd(), POLLIN, 0}};
    ::poll(p, 2, static_cast<int>(left));
    ch.disarm(*w);
    if (!ch.alive()) return false;
  }
}

/// A new socket of `ch` connected to the peer's `port` (connect, then writable); nullopt if any
/// step fails.
std::optional<HostSocket> connect_to_peer(HostChannel& ch, std::uint16_t port) {
  auto s = ch.socket();
  if (!s.ok() || ch.connect(*s, {kPeerIp, port}) != Errc::in_progress || !wait_ready(ch, *s, kWritable)) {
    return std::nullopt;
  }
  return *s;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

bool send_all(HostChannel& ch, HostSocket s, std::span<const std::byte> data) {
  std::size_t off = 0;
  while (off < data.size()) {
    iovec iov{const_cast<std::byte*>(data.data() + off), data.size() - off};
    const auto n = ch.send(s, std::span(&iov, 1));
    if (n) {
      off += *n;
    } else if (n.error() == Errc::again) {
      if (!wait_ready(ch, s, kWritable | kError | kHangup)) return false;
    } else {
      return false;
    }
  }
  return true;
}

/// Reads exactly `n` bytes (false on EOF/error first).
bool recv_exact(HostChannel& ch, HostSocket s, std::span<std::byte> out) {
  std::size_t off = 0;
  while (off < out.size()) {
    iovec iov{out.data() + off, out.size() - off};
    const auto n = ch.recv(s, std::span(&iov, 1));
    if (n) {
      if (*n == 0) return false;
      off += *n;
    } else if (n.error() == Errc::again) {
      if (!wait_ready(ch, s, kReadable | kError | kHangup)) return false;
    } else {
      return false;
    }
  }
  return true;
}

/// Sends `data` and reads its echo into `back` at the same time (the echo fills the receive side
/// meanwhile), at most `slice` bytes per send call. False on an error, EOF, or a wait that fails.
bool echo_through(HostChannel& ch, HostSocket s, std::span<const std::byte> data, std::span<std::byte> back,
                  std::size_t slice = SIZE_MAX) {
  std::size_t sent = 0, got = 0;
  while (got < data.size()) {
    if (sent < data.size()) {
      iovec iov{const_cast<std::byte*>(data.data() + sent), std::min(data.size() - sent, slice)};
      if (auto n = ch.send(s, std::span(&iov, 1)); n) sent += *n;
    }
    iovec in{back.data() + got, back.size() - got};
    const auto n = ch.recv(s, std::span(&in, 1));
    if (n) {
      if (*n == 0) return false;
      got += *n;
    } else if (n.error() != Errc::again ||
               !wait_ready(ch, s, kReadable | (sent < data.size() ? std::uint32_t{kWritable} : 0u))) {
      return false;
    }
  }
  return true;
}

/// Next recv result after waiting for readability: bytes, 0 (EOF) or the error.
Result<std::size_t> recv_wait(HostChannel& ch, HostSocket s, std::span<std::byte> out) {
  for (;;) {
    iovec iov{out.data(), out.size()};
    const auto n = ch.recv(s, std::span(&iov, 1));
    if (n || n.error() != Errc::again) return n;
    if (!wait_ready(ch, s, kReadable | kError | kHangup)) return Errc::timed_out;
  }
}

/// A native echo server on the peer stack (the "Linux peer"), stepped by Bench::on_step.
struct PeerEcho {
  explicit PeerEcho(Stack& st, std::uint16_t port) : tcp(st.tcp()) {
    l = *tcp.socket();
    tcp.bind(l, {Ipv4Addr::any(), port});
    tcp.listen(l, 16);
  }
  void step() {
    while (auto a = tcp.accept(l)) conns.push_back({*a, {}, false});
    for (auto& cn : conns) {
      if (cn.id == kInvalidSocket) continue;
      std::byte buf[16384];
      for (;;) {
        if (!cn.pending.empty()) {
          auto n = tcp.send(cn.id, cn.pending);
          if (!n || *n == 0) break;
          cn.pending.erase(cn.pending.begin(), cn.pending.begin() + static_cast<std::ptrdiff_t>(*n));
          if (!cn.pending.empty()) break;
        }
        auto n = tcp.recv(cn.id, buf);
        if (!n) break;
        if (*n == 0) {
          cn.eof = true;
          break;
        }
        cn.pending.insert(cn.pending.end(), buf, buf + *n);
      }
      if (cn.eof && cn.pending.empty()) {
        tcp.close(cn.id);
        cn.id = kInvalidSocket;
      }
    }
  }
  struct Conn {
    SocketId id;
    std::vector<std::byte> pending;
    bool eof;
  };
  tcp::TcpLayer& tcp;
  SocketId l;
  std::vector<Conn> conns;
};

/// The peer's end of a one-way stream: listens on `port`, accepts one connection and reads at most
/// `per_step` bytes each step (a slow reader), or everything there with per_step 0.
struct PeerSink {
  PeerSink(Stack& st, std::uint16_t port, std::size_t per_step) : tcp(st.tcp()), per_step(per_step) {
    l = *tcp.socket();
    tcp.bind(l, {Ipv4Addr::any(), port});
    tcp.listen(l, 4);
  }
  void step() {
    if (conn == kInvalidSocket) {
      if (auto a = tcp.accept(l)) conn = *a;
    }
    if (conn == kInvalidSocket) return;
    std::byte buf[4096];
    const std::size_t want = per_step == 0 ? sizeof buf : std::min(per_step, sizeof buf);
    while (auto n = tcp.recv(conn, std::span(buf, want))) {
      if (*n == 0) break;
      sunk += *n;
      if (per_step != 0) break;
    }
  }
  tcp::TcpLayer& tcp;
  std::size_t per_step;
  SocketId l = kInvalidSocket;
  SocketId conn = kInvalidSocket;
  std::uint64_t sunk = 0;
};

/// A pipe for "I am ready" signals from a child.
struct Signal {
  Signal() {
    if (::pipe2(fds, O_CLOEXEC) != 0) fds[0] = fds[1] = -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
  }
  ~Signal() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void raise() { [[maybe_unused]] auto r = ::write(fds[1], "x", 1); }
  bool seen() {
    char b;
    return ::read(fds[0], &b, 1) == 1;
  }
  int fds[2];
};

}  // namespace

// ------------------------------------------------------------------------------------------ tests

TEST(ChannelE2e, ClientConnectsSendsAndReceivesEchoThenEof) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    CHILD_CHECK(ch->engine().abi_version == c::kAbiVersion);
    CHILD_CHECK(ch->engine().is_local(kEngineIp));
    CHILD_CHECK(ch->engine().routes(kPeerIp));
    auto s = ch->socket();
    CHILD_CHECK(s.ok());
    iovec none{nullptr, 0};
    CHILD_CHECK(ch->send(*s, std::span(&none, 1)).error() == Errc::not_conn);
    CHILD_CHECK(ch->connect(*s, {kPeerIp, 7}) == Errc::in_progress);
    CHILD_CHECK(wait_ready(*ch, *s, kWritable));
    CHILD_CHECK(ch->take_error(*s) == Errc::ok);
    auto pe = ch->peer_endpoint(*s);
    CHILD_CHECK(pe.ok() && (*pe).addr == kPeerIp && (*pe).port == 7);
    auto le = ch->local_endpoint(*s);
    CHILD_CHECK(le.ok() && (*le).addr == kEngineIp && (*le).port != 0);
    const auto data = pattern(3'000'000, 1);
    std::vector<std::byte> back(data.size());
    CHILD_CHECK(echo_through(*ch, *s, data, back, 100000));
    CHILD_CHECK(back == data);
    auto ti = ch->info(*s);
    CHILD_CHECK(ti.ok() && (*ti).bytes_acked >= data.size());
    CHILD_CHECK(ch->shutdown(*s, ShutdownHow::write) == Errc::ok);
    iovec one{back.data(), 1};
    CHILD_CHECK(ch->send(*s, std::span(&one, 1)).error() == Errc::pipe);
    std::byte x[16];
    auto eof = recv_wait(*ch, *s, x);
    CHILD_CHECK(eof.ok() && *eof == 0);
    CHILD_CHECK((ch->readiness(*s) & kReadHangup) != 0);
    CHILD_CHECK(ch->close(*s) == Errc::ok);  // returns at once: nobody waits for a close without linger
    // Commands run in ring order: the next call about the handle finds it gone.
    CHILD_CHECK(!ch->info(*s).ok() && ch->info(*s).error() == Errc::badf);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_TRUE(b.run_until([&] { return b.svc->sockets() == 0 && b.svc->families() == 0; }, 5));
  const auto d = b.svc->dma_stats();
  EXPECT_GE(d.read_bytes, 3'000'000u);   // the send ring, host -> engine
  EXPECT_GE(d.write_bytes, 3'000'000u);  // the receive ring, engine -> host
  EXPECT_EQ(d.out_of_bounds, 0u);
}

TEST(ChannelE2e, ServerAcceptsFromPreFilledQueueReadsRepliesAndClosesWithFin) {
  Bench b;
  Signal listening;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(l.ok());
    CHILD_CHECK(ch->setsockopt(*l, SockOpt::reuseaddr, 1) == Errc::ok);
    CHILD_CHECK(ch->bind(*l, {Ipv4Addr::any(), 80}) == Errc::ok);  // wildcard: the engine's addresses
    CHILD_CHECK(ch->listen(*l, 16) == Errc::ok);
    CHILD_CHECK(ch->accept(*l, nullptr).error() == Errc::again);
    listening.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    Endpoint peer;
    auto s = ch->accept(*l, &peer);
    CHILD_CHECK(s.ok());
    CHILD_CHECK(peer.addr == kPeerIp);
    std::byte req[5];
    CHILD_CHECK(recv_exact(*ch, *s, req));
    CHILD_CHECK(std::memcmp(req, "hello", 5) == 0);
    // dup() + fork semantics: two references, the socket stays open until both are closed.
    ch->retain(*s);
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    const char rep[] = "world";
    CHILD_CHECK(send_all(*ch, *s, as_bytes(std::span(rep, 5))));
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    CHILD_CHECK(ch->close(*l) == Errc::ok);
    _exit(0);
  }
  auto& tcp = b.peer.tcp();
  ASSERT_TRUE(b.run_until([&] { return listening.seen(); }));
  const SocketId cs = *tcp.socket();
  EXPECT_EQ(tcp.connect(cs, {kEngineIp, 80}), Errc::in_progress);
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kWritable) != 0; }));
  ASSERT_TRUE(tcp.send(cs, as_bytes(std::span("hello", 5))));
  std::string got;
  bool eof = false;
  ASSERT_TRUE(b.run_until([&] {
    std::byte buf[64];
    auto n = tcp.recv(cs, buf);
    if (n && *n == 0) eof = true;
    if (n) got.append(reinterpret_cast<const char*>(buf), *n);
    return eof;
  }));
  EXPECT_EQ(got, "world");  // then FIN: a graceful close, no RST
  EXPECT_EQ(tcp.take_error(cs), Errc::ok);
  EXPECT_EQ(b.run_child(pid), 0);
  tcp.close(cs);
  // The port is free again: a new connection is refused.
  const SocketId c2 = *tcp.socket();
  tcp.connect(c2, {kEngineIp, 80});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(c2) & kError) != 0; }, 5));
  EXPECT_EQ(tcp.take_error(c2), Errc::conn_refused);
}

TEST(ChannelE2e, PeerResetGivesConnResetOnceThenEof) {
  Bench b;
  Signal listening;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {kEngineIp, 81}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    listening.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    auto s = ch->accept(*l, nullptr);
    CHILD_CHECK(s.ok());
    std::byte buf[64];
    auto n = recv_wait(*ch, *s, buf);
    CHILD_CHECK(n.ok() && *n == 3);  // bytes before the RST are still delivered
    n = recv_wait(*ch, *s, buf);
    CHILD_CHECK(!n.ok() && n.error() == Errc::conn_reset);
    CHILD_CHECK((ch->readiness(*s) & kHangup) != 0);
    n = recv_wait(*ch, *s, buf);
    CHILD_CHECK(n.ok() && *n == 0);
    // recv() reported the error: SO_ERROR has nothing left, the socket stays at EOF.
    CHILD_CHECK(ch->take_error(*s) == Errc::ok);
    CHILD_CHECK(ch->readiness(*s) == (kReadable | kWritable | kHangup | kReadHangup));
    iovec one{buf, sizeof buf};
    n = ch->recv(*s, std::span(&one, 1));
    CHILD_CHECK(n.ok() && *n == 0);
    iovec iov{buf, 1};
    CHILD_CHECK(ch->send(*s, std::span(&iov, 1)).error() == Errc::pipe);
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  auto& tcp = b.peer.tcp();
  ASSERT_TRUE(b.run_until([&] { return listening.seen(); }));
  const SocketId cs = *tcp.socket();
  tcp.connect(cs, {kEngineIp, 81});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kWritable) != 0; }));
  tcp.send(cs, as_bytes(std::span("abc", 3)));
  b.run_until([] { return false; }, 0.2);
  tcp.abort(cs);
  EXPECT_EQ(b.run_child(pid), 0);
}

// Linux after an RST (tcp_reset + tcp_done): poll shows IN|OUT|HUP|RDHUP, and ERR while the error is
// pending; SO_ERROR reports ECONNRESET once; every later read() is EOF (0), never EAGAIN.
TEST(ChannelE2e, PeerResetTakenBySoErrorLeavesTheSocketReadableAtEof) {
  Bench b;
  Signal listening;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {kEngineIp, 82}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    listening.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    auto s = ch->accept(*l, nullptr);
    CHILD_CHECK(s.ok());
    CHILD_CHECK(wait_ready(*ch, *s, kError));
    CHILD_CHECK(ch->readiness(*s) == (kReadable | kWritable | kError | kHangup | kReadHangup));
    CHILD_CHECK(ch->take_error(*s) == Errc::conn_reset);
    CHILD_CHECK(ch->take_error(*s) == Errc::ok);  // once
    CHILD_CHECK(ch->readiness(*s) == (kReadable | kWritable | kHangup | kReadHangup));
    std::byte buf[16];
    iovec in{buf, sizeof buf};
    for (int k = 0; k < 3; ++k) {
      auto n = ch->recv(*s, std::span(&in, 1));
      CHILD_CHECK(n.ok() && *n == 0);
    }
    iovec out{buf, 1};
    CHILD_CHECK(ch->send(*s, std::span(&out, 1)).error() == Errc::pipe);
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  auto& tcp = b.peer.tcp();
  ASSERT_TRUE(b.run_until([&] { return listening.seen(); }));
  const SocketId cs = *tcp.socket();
  tcp.connect(cs, {kEngineIp, 82});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kWritable) != 0; }));
  b.run_until([] { return false; }, 0.2);
  tcp.abort(cs);
  EXPECT_EQ(b.run_child(pid), 0);
}

TEST(ChannelE2e, TwoFamiliesTalkThroughTheEnginesOwnAddress) {
  Bench b;
  Signal listening;
  const pid_t server = fork();
  ASSERT_GE(server, 0);
  if (server == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {Ipv4Addr::any(), 5000}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    listening.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    auto s = ch->accept(*l, nullptr);
    CHILD_CHECK(s.ok());
    std::vector<std::byte> buf(1'000'000);
    CHILD_CHECK(recv_exact(*ch, *s, buf));
    CHILD_CHECK(buf == pattern(buf.size(), 9));
    CHILD_CHECK(send_all(*ch, *s, as_bytes(std::span("ok", 2))));
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  ASSERT_TRUE(b.run_until([&] { return listening.seen(); }));
  const pid_t client = fork();
  ASSERT_GE(client, 0);
  if (client == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = ch->socket();
    CHILD_CHECK(ch->connect(*s, {kEngineIp, 5000}) == Errc::in_progress);
    CHILD_CHECK(wait_ready(*ch, *s, kWritable));
    CHILD_CHECK(send_all(*ch, *s, pattern(1'000'000, 9)));
    std::byte ok[2];
    CHILD_CHECK(recv_exact(*ch, *s, ok));
    CHILD_CHECK(std::memcmp(ok, "ok", 2) == 0);
    _exit(0);  // no close: the engine closes it when the family goes
  }
  EXPECT_EQ(b.run_child(client), 0);
  EXPECT_EQ(b.run_child(server), 0);
  EXPECT_TRUE(b.run_until([&] { return b.svc->families() == 0 && b.svc->sockets() == 0; }, 5));
}

TEST(ChannelE2e, KilledFamilyIsCleanedWithinOneSecondRstForUnreadData) {
  Bench b;
  Signal ready;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {Ipv4Addr::any(), 82}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    ready.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    auto s = ch->accept(*l, nullptr);
    CHILD_CHECK(s.ok());
    CHILD_CHECK(wait_ready(*ch, *s, kReadable));  // data arrived; never read
    ready.raise();
    pause();
    _exit(0);
  }
  auto& tcp = b.peer.tcp();
  ASSERT_TRUE(b.run_until([&] { return ready.seen(); }));
  EXPECT_EQ(b.svc->family_pids(), std::vector<pid_t>{pid});  // SO_PEERCRED
  const SocketId cs = *tcp.socket();
  tcp.connect(cs, {kEngineIp, 82});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kWritable) != 0; }));
  tcp.send(cs, as_bytes(std::span("unread", 6)));
  ASSERT_TRUE(b.run_until([&] { return ready.seen(); }));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kHangup) != 0; }, 1.0));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(tcp.take_error(cs), Errc::conn_reset);  // RST: the dead process never read its data
  EXPECT_EQ(b.svc->families(), 0u);
  EXPECT_EQ(b.svc->sockets(), 0u);
  // The listening port was freed.
  const SocketId c2 = *tcp.socket();
  tcp.connect(c2, {kEngineIp, 82});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(c2) & kError) != 0; }, 2));
  EXPECT_EQ(tcp.take_error(c2), Errc::conn_refused);
}

TEST(ChannelE2e, KilledFamilyWithNothingUnreadClosesWithFin) {
  Bench b;
  Signal ready;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 7);
    CHILD_CHECK(s.has_value());
    ready.raise();
    pause();
    _exit(0);
  }
  ASSERT_TRUE(b.run_until([&] { return ready.seen(); }));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  // The echo server sees EOF (FIN), echoes nothing and closes.
  ASSERT_TRUE(b.run_until([&] { return !echo.conns.empty() && echo.conns[0].eof; }, 1.0));
  EXPECT_TRUE(b.run_until([&] { return b.svc->sockets() == 0; }, 1.0));
}

TEST(ChannelE2e, EngineDeathWakesWaitersAndFailsCalls) {
  auto b = std::make_unique<Bench>();
  Signal ready;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b->path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {Ipv4Addr::any(), 83}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    CHILD_CHECK(ch->thread_waiter() != nullptr);
    ready.raise();
    // Blocks: nothing ever connects. The engine dying must end the wait.
    const auto t0 = std::chrono::steady_clock::now();
    CHILD_CHECK(!wait_ready(*ch, *l, kReadable, 20000));
    CHILD_CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    CHILD_CHECK(!ch->alive());
    CHILD_CHECK(!ch->socket().ok());
    CHILD_CHECK(ch->accept(*l, nullptr).error() == Errc::conn_aborted);
    std::byte buf[4];
    iovec iov{buf, 4};
    CHILD_CHECK(ch->recv(*l, std::span(&iov, 1)).error() == Errc::conn_reset);
    CHILD_CHECK(ch->send(*l, std::span(&iov, 1)).error() == Errc::conn_reset);
    CHILD_CHECK(ch->close(*l) == Errc::ok);
    _exit(0);
  }
  ASSERT_TRUE(b->run_until([&] { return ready.seen(); }));
  b->run_until([] { return false; }, 0.2);
  b->svc.reset();  // the engine's end goes away as if the process died
  int st = 0;
  for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; ++i) usleep(50'000);
  if (waitpid(pid, &st, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(ChannelE2e, ForkedChildSharesTheFamilyAndItsSockets) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 7);
    CHILD_CHECK(s.has_value());
    CHILD_CHECK(ch->thread_waiter() != nullptr);
    ch->retain(*s);  // the grandchild's descriptor
    const pid_t g = fork();
    if (g == 0) {
      ch->after_fork_child();
      CHILD_CHECK(send_all(*ch, *s, as_bytes(std::span("from-child", 10))));
      std::byte back[10];
      CHILD_CHECK(recv_exact(*ch, *s, back));
      CHILD_CHECK(std::memcmp(back, "from-child", 10) == 0);
      CHILD_CHECK(ch->close(*s) == Errc::ok);
      _exit(0);
    }
    int st = 0;
    waitpid(g, &st, 0);
    CHILD_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    // Still open in the parent (one reference left).
    CHILD_CHECK(send_all(*ch, *s, as_bytes(std::span("parent", 6))));
    std::byte back[6];
    CHILD_CHECK(recv_exact(*ch, *s, back));
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
}

// One process of a family killed by SIGKILL while the family lives on: the engine sees its death
// through a pidfd and closes what only it held (FIN), within one second; the rest of the family
// and its sockets are untouched.
TEST(ChannelE2e, ForkedChildKilledAloneHoldingAConnectionIsClosedWhileTheFamilyLives) {
  Bench b;
  Signal ready, go, killed, reaped;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = ch->socket();
    auto kept = ch->socket();
    CHILD_CHECK(ch->connect(*s, {kPeerIp, 7}) == Errc::in_progress);
    CHILD_CHECK(ch->connect(*kept, {kPeerIp, 7}) == Errc::in_progress);
    CHILD_CHECK(wait_ready(*ch, *s, kWritable));
    CHILD_CHECK(wait_ready(*ch, *kept, kWritable));
    const std::uint32_t t = ch->fork_reserve();
    ch->fork_retain(t, *s);
    ch->fork_retain(t, *kept);
    const pid_t g = fork();
    if (g == 0) {
      ch->after_fork_child(t);
      for (;;) pause();
    }
    ch->fork_parent(t, g);
    CHILD_CHECK(ch->close(*s) == Errc::ok);  // only the grandchild holds it now
    ready.raise();
    while (!go.seen()) usleep(1000);
    kill(g, SIGKILL);
    waitpid(g, nullptr, 0);
    killed.raise();
    // Until the engine has handled the death, the grandchild's entry still counts `kept`: a close
    // here would leave the socket to the death handling (closed then, correctly, as the last
    // holder's), and the test could not tell a host close from a death close.
    while (!reaped.seen()) usleep(1000);
    // `kept` is shared with the dead grandchild: it still works here, both ways.
    CHILD_CHECK(send_all(*ch, *kept, as_bytes(std::span("kept", 4))));
    std::byte back[4];
    CHILD_CHECK(recv_exact(*ch, *kept, back));
    CHILD_CHECK(ch->close(*kept) == Errc::ok);
    pause();
    _exit(0);
  }
  ASSERT_TRUE(b.run_until([&] { return ready.seen(); }));
  b.run_until([] { return false; }, 0.2);
  ASSERT_EQ(echo.conns.size(), 2u);
  EXPECT_FALSE(echo.conns[0].eof || echo.conns[1].eof) << "closed while the grandchild holds it";
  go.raise();
  ASSERT_TRUE(b.run_until([&] { return killed.seen(); }));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.run_until([&] { return echo.conns[0].eof || echo.conns[1].eof; }, 1.0));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  // Only the connection the dead process alone held ended; the one a live process holds is open.
  EXPECT_NE(echo.conns[0].eof, echo.conns[1].eof);
  EXPECT_EQ(b.svc->families(), 1u);
  EXPECT_EQ(b.svc->stats().death_closes, 1u);
  reaped.raise();
  // The parent then echoes on `kept` and closes it: both connections end with FIN, and that close
  // was the host's, not another death close.
  ASSERT_TRUE(b.run_until([&] { return echo.conns[0].eof && echo.conns[1].eof; }, 5.0));
  EXPECT_EQ(b.svc->stats().death_closes, 1u);
  EXPECT_TRUE(b.run_until([&] { return b.svc->sockets() == 0; }, 2.0));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

TEST(ChannelAttach, VersionMismatchIsRefusedWithAClearReason) {
  Bench b;
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, b.path.c_str());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  c::AttachRequest req;
  req.abi_version = c::kAbiVersion + 41;
  ASSERT_EQ(::send(fd, &req, sizeof(req), 0), static_cast<ssize_t>(sizeof(req)));
  c::AttachReply rep;
  ssize_t r = -1;
  b.run_until([&] {
    r = ::recv(fd, &rep, sizeof(rep), MSG_DONTWAIT);
    return r >= 0;
  }, 5);
  ASSERT_EQ(r, static_cast<ssize_t>(sizeof(rep)));
  EXPECT_EQ(rep.status, c::AttachStatus::version_mismatch);
  EXPECT_EQ(rep.abi_version, c::kAbiVersion);
  EXPECT_NE(std::string(rep.why).find("version " + std::to_string(c::kAbiVersion + 41)), std::string::npos) << rep.why;
  EXPECT_EQ(b.svc->stats().refused, 1u);
  EXPECT_EQ(b.svc->families(), 0u);  // the connection was dropped
  ::close(fd);
}

/// The listening socket of a fake engine at `path` (the test plays the engine's end), or -1.
int fake_engine_listener(const std::string& path) {
  ::unlink(path.c_str());
  const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  if (::bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(l, 1) != 0) {
    ::close(l);
    return -1;
  }
  return l;
}

TEST(ChannelAttach, HostSeesTheEnginesVersionInWhy) {
  // A fake engine that speaks ABI version kAbiVersion + 1.
  const std::string path = "/tmp/pnoc-fake-" + std::to_string(getpid()) + ".sock";
  const int l = fake_engine_listener(path);
  ASSERT_GE(l, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::accept(l, nullptr, nullptr);
    c::AttachRequest req;
    [[maybe_unused]] auto r = ::recv(fd, &req, sizeof(req), 0);
    c::AttachReply rep;
    rep.abi_version = c::kAbiVersion + 1;
    rep.status = c::AttachStatus::version_mismatch;
    std::snprintf(rep.why, sizeof(rep.why), "host speaks %u", req.abi_version);
    [[maybe_unused]] auto w = ::send(fd, &rep, sizeof(rep), 0);
    _exit(0);
  }
  char why[256] = {};
  auto ch = HostChannel::attach(path.c_str(), why);
  EXPECT_EQ(ch, nullptr);
  const std::string expect = "refused ABI version " + std::to_string(c::kAbiVersion) + ": engine speaks " +
                             std::to_string(c::kAbiVersion + 1);
  EXPECT_NE(std::string(why).find(expect), std::string::npos) << why;
  waitpid(pid, nullptr, 0);
  ::close(l);
  ::unlink(path.c_str());
  // No engine at all: a clear reason too.
  char why2[256] = {};
  EXPECT_EQ(HostChannel::attach(path.c_str(), why2), nullptr);
  EXPECT_NE(std::string(why2).find("cannot reach the engine"), std::string::npos) << why2;
}

/// A raw attach connection to the bench's engine (the host end's checks bypassed).
int raw_attach_socket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  return fd;
}

TEST(ChannelAttach, HostOfAnOlderVersionWithAShorterRequestHearsWhy) {
  Bench b;
  const int fd = raw_attach_socket(b.path);
  // ABI 4's request: 16 bytes, no features word.
  const std::uint32_t old_req[4] = {c::kAttachMagic, 4, static_cast<std::uint32_t>(getpid()), 0};
  ASSERT_EQ(::send(fd, old_req, sizeof(old_req), 0), static_cast<ssize_t>(sizeof(old_req)));
  c::AttachReply rep;
  ssize_t r = -1;
  b.run_until([&] {
    r = ::recv(fd, &rep, sizeof(rep), MSG_DONTWAIT);
    return r >= 0;
  }, 5);
  ASSERT_GE(r, static_cast<ssize_t>(offsetof(c::AttachReply, features)));
  EXPECT_EQ(rep.status, c::AttachStatus::version_mismatch);
  EXPECT_NE(std::string(rep.why).find("version 4"), std::string::npos) << rep.why;
  ::close(fd);
}

TEST(ChannelAttach, EngineGrantsOnlyFeaturesItKnowsAndTheHostAskedFor) {
  Bench b;
  const int fd = raw_attach_socket(b.path);
  c::AttachRequest req;
  req.pid = static_cast<std::uint32_t>(getpid());
  req.features = ~std::uint64_t{0};  // asks for everything, including bits no version defines
  ASSERT_EQ(::send(fd, &req, sizeof(req), 0), static_cast<ssize_t>(sizeof(req)));
  c::AttachReply rep;
  int fds[2] = {-1, -1};
  ssize_t r = -1;
  b.run_until([&] {
    r = recv_with_fds(fd, &rep, sizeof(rep), fds, MSG_DONTWAIT);
    return r >= 0;
  }, 5);
  ASSERT_EQ(r, static_cast<ssize_t>(sizeof(rep)));
  ASSERT_EQ(rep.status, c::AttachStatus::ok) << rep.why;
  EXPECT_EQ(rep.features, c::kFeaturesKnown & req.features);
  ASSERT_GE(fds[0], 0);
  ASSERT_GE(fds[1], 0);
  c::RegionHeader h;
  ASSERT_EQ(::pread(fds[0], &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
  EXPECT_EQ(h.features, rep.features);
  EXPECT_EQ(c::validate(h, rep.region_bytes), nullptr);
  for (int x : fds) ::close(x);
  ::close(fd);
}

TEST(ChannelAttach, HostRefusesAnEngineThatGrantsFeaturesItDidNotAskFor) {
  const std::string path = "/tmp/pnoc-fake-feat-" + std::to_string(getpid()) + ".sock";
  const int l = fake_engine_listener(path);
  ASSERT_GE(l, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::accept(l, nullptr, nullptr);
    c::AttachRequest req;
    [[maybe_unused]] auto r = ::recv(fd, &req, sizeof(req), 0);
    c::AttachReply rep;
    rep.region_bytes = 1 << 20;
    rep.features = std::uint64_t{1} << 40;
    const int fds[2] = {::eventfd(0, 0), ::eventfd(0, 0)};
    [[maybe_unused]] auto w = send_with_fds(fd, &rep, sizeof(rep), fds, 0);
    _exit(0);
  }
  char why[256] = {};
  EXPECT_EQ(HostChannel::attach(path.c_str(), why), nullptr);
  EXPECT_NE(std::string(why).find("granted features"), std::string::npos) << why;
  waitpid(pid, nullptr, 0);
  ::close(l);
  ::unlink(path.c_str());
}

TEST(ChannelE2e, DrainChangedListsChangedSocketsAndReportsOverflow) {
  c::Geometry g;
  g.changed_entries = 16;
  Bench b(g);
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    HostSocket out[64];
    bool overflowed = true;
    ch->drain_changed(out, overflowed);
    CHILD_CHECK(!overflowed);
    // One socket: its changes show up, and event_seq moves when data arrives.
    auto s = connect_to_peer(*ch, 7);
    CHILD_CHECK(s.has_value());
    std::size_t n = ch->drain_changed(out, overflowed);
    CHILD_CHECK(!overflowed && n >= 1);
    CHILD_CHECK(std::find(out, out + n, *s) != out + n);
    const std::uint32_t seq = ch->event_seq(*s);
    CHILD_CHECK(send_all(*ch, *s, as_bytes(std::span("ping", 4))));
    CHILD_CHECK(wait_ready(*ch, *s, kReadable));
    CHILD_CHECK(ch->event_seq(*s) != seq);
    n = ch->drain_changed(out, overflowed);
    CHILD_CHECK(std::find(out, out + n, *s) != out + n);
    // Many sockets changing without a drain: more than the ring holds -> overflow, then rescan.
    std::vector<HostSocket> many;
    for (int i = 0; i < 24; ++i) {
      auto m = ch->socket();
      CHILD_CHECK(m.ok());
      CHILD_CHECK(ch->connect(*m, {kPeerIp, 7}) == Errc::in_progress);
      many.push_back(*m);
    }
    for (auto m : many) CHILD_CHECK(wait_ready(*ch, m, kWritable));
    ch->drain_changed(out, overflowed);
    CHILD_CHECK(overflowed);
    ch->drain_changed(out, overflowed);
    CHILD_CHECK(!overflowed);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
}

TEST(ChannelE2e, CloseWithLingerWaitsForTheAckOrTheTimeout) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  // A peer that accepts on port 9 and never reads: its window fills, our data stays unacked.
  auto& pt = b.peer.tcp();
  const SocketId sink = *pt.socket();
  pt.setsockopt(sink, SockOpt::rcvbuf, 16384);
  pt.bind(sink, {Ipv4Addr::any(), 9});
  pt.listen(sink, 4);
  std::vector<SocketId> held;
  b.on_step = [&] {
    echo.step();
    while (auto a = pt.accept(sink)) held.push_back(*a);
  };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    // Acknowledged quickly: close() returns once our FIN is acked.
    auto s = ch->socket();
    CHILD_CHECK(ch->setsockopt(*s, SockOpt::linger, 5) == Errc::ok);
    CHILD_CHECK(ch->connect(*s, {kPeerIp, 7}) == Errc::in_progress);
    CHILD_CHECK(wait_ready(*ch, *s, kWritable));
    CHILD_CHECK(send_all(*ch, *s, pattern(50'000, 3)));
    auto t0 = std::chrono::steady_clock::now();
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    CHILD_CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    // Never acknowledged: close() blocks for the linger time, then returns.
    auto s2 = ch->socket();
    CHILD_CHECK(ch->setsockopt(*s2, SockOpt::linger, 1) == Errc::ok);
    CHILD_CHECK(ch->connect(*s2, {kPeerIp, 9}) == Errc::in_progress);
    CHILD_CHECK(wait_ready(*ch, *s2, kWritable));
    iovec iov{nullptr, 0};
    const auto big = pattern(200'000, 4);
    std::size_t off = 0;
    for (int k = 0; k < 50 && off < big.size(); ++k) {
      iov = {const_cast<std::byte*>(big.data() + off), big.size() - off};
      if (auto n = ch->send(*s2, std::span(&iov, 1)); n) off += *n;
      usleep(10'000);
    }
    t0 = std::chrono::steady_clock::now();
    CHILD_CHECK(ch->close(*s2) == Errc::ok);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHILD_CHECK(took >= std::chrono::milliseconds(900));
    CHILD_CHECK(took < std::chrono::seconds(4));
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  ASSERT_FALSE(echo.conns.empty());
  EXPECT_TRUE(echo.conns[0].eof);  // the FIN arrived before close() returned
}

TEST(ChannelE2e, SleepingEngineIsWokenByTheDoorbellOnlyWhenAsleep) {
  Bench b;
  Signal attached, go;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    attached.raise();
    // Wait for the parent's go (a blocking read on the pipe's read end, made blocking here).
    fcntl(go.fds[0], F_SETFL, 0);
    char x;
    CHILD_CHECK(::read(go.fds[0], &x, 1) == 1);
    auto s = ch->socket();  // a command while the engine sleeps: must ring the doorbell
    CHILD_CHECK(s.ok());
    _exit(0);
  }
  ASSERT_TRUE(b.run_until([&] { return attached.seen(); }));
  b.run_until([&] { return b.svc->families() == 1; }, 5);
  b.run_until([] { return false; }, 0.05);
  ASSERT_TRUE(b.svc->prepare_sleep());  // nothing to do: publishes engine_sleeping
  go.raise();
  pollfd p{b.svc->wait_fd(), POLLIN, 0};
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::poll(&p, 1, 5000), 1);  // woken by the doorbell, not by the timeout
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  b.svc->woke(true);
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_GE(b.svc->stats().doorbells, 1u);
  // Awake, a command costs the host no doorbell.
  const auto rung = b.svc->stats().doorbells;
  const pid_t pid2 = fork();
  ASSERT_GE(pid2, 0);
  if (pid2 == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    for (int i = 0; i < 20; ++i) CHILD_CHECK(ch->socket().ok());
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid2), 0);
  EXPECT_EQ(b.svc->stats().doorbells, rung);
}

TEST(ChannelE2e, ProducersDuringOneEngineSleepRingTheDoorbellOnceAndAllAreServed) {
  // Three sends on three sockets while the engine sleeps: one doorbell write wakes it (the others
  // see the flag the first one set), and after the wake-up every send's bytes reach the peer.
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  Signal connected, go, sent;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    HostSocket s[3];
    for (auto& x : s) {
      auto r = ch->socket();
      CHILD_CHECK(r.ok());
      x = *r;
      CHILD_CHECK(ch->connect(x, {kPeerIp, 7}) == Errc::in_progress);
    }
    for (auto x : s) CHILD_CHECK(wait_ready(*ch, x, kWritable));
    connected.raise();
    fcntl(go.fds[0], F_SETFL, 0);
    char c;
    CHILD_CHECK(::read(go.fds[0], &c, 1) == 1);
    const auto data = pattern(100, 3);
    for (auto x : s) {
      iovec iov{const_cast<std::byte*>(data.data()), data.size()};
      const auto n = ch->send(x, std::span(&iov, 1));
      CHILD_CHECK(n.ok() && *n == data.size());
    }
    // The engine has not run since: the doorbell's counter holds every write made for this sleep.
    HostChannel::ExecFds fds;
    CHILD_CHECK(ch->prepare_exec(fds));
    ch->exec_failed();
    std::uint64_t writes = 0;
    CHILD_CHECK(::read(fds.doorbell, &writes, sizeof writes) == sizeof writes);
    CHILD_CHECK(writes == 1);
    CHILD_CHECK(::write(fds.doorbell, &writes, sizeof writes) == sizeof writes);  // still ringing
    sent.raise();
    for (auto x : s) {
      std::vector<std::byte> back(data.size());
      CHILD_CHECK(recv_exact(*ch, x, back));
      CHILD_CHECK(back == data);
    }
    _exit(0);
  }
  ASSERT_TRUE(b.run_until([&] { return connected.seen(); }));
  b.run_until([] { return false; }, 0.05);
  ASSERT_TRUE(b.svc->prepare_sleep());  // nothing to do: publishes engine_sleeping
  go.raise();
  const auto t0 = std::chrono::steady_clock::now();
  while (!sent.seen()) {
    int st = 0;
    ASSERT_NE(waitpid(pid, &st, WNOHANG), pid) << "child failed before the wake-up";
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
    usleep(1000);
  }
  pollfd p{b.svc->wait_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);  // the doorbell, not the timeout
  b.svc->woke(true);
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_EQ(echo.conns.size(), 3u);  // the child checked each echo
}

TEST(ChannelE2e, FreshSocketsRingsAreMappedBeforeTheirFirstByte) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 7);
    CHILD_CHECK(s.has_value());
    // Twice through each ring: every page of both is used.
    const auto data = pattern(2 * std::size_t{ch->engine().stream_ring_bytes}, 3);
    std::vector<std::byte> back(data.size());
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    CHILD_CHECK(echo_through(*ch, *s, data, back));
    getrusage(RUSAGE_SELF, &after);
    CHILD_CHECK(back == data);
    // Without the rings mapped at socket(): a fault per 4 KiB page written (64 for the send ring)
    // plus the receive ring's read faults, 73 in all. With them: none in a plain build, about 20
    // under ASan (its shadow of the test's buffers).
    const long faults = after.ru_minflt - before.ru_minflt;
    if (faults >= 40) std::fprintf(stderr, "page faults on the data path: %ld\n", faults);
    CHILD_CHECK(faults < 40);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
}

TEST(ChannelE2e, ThreadsShareOneChannelForControlAndData) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < 3; ++round) {
          auto s = ch->socket();
          if (!s || ch->connect(*s, {kPeerIp, 7}) != Errc::in_progress || !wait_ready(*ch, *s, kWritable)) {
            ++failures;
            return;
          }
          const auto data = pattern(200'000, static_cast<unsigned>(t * 10 + round));
          std::vector<std::byte> back(data.size());
          if (!echo_through(*ch, *s, data, back)) {
            ++failures;
            return;
          }
          if (back != data || ch->close(*s) != Errc::ok) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHILD_CHECK(failures.load() == 0);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_TRUE(b.run_until([&] { return b.svc->sockets() == 0; }, 5));
}

TEST(ChannelAttach, PeerCredentialsOfAnotherUidAreRefused) {
  Bench b;
  // Past the file permissions (0600 socket): the engine still checks SO_PEERCRED itself.
  ASSERT_EQ(::chmod(b.path.c_str(), 0777), 0);
  const bool root = ::geteuid() == 0;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (root) CHILD_CHECK(::setresgid(65534, 65534, 65534) == 0 && ::setresuid(65534, 65534, 65534) == 0);
    char why[256] = {};
    auto ch = HostChannel::attach(b.path.c_str(), why);
    if (root) {
      CHILD_CHECK(ch == nullptr);
      if (std::strstr(why, "uid 65534 may not use this engine") == nullptr) std::fprintf(stderr, "why: %s\n", why);
      CHILD_CHECK(std::strstr(why, "uid 65534 may not use this engine") != nullptr);
    } else {
      CHILD_CHECK(ch != nullptr);  // same uid as the engine: accepted
    }
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_EQ(b.svc->stats().refused, root ? 1u : 0u);
}

TEST(ChannelE2e, KilledFamilysSendRingIsDeliveredBeforeTheFin) {
  Bench b;
  auto& pt = b.peer.tcp();
  const SocketId l = *pt.socket();
  pt.bind(l, {Ipv4Addr::any(), 11});
  pt.listen(l, 4);
  SocketId conn = kInvalidSocket;
  bool reading = false, eof = false;
  std::uint64_t got = 0;
  b.on_step = [&] {
    if (conn == kInvalidSocket) {
      if (auto a = pt.accept(l)) conn = *a;
    }
    if (!reading || conn == kInvalidSocket || eof) return;
    std::byte buf[65536];
    for (;;) {
      auto n = pt.recv(conn, buf);
      if (!n) break;
      if (*n == 0) {
        eof = true;
        break;
      }
      got += *n;
    }
  };
  int counts[2];
  ASSERT_EQ(::pipe(counts), 0);
  fcntl(counts[0], F_SETFL, O_NONBLOCK);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 11);
    CHILD_CHECK(s.has_value());
    // Fill the TCP buffers and the send ring while the peer reads nothing.
    const auto data = pattern(64 * 1024, 5);
    std::uint64_t sent = 0;
    for (int idle = 0; idle < 50;) {
      iovec iov{const_cast<std::byte*>(data.data()), data.size()};
      if (auto n = ch->send(*s, std::span(&iov, 1)); n) {
        sent += *n;
        idle = 0;
      } else {
        ++idle;
        usleep(2000);
      }
    }
    CHILD_CHECK(::write(counts[1], &sent, sizeof(sent)) == sizeof(sent));
    pause();
    _exit(0);
  }
  std::uint64_t sent = 0;
  ASSERT_TRUE(b.run_until([&] { return ::read(counts[0], &sent, sizeof(sent)) == sizeof(sent); }, 20));
  ::close(counts[0]);
  ::close(counts[1]);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  reading = true;
  ASSERT_TRUE(b.run_until([&] { return eof; }, 10));
  EXPECT_EQ(got, sent);  // every byte the process wrote, then FIN
  EXPECT_GT(sent, 256u * 1024);  // more than the ring alone held
  EXPECT_EQ(pt.take_error(conn), Errc::ok);
  EXPECT_TRUE(b.run_until([&] { return b.svc->families() == 0 && b.svc->sockets() == 0; }, 5));
}

TEST(ChannelE2e, ReadHangupShowsOnlyOnceEveryByteBeforeTheFinIsReadable) {
  Bench b;
  Signal listening;
  const std::size_t total = 1'500'000;  // several rings' worth, then FIN right behind it
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto l = ch->socket();
    CHILD_CHECK(ch->bind(*l, {Ipv4Addr::any(), 84}) == Errc::ok);
    CHILD_CHECK(ch->listen(*l, 4) == Errc::ok);
    listening.raise();
    CHILD_CHECK(wait_ready(*ch, *l, kReadable));
    auto s = ch->accept(*l, nullptr);
    CHILD_CHECK(s.ok());
    std::vector<std::byte> buf(64 * 1024);
    std::size_t got = 0;
    bool eof = false;
    while (!eof) {
      CHILD_CHECK(wait_ready(*ch, *s, kReadable | kReadHangup));
      const bool rdhup = (ch->readiness(*s) & kReadHangup) != 0;
      // Read until EAGAIN or EOF (what an edge-triggered reader does on RDHUP).
      for (;;) {
        iovec iov{buf.data(), buf.size()};
        auto n = ch->recv(*s, std::span(&iov, 1));
        if (!n) {
          CHILD_CHECK(n.error() == Errc::again);
          CHILD_CHECK(!rdhup);  // after RDHUP, EAGAIN would lose the rest of the stream
          break;
        }
        if (*n == 0) {
          eof = true;
          break;
        }
        got += *n;
      }
    }
    CHILD_CHECK(got == total);
    _exit(0);
  }
  auto& tcp = b.peer.tcp();
  ASSERT_TRUE(b.run_until([&] { return listening.seen(); }));
  const SocketId cs = *tcp.socket();
  tcp.connect(cs, {kEngineIp, 84});
  ASSERT_TRUE(b.run_until([&] { return (tcp.readiness(cs) & kWritable) != 0; }));
  const auto data = pattern(total, 8);
  std::size_t sent = 0;
  b.on_step = [&] {
    if (sent < total) {
      if (auto n = tcp.send(cs, std::span(data).subspan(sent)); n) sent += *n;
      if (sent == total) tcp.shutdown(cs, ShutdownHow::write);
    }
  };
  const int rc = b.run_child(pid);
  EXPECT_EQ(rc, 0);
  if (rc != 0) {
    b.svc->dump(stderr);
    std::fprintf(stderr, "peer sent %zu\n", sent);
  }
}

TEST(ChannelE2e, WriterBlockedOnAFullSendRingIsWokenAtTheWritableMarkNotPerSegment) {
  // The host shows a socket writable once a quarter of its send ring is free (readiness()); a
  // writer blocked on a full ring must be woken when that becomes true, and not each time TCP
  // takes a few segments, which only makes it wake, find the ring still unwritable and sleep.
  Bench b;
  // A slow reader: a few KB per step, so TCP frees the ring a couple of segments at a time.
  PeerSink sink(b.peer, 9, 3000);
  b.on_step = [&] { sink.step(); };
  constexpr std::size_t kBytes = 2 << 20;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 9);
    CHILD_CHECK(s.has_value());
    const auto data = pattern(kBytes, 5);
    CHILD_CHECK(send_all(*ch, *s, data));
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 60), 0);
  EXPECT_TRUE(b.run_until([&] { return sink.sunk == kBytes; }, 20));
  // Each wake-up may follow at best a quarter ring of progress: about kBytes / (R/4) of them,
  // plus those of the connect and close. Per-segment wake-ups would be ten times as many.
  const std::uint64_t quarter = c::Geometry{}.stream_ring_bytes / 4;
  EXPECT_LE(b.svc->stats().wakeups, 2 * (kBytes / quarter) + 16) << "quarter ring " << quarter;
}

TEST(ChannelE2e, SendRingProgressIsNoEventUnlessTheHostRanShortOfRoom) {
  // A request-response server sends a reply and goes back to waiting for the next request: the
  // engine taking the reply from the ring must not publish an event (and wake it) for that. Only a
  // send that left the ring short of room (snd_nospace) asks for one.
  Bench b;
  PeerSink sink(b.peer, 9, 0);
  b.on_step = [&] { sink.step(); };
  constexpr int kReplies = 50;
  constexpr std::size_t kReply = 700;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 9);
    CHILD_CHECK(s.has_value());
    const auto data = pattern(kReply, 3);
    // One reply first, taken and acknowledged, so that the connection is quiet before counting.
    auto taken = [&](std::uint64_t bytes) {
      for (int spins = 0; spins < 20000; ++spins) {
        auto ti = ch->info(*s);
        if (ti.ok() && (*ti).bytes_acked >= bytes) return true;
        usleep(100);
      }
      return false;
    };
    CHILD_CHECK(send_all(*ch, *s, data));
    CHILD_CHECK(taken(kReply));
    const std::uint32_t seq0 = ch->event_seq(*s);
    for (int k = 1; k <= kReplies; ++k) {
      CHILD_CHECK(send_all(*ch, *s, data));
      CHILD_CHECK(taken(kReply * static_cast<std::uint64_t>(k + 1)));
    }
    CHILD_CHECK(ch->event_seq(*s) == seq0);
    // A full ring is the other case: the writer gets its event once a quarter is free again.
    const std::uint32_t R = c::Geometry{}.stream_ring_bytes;
    const auto big = pattern(R, 4);
    iovec v{const_cast<std::byte*>(big.data()), big.size()};
    std::size_t put = 0;
    for (int tries = 0; tries < 1000 && put < R; ++tries) {
      auto n = ch->send(*s, std::span(&v, 1));
      if (n.ok()) put += *n;
    }
    CHILD_CHECK(taken(kReply * (kReplies + 1) + put));
    CHILD_CHECK(ch->event_seq(*s) != seq0);
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 60), 0);
}
