// The attach socket and the descriptors it carries, against hostile hosts: the region cannot be
// resized under the engine, host-reachable descriptors cannot block the engine's thread, attach
// connections cannot exhaust it, and a host hands its traffic only to an engine it trusts. The
// engine runs in this process (stepped by the test); hosts are raw sockets or forked children.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <grp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
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
#include "engine/host/impl.hh"
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

/// Registers `efd` as waiter `idx` of a raw host; the engine's errno answer, or -1 for no answer.
int register_waiter(Bench& b, RawHost& rh, std::uint32_t idx, int efd) {
  c::WaiterRegister req;
  req.index = idx;
  const int fds[1] = {efd};
  if (send_with_fds(rh.conn, &req, sizeof(req), fds, 0) != static_cast<ssize_t>(sizeof(req))) return -1;
  c::WaiterReply rep;
  ssize_t r = -1;
  b.run_until([&] {
    r = ::recv(rh.conn, &rep, sizeof(rep), MSG_DONTWAIT);
    return r >= 0;
  }, 5);
  return r == static_cast<ssize_t>(sizeof(rep)) ? rep.err : -1;
}

/// Arms waiter `idx` of a raw host and queues a socket() command: the engine's next pass makes
/// progress for the family and writes that waiter's eventfd.
void arm_and_give_work(RawHost& rh, std::uint32_t idx) {
  auto& w = *reinterpret_cast<c::WaiterEntry*>(rh.base + rh.h.waiters_off + idx * sizeof(c::WaiterEntry));
  w.in_use = 1;
  w.armed = 1;
  reinterpret_cast<c::RegionHeader*>(rh.base)->armed_waiters = 1;
  c::Command cmd;
  cmd.op = c::Op::socket;
  ASSERT_EQ(region_ring<c::Command>(rh.base, rh.h.cmd_off, rh.h.cmd_entries).push(std::span(&cmd, 1)), 1u);
}

void set_blocking(int fd) { ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0); }

/// Runs `engine` on a thread of its own; if it has not returned after `seconds`, `release`
/// undoes what blocked it (so a failing run ends) and the answer is false.
bool finishes_in_time(const std::function<void()>& engine, const std::function<void()>& release, double seconds) {
  std::atomic<bool> done{false};
  std::thread t([&] {
    engine();
    done = true;
  });
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const bool in_time = done;
  while (!done) {
    release();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  t.join();
  return in_time;
}

/// In a forked child: drop to uid/gid 65534 (nobody). False when that is not possible.
bool become_nobody() {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(65534, 65534, 65534) == 0 &&
         ::setresuid(65534, 65534, 65534) == 0;
}

/// True when `fd`'s peer closed the connection (recv() answers 0 at once).
bool closed_by_peer(int fd, int wait_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, wait_ms) != 1) return false;
  char x;
  return ::recv(fd, &x, 1, MSG_DONTWAIT) == 0;
}

/// A pipe between the test and a child: one byte says "go on".
struct Baton {
  Baton() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~Baton() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void pass() { [[maybe_unused]] auto r = ::write(fds[1], "x", 1); }
  bool seen(int wait_ms = 0) {
    pollfd p{fds[0], POLLIN, 0};
    char b;
    return ::poll(&p, 1, wait_ms) == 1 && ::read(fds[0], &b, 1) == 1;
  }
  int fds[2] = {-1, -1};
};

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

// ---------------------------------------------------------------- fault 2: host-controlled fds

TEST(ChannelAttachHardening, AWaiterMustBeANonBlockingEventfd) {
  Bench b;
  RawHost rh;
  ASSERT_TRUE(raw_attach(b, rh));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  EXPECT_EQ(register_waiter(b, rh, 0, p[0]), EINVAL);  // not an eventfd
  const int blocking = ::eventfd(0, EFD_CLOEXEC);
  EXPECT_EQ(register_waiter(b, rh, 0, blocking), EINVAL);
  const int good = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  EXPECT_EQ(register_waiter(b, rh, 0, good), 0);
  for (int fd : {p[0], p[1], blocking, good}) ::close(fd);
}

