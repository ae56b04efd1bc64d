// What each fd number refers to: tracking of new, dup'ed and closed fds (sockets, pending
// sockets, emulated epoll instances), the placeholders of offloaded sockets, fcntl, and the
// numbers of the channel's and the shim's own fds, which the application may still name.
#include <sys/resource.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "shim/epoll_list.hh"
#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {
namespace {

/// Releases one fd's reference to an epoll instance (closing the instance with the last one).
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

/// Moves the kick eventfd of an emulated epoll off `fd` (an internal fd, `r` its entry) to another
/// number and closes `fd`: the new number, or -1 with errno.
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

bool protected_fd(State* st, int fd) {
  if (t_in_channel) return false;
  if (st->fds.get(fd).kind == FdKind::internal) return true;
  HostChannel* ch = attached_channel(st);
  return ch != nullptr && ch->owns_fd(fd);
}

/// Moves the channel's or the shim's own fd off number `fd` (the application believes the number
/// is free: it never opened it). True when the number is free now.
bool relocate_protected(State* st, int fd) {
  FdRef r = st->fds.get(fd);
  int moved = -1;
  if (r.kind == FdKind::internal) {
    moved = epoll_relocate_kick(st, fd, r);
  } else {
    InChannel guard;
    moved = st->ch->relocate_fd(fd);
  }
  if (moved < 0) {
    log(LogLevel::warn, "fd %d is the engine channel's and cannot be moved (%s)", fd, std::strerror(errno));
    return false;
  }
  if (log_enabled(LogLevel::debug)) log(LogLevel::debug, "moved the channel's fd %d to %d", fd, moved);
  return true;
}

}  // namespace

void release_desc(State* st, std::uint32_t idx) {
  SockDesc& d = st->socks[idx];
  if (d.refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    d.gen.fetch_add(1, std::memory_order_acq_rel);
    d.reset();
    st->socks.free(idx);
  }
}

void track_new(State* st, int fd, bool want_pending) {
  if (!st->fds.in_range(fd)) return;
  FdRef old = st->fds.take(fd);  // a number closed behind our back (rare): forget what it was
  if (old.kind != FdKind::kernel) untrack_fd(st, fd, old);
  if (!want_pending || !may_offload(st)) return;
  std::uint32_t idx = st->socks.alloc();
  if (idx == 0) {
    log(LogLevel::warn, "descriptor table full: socket %d stays with the kernel", fd);
    return;
  }
  SockDesc& d = st->socks[idx];
  d.reset();
  d.refs.store(1);
  st->fds.set(fd, FdKind::pending, idx);
}

int make_placeholder(int fd, bool cloexec) {
  int efd = PNO_REAL(eventfd)(0, EFD_NONBLOCK | (cloexec ? EFD_CLOEXEC : 0));
  if (efd < 0 || fd < 0) return efd;
  int r = PNO_REAL(dup3)(efd, fd, cloexec ? O_CLOEXEC : 0);
  int e = errno;
  PNO_REAL(close)(efd);
  errno = e;
  return r;
}

void track_dup(State* st, int ofd, FdRef o, int nfd) {
  FdRef old = st->fds.take(nfd);
  if (old.kind != FdKind::kernel) untrack_fd(st, nfd, old);
  switch (o.kind) {
    case FdKind::socket: {
      if (!st->fds.in_range(nfd)) {
        log(LogLevel::warn, "dup of socket %d to %d: beyond the shim's table", ofd, nfd);
        return;
      }
      SockDesc& d = st->socks[o.index];
      d.refs.fetch_add(1);
      st->ch->retain(d.sock.load());
      st->fds.set(nfd, FdKind::socket, o.index);
      return;
    }
    case FdKind::epoll:
      if (!st->fds.in_range(nfd)) return;
      st->epolls[o.index].refs.fetch_add(1);
      st->fds.set(nfd, FdKind::epoll, o.index);
      return;
    case FdKind::pending:
      // Two fds on one kernel socket cannot both be swapped at hand-over: keep it in the kernel.
      if (st->fds.take_if(ofd, o)) release_desc(st, o.index);
      return;
    default:
      return;
  }
}

