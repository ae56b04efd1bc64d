// Blocking calls and signal handlers (signal(7), "Interruption of system calls"): without
// SA_RESTART a handled signal ends a blocked socket call with EINTR; with SA_RESTART recv and accept
// carry on, while poll, select and epoll_wait end with EINTR either way. What counts is the handler
// of the signal that arrived, not the other handlers installed; a call with SO_RCVTIMEO set ends
// with EINTR even with SA_RESTART (net/core/sock.c sock_intr_errno).
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

std::atomic<int> g_usr1{0};
void on_usr1(int) { g_usr1.fetch_add(1); }

/// Installs a SIGUSR1 handler (with or without SA_RESTART) for the test's lifetime, and sends
/// SIGUSR1 to the calling thread `after_ms` later from a helper thread.
class SignalSoon {
 public:
  SignalSoon(bool restart, int after_ms) {
    struct sigaction sa_ {};
    sa_.sa_handler = on_usr1;
    sigemptyset(&sa_.sa_mask);
    sa_.sa_flags = restart ? SA_RESTART : 0;
    ::sigaction(SIGUSR1, &sa_, &old_);
    before_ = g_usr1.load();
    pthread_t target = ::pthread_self();
    sender_ = std::thread([target, after_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(after_ms));
      ::pthread_kill(target, SIGUSR1);
    });
  }
  ~SignalSoon() {
    sender_.join();
    ::sigaction(SIGUSR1, &old_, nullptr);
  }
  [[nodiscard]] bool delivered() const { return g_usr1.load() > before_; }

 private:
  struct sigaction old_ {};
  int before_ = 0;
  std::thread sender_;
};

std::atomic<int> g_usr2{0};
void on_usr2(int) { g_usr2.fetch_add(1); }
void on_usr1_info(int, siginfo_t* info, void*) {
  if (info != nullptr && info->si_signo == SIGUSR1) g_usr1.fetch_add(1);
}

/// Installs `handler` for `sig` with `flags` for the object's lifetime (restoring the old one).
class Handler {
 public:
  Handler(int sig, void (*handler)(int), int flags) : sig_(sig) {
    struct sigaction sa_ {};
    sa_.sa_handler = handler;
    sigemptyset(&sa_.sa_mask);
    sa_.sa_flags = flags;
    EXPECT_EQ(::sigaction(sig, &sa_, &old_), 0);
  }
  ~Handler() { ::sigaction(sig_, &old_, nullptr); }
  Handler(const Handler&) = delete;
  Handler& operator=(const Handler&) = delete;

 private:
  int sig_;
  struct sigaction old_ {};
};

/// Sends `sig` to the calling thread `after_ms` later from a helper thread.
class SendSoon {
 public:
  SendSoon(int sig, int after_ms) {
    pthread_t target = ::pthread_self();
    sender_ = std::thread([target, sig, after_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(after_ms));
      ::pthread_kill(target, sig);
    });
  }
  ~SendSoon() { sender_.join(); }

 private:
  std::thread sender_;
};

TEST(Signals, BlockedRecvRestartsForAnSaRestartSignalWhileAnotherHandlerLacksIt) {
  Peer p, later;
  Conn c = connect_to_peer(p);
  Handler usr1(SIGUSR1, on_usr1, SA_RESTART);
  Handler usr2(SIGUSR2, on_usr2, 0);  // installed, never sent: must not matter
  later.post("sendchunks " + std::to_string(c.cid) + " 2 1 400");  // 1 byte now, 1 byte after 400 ms
  char b[2];
  ASSERT_EQ(::recv(c.fd, b, 1, 0), 1);
  const int before = g_usr1.load();
  {
    SendSoon s(SIGUSR1, 150);
    EXPECT_EQ(::recv(c.fd, b, 1, 0), 1) << "SIGUSR1 (SA_RESTART) ended recv: " << errname(errno);
  }
  EXPECT_GT(g_usr1.load(), before);
  later.reply();
}

