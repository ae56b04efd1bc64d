// One service pass over a family: completions backlog, commands, kicks, dirty sockets, wake-ups.
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <optional>

#include "engine/host/impl.hh"

namespace pno::engine {

using namespace host;

namespace {

/// The signal that interrupts a wake-up write a host made blocking. Its handler does nothing and
/// is installed without SA_RESTART, so the blocked write returns EINTR (eventfd_write() waits
/// interruptibly). The engine process reserves it.
int guard_signal() { return SIGRTMIN + 5; }
void on_guard_signal(int) {}

/// How long a wake-up write may block at most before the guard interrupts it.
constexpr long kGuardPeriodNs = 1'000'000;

/// A waiter eventfd shares its open file description with the host, which can clear O_NONBLOCK
/// and fill the counter to its maximum: the engine's write(1) would then sleep until the host
/// reads, i.e. for ever. Nothing per call makes an eventfd write non-blocking (pwritev2's
/// RWF_NOWAIT is EOPNOTSUPP there, an eventfd cannot be reopened through /proc), and checking
/// O_NONBLOCK first leaves a window the host can race. So the writes of one wake() pass run under
/// this thread's periodic timer: a write that blocks is interrupted within kGuardPeriodNs, every
/// period, whatever the interleaving. Armed only around writes (two timer_settime per pass).
class WakeGuard {
 public:
  WakeGuard() {
    static std::once_flag once;
    std::call_once(once, [] {
      struct sigaction sa {};
      sa.sa_handler = on_guard_signal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = 0;  // no SA_RESTART: the interrupted write fails with EINTR
      sigaction(guard_signal(), &sa, nullptr);
    });
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, guard_signal());
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = guard_signal();
    sev._sigev_un._tid = static_cast<int>(::gettid());  // this thread, not the process
    ok_ = timer_create(CLOCK_MONOTONIC, &sev, &timer_) == 0;
  }
  ~WakeGuard() {
    if (ok_) timer_delete(timer_);
  }
  WakeGuard(const WakeGuard&) = delete;
  WakeGuard& operator=(const WakeGuard&) = delete;

  void arm() { set(kGuardPeriodNs); }
  void disarm() { set(0); }

 private:
  void set(long ns) {
    if (!ok_) return;
    itimerspec its{};
    its.it_value.tv_nsec = ns;
    its.it_interval.tv_nsec = ns;
    timer_settime(timer_, 0, &its, nullptr);
  }
  timer_t timer_{};
  bool ok_ = false;
};

WakeGuard& wake_guard() {
  thread_local WakeGuard g;
  return g;
}

}  // namespace

host::WakeGuardScope::WakeGuardScope() { wake_guard().arm(); }
host::WakeGuardScope::~WakeGuardScope() { wake_guard().disarm(); }

bool host::wake_eventfd(int fd) {
  // A host that cleared O_NONBLOCK is hostile: no write at all. The guard covers the window
  // between this check and the write.
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || (fl & O_NONBLOCK) == 0) return false;
  const std::uint64_t one = 1;
  const ssize_t r = ::write(fd, &one, sizeof(one));
  // EAGAIN: the counter is at its maximum, so the waiter is readable (woken) already.
  return r == static_cast<ssize_t>(sizeof(one)) || (r < 0 && errno == EAGAIN);
}

void HostService::Impl::flush_backlog(Family& f) {
  while (!f.backlog.empty()) {
    const std::size_t n = f.cpl.push(f.backlog);
    if (n == 0) return;
    f.backlog.erase(f.backlog.begin(), f.backlog.begin() + static_cast<std::ptrdiff_t>(n));
    f.progress = true;
  }
}

void HostService::Impl::serve(Family& f) {
  if (!f.active) return;
  if (f.dying) {
    // No host any more: only the closing connections move (send ring -> TCP, then FIN).
    pump_dirty(f);
    return;
  }
  if (f.dead) return;
  flush_backlog(f);
  if (!serve_commands(f)) return;
  serve_deaths(f);
  if (!serve_kicks(f)) return;
  f.dma->fence();  // kick_done stores before the host lines pump() reads
  pump_dirty(f);
  retry_accepts(f);
  if (f.progress) wake(f);
}

/// A listener stopped pre-accepting for want of a slot and one is free now: pump every listener
/// again (next pass) to move what waits in TCP's accept queue into its slot's queue.
void HostService::Impl::retry_accepts(Family& f) {
  if (!f.accept_starved || f.free_slots.empty()) return;
  f.accept_starved = false;
  for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
    if (f.socks[i].state == c::SlotState::listening && !f.socks[i].closing) mark_dirty(f, i);
  }
}