int dup_impl(State* st, int ofd, int nfd, int flags, bool is_dup2) {
  if (ofd == nfd) {
    if (!is_dup2) return fail(EINVAL);  // dup3
    return PNO_REAL(fcntl)(ofd, F_GETFD) < 0 ? -1 : nfd;
  }
  if (protected_fd(st, nfd)) {
    // Linux would close the target and dup onto it: move our fd away first. Only if no number
    // is free does the call fail (EBUSY, as for a number the kernel is still setting up).
    if (PNO_REAL(fcntl)(ofd, F_GETFD) < 0) return -1;  // EBADF before moving anything
    if (!relocate_protected(st, nfd)) return fail(EBUSY);
  }
  FdRef o = st->fds.get(ofd);
  int r = PNO_REAL(dup3)(ofd, nfd, flags);
  if (r < 0) return r;
  track_dup(st, ofd, o, r);
  return r;
}

int close_impl(State* st, int fd) {
  if (protected_fd(st, fd)) {
    // The application closing a number it never opened: it must be free afterwards (a later
    // F_GETFD says EBADF, dup2 onto it works), so our fd moves elsewhere. Success either way.
    (void)relocate_protected(st, fd);
    return 0;
  }
  FdRef r = st->fds.take(fd);
  if (r.kind != FdKind::kernel) untrack_fd(st, fd, r);
  return PNO_REAL(close)(fd);
}

int close_range_impl(State* st, unsigned int first, unsigned int last, int flags) {
  if (first > last) return fail(EINVAL);
  if ((flags & CLOSE_RANGE_CLOEXEC) != 0) return PNO_REAL(close_range)(first, last, flags);
  // Walk the range in pieces between protected fds, untracking what the pieces close.
  unsigned int top = std::min<unsigned int>(last, static_cast<unsigned int>(INT32_MAX));
  unsigned int lo = first;
  auto flush = [&](unsigned int a, unsigned int b) -> int {
    if (a > b) return 0;
    int hw = st->fds.high_water();
    for (unsigned int fd = a; fd <= b && fd < static_cast<unsigned int>(hw); ++fd) {
      FdRef r = st->fds.take(static_cast<int>(fd));
      if (r.kind != FdKind::kernel) untrack_fd(st, static_cast<int>(fd), r);
    }
    return PNO_REAL(close_range)(a, b, flags);
  };
  // No fd can exist at or above RLIMIT_NOFILE: the scan for protected fds stops there.
  rlimit rl{};
  unsigned int scan_end = (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1U << 30))
                              ? static_cast<unsigned int>(rl.rlim_cur)
                              : (1U << 20);
  for (unsigned int fd = first; fd <= top && fd < scan_end; ++fd) {
    if (protected_fd(st, static_cast<int>(fd))) {
      if (fd > lo && flush(lo, fd - 1) < 0) return -1;
      lo = fd + 1;
    }
  }
  if (lo <= last) return flush(lo, last);
  return 0;
}

int fcntl_impl(State* st, int fd, int cmd, long arg) {
  auto real = [](int f, int c, long a) { return PNO_REAL(fcntl)(f, c, a); };
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::kernel || ref.kind == FdKind::internal) return real(fd, cmd, arg);
  switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      int nfd = real(fd, cmd, arg);
      if (nfd >= 0) track_dup(st, fd, ref, nfd);
      return nfd;
    }
    case F_GETFL:
      if (ref.kind == FdKind::socket) {
        int fl = O_RDWR;
        if (st->socks[ref.index].nonblock.load() != 0) fl |= O_NONBLOCK;
        return fl;
      }
      return real(fd, cmd, arg);
    case F_SETFL:
      if (ref.kind == FdKind::socket) {
        st->socks[ref.index].nonblock.store((arg & O_NONBLOCK) != 0 ? 1 : 0);
        return 0;
      }
      return real(fd, cmd, arg);
    default:
      return real(fd, cmd, arg);
  }
}

void untrack_fd(State* st, int fd, FdRef r) {
  (void)fd;
  switch (r.kind) {
    case FdKind::socket: {
      SockDesc& d = st->socks[r.index];
      st->ch->close(d.sock.load());
      release_desc(st, r.index);
      return;
    }
    case FdKind::pending:
      release_desc(st, r.index);
      return;
    case FdKind::epoll:
      epoll_release(st, r.index);
      return;
    default:
      return;
  }
}

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

}  // namespace pno::shim
