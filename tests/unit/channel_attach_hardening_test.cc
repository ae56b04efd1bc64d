// The attach socket and the descriptors it carries, against hostile hosts: the region cannot be
// resized under the engine, host-reachable descriptors cannot block the engine's thread, attach
// connections cannot exhaust it, and a host hands its traffic only to an engine it trusts. The
// engine runs in this process (stepped by the test); hosts are raw sockets or forked children.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
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

Instant wall() {
  return instant_from_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::string temp_path(const char* what) {
  static int counter = 0;
  return "/tmp/pnoc-hard-" + std::string(what) + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter) +
         ".sock";
}

/// The engine with its attach socket, and a peer stack listening on port 7 (it accepts and keeps
/// what connects), stepped by the test process.
struct Bench {
  explicit Bench(const std::function<void(HostServiceConfig&)>& tune = {}) {
    path = temp_path("eng");
    HostServiceConfig cfg;
    cfg.socket_path = path;
    cfg.addrs = {Ipv4Cidr{kEngineIp, 24}};
    cfg.quiet = true;
    if (tune) tune(cfg);
    svc = std::make_unique<HostService>(cfg);
    EXPECT_EQ(svc->start(eng.tcp(), wall()), Errc::ok);
    pl = *peer.tcp().socket();
    peer.tcp().bind(pl, {Ipv4Addr::any(), 7});
    peer.tcp().listen(pl, 16);
  }

  void step() {
    const Instant now = wall();
    step_engine_and_peer(eng, eng_out, peer, peer_out, svc.get(), now, [&] { svc->on_tick(eng.tcp(), now); });
    while (auto a = peer.tcp().accept(pl)) accepted.push_back(*a);
  }

  bool run_until(const std::function<bool()>& done, double seconds = 10) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      step();
      if (done()) return true;
    }
    return false;
  }

  /// Runs the engine until child `pid` exits; its exit status, or -1 on timeout (child killed).
  int run_child(pid_t pid, double seconds = 20) {
    int status = -1;
    if (!run_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, seconds)) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string path;
  MemLink eng_out, peer_out;
  Stack eng{cfg_for(kEngineIp, 1), eng_out, wall()};
  Stack peer{cfg_for(kPeerIp, 2), peer_out, wall()};
  std::unique_ptr<HostService> svc;
  SocketId pl = kInvalidSocket;
  std::vector<SocketId> accepted;
};

#define CHILD_CHECK(cond)                                                            \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      _exit(1);                                                                      \
    }                                                                                \
  } while (0)

/// A connected, not yet handshaken attach connection (the host end's checks bypassed).
int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// What a raw attach received: the connection, the region memfd and its mapping, the doorbell.
struct RawHost {
  int conn = -1, memfd = -1, doorbell = -1;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  c::RegionHeader h{};
  ~RawHost() {
    if (base != nullptr) munmap(base, bytes);
    for (int fd : {conn, memfd, doorbell}) {
      if (fd >= 0) ::close(fd);
    }
  }
};

/// Attaches as a host would, by hand, while stepping the engine. False when anything fails.
bool raw_attach(Bench& b, RawHost& rh) {
  rh.conn = raw_connect(b.path);
  if (rh.conn < 0) return false;
  c::AttachRequest req;
  req.pid = static_cast<std::uint32_t>(getpid());
  if (::send(rh.conn, &req, sizeof(req), 0) != static_cast<ssize_t>(sizeof(req))) return false;
  c::AttachReply rep;
  int fds[2] = {-1, -1};
  ssize_t r = -1;
  b.run_until([&] {
    r = recv_with_fds(rh.conn, &rep, sizeof(rep), fds, MSG_DONTWAIT);
    return r >= 0;
  }, 5);
  rh.memfd = fds[0];
  rh.doorbell = fds[1];
  if (r != static_cast<ssize_t>(sizeof(rep)) || rep.status != c::AttachStatus::ok || rh.memfd < 0) return false;
  rh.bytes = rep.region_bytes;
  void* m = mmap(nullptr, rh.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, rh.memfd, 0);
  if (m == MAP_FAILED) return false;
  rh.base = static_cast<std::byte*>(m);
  std::memcpy(&rh.h, rh.base, sizeof(rh.h));
  return true;
}

/// A forked host that attaches through HostChannel and connects to the peer's port 7: exit 0 if
/// the engine serves it.
pid_t fork_working_host(const std::string& path) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  char why[256] = {};
  auto ch = HostChannel::attach(path.c_str(), why);
  if (!ch) std::fprintf(stderr, "attach: %s\n", why);
  CHILD_CHECK(ch != nullptr);
  auto s = ch->socket();
  CHILD_CHECK(s.ok());
  CHILD_CHECK(ch->connect(*s, {kPeerIp, 7}) == Errc::in_progress);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((ch->readiness(*s) & kWritable) == 0) {
    CHILD_CHECK(std::chrono::steady_clock::now() < end);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHILD_CHECK(ch->close(*s) == Errc::ok);
  _exit(0);
}

}  // namespace

// ------------------------------------------------------------------------------ fault 1: sealing

TEST(ChannelAttachHardening, HostCannotResizeTheRegionUnderTheEngine) {
  Bench b;
  RawHost rh;
  ASSERT_TRUE(raw_attach(b, rh));
  // Linux: memfd seals make ftruncate() fail with EPERM (shmem_setattr()).
  EXPECT_EQ(::ftruncate(rh.memfd, static_cast<off_t>(rh.bytes * 2)), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(rh.memfd, 0), -1);  // unsealed, the engine's next access is SIGBUS
  EXPECT_EQ(errno, EPERM);
  const int seals = ::fcntl(rh.memfd, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  // No seal can be added either (F_SEAL_SEAL): not even one that stops later writable mappings.
  EXPECT_EQ(::fcntl(rh.memfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
  // The engine reads the family's ring indices on every pass: no SIGBUS, and another family
  // attaches and is served.
  for (int k = 0; k < 10; ++k) b.step();
  EXPECT_EQ(b.run_child(fork_working_host(b.path)), 0);
  EXPECT_TRUE(b.run_until([&] { return b.svc->families() == 1; }));  // the raw host's; the child's went
}
