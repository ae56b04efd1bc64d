// Signal handlers and restarting blocking socket calls.
//
// Linux restarts an interrupted recv/send/accept/connect (no SO_RCVTIMEO/SO_SNDTIMEO) when the
// handler of the signal that interrupted it has SA_RESTART, and fails it with EINTR otherwise
// (signal(7), net/core/sock.c sock_intr_errno). The shim sleeps in ppoll(), which returns EINTR
// for any handled signal and does not say which one arrived. So the shim interposes sigaction()
// and the signal() family: every handler the application installs is registered with the kernel
// as a trampoline that notes, in a thread-local flag, whether the signal's handler has
// SA_RESTART, then calls the application's handler. sigaction() reports the application's own
// handler and flags back in oldact, so the trampoline is invisible to the application.
//
// A handler installed behind the shim's back (raw rt_sigaction, sigset(), before the shim loaded)
// runs without the trampoline; then no flag is set and the shim falls back to the conservative
// rule: restart only if every installed handler has SA_RESTART.
#include <signal.h>

#include <atomic>
#include <cerrno>

#include "shim/internal.hh"
#include "shim/signals.hh"

namespace pno::shim {
namespace {

using InfoHandler = void (*)(int, siginfo_t*, void*);
using PlainHandler = void (*)(int);

/// The application's handler and flags per signal. A slot is written before the trampoline is
/// installed for it, so the trampoline never sees an empty slot; it is never cleared (a stale slot
/// is unused once the kernel holds SIG_DFL/SIG_IGN or another handler).
struct AppHandler {
  std::atomic<void*> fn{nullptr};
  std::atomic<int> flags{0};
};
AppHandler g_app[NSIG];

/// Signals for which siginterrupt(sig, 1) asked that later signal() calls omit SA_RESTART.
std::atomic<std::uint64_t> g_interrupt_mask{0};

// Written by the trampoline on the thread that ran the handler; read by that thread's wait after
// ppoll() returned EINTR. initial-exec TLS: no allocation, safe in a signal handler.
thread_local volatile sig_atomic_t t_ran_restart __attribute__((tls_model("initial-exec"))) = 0;
thread_local volatile sig_atomic_t t_ran_no_restart __attribute__((tls_model("initial-exec"))) = 0;

void trampoline(int sig, siginfo_t* info, void* uc) {
  if (sig <= 0 || sig >= NSIG) return;
  AppHandler& a = g_app[sig];
  void* fn = a.fn.load(std::memory_order_acquire);
  const int flags = a.flags.load(std::memory_order_relaxed);
  // Only sig_atomic_t stores here: errno is untouched, nothing else is shared.
  if ((flags & SA_RESTART) != 0) {
    t_ran_restart = 1;
  } else {
    t_ran_no_restart = 1;
  }
  if (fn == nullptr) return;
  if ((flags & SA_SIGINFO) != 0) {
    reinterpret_cast<InfoHandler>(fn)(sig, info, uc);
  } else {
    reinterpret_cast<PlainHandler>(fn)(sig);
  }
}

void* handler_of(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) != 0 ? reinterpret_cast<void*>(sa.sa_sigaction)
                                         : reinterpret_cast<void*>(sa.sa_handler);
}

bool is_function(void* h) {
  return h != reinterpret_cast<void*>(SIG_DFL) && h != reinterpret_cast<void*>(SIG_IGN) &&
         h != reinterpret_cast<void*>(SIG_ERR);
}

bool is_trampoline(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) != 0 && sa.sa_sigaction == trampoline;
}

/// Replaces the trampoline in what the kernel reported by the application's handler `fn`/`flags`.
void to_app_view(struct sigaction& sa, void* fn, int flags) {
  if (!is_trampoline(sa) || fn == nullptr) return;
  sa.sa_flags = (sa.sa_flags & ~SA_SIGINFO) | (flags & SA_SIGINFO);
  if ((flags & SA_SIGINFO) != 0) {
    sa.sa_sigaction = reinterpret_cast<InfoHandler>(fn);
  } else {
    sa.sa_handler = reinterpret_cast<PlainHandler>(fn);
  }
}

int do_sigaction(int sig, const struct sigaction* act, struct sigaction* oldact) {
  if (sig <= 0 || sig >= NSIG) return PNO_REAL(sigaction)(sig, act, oldact);
  AppHandler& a = g_app[sig];
  void* const prev_fn = a.fn.load(std::memory_order_acquire);
  const int prev_flags = a.flags.load(std::memory_order_relaxed);
  struct sigaction kold {};
  int r;
  void* const fn = act != nullptr ? handler_of(*act) : nullptr;
  if (act != nullptr && is_function(fn) && fn != reinterpret_cast<void*>(trampoline)) {
    a.flags.store(act->sa_flags, std::memory_order_relaxed);
    a.fn.store(fn, std::memory_order_release);
    struct sigaction k = *act;
    k.sa_flags |= SA_SIGINFO;
    k.sa_sigaction = trampoline;
    r = PNO_REAL(sigaction)(sig, &k, &kold);
    if (r != 0) {
      const int e = errno;
      a.flags.store(prev_flags, std::memory_order_relaxed);
      a.fn.store(prev_fn, std::memory_order_release);
      errno = e;
      return r;
    }
  } else if (act != nullptr && fn == reinterpret_cast<void*>(trampoline)) {
    // The trampoline handed back through a path the shim does not see (sigset() reports what the
    // kernel holds): reinstall it for the application's current handler.
    struct sigaction k = *act;
    k.sa_flags |= SA_SIGINFO;
    r = PNO_REAL(sigaction)(sig, &k, &kold);
    if (r != 0) return r;
  } else {
    r = PNO_REAL(sigaction)(sig, act, &kold);
    if (r != 0) return r;
  }
  if (oldact != nullptr) {
    to_app_view(kold, prev_fn, prev_flags);
    *oldact = kold;
  }
  return 0;
}

