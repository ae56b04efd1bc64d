// Races and deaths on the host side of the channel: threads, signal handlers and processes of one
// family acting on the same socket slot or lock at once. The engine's HostService runs in this
// process, the host side in forked children (as in channel_e2e_test.cc); where a test must create
// a state only a death at one exact instruction leaves, the child writes the region's words the
// way the dying process would have, through its own mapping of the region.
#include <gtest/gtest.h>
#include <sys/time.h>

#include <thread>

#include "support/channel_child.hh"

using namespace pno;
using namespace pno::channel;
using namespace pno::test::channel_child;

namespace {

constexpr std::byte kOld{0xaa};
constexpr std::byte kNew{0xbb};

}  // namespace

// ------------------------------------------------------------------ fault: bytes to the wrong peer

// A send still inside the slot (here: sendfile reading from a pipe under the send lock) while
// another thread closes the socket and the slot's next socket connects elsewhere: the old bytes
// reach the old peer or the send fails with EBADF, never the new connection (Linux: the file
// reference the call holds keeps the old socket alive until it returns).
TEST(ChannelRace, SendInsideTheSlotWhileItIsClosedAndReusedNeverReachesTheNewConnection) {
  Bench b;
  PeerCollect old_peer(b.peer, 21), new_peer(b.peer, 22);
  b.on_step = [&] {
    old_peer.step();
    new_peer.step();
  };
  constexpr int kRounds = 5;
  constexpr std::size_t kNewBytes = 3000;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    for (int round = 0; round < kRounds; ++round) {
      auto a = connect_to_peer(*ch, 21);
      CHILD_CHECK(a.has_value());
      // Earlier bytes of the old connection are still in the slot's ring when it is reused.
      const std::vector<std::byte> old_bytes(20000, kOld);
      CHILD_CHECK(send_all(*ch, *a, old_bytes));
      int p[2];
      CHILD_CHECK(::pipe(p) == 0);
      std::atomic<pid_t> sender_tid{0};
      std::atomic<bool> reused{false}, closing{false};
      Result<std::size_t> sent = Errc::again;
      std::thread sender([&] {
        sender_tid = ::gettid();
        sent = ch->send_file(*a, p[0], nullptr, 1000);
      });
      // The pipe's bytes come once the slot carries the new connection, or (when close() waits
      // for the send, as it must) a moment after close() began: the outcome is checked either way.
      std::thread feeder([&] {
        while (!closing) std::this_thread::yield();
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        while (!reused && std::chrono::steady_clock::now() < end) std::this_thread::yield();
        const std::vector<std::byte> more(1000, kOld);
        [[maybe_unused]] ssize_t r = ::write(p[1], more.data(), more.size());
      });
      // The sender is inside the send (in read(): nothing in the pipe yet) once its thread sleeps.
      while (sender_tid == 0 || !thread_sleeping(sender_tid)) std::this_thread::yield();
      closing = true;
      CHILD_CHECK(ch->close(*a) == Errc::ok);
      // The engine frees the slot once the old ring is drained; the next socket() takes it.
      while (ch->readable_bytes(*a).ok()) std::this_thread::yield();
      auto nb = ch->socket();
      CHILD_CHECK(nb.ok());
      CHILD_CHECK(ch->connect(*nb, {kPeerIp, 22}) == Errc::in_progress && wait_ready(*ch, *nb, kWritable));
      reused = true;
      sender.join();
      feeder.join();
      CHILD_CHECK(sent.ok() || sent.error() == Errc::badf);
      const std::vector<std::byte> new_bytes(kNewBytes, kNew);
      CHILD_CHECK(send_all(*ch, *nb, new_bytes));
      CHILD_CHECK(ch->close(*nb) == Errc::ok);
      ::close(p[0]);
      ::close(p[1]);
    }
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid), 0);
  ASSERT_TRUE(b.run_until([&] {
    if (new_peer.conns.size() < kRounds) return false;
    for (const auto& cn : new_peer.conns) {
      if (!cn.eof) return false;
    }
    return true;
  }, 10));
  EXPECT_EQ(new_peer.foreign(kNew), 0u);
  for (const auto& cn : new_peer.conns) EXPECT_EQ(cn.got.size(), kNewBytes);
  EXPECT_EQ(old_peer.foreign(kOld), 0u);
}

