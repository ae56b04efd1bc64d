// The interest lists of emulated epoll instances: epoll_ctl on offloaded members (a member pool
// entry per registration), on pending sockets (a kernel entry the socket remembers) and on kernel
// fds, and the adoption of a pending socket's registrations at its hand-over. An epoll_ctl that
// changes offloaded members kicks the instance's sleepers (see wait.cc).
#include <algorithm>

#include "shim/epoll_list.hh"
#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {
namespace {

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

void kick(EpollDesc& ep) {
  if (ep.sleepers.load(std::memory_order_acquire) == 0) return;
  ep.kick_users.fetch_add(1, std::memory_order_seq_cst);
  int kfd = ep.kick_fd.load(std::memory_order_seq_cst);
  std::uint64_t one = 1;
  if (kfd >= 0) (void)PNO_REAL(write)(kfd, &one, sizeof one);
  ep.kick_users.fetch_sub(1, std::memory_order_release);
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

}  // namespace

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

}  // namespace pno::shim