TEST(ChannelAttachHardening, AHostThatMakesItsWaiterBlockingCannotStallTheEngine) {
  Bench b;
  RawHost rh;
  ASSERT_TRUE(raw_attach(b, rh));
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_EQ(register_waiter(b, rh, 0, efd), 0);
  // The description is shared: clearing O_NONBLOCK here clears it for the engine, and a full
  // counter makes a write of 1 sleep until somebody reads.
  const std::uint64_t full = 0xfffffffffffffffeULL;
  ASSERT_EQ(::write(efd, &full, sizeof(full)), static_cast<ssize_t>(sizeof(full)));
  set_blocking(efd);
  arm_and_give_work(rh, 0);
  const pid_t child = fork_working_host(b.path);
  int status = -1;
  const bool in_time = finishes_in_time([&] { status = b.run_child(child); }, [&] {
    std::uint64_t v;
    iovec io{&v, sizeof(v)};
    [[maybe_unused]] ssize_t r = ::preadv2(efd, &io, 1, -1, RWF_NOWAIT);  // unblocks the engine's write
  }, 5);
  EXPECT_TRUE(in_time) << "the engine slept in a write to the host's eventfd";
  EXPECT_EQ(status, 0) << "the other family was not served";
  EXPECT_GE(b.svc->stats().corrupt, 1u);  // the hostile family was detached
  char x;
  EXPECT_TRUE(b.run_until([&] { return ::recv(rh.conn, &x, 1, MSG_DONTWAIT) == 0; }));
  ::close(efd);
}

TEST(ChannelAttachHardening, TheWakeGuardInterruptsAWriteThatBlocks) {
  const int efd = ::eventfd(0xfffffffeU, EFD_CLOEXEC);
  const std::uint64_t more = 0xfffffffffffffffeULL - 0xfffffffeULL;
  ASSERT_EQ(::write(efd, &more, sizeof(more)), static_cast<ssize_t>(sizeof(more)));  // counter at its maximum
  ssize_t r = 0;
  int err = 0;
  const bool in_time = finishes_in_time([&] {
    pno::engine::host::WakeGuardScope guard;
    const std::uint64_t one = 1;
    r = ::write(efd, &one, sizeof(one));  // blocks: only the guard ends it
    err = errno;
  }, [&] {
    std::uint64_t v;
    iovec io{&v, sizeof(v)};
    [[maybe_unused]] ssize_t rr = ::preadv2(efd, &io, 1, -1, RWF_NOWAIT);
  }, 2);
  EXPECT_TRUE(in_time);
  EXPECT_EQ(r, -1);
  EXPECT_EQ(err, EINTR);
  ::close(efd);
}

TEST(ChannelAttachHardening, AHostThatDrainsABlockingDoorbellCannotStallTheEngine) {
  Bench b;
  RawHost rh;
  ASSERT_TRUE(raw_attach(b, rh));
  set_blocking(rh.doorbell);
  const pid_t child = fork_working_host(b.path);
  std::atomic<pid_t> engine_tid{0};
  std::atomic<bool> racing{true};
  // The host rings and drains its doorbell (its own drain cannot block: RWF_NOWAIT), so that the
  // engine may find it empty after epoll saw it ring. Once the engine thread sits in an 8-byte
  // read() it stops: a plain read would then sleep for good.
  std::thread racer([&] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    char path[64] = {};
    while (engine_tid == 0) std::this_thread::yield();
    std::snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", static_cast<int>(engine_tid.load()));
    const std::string blocked_read = std::to_string(SYS_read) + " ";
    auto in_read = [&] {
      char buf[256] = {};
      const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
      const ssize_t n = fd >= 0 ? ::read(fd, buf, sizeof(buf) - 1) : -1;
      if (fd >= 0) ::close(fd);
      const std::string line = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
      return line.rfind(blocked_read, 0) == 0 && line.find(" 0x8 ") != std::string::npos;
    };
    while (racing && std::chrono::steady_clock::now() < end) {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(rh.doorbell, &one, sizeof(one));
      std::uint64_t v;
      iovec io{&v, sizeof(v)};
      [[maybe_unused]] ssize_t r = ::preadv2(rh.doorbell, &io, 1, -1, RWF_NOWAIT);
      if (in_read()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (in_read()) break;
      }
    }
    racing = false;
  });
  int status = -1;
  const bool in_time = finishes_in_time([&] {
    engine_tid = static_cast<pid_t>(::gettid());
    status = b.run_child(child);
    b.run_until([&] { return !racing; }, 5);  // keep serving while the host races
  }, [&] {
    racing = false;
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(rh.doorbell, &one, sizeof(one));
  }, 8);
  racing = false;
  racer.join();
  EXPECT_TRUE(in_time) << "the engine slept in a read of the host's doorbell";
  EXPECT_EQ(status, 0) << "the other family was not served";
}