// The demonstration as a stress: one thread sends in a loop on a socket while another closes it and
// opens the next one, which reuses the slot. The new connections' peers never see an old byte.
TEST(ChannelRace, SendingLoopRacingCloseAndSlotReuseNeverLeaksIntoTheNewConnection) {
  c::Geometry g;
  g.max_sockets = 8;
  g.stream_ring_bytes = 64 * 1024;
  Bench b(g);
  PeerCollect old_peer(b.peer, 21), new_peer(b.peer, 22);
  b.on_step = [&] {
    old_peer.step();
    new_peer.step();
  };
  constexpr int kRounds = 60;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    const std::vector<std::byte> old_bytes(8192, kOld);
    for (int round = 0; round < kRounds; ++round) {
      auto a = connect_to_peer(*ch, 21);
      CHILD_CHECK(a.has_value());
      std::atomic<int> sends{0};
      std::atomic<bool> bad{false};
      std::thread sender([&] {
        for (;;) {
          iovec iov{const_cast<std::byte*>(old_bytes.data()), old_bytes.size() - static_cast<std::size_t>(sends % 7) * 1000};
          const auto n = ch->send(*a, std::span(&iov, 1));
          if (!n && n.error() == Errc::badf) return;
          if (!n && n.error() != Errc::again) bad = true;
          if (!n && n.error() != Errc::again) return;
          ++sends;
        }
      });
      while (sends < 1 + round % 3) std::this_thread::yield();
      CHILD_CHECK(ch->close(*a) == Errc::ok);
      auto nb = ch->socket();
      CHILD_CHECK(nb.ok());
      CHILD_CHECK(ch->connect(*nb, {kPeerIp, 22}) == Errc::in_progress && wait_ready(*ch, *nb, kWritable));
      sender.join();
      CHILD_CHECK(!bad);
      const std::vector<std::byte> new_bytes(1000, kNew);
      CHILD_CHECK(send_all(*ch, *nb, new_bytes));
      CHILD_CHECK(ch->close(*nb) == Errc::ok);
    }
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 60), 0);
  b.run_until([&] {
    for (const auto& cn : new_peer.conns) {
      if (!cn.eof) return false;
    }
    return new_peer.conns.size() >= kRounds;
  }, 10);
  EXPECT_EQ(new_peer.foreign(kNew), 0u);
  EXPECT_EQ(old_peer.foreign(kOld), 0u);
}

// ------------------------------------------------------------------ fault: signal handler deadlock