/// The signal()-family calls: one handler with `flags`, the signal blocked during its own handler
/// unless SA_NODEFER is among them; the previous handler, or SIG_ERR with errno.
sighandler_t install_simple(int sig, sighandler_t h, int flags) {
  if (h == SIG_ERR || sig <= 0 || sig >= NSIG) {
    errno = EINVAL;
    return SIG_ERR;
  }
  struct sigaction sa {}, old {};
  sa.sa_handler = h;
  sigemptyset(&sa.sa_mask);
  if ((flags & SA_NODEFER) == 0) sigaddset(&sa.sa_mask, sig);
  sa.sa_flags = flags;
  if (do_sigaction(sig, &sa, &old) < 0) return SIG_ERR;
  return old.sa_handler;
}

/// signal()/bsd_signal(): BSD semantics as glibc's __bsd_signal (SA_RESTART unless siginterrupt
/// asked otherwise, the signal blocked during its handler).
sighandler_t do_bsd_signal(int sig, sighandler_t h) {
  const bool interrupt =
      sig > 0 && sig < NSIG && (g_interrupt_mask.load(std::memory_order_relaxed) >> (sig - 1) & 1) != 0;
  return install_simple(sig, h, interrupt ? 0 : SA_RESTART);
}

}  // namespace

void note_signals_clear() {
  t_ran_restart = 0;
  t_ran_no_restart = 0;
}

bool restart_after_signal() {
  if (t_ran_no_restart != 0) return false;
  if (t_ran_restart != 0) return true;
  // No trampoline ran: the handler was installed without the shim seeing it. Restart only if no
  // installed handler could have been one without SA_RESTART.
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa {};
    if (PNO_REAL(sigaction)(sig, nullptr, &sa) != 0) continue;
    if (is_function(handler_of(sa)) && (sa.sa_flags & SA_RESTART) == 0) return false;
  }
  return true;
}

}  // namespace pno::shim

using namespace pno::shim;

#define PNO_EXPORT extern "C" __attribute__((visibility("default")))

PNO_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* oldact) noexcept {
  return do_sigaction(sig, act, oldact);
}

PNO_EXPORT int __sigaction(int sig, const struct sigaction* act, struct sigaction* oldact) noexcept {
  return do_sigaction(sig, act, oldact);
}

PNO_EXPORT sighandler_t signal(int sig, sighandler_t h) noexcept { return do_bsd_signal(sig, h); }

PNO_EXPORT sighandler_t bsd_signal(int sig, sighandler_t h) noexcept { return do_bsd_signal(sig, h); }

PNO_EXPORT sighandler_t ssignal(int sig, sighandler_t h) noexcept { return do_bsd_signal(sig, h); }

namespace {
/// sysv_signal(): System V semantics as glibc's (the handler is reset on delivery, the signal is
/// not blocked during it, no SA_RESTART).
sighandler_t do_sysv_signal(int sig, sighandler_t h) {
  return install_simple(sig, h, SA_RESETHAND | SA_NODEFER);
}
}  // namespace

PNO_EXPORT sighandler_t sysv_signal(int sig, sighandler_t h) noexcept { return do_sysv_signal(sig, h); }

PNO_EXPORT sighandler_t __sysv_signal(int sig, sighandler_t h) noexcept { return do_sysv_signal(sig, h); }

/// siginterrupt(): glibc changes the flags with its internal sigaction, which the shim would not
/// see; done here through the interposed one so the trampoline's flags follow.
PNO_EXPORT int siginterrupt(int sig, int interrupt) noexcept {
  if (sig <= 0 || sig >= NSIG) {
    errno = EINVAL;
    return -1;
  }
  struct sigaction sa {};
  if (do_sigaction(sig, nullptr, &sa) < 0) return -1;
  const std::uint64_t bit = std::uint64_t{1} << (sig - 1);
  if (interrupt != 0) {
    g_interrupt_mask.fetch_or(bit, std::memory_order_relaxed);
    sa.sa_flags &= ~SA_RESTART;
  } else {
    g_interrupt_mask.fetch_and(~bit, std::memory_order_relaxed);
    sa.sa_flags |= SA_RESTART;
  }
  return do_sigaction(sig, &sa, nullptr);
}