/// Commands, as many as their completions have room for and at most kCommandBudget (a host that
/// refills its ring as fast as the engine drains it would otherwise keep the pass to itself).
/// False when the family turned out corrupt.
bool HostService::Impl::serve_commands(Family& f) {
  c::Command batch[32];
  std::uint32_t budget = kCommandBudget;
  while (f.backlog.empty() && budget > 0) {
    const std::uint32_t room = std::min(f.cpl.room(), budget);
    if (room == 0) break;
    std::size_t got = 0;
    if (!f.cmd.pop(std::span(batch).first(std::min<std::size_t>(room, 32)), got)) {
      corrupt(f, "command ring index");
      return false;
    }
    if (got == 0) break;
    busy = true;
    budget -= static_cast<std::uint32_t>(got);
    c::Completion out[32];
    std::size_t nout = 0;
    for (std::size_t k = 0; k < got; ++k) {
      const c::Completion cp = execute(f, batch[k]);
      if (cp.tag != kDeferred && cp.tag != c::kNoReply) out[nout++] = cp;
    }
    const std::size_t pushed = f.cpl.push(std::span(out).first(nout));
    for (std::size_t k = pushed; k < nout; ++k) f.backlog.push_back(out[k]);
    f.progress = true;
  }
  return true;
}

/// Kicks: sockets with host-side work, at most kKickBudget per pass (an honest host has one kick
/// outstanding per socket; the rest of a flood waits). False when the family turned out corrupt.
bool HostService::Impl::serve_kicks(Family& f) {
  std::uint32_t kicks[64];
  std::uint32_t budget = kKickBudget;
  while (budget > 0) {
    const std::size_t want = std::min<std::size_t>(budget, std::size(kicks));
    std::size_t got = 0;
    if (!f.kicks.pop(std::span(kicks).first(want), got)) {
      corrupt(f, "kick ring index");
      return false;
    }
    if (got == 0) break;
    busy = true;
    budget -= static_cast<std::uint32_t>(got);
    stats.kicks += got;
    for (std::size_t k = 0; k < got; ++k) {
      const std::uint32_t i = kicks[k];
      if (i >= f.socks.size()) {
        ++stats.bad_index;
        continue;
      }
      const std::uint64_t so = c::slot_off(f.geo, i);
      std::uint32_t req = 0;
      if (f.dma->read_u32(so + offsetof(c::SocketSlot, kick_req), req)) {
        f.dma->write_u32(so + offsetof(c::SocketSlot, kick_done), req);
      }
      if (f.socks[i].state != c::SlotState::free) mark_dirty(f, i);
    }
    if (got < want) break;
  }
  return true;
}

/// Sockets with work.
void HostService::Impl::pump_dirty(Family& f) {
  work.swap(f.dirty);
  f.dirty.clear();
  for (std::uint32_t i : work) pump(f, i);
  work.clear();
}

void HostService::Impl::corrupt(Family& f, const char* what) {
  ++stats.corrupt;
  log("pid %d's family wrote an impossible %s: detaching it", static_cast<int>(f.pid), what);
  f.dead = true;
}

/// Writes the eventfd of every armed waiter not yet woken for its current arming.
void HostService::Impl::wake(Family& f) {
  f.progress = false;
  f.dma->fence();  // our publications before the arm words we read (the host arms, then checks)
  std::uint32_t armed_count = 0;
  if (!f.dma->read_u32(offsetof(c::RegionHeader, armed_waiters), armed_count) || armed_count == 0) return;
  std::optional<WakeGuardScope> guard;  // armed at the first write of the pass
  bool hostile = false;
  for (std::uint32_t idx : f.registered) {
    std::uint32_t armed = 0;
    if (!f.dma->read_u32(f.geo.waiters_off + std::uint64_t{idx} * sizeof(c::WaiterEntry) +
                             offsetof(c::WaiterEntry, armed),
                         armed)) {
      continue;
    }
    if (armed == 0 || armed == f.woken[idx] || f.waiter_fds[idx] < 0) continue;
    f.woken[idx] = armed;
    if (!guard) guard.emplace();
    if (!wake_eventfd(f.waiter_fds[idx])) {
      hostile = true;
      break;
    }
    ++stats.wakeups;
  }
  guard.reset();
  if (hostile) corrupt(f, "waiter eventfd (made blocking)");
}

}  // namespace pno::engine