// ----------------------------------------------------------------- fault 6: attach exhaustion

TEST(ChannelAttachHardening, ASilentAttachConnectionIsClosedAfterTheHandshakeTimeout) {
  Bench b([](HostServiceConfig& c) { c.handshake_timeout = std::chrono::milliseconds(200); });
  const int fd = raw_connect(b.path);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(b.run_until([&] { return closed_by_peer(fd); }, 5));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  EXPECT_TRUE(b.run_until([&] { return b.svc->families() == 0; }, 1));
  EXPECT_GE(b.svc->stats().attach_shed, 1u);
  ::close(fd);
}

TEST(ChannelAttachHardening, PendingAttachConnectionsAreCapped) {
  Bench b([](HostServiceConfig& c) {
    c.max_pending_attaches = 4;
    c.handshake_timeout = std::chrono::seconds(30);
  });
  std::vector<int> fds;
  for (int k = 0; k < 5; ++k) fds.push_back(raw_connect(b.path));
  EXPECT_TRUE(b.run_until([&] { return closed_by_peer(fds[4]); }, 2)) << "the fifth was not shed";
  EXPECT_EQ(b.svc->families(), 4u);
  for (int k = 0; k < 4; ++k) EXPECT_FALSE(closed_by_peer(fds[k])) << k;
  // One of them goes: its pending slot frees and the next connection is admitted and attaches.
  ::close(fds[0]);
  EXPECT_TRUE(b.run_until([&] { return b.svc->families() == 3; }, 2));
  RawHost rh;
  EXPECT_TRUE(raw_attach(b, rh));
  for (std::size_t k = 1; k < fds.size(); ++k) ::close(fds[k]);
}

TEST(ChannelAttachHardening, OneUidCannotTakeEveryPendingAttachSlot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a host as another uid";
  Bench b([](HostServiceConfig& c) {
    c.allow_any_uid = true;  // the socket is 0777: uid 65534 may connect
    c.max_pending_per_uid = 2;
    c.handshake_timeout = std::chrono::seconds(30);
  });
  Baton holding, release;
  const pid_t nobody = fork();
  ASSERT_GE(nobody, 0);
  if (nobody == 0) {
    CHILD_CHECK(become_nobody());
    const int c1 = raw_connect(b.path), c2 = raw_connect(b.path), c3 = raw_connect(b.path);
    CHILD_CHECK(c1 >= 0 && c2 >= 0 && c3 >= 0);
    CHILD_CHECK(closed_by_peer(c3, 5000));  // the uid's third is shed
    CHILD_CHECK(!closed_by_peer(c1) && !closed_by_peer(c2));
    holding.pass();
    CHILD_CHECK(release.seen(20000));
    _exit(0);
  }
  EXPECT_TRUE(b.run_until([&] { return holding.seen(); }, 10));
  // Another uid (root here) still attaches and is served while uid 65534 holds its share.
  EXPECT_EQ(b.run_child(fork_working_host(b.path)), 0);
  release.pass();
  EXPECT_EQ(b.run_child(nobody), 0);
}

