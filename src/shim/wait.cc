// Waiting: blocking socket calls, emulated epoll, poll/ppoll and select/pselect over a mix of
// offloaded and kernel fds. Every wait first looks at the shared state, spins a few microseconds,
// then sleeps in the kernel on the kernel fds plus the thread's waiter and the channel's control
// fd, so an idle application uses no CPU.
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstdarg>
#include <cstring>

#include "shim/internal.hh"
#include "shim/log.hh"
#include "shim/signals.hh"

namespace pno::shim {
namespace {

std::int64_t deadline_from_ms(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ns() + static_cast<std::int64_t>(timeout_ms) * 1'000'000;
}

std::int64_t deadline_from_ts(const timespec* ts) {
  if (ts == nullptr) return -1;
  return now_ns() + static_cast<std::int64_t>(ts->tv_sec) * 1'000'000'000 + ts->tv_nsec;
}

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

// ---------------------------------------------------------------------------------------------
// Emulated epoll

EpollDesc* epoll_of(State* st, int epfd, std::uint32_t* idx = nullptr) {
  FdRef r = st->fds.get(epfd);
  if (r.kind != FdKind::epoll) return nullptr;
  if (idx != nullptr) *idx = r.index;
  return &st->epolls[r.index];
}

void link_tail(State* st, EpollDesc& ep, std::uint32_t mi) {
  EpollMember& m = st->members[mi];
  m.next = 0;
  m.prev = ep.tail;
  if (ep.tail != 0) {
    st->members[ep.tail].next = mi;
  } else {
    ep.head = mi;
  }
  ep.tail = mi;
}

/// Takes `mi` out of the list (it stays allocated).
void detach(State* st, EpollDesc& ep, std::uint32_t mi) {
  EpollMember& m = st->members[mi];
  if (m.prev != 0) {
    st->members[m.prev].next = m.next;
  } else {
    ep.head = m.next;
  }
  if (m.next != 0) {
    st->members[m.next].prev = m.prev;
  } else {
    ep.tail = m.prev;
  }
  m.next = m.prev = 0;
}

void unlink_member(State* st, EpollDesc& ep, std::uint32_t mi) {
  detach(st, ep, mi);
  EpollMember& m = st->members[mi];
  if (m.kind == MemberKind::nested) ep.n_nested.fetch_sub(1);
  m.owner = 0;
  st->members.free(mi);
  ep.n_members.fetch_sub(1);
}

bool member_alive(State* st, const EpollMember& m) {
  if (m.kind == MemberKind::socket) {
    return st->socks[m.target].gen.load(std::memory_order_acquire) == m.target_gen;
  }
  return st->epolls[m.target].gen.load(std::memory_order_acquire) == m.target_gen;
}

/// Whether member `m` is the registration of `fd` as it is now. Linux keys an epoll entry by
/// (file, fd) and drops it when the last reference to the file goes (fs/eventpoll.c ep_find(),
/// eventpoll_release()): an entry whose socket was freed is gone, and an entry whose fd number
/// now names another socket (the old one still open through a dup) belongs to that other file.
bool member_is(State* st, const EpollMember& m, int fd, FdRef now) {
  if (m.fd != fd || m.target != now.index) return false;
  bool kind_ok = m.kind == MemberKind::socket ? now.kind == FdKind::socket : now.kind == FdKind::epoll;
  return kind_ok && member_alive(st, m);
}

/// The member registered under (`fd`, what `fd` refers to now) in instance `eidx` (lock held):
/// the fd's hint first (the common case of an fd in one epoll set is O(1)), else a walk. Members
/// met on the walk whose target was freed are dropped, as the kernel drops them at the last close.
std::uint32_t find_member(State* st, EpollDesc& ep, std::uint32_t eidx, int fd, FdRef now) {
  if (st->fds.in_range(fd)) {
    std::uint32_t h = st->member_hint[static_cast<std::size_t>(fd)].load(std::memory_order_relaxed);
    if (h != 0 && st->members[h].owner == eidx && member_is(st, st->members[h], fd, now)) return h;
  }
  std::uint32_t mi = ep.head;
  while (mi != 0) {
    EpollMember& m = st->members[mi];
    std::uint32_t next = m.next;
    if (!member_alive(st, m)) {
      unlink_member(st, ep, mi);
    } else if (member_is(st, m, fd, now)) {
      return mi;
    }
    mi = next;
  }
  return 0;
}

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

/// Counts an entry the application added to (+1) or deleted from (-1) the instance's kernel set.
void count_kernel_entry(EpollDesc& ep, int op) {
  if (op == EPOLL_CTL_ADD) {
    ep.n_kernel.fetch_add(1, std::memory_order_relaxed);
  } else if (op == EPOLL_CTL_DEL) {
    std::uint32_t n = ep.n_kernel.load(std::memory_order_relaxed);
    while (n != 0 && !ep.n_kernel.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
    }
  }
}

/// Waits with offloaded events to return that may skip the kernel set in a row (see epoll_wait_impl).
constexpr std::uint32_t kKernelHarvestEvery = 4;

/// Whether the kernel set may hold an entry of the application: entries of this process are
/// counted; after a fork another process may have added some through its copy of the fd.
bool kernel_entries_possible(const State* st, const EpollDesc& ep) {
  return ep.n_kernel.load(std::memory_order_relaxed) != 0 ||
         ep.fork_epoch != st->fork_epoch.load(std::memory_order_relaxed);
}

void kick(EpollDesc& ep) {
  if (ep.sleepers.load(std::memory_order_acquire) == 0) return;
  ep.kick_users.fetch_add(1, std::memory_order_seq_cst);
  int kfd = ep.kick_fd.load(std::memory_order_seq_cst);
  std::uint64_t one = 1;
  if (kfd >= 0) (void)PNO_REAL(write)(kfd, &one, sizeof one);
  ep.kick_users.fetch_sub(1, std::memory_order_release);
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

/// epoll_ctl on a pending socket: the kernel set holds the registration, the socket remembers it
/// for its hand-over (epoll_adopt_pending).
int epoll_ctl_pending(State* st, int epfd, std::uint32_t eidx, int op, int fd, FdRef t, epoll_event* ev) {
  int r = PNO_REAL(epoll_ctl)(epfd, op, fd, ev);
  if (r < 0) return r;
  count_kernel_entry(st->epolls[eidx], op);
  SockDesc& d = st->socks[t.index];
  SpinGuard lk(d.lock);
  std::uint32_t i = 0;
  while (i < d.n_epoll_regs && d.epoll_regs[i].epoll != eidx) ++i;
  switch (op) {
    case EPOLL_CTL_ADD:
    case EPOLL_CTL_MOD:
      if (i == d.n_epoll_regs) {
        if (op == EPOLL_CTL_MOD) break;  // registered before the shim tracked it: nothing to carry
        if (i == kPendingEpollRegs) {
          log(LogLevel::warn, "socket %d: in more than %u epoll sets before bind/connect/listen; "
              "the others lose it at hand-over", fd, static_cast<unsigned>(kPendingEpollRegs));
          break;
        }
        ++d.n_epoll_regs;
      }
      d.epoll_regs[i] = {eidx, st->epolls[eidx].gen.load(), epfd, ev->events, ev->data.u64};
      break;
    case EPOLL_CTL_DEL:
      if (i < d.n_epoll_regs) d.epoll_regs[i] = d.epoll_regs[--d.n_epoll_regs];
      break;
    default:
      break;
  }
  return 0;
}

int epoll_ctl_impl(State* st, int epfd, int op, int fd, epoll_event* ev) {
  std::uint32_t eidx = 0;
  EpollDesc* ep = epoll_of(st, epfd, &eidx);
  FdRef t = st->fds.get(fd);
  if (ep != nullptr && t.kind == FdKind::pending) return epoll_ctl_pending(st, epfd, eidx, op, fd, t, ev);
  bool emulated_target = t.kind == FdKind::socket ||
                         (t.kind == FdKind::epoll && ep != nullptr);
  if (ep == nullptr || !emulated_target) {
    if (ep == nullptr && t.kind == FdKind::socket) {
      // A kernel epoll (created before the engine was attached) cannot watch an offloaded socket.
      return fail(EPERM);
    }
    const int r = PNO_REAL(epoll_ctl)(epfd, op, fd, ev);
    if (r == 0 && ep != nullptr) count_kernel_entry(*ep, op);
    return r;
  }
  if (fd == epfd) return fail(EINVAL);
  if (op != EPOLL_CTL_DEL && ev == nullptr) return fail(EFAULT);
  std::uint32_t events = ev != nullptr ? ev->events : 0;
  if (t.kind == FdKind::epoll) {
    // Nested: the kernel checks loops and depth and watches the inner kernel members.
    int r = PNO_REAL(epoll_ctl)(epfd, op, fd, ev);
    if (r < 0) return r;
    count_kernel_entry(*ep, op);
  }
  SpinGuard lk(ep->lock);
  std::uint32_t mi = find_member(st, *ep, eidx, fd, t);
  bool exclusive = mi != 0 && (st->members[mi].st.events & EPOLLEXCLUSIVE) != 0;
  int err = t.kind == FdKind::epoll ? 0 : epoll_ctl_check(op, events, mi != 0, exclusive, false);
  if (err != 0) return fail(err);
  switch (op) {
    case EPOLL_CTL_ADD: {
      std::uint32_t ni = st->members.alloc();
      if (ni == 0) return fail(ENOSPC);
      EpollMember& m = st->members[ni];
      m.fd = fd;
      m.kind = t.kind == FdKind::socket ? MemberKind::socket : MemberKind::nested;
      m.target = t.index;
      m.target_gen = m.kind == MemberKind::socket ? st->socks[t.index].gen.load()
                                                  : st->epolls[t.index].gen.load();
      m.data = ev->data.u64;
      m.st = MemberState{events, {}, false, false};
      m.owner = eidx;
      link_tail(st, *ep, ni);
      if (st->fds.in_range(fd)) st->member_hint[static_cast<std::size_t>(fd)].store(ni, std::memory_order_relaxed);
      ep->n_members.fetch_add(1);
      if (m.kind == MemberKind::nested) ep->n_nested.fetch_add(1);
      break;
    }
    case EPOLL_CTL_MOD: {
      if (mi == 0) return fail(ENOENT);
      EpollMember& m = st->members[mi];
      m.data = ev->data.u64;
      // Linux re-polls the file on MOD: a ready socket reports again, even edge-triggered.
      m.st = MemberState{events, {}, false, false};
      break;
    }
    case EPOLL_CTL_DEL:
      if (mi != 0) unlink_member(st, *ep, mi);
      break;
    default:
      return fail(EINVAL);
  }
  kick(*ep);
  return 0;
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

int select_impl(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, std::int64_t deadline_ns,
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

// ---------------------------------------------------------------------------------------------

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

bool epoll_peek(State* st, std::uint32_t idx, int depth) {
  EpollDesc& ep = st->epolls[idx];
  if (ep.n_members.load(std::memory_order_acquire) == 0) return false;
  SpinGuard lk(ep.lock);
  return scan_members(st, ep, nullptr, 1, false, depth) > 0;
}

void epoll_release(State* st, std::uint32_t idx) {
  EpollDesc& ep = st->epolls[idx];
  if (ep.refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  {
    SpinGuard lk(ep.lock);
    while (ep.head != 0) unlink_member(st, ep, ep.head);
  }
  if (int kfd = ep.kick_fd.load(); kfd >= 0) {
    st->fds.take(kfd);
    PNO_REAL(close)(kfd);
  }
  ep.gen.fetch_add(1, std::memory_order_acq_rel);
  ep.reset();
  st->epolls.free(idx);
}

/// Registers a new kernel epoll fd as an emulated instance. -1 with errno on failure (the epoll
/// fd is closed then).
int track_epoll(State* st, int epfd) {
  if (!st->fds.in_range(epfd)) return epfd;  // beyond the table: a plain kernel epoll
  FdRef old = st->fds.take(epfd);
  if (old.kind != FdKind::kernel) untrack_fd(st, epfd, old);
  std::uint32_t idx = st->epolls.alloc();
  if (idx == 0) {
    PNO_REAL(close)(epfd);
    return fail(ENOMEM);
  }
  EpollDesc& ep = st->epolls[idx];
  ep.reset();
  ep.refs.store(1);
  ep.fork_epoch = st->fork_epoch.load(std::memory_order_relaxed);
  int kfd = PNO_REAL(eventfd)(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (kfd >= 0 && st->internal_fd_base > kfd) {
    // Keep the shim's fds out of the numbers the application expects to get.
    int high = PNO_REAL(fcntl)(kfd, F_DUPFD_CLOEXEC, st->internal_fd_base);
    if (high >= 0) {
      PNO_REAL(close)(kfd);
      kfd = high;
    }
  }
  epoll_event kev{};
  kev.events = EPOLLIN;
  kev.data.u64 = kKickTag;
  if (kfd < 0 || PNO_REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, kfd, &kev) < 0) {
    int e = errno;
    if (kfd >= 0) PNO_REAL(close)(kfd);
    ep.reset();
    st->epolls.free(idx);
    PNO_REAL(close)(epfd);
    return fail(e);
  }
  ep.kick_fd.store(kfd);
  st->fds.set(kfd, FdKind::internal, idx);
  st->fds.set(epfd, FdKind::epoll, idx);
  return epfd;
}

void epoll_adopt_pending(State* st, int fd, std::uint32_t sock_idx) {
  SockDesc& d = st->socks[sock_idx];
  PendingEpollReg regs[kPendingEpollRegs];
  std::uint32_t n = 0;
  {
    SpinGuard lk(d.lock);
    n = d.n_epoll_regs;
    std::copy_n(d.epoll_regs, n, regs);
    d.n_epoll_regs = 0;
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    const PendingEpollReg& g = regs[i];
    EpollDesc& ep = st->epolls[g.epoll];
    if (ep.gen.load(std::memory_order_acquire) != g.epoll_gen) continue;  // instance closed since
    // Drop the kernel entry now, so the kernel socket (its last moments, or a copy a forked
    // process still holds) never reports into the set beside the new member.
    FdRef e = st->fds.get(g.epfd);
    if (e.kind == FdKind::epoll && e.index == g.epoll && PNO_REAL(epoll_ctl)(g.epfd, EPOLL_CTL_DEL, fd, nullptr) == 0) {
      count_kernel_entry(ep, EPOLL_CTL_DEL);
    }
    SpinGuard lk(ep.lock);
    std::uint32_t mi = st->members.alloc();
    if (mi == 0) {
      log(LogLevel::warn, "socket %d: epoll member table full; its registration is lost", fd);
      continue;
    }
    EpollMember& m = st->members[mi];
    m.fd = fd;
    m.kind = MemberKind::socket;
    m.target = sock_idx;
    m.target_gen = d.gen.load();
    m.data = g.data;
    m.st = MemberState{g.events, {}, false, false};
    m.owner = g.epoll;
    link_tail(st, ep, mi);
    if (st->fds.in_range(fd)) st->member_hint[static_cast<std::size_t>(fd)].store(mi, std::memory_order_relaxed);
    ep.n_members.fetch_add(1);
    kick(ep);
  }
}

int epoll_relocate_kick(State* st, int fd, FdRef r) {
  if (r.kind != FdKind::internal || r.index == 0) return fail(EBADF);
  EpollDesc& ep = st->epolls[r.index];
  if (ep.kick_fd.load() != fd) return fail(EBADF);
  int nfd = PNO_REAL(fcntl)(fd, F_DUPFD_CLOEXEC, st->internal_fd_base);
  if (nfd < 0) nfd = PNO_REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) return -1;
  // The kernel set keys the kick's entry by (open file, old number) and keeps it until the file's
  // last close (fs/eventpoll.c eventpoll_release): the duplicate keeps it alive, so the entry goes
  // on reporting with kKickTag and no epoll_ctl is needed.
  st->fds.set(nfd, FdKind::internal, r.index);
  ep.kick_fd.store(nfd, std::memory_order_seq_cst);
  while (ep.kick_users.load(std::memory_order_seq_cst) != 0) __builtin_ia32_pause();
  st->fds.take_if(fd, r);
  PNO_REAL(close)(fd);
  return nfd;
}

}  // namespace pno::shim

// =============================================================================================

using namespace pno;
using namespace pno::shim;

#define PNO_EXPORT extern "C" __attribute__((visibility("default")))

PNO_EXPORT int epoll_create(int size) noexcept {
  int fd = PNO_REAL(epoll_create)(size);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  return track_epoll(st, fd);
}

PNO_EXPORT int epoll_create1(int flags) noexcept {
  int fd = PNO_REAL(epoll_create1)(flags);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  return track_epoll(st, fd);
}

PNO_EXPORT int epoll_ctl(int epfd, int op, int fd, epoll_event* ev) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(epoll_ctl)(epfd, op, fd, ev);
  return epoll_ctl_impl(st, epfd, op, fd, ev);
}

PNO_EXPORT int epoll_pwait2(int epfd, epoll_event* evs, int max, const timespec* timeout, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_pwait2)(epfd, evs, max, timeout, mask);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ts(timeout), mask);
}

PNO_EXPORT int epoll_pwait(int epfd, epoll_event* evs, int max, int timeout, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_pwait)(epfd, evs, max, timeout, mask);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ms(timeout), mask);
}