namespace {
HostChannel* g_ch = nullptr;
HostSocket g_sock = kNoSocket;
std::atomic<std::uint64_t> g_handler_sent{0}, g_handler_got{0}, g_handler_runs{0}, g_handler_eintr{0},
    g_handler_deferrals{0};
volatile sig_atomic_t g_deferred = 0;

/// What the handler does: a small send and a recv on the socket the main thread is using.
void handler_body() {
  ++g_handler_runs;
  char buf[256];
  std::memset(buf, 'h', 16);
  iovec out{buf, 16};
  if (auto n = g_ch->send(g_sock, std::span(&out, 1)); n) {
    g_handler_sent += *n;
  } else if (n.error() == static_cast<Errc>(EINTR)) {
    ++g_handler_eintr;
  }
  iovec in{buf, sizeof buf};
  if (auto n = g_ch->recv(g_sock, std::span(&in, 1)); n) {
    g_handler_got += *n;
  } else if (n.error() == static_cast<Errc>(EINTR)) {
    ++g_handler_eintr;
  }
}
/// As the shim's trampoline: deferred while the thread is inside the channel's critical section.
void deferring_handler(int) {
  if (defer_signal()) {
    ++g_handler_deferrals;
    g_deferred = 1;
    return;
  }
  handler_body();
}
void run_deferred() {
  if (g_deferred == 0) return;
  g_deferred = 0;
  handler_body();
}
/// A handler the shim did not wrap: it calls straight in.
void direct_handler(int) { handler_body(); }

/// In a child: the main thread sends and receives on one echo connection while SIGALRM fires every
/// millisecond with `handler`, until the handler ran `runs` times; then every byte both sent comes
/// back. Exit 0.
[[noreturn]] void signal_child(const std::string& path, void (*handler)(int), std::uint64_t runs) {
  auto ch = child_attach(path);
  CHILD_CHECK(ch != nullptr);
  auto s = connect_to_peer(*ch, 7);
  CHILD_CHECK(s.has_value());
  CHILD_CHECK(ch->thread_waiter() != nullptr);  // allocated outside any handler
  g_ch = ch.get();
  g_sock = *s;
  set_signal_runner(run_deferred);
  struct sigaction sa {};
  sa.sa_handler = handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  CHILD_CHECK(::sigaction(SIGALRM, &sa, nullptr) == 0);
  itimerval it{{0, 1000}, {0, 1000}};
  CHILD_CHECK(::setitimer(ITIMER_REAL, &it, nullptr) == 0);
  std::uint64_t sent = 0, got = 0;
  char buf[4096];
  std::memset(buf, 'm', sizeof buf);
  for (std::uint64_t r = 0; g_handler_runs < runs; ++r) {
    iovec out{buf, 1 + static_cast<std::size_t>(r % sizeof buf)};
    if (auto n = ch->send(*s, std::span(&out, 1)); n) sent += *n;
    char in[4096];
    iovec iv{in, sizeof in};
    if (auto n = ch->recv(*s, std::span(&iv, 1)); n) got += *n;
  }
  itimerval off{};
  CHILD_CHECK(::setitimer(ITIMER_REAL, &off, nullptr) == 0);
  signal(SIGALRM, SIG_IGN);
  CHILD_CHECK(g_handler_runs > 0);
  // The echo of everything sent, by the main thread and by the handler, comes back.
  const std::uint64_t want = sent + g_handler_sent;
  got += g_handler_got;
  while (got < want) {
    char in[4096];
    iovec iv{in, sizeof in};
    auto n = ch->recv(*s, std::span(&iv, 1));
    if (n && *n > 0) {
      got += *n;
    } else {
      CHILD_CHECK(!n && n.error() == Errc::again && wait_ready(*ch, *s, kReadable, 5000));
    }
  }
  CHILD_CHECK(got == want);
  std::fprintf(stderr, "handler runs %llu (deferred %llu), EINTR %llu\n",
               static_cast<unsigned long long>(g_handler_runs.load()),
               static_cast<unsigned long long>(g_handler_deferrals.load()),
               static_cast<unsigned long long>(g_handler_eintr.load()));
  _exit(0);
}

}  // namespace

// Linux runs a handler between system calls, so a handler's send()/recv() on the socket its own
// thread was using never waits for that thread. The shim defers a signal that arrives inside the
// channel's critical sections to their end (here done by the handler as the shim's wrapper does).
TEST(ChannelRace, SignalHandlerSendingAndReceivingOnTheSameSocketIsDeferredNotDeadlocked) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) signal_child(b.path, deferring_handler, 1000);
  EXPECT_EQ(b.run_child(pid, 60), 0);  // -1: the child hung (killed by the watchdog)
}

// A handler the shim could not wrap (installed behind its back) still never deadlocks: the lock its
// thread holds is recognised (owned by the thread, not the process) and the inner call fails with
// EINTR.
TEST(ChannelRace, UnwrappedSignalHandlerReenteringTheSocketGetsEintrNotADeadlock) {
  Bench b;
  PeerEcho echo(b.peer, 7);
  b.on_step = [&] { echo.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) signal_child(b.path, direct_handler, 1000);
  EXPECT_EQ(b.run_child(pid, 60), 0);
}