TEST(Signals, BlockedRecvIsEINTRForTheSignalWithoutSaRestartWhileAnotherHasIt) {
  Peer p;
  Conn c = connect_to_peer(p);
  Handler usr1(SIGUSR1, on_usr1, SA_RESTART);
  Handler usr2(SIGUSR2, on_usr2, 0);
  const int before = g_usr2.load();
  char b;
  {
    SendSoon s(SIGUSR2, 150);
    errno = 0;
    EXPECT_EQ(::recv(c.fd, &b, 1, 0), -1);
    EXPECT_EQ(errno, EINTR);
  }
  EXPECT_GT(g_usr2.load(), before);
}

TEST(Signals, BlockedRecvRestartsForASignalHandlerInstalledWithSignal) {
  // glibc's signal() has BSD semantics: SA_RESTART.
  Peer p, later;
  Conn c = connect_to_peer(p);
  Handler usr2(SIGUSR2, on_usr2, 0);
  sighandler_t old = ::signal(SIGUSR1, on_usr1);
  ASSERT_NE(old, SIG_ERR);
  later.post("sendchunks " + std::to_string(c.cid) + " 2 1 400");
  char b[2];
  ASSERT_EQ(::recv(c.fd, b, 1, 0), 1);
  const int before = g_usr1.load();
  {
    SendSoon s(SIGUSR1, 150);
    EXPECT_EQ(::recv(c.fd, b, 1, 0), 1) << "SIGUSR1 (signal()) ended recv: " << errname(errno);
  }
  EXPECT_GT(g_usr1.load(), before);
  EXPECT_EQ(::signal(SIGUSR1, old), on_usr1) << "signal() reports the handler it replaced";
  later.reply();
}

TEST(Signals, SiginfoHandlerWithSaRestartRestartsRecvAndGetsItsSiginfo) {
  Peer p, later;
  Conn c = connect_to_peer(p);
  Handler usr2(SIGUSR2, on_usr2, 0);
  struct sigaction sa_ {}, old {};
  sa_.sa_sigaction = on_usr1_info;
  sigemptyset(&sa_.sa_mask);
  sa_.sa_flags = SA_SIGINFO | SA_RESTART;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa_, &old), 0);
  later.post("sendchunks " + std::to_string(c.cid) + " 2 1 400");
  char b[2];
  ASSERT_EQ(::recv(c.fd, b, 1, 0), 1);
  const int before = g_usr1.load();
  {
    SendSoon s(SIGUSR1, 150);
    EXPECT_EQ(::recv(c.fd, b, 1, 0), 1) << "SIGUSR1 (SA_SIGINFO|SA_RESTART) ended recv: " << errname(errno);
  }
  EXPECT_GT(g_usr1.load(), before) << "the handler did not see si_signo";
  // sigaction() reports back the handler and flags as installed.
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGUSR1, &old, &now), 0);
  EXPECT_EQ(now.sa_sigaction, on_usr1_info);
  EXPECT_TRUE(now.sa_flags & SA_SIGINFO);
  EXPECT_TRUE(now.sa_flags & SA_RESTART);
  later.reply();
}