PNO_EXPORT int epoll_wait(int epfd, epoll_event* evs, int max, int timeout) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_wait)(epfd, evs, max, timeout);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ms(timeout), nullptr);
}

PNO_EXPORT int poll(pollfd* fds, nfds_t n, int timeout) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(poll)(fds, n, timeout);
  return poll_impl(st, fds, n, deadline_from_ms(timeout), nullptr, false, timeout);
}

PNO_EXPORT int ppoll(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(ppoll)(fds, n, ts, mask);
  return poll_impl(st, fds, n, deadline_from_ts(ts), mask, true, -1);
}

PNO_EXPORT int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* tv) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(select)(nfds, rd, wr, ex, tv);
  std::int64_t deadline = tv == nullptr ? -1 : now_ns() + (tv->tv_sec * 1'000'000LL + tv->tv_usec) * 1000;
  bool handled = false;
  int r = select_impl(st, nfds, rd, wr, ex, deadline, nullptr, &handled);
  if (!handled) return PNO_REAL(select)(nfds, rd, wr, ex, tv);
  if (tv != nullptr) {  // Linux writes back the time left
    std::int64_t left = std::max<std::int64_t>(deadline - now_ns(), 0) / 1000;
    tv->tv_sec = left / 1'000'000;
    tv->tv_usec = left % 1'000'000;
  }
  return r;
}

PNO_EXPORT int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* ts, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(pselect)(nfds, rd, wr, ex, ts, mask);
  bool handled = false;
  int r = select_impl(st, nfds, rd, wr, ex, deadline_from_ts(ts), mask, &handled);
  if (!handled) return PNO_REAL(pselect)(nfds, rd, wr, ex, ts, mask);
  return r;
}

PNO_EXPORT void __chk_fail() __attribute__((noreturn));

PNO_EXPORT int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
  if (fdslen / sizeof(pollfd) < n) __chk_fail();
  return poll(fds, n, timeout);
}

PNO_EXPORT int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* mask, size_t fdslen) {
  if (fdslen / sizeof(pollfd) < n) __chk_fail();
  return ppoll(fds, n, ts, mask);
}