// ------------------------------------------------------- fault: dead-but-unreaped or stopped holders

// A worker that died holding a socket's lock and is not reaped yet (its parent, the master, is the
// one that must reap it and is about to use the socket): kill(pid, 0) still succeeds on a zombie,
// but the engine has seen it exit (pidfd) and marked its table entry; the lock is taken over.
TEST(ChannelRace, LockOfAZombieHolderIsTakenOverByTheParentThatMustReapIt) {
  Bench b;
  PeerCollect sink(b.peer, 23);
  b.on_step = [&] { sink.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 23);
    CHILD_CHECK(s.has_value());
    std::byte* base = region_base();
    CHILD_CHECK(base != nullptr);
    const std::uint32_t t = ch->fork_reserve();
    const pid_t worker = fork();
    if (worker == 0) {
      ch->after_fork_child(t);
      // Killed inside send(): the send lock stays taken by this thread.
      word(slot_of(base, *s).send_lock.owner).store(static_cast<std::uint32_t>(::gettid()));
      _exit(0);
    }
    ch->fork_parent(t, worker);
    // Not reaped: the engine has seen the exit once the entry is free again.
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (word(proc_entry(base, t).state).load() != static_cast<std::uint32_t>(c::ProcState::free)) {
      CHILD_CHECK(std::chrono::steady_clock::now() < end);
      std::this_thread::yield();
    }
    CHILD_CHECK(kill(worker, 0) == 0);  // a zombie still answers
    const std::vector<std::byte> data(1000, kNew);
    CHILD_CHECK(send_all(*ch, *s, data));
    CHILD_CHECK(waitpid(worker, nullptr, 0) == worker);
    CHILD_CHECK(ch->close(*s) == Errc::ok);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 30), 0);
}

// A holder stopped by SIGSTOP keeps its lock until SIGCONT (nothing else is safe), but the threads
// waiting for it sleep: the family does not spin a CPU meanwhile.
TEST(ChannelRace, WaitersOfAStoppedLockHolderSleep) {
  Bench b;
  PeerCollect sink(b.peer, 23);
  b.on_step = [&] { sink.step(); };
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    auto s = connect_to_peer(*ch, 23);
    CHILD_CHECK(s.has_value());
    std::byte* base = region_base();
    CHILD_CHECK(base != nullptr);
    const pid_t worker = fork();
    if (worker == 0) {
      auto& owner = slot_of(base, *s).send_lock.owner;
      word(owner).store(static_cast<std::uint32_t>(::gettid()));  // inside send() ...
      raise(SIGSTOP);                                              // ... when stopped
      word(owner).store(0);
      _exit(0);
    }
    int st = 0;
    CHILD_CHECK(waitpid(worker, &st, WUNTRACED) == worker && WIFSTOPPED(st));
    std::atomic<bool> done{false};
    std::thread sender([&] {
      const std::vector<std::byte> data(1000, kNew);
      CHILD_CHECK(send_all(*ch, *s, data));
      done = true;
    });
    timespec c0{}, c1{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the measurement window
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    const double cpu_ms = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
    std::fprintf(stderr, "CPU while waiting for the stopped holder: %.1f ms in 400 ms\n", cpu_ms);
    CHILD_CHECK(!done);
    CHILD_CHECK(cpu_ms < 80);
    CHILD_CHECK(kill(worker, SIGCONT) == 0);
    sender.join();
    CHILD_CHECK(done);
    CHILD_CHECK(waitpid(worker, &st, 0) == worker);
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 30), 0);
}

// -------------------------------------------------------------- fault: a death inside kick()