TEST(Signals, SigactionReportsAPlainHandlerAndItsFlagsUnchanged) {
  Handler usr1(SIGUSR1, on_usr1, SA_RESTART | SA_RESETHAND);
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGUSR1, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, on_usr1);
  EXPECT_FALSE(now.sa_flags & SA_SIGINFO);
  EXPECT_TRUE(now.sa_flags & SA_RESTART);
  EXPECT_TRUE(now.sa_flags & SA_RESETHAND);
  // SA_RESETHAND: once delivered, the disposition is SIG_DFL again.
  const int before = g_usr1.load();
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_GT(g_usr1.load(), before);
  ASSERT_EQ(::sigaction(SIGUSR1, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

TEST(Signals, BlockedRecvWithSoRcvtimeoIsEINTREvenWithSaRestart) {
  Peer p;
  Conn c = connect_to_peer(p);
  timeval tv{5, 0};
  ASSERT_EQ(::setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  Handler usr1(SIGUSR1, on_usr1, SA_RESTART);
  char b;
  const auto t0 = std::chrono::steady_clock::now();
  {
    SendSoon s(SIGUSR1, 150);
    errno = 0;
    EXPECT_EQ(::recv(c.fd, &b, 1, 0), -1);
    EXPECT_EQ(errno, EINTR);
  }
  EXPECT_LT(ms_since(t0), 4000) << "recv ran to its timeout";
}

TEST(Signals, BlockedRecvWithoutSaRestartIsEINTR) {
  Peer p;
  Conn c = connect_to_peer(p);
  SignalSoon sig(false, 150);
  char b;
  errno = 0;
  EXPECT_EQ(::recv(c.fd, &b, 1, 0), -1);
  EXPECT_EQ(errno, EINTR);
  EXPECT_TRUE(sig.delivered());
}

TEST(Signals, BlockedRecvWithSaRestartCarriesOn) {
  Peer p, later;
  Conn c = connect_to_peer(p);
  later.post("sendchunks " + std::to_string(c.cid) + " 2 1 400");  // 1 byte now, 1 byte after 400 ms
  char b[2];
  ASSERT_EQ(::recv(c.fd, b, 1, 0), 1);
  SignalSoon sig(true, 150);
  EXPECT_EQ(::recv(c.fd, b, 1, 0), 1) << "the signal ended a restartable recv: " << errname(errno);
  EXPECT_TRUE(sig.delivered());
  later.reply();
}

TEST(Signals, BlockedAcceptWithoutSaRestartIsEINTR) {
  auto [l, port] = listen_local();
  SignalSoon sig(false, 150);
  errno = 0;
  EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
  EXPECT_EQ(errno, EINTR);
}

TEST(Signals, PollSelectAndEpollWaitAreEINTREvenWithSaRestart) {
  Peer p;
  Conn c = connect_to_peer(p);
  {
    SignalSoon sig(true, 100);
    pollfd pf{c.fd, POLLIN, 0};
    errno = 0;
    EXPECT_EQ(::poll(&pf, 1, 5000), -1);
    EXPECT_EQ(errno, EINTR);
  }
  {
    SignalSoon sig(true, 100);
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(c.fd.get(), &rd);
    timeval tv{5, 0};
    errno = 0;
    EXPECT_EQ(::select(c.fd.get() + 1, &rd, nullptr, nullptr, &tv), -1);
    EXPECT_EQ(errno, EINTR);
  }
  {
    Fd ep(::epoll_create1(0));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev), 0);
    SignalSoon sig(true, 100);
    errno = 0;
    EXPECT_EQ(::epoll_wait(ep, &ev, 1, 5000), -1);
    EXPECT_EQ(errno, EINTR);
  }
}

TEST(Signals, BlockedSigmaskOfPpollKeepsTheSignalOut) {
  // ppoll with SIGUSR1 blocked for its duration: the signal waits, and ppoll runs to its timeout.
  Peer p;
  Conn c = connect_to_peer(p);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigset_t old;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &old);
  sigset_t during = old;
  sigaddset(&during, SIGUSR1);
  // Block it around the call, so it stays pending until ppoll's own mask is gone.
  ::pthread_sigmask(SIG_BLOCK, &block, nullptr);
  {
    SignalSoon sig(false, 50);
    pollfd pf{c.fd, POLLIN, 0};
    timespec ts{0, 300 * 1000 * 1000};
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(::ppoll(&pf, 1, &ts, &during), 0);
    EXPECT_GE(ms_since(t0), 280);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_FALSE(sig.delivered()) << "delivered while blocked";
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);  // now it is delivered
    EXPECT_TRUE(sig.delivered());
  }
}

}  // namespace
}  // namespace pno::semtest
