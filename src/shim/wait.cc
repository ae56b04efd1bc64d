// Waiting: blocking socket calls (wait_socket), emulated epoll_wait, poll/ppoll and
// select/pselect over a mix of offloaded and kernel fds. Every wait first looks at the shared
// state, spins a few microseconds, then sleeps in the kernel on the kernel fds plus the thread's
// waiter and the channel's control fd, so an idle application uses no CPU.
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>

#include "shim/epoll_list.hh"
#include "shim/internal.hh"
#include "shim/signals.hh"

namespace pno::shim {
namespace {

bool expired(std::int64_t deadline_ns) { return deadline_ns >= 0 && now_ns() >= deadline_ns; }

timespec remaining_ts(std::int64_t deadline_ns) {
  std::int64_t left = std::max<std::int64_t>(deadline_ns - now_ns(), 0);
  return {static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
}

/// Scratch pollfd storage: on the stack for the usual sizes, an anonymous mapping beyond (never
/// malloc: poll may run inside a signal handler or while another thread holds malloc's lock).
class PollBuf {
 public:
  explicit PollBuf(std::size_t n) : n_(n) {
    if (n <= std::size(local_)) {
      p_ = local_;
    } else {
      void* m = ::mmap(nullptr, n * sizeof(pollfd), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      p_ = m == MAP_FAILED ? nullptr : static_cast<pollfd*>(m);
      mapped_ = p_ != nullptr;
    }
  }
  ~PollBuf() {
    if (mapped_) ::munmap(p_, n_ * sizeof(pollfd));
  }
  PollBuf(const PollBuf&) = delete;
  PollBuf& operator=(const PollBuf&) = delete;
  pollfd* get() { return p_; }

 private:
  pollfd local_[512];
  pollfd* p_ = nullptr;
  std::size_t n_;
  bool mapped_ = false;
};

/// Sleeps once: arms the thread's waiter, re-checks `check`, then waits in ppoll() on the kernel
/// fds pfd[0..nk) plus the waiter and the control fd (pfd has room for nk + 2) until something
/// happens, `deadline_ns` (<0: none) passes or a signal arrives. Returns ppoll()'s result
/// (or 1 when `check` already held); the caller re-evaluates everything either way.
template <typename Check>
int sleep_once(State* st, Check&& check, pollfd* pfd, nfds_t nk, std::int64_t deadline_ns,
               const sigset_t* mask) {
  HostChannel* ch = st->ch;  // null before the attach: then only kernel fds can be waited on
  bool alive = ch != nullptr && ch->alive();
  channel::Waiter* w = nullptr;
  if (alive) {
    InChannel guard;
    w = ch->thread_waiter();
  }
  nfds_t n = nk;
  if (w != nullptr) {
    ch->arm(*w);
    if (check()) {
      ch->disarm(*w);
      return 1;
    }
    pfd[n++] = {w->fd(), POLLIN, 0};
  }
  if (alive) pfd[n++] = {ch->control_fd(), POLLIN, 0};
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline_ns >= 0 || (alive && w == nullptr)) {
    std::int64_t left = deadline_ns >= 0 ? deadline_ns - now_ns() : INT64_MAX;
    // Without a waiter (table full) the thread cannot be woken: poll the state every millisecond.
    if (alive && w == nullptr && left > 1'000'000) left = 1'000'000;
    if (left < 0) left = 0;
    ts.tv_sec = left / 1'000'000'000;
    ts.tv_nsec = left % 1'000'000'000;
    tsp = &ts;
  }
  int r = PNO_REAL(ppoll)(pfd, n, tsp, mask);
  int e = errno;
  if (w != nullptr) ch->disarm(*w);
  errno = e;
  return r;
}

/// Spins for up to kSpinNs while `check` is false; true once it holds.
template <typename Check>
bool spin(Check&& check) {
  if (check()) return true;
  std::int64_t until = now_ns() + kSpinNs;
  while (now_ns() < until) {
    __builtin_ia32_pause();
    if (check()) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Emulated epoll

/// Emulated epoll: whether instance `idx` has an offloaded member ready (no state consumed).
bool epoll_peek(State* st, std::uint32_t idx, int depth);

/// Readiness and edge marks of a member's target. The marks are read first: a change that lands
/// between the two reads then shows as an edge at the next look, never as an edge consumed with the
/// older readiness.
void member_ready(State* st, const EpollMember& m, int depth, std::uint32_t& ready, channel::EdgeMarks& marks) {
  if (m.kind == MemberKind::socket) {
    HostSocket s = st->socks[m.target].sock.load(std::memory_order_acquire);
    marks = st->ch->edge_marks(s);
    ready = poll_ready_of(st, st->socks[m.target]);
    return;
  }
  // A nested emulated epoll is readable while one of its offloaded members is ready (its kernel
  // members reach us through the kernel set, where its epoll fd is registered too). It has no
  // marks of its own: a status that changes at every look makes edge-triggered nesting behave
  // level-triggered.
  static std::atomic<std::uint64_t> nested_status{0};
  ready = (depth < 4 && epoll_peek(st, m.target, depth + 1)) ? std::uint32_t{EPOLLIN} : 0U;
  marks = channel::EdgeMarks{0, 0, nested_status.fetch_add(1, std::memory_order_relaxed)};
}

/// Collects up to `max` events of the offloaded members (lock held). Level-triggered members that
/// reported go to the end of the list, so a small maxevents still serves every ready socket in
/// turn, as Linux's ready list does.
int scan_members(State* st, EpollDesc& ep, epoll_event* out, int max, bool consume, int depth) {
  int n = 0;
  std::uint32_t mi = ep.head;
  std::uint32_t moved[64];
  std::size_t n_moved = 0;
  while (mi != 0 && n < max) {
    EpollMember& m = st->members[mi];
    std::uint32_t next = m.next;
    if (!member_alive(st, m)) {
      unlink_member(st, ep, mi);
      mi = next;
      continue;
    }
    std::uint32_t seq = 0;
    if (m.kind == MemberKind::socket) {
      seq = st->ch->event_seq(st->socks[m.target].sock.load(std::memory_order_acquire));
      if (m.st.quiet && m.st.quiet_seq == seq) {
        mi = next;
        continue;
      }
    }
    std::uint32_t ready = 0;
    channel::EdgeMarks marks;
    member_ready(st, m, depth, ready, marks);
    std::uint32_t ev = epoll_member_events(m.st, ready, marks, consume);
    // The sequence was read before the marks and readiness: a change after it shows as a new one.
    m.st.quiet = ev == 0 && m.kind == MemberKind::socket && seq != ~std::uint32_t{0};
    m.st.quiet_seq = seq;
    if (ev != 0) {
      if (out != nullptr) {
        out[n].events = ev;
        out[n].data.u64 = m.data;
      }
      ++n;
      if (consume && (m.st.events & (EPOLLET | EPOLLONESHOT)) == 0 && n_moved < std::size(moved)) {
        moved[n_moved++] = mi;
      }
    }
    mi = next;
  }
  // Spliced back at the tail in the order they reported.
  for (std::size_t i = 0; i < n_moved; ++i) {
    detach(st, ep, moved[i]);
    link_tail(st, ep, moved[i]);
  }
  return n;
}

/// Removes the kick events from a kernel result (and resets the kick eventfd).
int filter_kernel_events(EpollDesc& ep, epoll_event* evs, int n) {
  int k = 0;
  for (int i = 0; i < n; ++i) {
    if (evs[i].data.u64 == kKickTag) {
      std::uint64_t v;
      ep.kick_users.fetch_add(1, std::memory_order_seq_cst);
      (void)PNO_REAL(read)(ep.kick_fd.load(std::memory_order_seq_cst), &v, sizeof v);
      ep.kick_users.fetch_sub(1, std::memory_order_release);
      continue;
    }
    evs[k++] = evs[i];
  }
  return k;
}

/// Waits with offloaded events to return that may skip the kernel set in a row (see epoll_wait_impl).
constexpr std::uint32_t kKernelHarvestEvery = 4;

/// Whether the kernel set may hold an entry of the application: entries of this process are
/// counted; after a fork another process may have added some through its copy of the fd.
bool kernel_entries_possible(const State* st, const EpollDesc& ep) {
  return ep.n_kernel.load(std::memory_order_relaxed) != 0 ||
         ep.fork_epoch != st->fork_epoch.load(std::memory_order_relaxed);
}

bool epoll_peek(State* st, std::uint32_t idx, int depth) {
  EpollDesc& ep = st->epolls[idx];
  if (ep.n_members.load(std::memory_order_acquire) == 0) return false;
  SpinGuard lk(ep.lock);
  return scan_members(st, ep, nullptr, 1, false, depth) > 0;
}

// ---------------------------------------------------------------------------------------------
// poll / select

enum class Class : std::uint8_t { kernel, socket, hybrid };

Class classify_fd(State* st, int fd, FdRef* out) {
  FdRef r = st->fds.get(fd);
  if (out != nullptr) *out = r;
  if (r.kind == FdKind::socket) return Class::socket;
  if (r.kind == FdKind::epoll && st->epolls[r.index].n_members.load() != 0) return Class::hybrid;
  return Class::kernel;
}

}  // namespace

int wait_socket(State* st, HostSocket s, std::uint32_t mask, std::int64_t timeout_us) {
  if (timeout_us < 0) return EAGAIN;
  std::uint32_t want = mask | EPOLLERR;
  auto check = [&] { return (ready_of(st, s) & want) != 0; };
  if (spin(check)) return 0;
  std::int64_t deadline = timeout_us == 0 ? -1 : now_ns() + timeout_us * 1000;
  for (;;) {
    pollfd pfd[2];
    note_signals_clear();
    int r = sleep_once(st, check, pfd, 0, deadline, nullptr);
    if (r < 0) {
      // Linux restarts the call only without a timeout (net/core/sock.c sock_intr_errno) and
      // when the handler of the signal that arrived has SA_RESTART (signal(7)).
      if (errno == EINTR && timeout_us == 0 && restart_after_signal()) continue;
      return errno;
    }
    if (check()) return 0;
    if (expired(deadline)) return EAGAIN;
  }
}

int epoll_wait_impl(State* st, int epfd, epoll_event* evs, int max, std::int64_t deadline_ns,
                    const sigset_t* mask) {
  std::uint32_t idx = 0;
  EpollDesc* epp = epoll_of(st, epfd, &idx);
  EpollDesc& ep = *epp;
  if (max <= 0) return fail(EINVAL);
  if (evs == nullptr) return fail(EFAULT);
  bool kernel_due = false;  // the last sleep saw the kernel set readable (an entry, or the kick)
  for (;;) {
    if (ep.n_members.load(std::memory_order_acquire) == 0) {
      // Kernel members only: sleep in the kernel epoll itself. A kick from epoll_ctl wakes it
      // when an offloaded member arrives meanwhile.
      ep.sleepers.fetch_add(1);
      timespec ts{};
      if (deadline_ns >= 0) ts = remaining_ts(deadline_ns);
      int k = PNO_REAL(epoll_pwait2)(epfd, evs, max, deadline_ns >= 0 ? &ts : nullptr, mask);
      int e = errno;
      ep.sleepers.fetch_sub(1);
      if (k < 0) {
        if (e == ENOSYS) {  // kernels before 5.11: millisecond resolution
          int ms = deadline_ns < 0 ? -1 : static_cast<int>((ts.tv_sec * 1000) + (ts.tv_nsec + 999999) / 1000000);
          ep.sleepers.fetch_add(1);
          k = PNO_REAL(epoll_pwait)(epfd, evs, max, ms, mask);
          e = errno;
          ep.sleepers.fetch_sub(1);
        }
        if (k < 0) return fail(e);
      }
      k = filter_kernel_events(ep, evs, k);
      if (k > 0 || expired(deadline_ns)) return k;
      continue;
    }
    int n;
    {
      SpinGuard lk(ep.lock);
      n = scan_members(st, ep, evs, max, true, 0);
    }
    // The kernel set costs a system call to look at. It is looked at when it may hold an entry of
    // the application and: nothing offloaded is ready, or a sleep saw it readable, or this is the
    // kKernelHarvestEvery-th wait in a row that has offloaded events to return anyway (a kernel fd
    // beside busy sockets, e.g. redis's module pipe, is then reported a few waits later, never
    // starved).
    bool harvest = kernel_due;
    if (!harvest && n < max && kernel_entries_possible(st, ep)) {
      harvest = n == 0 || ep.unharvested.fetch_add(1, std::memory_order_relaxed) + 1 >= kKernelHarvestEvery;
    }
    if (n < max && harvest) {
      kernel_due = false;
      ep.unharvested.store(0, std::memory_order_relaxed);
      int k = PNO_REAL(epoll_wait)(epfd, evs + n, max - n, 0);
      if (k > 0) {
        k = filter_kernel_events(ep, evs + n, k);
        if (ep.n_nested.load() != 0 && n > 0) {
          // An emulated epoll nested here reports through both sets: keep one event per entry.
          int w = n;
          for (int i = n; i < n + k; ++i) {
            bool dup = false;
            for (int j = 0; j < n && !dup; ++j) dup = evs[j].data.u64 == evs[i].data.u64;
            if (!dup) evs[w++] = evs[i];
          }
          k = w - n;
        }
        n += k;
      }
    }
    if (n > 0) return n;
    if (deadline_ns >= 0 && expired(deadline_ns)) return 0;
    auto any_ready = [&] {
      SpinGuard lk(ep.lock);
      return scan_members(st, ep, nullptr, 1, false, 0) > 0;
    };
    if (spin(any_ready)) continue;
    pollfd pfd[3];
    pfd[0] = {epfd, POLLIN, 0};
    ep.sleepers.fetch_add(1);
    int r = sleep_once(st, any_ready, pfd, 1, deadline_ns, mask);
    int e = errno;
    ep.sleepers.fetch_sub(1);
    if (r < 0) return fail(e);
    if (r > 0 && (pfd[0].revents & POLLIN) != 0) kernel_due = true;
  }
}

/// poll() over a mix: offloaded entries are computed from the shared state, the rest by the
/// kernel; then sleep on the kernel fds plus the waiter.
int poll_impl(State* st, pollfd* fds, nfds_t n, std::int64_t deadline_ns, const sigset_t* mask,
              bool use_ppoll, int timeout_ms) {
  bool any = false;
  for (nfds_t i = 0; i < n && !any; ++i) {
    if (fds[i].fd >= 0 && classify_fd(st, fds[i].fd, nullptr) != Class::kernel) any = true;
  }
  if (!any) {
    if (!use_ppoll) return PNO_REAL(poll)(fds, n, timeout_ms);
    timespec ts{};
    if (deadline_ns >= 0) ts = remaining_ts(deadline_ns);
    return PNO_REAL(ppoll)(fds, n, deadline_ns >= 0 ? &ts : nullptr, mask);
  }
  PollBuf buf(n + 2);
  pollfd* k = buf.get();
  if (k == nullptr) return fail(ENOMEM);
  auto offloaded_pass = [&](bool write_back) {
    int cnt = 0;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].fd < 0) continue;
      FdRef r;
      Class c = classify_fd(st, fds[i].fd, &r);
      if (c == Class::kernel) continue;
      short rev = 0;
      if (c == Class::socket) {
        std::uint32_t ready = poll_ready_of(st, st->socks[r.index]);
        rev = static_cast<short>(ready & (static_cast<std::uint32_t>(static_cast<unsigned short>(fds[i].events)) |
                                          POLLERR | POLLHUP));
      } else if ((fds[i].events & POLLIN) != 0 && epoll_peek(st, r.index, 1)) {
        rev = POLLIN;
      }
      if (rev != 0) ++cnt;
      if (write_back) fds[i].revents = rev;
    }
    return cnt;
  };
  for (;;) {
    // Kernel entries: the copy hides offloaded ones (negative fd = ignored by poll(2)).
    for (nfds_t i = 0; i < n; ++i) {
      k[i] = fds[i];
      k[i].revents = 0;
      if (fds[i].fd >= 0 && classify_fd(st, fds[i].fd, nullptr) == Class::socket) k[i].fd = -1;
    }
    int kr = PNO_REAL(poll)(k, n, 0);
    if (kr < 0) return -1;
    int off = offloaded_pass(false);
    if (kr > 0 || off > 0 || deadline_ns == 0 || expired(deadline_ns)) {
      int total = 0;
      offloaded_pass(true);
      for (nfds_t i = 0; i < n; ++i) {
        if (fds[i].fd < 0) {
          fds[i].revents = 0;
          continue;
        }
        FdRef r;
        Class c = classify_fd(st, fds[i].fd, &r);
        if (c == Class::kernel) fds[i].revents = k[i].revents;
        if (c == Class::hybrid) fds[i].revents = static_cast<short>(fds[i].revents | k[i].revents);
        if (fds[i].revents != 0) ++total;
      }
      return total;
    }
    auto check = [&] { return offloaded_pass(false) > 0; };
    if (spin(check)) continue;
    int r = sleep_once(st, check, k, n, deadline_ns, mask);
    if (r < 0) return -1;
  }
}

namespace {

/// select() over a set with an offloaded fd, as a poll(); `*handled` false when the set has none
/// (the caller then leaves it to libc).
int select_offloaded(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, std::int64_t deadline_ns,
                     const sigset_t* mask, bool* handled) {
  *handled = false;
  if (nfds < 0 || nfds > FD_SETSIZE) return 0;
  bool any = false;
  for (int fd = 0; fd < nfds && !any; ++fd) {
    bool in = (rd != nullptr && FD_ISSET(fd, rd)) || (wr != nullptr && FD_ISSET(fd, wr)) ||
              (ex != nullptr && FD_ISSET(fd, ex));
    if (in && classify_fd(st, fd, nullptr) != Class::kernel) any = true;
  }
  if (!any) return 0;
  *handled = true;
  pollfd pf[FD_SETSIZE];
  nfds_t n = 0;
  for (int fd = 0; fd < nfds; ++fd) {
    short ev = 0;
    if (rd != nullptr && FD_ISSET(fd, rd)) ev |= POLLIN;
    if (wr != nullptr && FD_ISSET(fd, wr)) ev |= POLLOUT;
    if (ex != nullptr && FD_ISSET(fd, ex)) ev |= POLLPRI;
    if (ev != 0) pf[n++] = {fd, ev, 0};
  }
  int r = poll_impl(st, pf, n, deadline_ns, mask, true, -1);
  if (r < 0) return -1;
  for (nfds_t i = 0; i < n; ++i) {
    if ((pf[i].revents & POLLNVAL) != 0) return fail(EBADF);
  }
  if (rd != nullptr) FD_ZERO(rd);
  if (wr != nullptr) FD_ZERO(wr);
  if (ex != nullptr) FD_ZERO(ex);
  int count = 0;
  for (nfds_t i = 0; i < n; ++i) {
    // fs/select.c: POLLIN_SET = IN|HUP|ERR, POLLOUT_SET = OUT|ERR, POLLEX_SET = PRI.
    short re = pf[i].revents;
    if ((pf[i].events & POLLIN) != 0 && (re & (POLLIN | POLLHUP | POLLERR)) != 0) {
      FD_SET(pf[i].fd, rd);
      ++count;
    }
    if ((pf[i].events & POLLOUT) != 0 && (re & (POLLOUT | POLLERR)) != 0) {
      FD_SET(pf[i].fd, wr);
      ++count;
    }
    if ((pf[i].events & POLLPRI) != 0 && (re & POLLPRI) != 0) {
      FD_SET(pf[i].fd, ex);
      ++count;
    }
  }
  return count;
}

}  // namespace

int select_impl(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* tv) {
  std::int64_t deadline = tv == nullptr ? -1 : now_ns() + (tv->tv_sec * 1'000'000LL + tv->tv_usec) * 1000;
  bool handled = false;
  int r = select_offloaded(st, nfds, rd, wr, ex, deadline, nullptr, &handled);
  if (!handled) return PNO_REAL(select)(nfds, rd, wr, ex, tv);
  if (tv != nullptr) {  // Linux writes back the time left
    std::int64_t left = std::max<std::int64_t>(deadline - now_ns(), 0) / 1000;
    tv->tv_sec = left / 1'000'000;
    tv->tv_usec = left % 1'000'000;
  }
  return r;
}

int pselect_impl(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* ts,
                 const sigset_t* mask) {
  bool handled = false;
  int r = select_offloaded(st, nfds, rd, wr, ex, deadline_from_ts(ts), mask, &handled);
  if (!handled) return PNO_REAL(pselect)(nfds, rd, wr, ex, ts, mask);
  return r;
}

}  // namespace pno::shim
