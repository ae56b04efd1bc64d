// Helpers shared by the shim's interposition files (sockets, waits, process control).
#pragma once

#include <poll.h>
#include <signal.h>

#include <cerrno>
#include <cstdint>

#include "shim/real.hh"
#include "shim/state.hh"

namespace pno::shim {

inline int fail(int e) {
  errno = e;
  return -1;
}

/// The offloaded socket behind `fd`, if it is one.
struct SockRef {
  SockDesc* d = nullptr;
  std::uint32_t index = 0;
  HostSocket s = channel::kNoSocket;
  explicit operator bool() const { return d != nullptr; }
};

inline SockRef offloaded(State* st, int fd) {
  FdRef r = st->fds.get(fd);
  if (r.kind != FdKind::socket) return {};
  SockDesc& d = st->socks[r.index];
  return {&d, r.index, d.sock.load(std::memory_order_acquire)};
}

/// Readiness of an offloaded socket; a dead engine makes every socket EPOLLERR|EPOLLHUP.
inline std::uint32_t ready_of(State* st, HostSocket s) {
  if (!st->ch->alive()) return EPOLLERR | EPOLLHUP;
  return st->ch->readiness(s);
}

/// Readiness for epoll/poll/select. A listener of a dead engine shows nothing: it will never have a
/// connection, and a level-triggered loop that keeps it registered (redis) would spin on
/// EPOLLERR|EPOLLHUP; accept() on it fails with ECONNABORTED at once.
inline std::uint32_t poll_ready_of(State* st, const SockDesc& d) {
  // One liveness check per call: this runs for every member of every emulated epoll scan.
  if (!st->ch->alive()) return d.listening.load(std::memory_order_relaxed) != 0 ? 0U : EPOLLERR | EPOLLHUP;
  const std::uint32_t r = st->ch->readiness(d.sock.load(std::memory_order_acquire));
  // After connect() reported the failure the socket is disconnected (tcp_disconnect): tcp_poll
  // shows TCP_CLOSE without shutdown flags, OUT|HUP.
  if ((r & EPOLLHUP) != 0 &&
      d.conn_state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(ConnState::failed)) {
    return EPOLLOUT | EPOLLHUP;
  }
  return r;
}

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

/// Waits until the socket shows one of `mask` or a pending error (EPOLLHUP only when in `mask`:
/// the TCP hang-up can precede the last bytes reaching the ring). timeout_us: 0 = forever,
/// -1 = do not wait. Returns 0, EAGAIN (timed out) or EINTR.
int wait_socket(State* st, HostSocket s, std::uint32_t mask, std::int64_t timeout_us);

/// Emulated epoll: whether instance `idx` has an offloaded member ready (no state consumed).
bool epoll_peek(State* st, std::uint32_t idx, int depth);

/// Releases one fd's reference to an epoll instance (closing the instance with the last one).
void epoll_release(State* st, std::uint32_t idx);

/// At hand-over of pending socket `fd` (SockDesc `sock_idx`, already marked offloaded): its
/// registrations in emulated epoll sets become offloaded members with the same events and data.
void epoll_adopt_pending(State* st, int fd, std::uint32_t sock_idx);

/// Moves the kick eventfd of an emulated epoll off `fd` (an internal fd, `r` its entry) to another
/// number and closes `fd`: the new number, or -1 with errno.
int epoll_relocate_kick(State* st, int fd, FdRef r);

/// Drops references of tracked objects when `fd` stops referring to them (close, dup2 over it).
void untrack_fd(State* st, int fd, FdRef r);

}  // namespace pno::shim