TEST(ChannelAttachHardening, FamiliesPerUidAreCapped) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a host as another uid";
  Bench b([](HostServiceConfig& c) {
    c.allow_any_uid = true;
    c.max_families_per_uid = 2;
  });
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    CHILD_CHECK(become_nobody());
    char why[256] = {};
    auto a = HostChannel::attach(b.path.c_str(), why);
    auto c = HostChannel::attach(b.path.c_str(), why);
    CHILD_CHECK(a != nullptr && c != nullptr);
    auto d = HostChannel::attach(b.path.c_str(), why);
    CHILD_CHECK(d == nullptr);
    CHILD_CHECK(std::strstr(why, "uid 65534 already has 2 families attached") != nullptr);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  EXPECT_GE(b.svc->stats().refused, 1u);
}

TEST(ChannelAttachHardening, OutOfDescriptorsTheListenerIsDrainedAndTheLoopCanSleep) {
  Bench b;
  // A whole attach and exchange first, with descriptors to spare. Under UBSan this also warms its
  // dynamic-type cache: its slow path probes memory through a pipe(), which a full descriptor
  // table refuses, and it would then report the bench's own virtual calls as bad casts.
  EXPECT_EQ(b.run_child(fork_working_host(b.path)), 0);
  // Its family gone first: descriptors it frees later would end the shortage below.
  ASSERT_TRUE(b.run_until([&] { return b.svc->families() == 0; }, 5));
  const int client = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);  // before the table is full
  ASSERT_GE(client, 0);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  std::vector<int> fillers;
  {
    // The descriptor table is full (EMFILE) while the engine has an attach connection to accept.
    rlimit low = saved;
    const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    low.rlim_cur = static_cast<rlim_t>(probe) + 16;
    ::close(probe);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, b.path.c_str());
    EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    // The engine sheds it: the listener is drained, so the loop's wait descriptor goes quiet.
    b.run_until([&] {
      pollfd p{b.svc->wait_fd(), POLLIN, 0};
      return ::poll(&p, 1, 0) == 0;
    }, 0.2);
    pollfd p{b.svc->wait_fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "the engine's wait descriptor stays readable: its loop would spin";
    EXPECT_TRUE(closed_by_peer(client));
  }
  for (int fd : fillers) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  // With descriptors again, attaching works (the reserve was taken back).
  EXPECT_EQ(b.run_child(fork_working_host(b.path)), 0);
  ::close(client);
}

// --------------------------------------------------------- fault 17: the host checks the engine

TEST(ChannelAttachHardening, HostRefusesAnEngineRunByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a fake engine as another uid";
  const std::string path = temp_path("fake-uid");
  ::unlink(path.c_str());
  Baton listening;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // A fake engine of uid 65534: SO_PEERCRED reports the uid of the listen() call.
    CHILD_CHECK(become_nobody());
    const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path.c_str());
    CHILD_CHECK(::bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    CHILD_CHECK(::listen(l, 4) == 0);
    listening.pass();
    // The refused host says nothing; the one told to trust uid 65534 sends its request.
    const int first = ::accept(l, nullptr, nullptr);
    c::AttachRequest req;
    CHILD_CHECK(::recv(first, &req, sizeof(req), 0) == 0);
    const int second = ::accept(l, nullptr, nullptr);
    CHILD_CHECK(::recv(second, &req, sizeof(req), 0) == static_cast<ssize_t>(sizeof(req)));
    c::AttachReply rep;
    rep.status = c::AttachStatus::refused;
    std::snprintf(rep.why, sizeof(rep.why), "fake engine");
    CHILD_CHECK(::send(second, &rep, sizeof(rep), 0) == static_cast<ssize_t>(sizeof(rep)));
    _exit(0);
  }
  ASSERT_TRUE(listening.seen(5000));
  char why[256] = {};
  EXPECT_EQ(HostChannel::attach(path.c_str(), why), nullptr);
  EXPECT_NE(std::strstr(why, "runs as uid 65534, which is not root, this user"), nullptr) << why;
  // Named in PNO_ENGINE_UID, the same engine is talked to (and here refuses on its own).
  ::setenv("PNO_ENGINE_UID", "65534", 1);
  char why2[256] = {};
  EXPECT_EQ(HostChannel::attach(path.c_str(), why2), nullptr);
  ::unsetenv("PNO_ENGINE_UID");
  EXPECT_NE(std::strstr(why2, "fake engine"), nullptr) << why2;
  int status = -1;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::unlink(path.c_str());
}
