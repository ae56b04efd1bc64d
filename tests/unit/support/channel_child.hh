// Test support for channel tests whose host side runs in forked children: the engine (HostService)
// and a peer stack stepped by the test process, the child's helpers (attach, wait, connect, send),
// its view of its own region mapping (for states only a death at one instruction leaves), and
// small peers (collect per connection, echo).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/contract.hh"
#include "channel/host.hh"
#include "engine/host_service.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/channel_bench.hh"

namespace pno::test::channel_child {

using namespace pno::test::channel_bench;
using channel::HostChannel;
using channel::HostSocket;
using channel::Waiter;
using engine::HostService;
using engine::HostServiceConfig;
namespace c = channel::contract;

inline StackConfig stack_config(Ipv4Addr a, std::uint8_t mac) {
  StackConfig cfg = cfg_for(a, mac);
  cfg.secret = mac;
  cfg.tcp.msl = std::chrono::milliseconds(100);
  return cfg;
}

inline Instant wall() {
  return instant_from_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

/// The engine and the peer, stepped by the test process; the host runs in a forked child.
struct Bench {
  explicit Bench(c::Geometry g = {}) {
    path = "/tmp/pnoc-race-" + std::to_string(getpid()) + "-" + std::to_string(++counter) + ".sock";
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
  bool run_until(const std::function<bool()>& done, double seconds = 20) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      step();
      if (done()) return true;
    }
    return false;
  }
  /// Runs the engine until child `pid` exits: its exit status, or -1 when it hangs (killed then).
  int run_child(pid_t pid, double seconds = 30) {
    int status = -1;
    const bool ok = run_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, seconds);
    if (!ok) {
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

#define CHILD_CHECK(cond)                                                            \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      _exit(1);                                                                      \
    }                                                                                \
  } while (0)

inline std::unique_ptr<HostChannel> child_attach(const std::string& path) {
  char why[256] = {};
  auto ch = HostChannel::attach(path.c_str(), why);
  if (!ch) std::fprintf(stderr, "attach: %s\n", why);
  return ch;
}

inline bool wait_ready(HostChannel& ch, HostSocket s, std::uint32_t mask, int timeout_ms = 10000) {
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

inline std::optional<HostSocket> connect_to_peer(HostChannel& ch, std::uint16_t port) {
  auto s = ch.socket();
  if (!s.ok() || ch.connect(*s, {kPeerIp, port}) != Errc::in_progress || !wait_ready(ch, *s, kWritable)) {
    return std::nullopt;
  }
  return *s;
}

inline bool send_all(HostChannel& ch, HostSocket s, std::span<const std::byte> data) {
  std::size_t off = 0;
  while (off < data.size()) {
    iovec iov{const_cast<std::byte*>(data.data() + off), data.size() - off};
    const auto n = ch.send(s, std::span(&iov, 1));
    if (n) {
      off += *n;
    } else if (n.error() != Errc::again || !wait_ready(ch, s, kWritable | kError | kHangup)) {
      return false;
    }
  }
  return true;
}

/// This process's mapping of its family's region (the engine's memfd is named "pno-region").
inline std::byte* region_base() {
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return nullptr;
  char line[512];
  std::byte* base = nullptr;
  while (base == nullptr && std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strstr(line, "memfd:pno-region") != nullptr) base = reinterpret_cast<std::byte*>(std::strtoull(line, nullptr, 16));
  }
  std::fclose(f);
  return base;
}
inline const c::RegionHeader& header(std::byte* base) { return *reinterpret_cast<const c::RegionHeader*>(base); }
inline c::SocketSlot& slot_of(std::byte* base, HostSocket s) {
  return *reinterpret_cast<c::SocketSlot*>(base + c::slot_off(header(base), c::handle_index(s)));
}
inline c::ProcEntry& proc_entry(std::byte* base, std::uint32_t e) {
  return *reinterpret_cast<c::ProcEntry*>(base + c::proc_off(header(base), e));
}
inline std::atomic_ref<std::uint32_t> word(std::uint32_t& w) { return std::atomic_ref<std::uint32_t>(w); }

/// A pid that is certainly not running: a child that exited and was reaped.
inline pid_t reaped_pid() {
  const pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

/// The peer: listens on `port`, accepts every connection and keeps all it receives, per connection.
struct PeerCollect {
  PeerCollect(Stack& st, std::uint16_t port) : tcp(st.tcp()) {
    l = *tcp.socket();
    tcp.bind(l, {Ipv4Addr::any(), port});
    tcp.listen(l, 64);
  }
  struct Conn {
    SocketId id;
    std::vector<std::byte> got;
    bool eof;
  };
  void step() {
    while (auto a = tcp.accept(l)) conns.push_back({*a, {}, false});
    for (auto& cn : conns) {
      std::byte buf[16384];
      while (!cn.eof) {
        auto n = tcp.recv(cn.id, buf);
        if (!n) break;
        if (*n == 0) {
          cn.eof = true;
          tcp.close(cn.id);
          break;
        }
        cn.got.insert(cn.got.end(), buf, buf + *n);
      }
    }
  }
  /// A connection that received a byte other than `fill`: how many such bytes, over all.
  std::size_t foreign(std::byte fill) const {
    std::size_t n = 0;
    for (const auto& cn : conns) {
      for (std::byte b : cn.got) n += b != fill ? 1 : 0;
    }
    return n;
  }
  tcp::TcpLayer& tcp;
  SocketId l;
  std::vector<Conn> conns;
};

/// Whether thread `tid` of this process is asleep in the kernel (state S in its stat line).
inline bool thread_sleeping(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  char line[512] = {};
  const bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  const char* close_paren = got ? std::strrchr(line, ')') : nullptr;
  return close_paren != nullptr && close_paren[1] == ' ' && close_paren[2] == 'S';
}


/// The peer's echo server on `port` (everything received goes back).
struct PeerEcho {
  PeerEcho(Stack& st, std::uint16_t port) : tcp(st.tcp()) {
    l = *tcp.socket();
    tcp.bind(l, {Ipv4Addr::any(), port});
    tcp.listen(l, 4);
  }
  void step() {
    while (auto a = tcp.accept(l)) conns.push_back({*a, {}});
    for (auto& cn : conns) {
      std::byte buf[16384];
      for (;;) {
        if (!cn.pending.empty()) {
          auto n = tcp.send(cn.id, cn.pending);
          if (!n || *n == 0) break;
          cn.pending.erase(cn.pending.begin(), cn.pending.begin() + static_cast<std::ptrdiff_t>(*n));
          if (!cn.pending.empty()) break;
        }
        auto n = tcp.recv(cn.id, buf);
        if (!n || *n == 0) break;
        cn.pending.insert(cn.pending.end(), buf, buf + *n);
      }
    }
  }
  struct Conn {
    SocketId id;
    std::vector<std::byte> pending;
  };
  tcp::TcpLayer& tcp;
  SocketId l;
  std::vector<Conn> conns;
};

}  // namespace pno::test::channel_child