// A process killed between kick()'s two stores (kick_req moved, no kick ring entry, the kick lock
// still its own) must not silence the socket: later sends go out.
TEST(ChannelRace, KickHalfDoneByADyingProcessDoesNotSilenceTheSocket) {
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
    std::byte* base = region_base();
    CHILD_CHECK(base != nullptr);
    char buf[100] = {};
    auto round_trip = [&] {
      iovec out{buf, sizeof buf};
      if (!ch->send(*s, std::span(&out, 1)).ok()) return false;
      std::size_t got = 0;
      while (got < sizeof buf) {
        char in[100];
        iovec iv{in, sizeof in};
        auto n = ch->recv(*s, std::span(&iv, 1));
        if (n && *n > 0) {
          got += *n;
        } else if (n || n.error() != Errc::again || !wait_ready(*ch, *s, kReadable, 3000)) {
          return false;
        }
      }
      return true;
    };
    CHILD_CHECK(round_trip());
    // The words as a process killed right after kick()'s first store leaves them.
    c::SocketSlot& sl = slot_of(base, *s);
    const pid_t dead = reaped_pid();
    word(reinterpret_cast<c::RegionHeader*>(base)->kick_lock.owner).store(static_cast<std::uint32_t>(dead));
    word(sl.kick_req).store(word(sl.kick_done).load() + 1);
    for (int k = 0; k < 3; ++k) CHILD_CHECK(round_trip());
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 30), 0);
}

// ----------------------------------------------------------------- fault: reply-slot leak

namespace {
c::ReplySlot& reply_slot(std::byte* base, std::uint32_t t) {
  return reinterpret_cast<c::ReplySlot*>(base + header(base).replies_off)[t];
}
}  // namespace

// 256 processes killed inside control calls leave every reply slot claimed (some answered, some
// still waiting): the next control call reclaims the dead claimants' slots instead of spinning.
TEST(ChannelRace, ReplySlotsOfDeadCallersAreReclaimed) {
  Bench b;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b.path);
    CHILD_CHECK(ch != nullptr);
    std::byte* base = region_base();
    CHILD_CHECK(base != nullptr);
    const auto dead = static_cast<std::uint32_t>(reaped_pid());
    for (std::uint32_t t = 0; t < c::kReplySlots; ++t) {
      c::ReplySlot& rs = reply_slot(base, t);
      word(rs.owner).store(dead);
      word(rs.state).store(t % 2 == 0 ? 1 : 2);
    }
    for (int k = 0; k < 300; ++k) {
      auto s = ch->socket();
      CHILD_CHECK(s.ok());
      CHILD_CHECK(ch->close(*s) == Errc::ok);
    }
    _exit(0);
  }
  EXPECT_EQ(b.run_child(pid, 30), 0);
}

// Every reply slot taken by live callers and the engine gone: a control call fails, it does not
// wait for a free slot forever.
TEST(ChannelRace, ControlCallWithoutAFreeReplySlotFailsWhenTheEngineDies) {
  auto b = std::make_unique<Bench>();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto ch = child_attach(b->path);
    CHILD_CHECK(ch != nullptr);
    std::byte* base = region_base();
    CHILD_CHECK(base != nullptr);
    for (std::uint32_t t = 0; t < c::kReplySlots; ++t) {
      c::ReplySlot& rs = reply_slot(base, t);
      word(rs.owner).store(static_cast<std::uint32_t>(::gettid()));  // a live claimant
      word(rs.state).store(1);
    }
    [[maybe_unused]] ssize_t w = ::write(ready[1], "x", 1);
    const auto t0 = std::chrono::steady_clock::now();
    CHILD_CHECK(!ch->socket().ok());
    CHILD_CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    _exit(0);
  }
  fcntl(ready[0], F_SETFL, O_NONBLOCK);
  char x;
  ASSERT_TRUE(b->run_until([&] { return ::read(ready[0], &x, 1) == 1; }));
  b->svc.reset();  // the engine goes away
  int st = 0;
  for (int i = 0; i < 200 && waitpid(pid, &st, WNOHANG) == 0; ++i) usleep(50'000);
  if (waitpid(pid, &st, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  ::close(ready[0]);
  ::close(ready[1]);
}
