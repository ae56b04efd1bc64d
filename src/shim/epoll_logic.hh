// The rules of emulated epoll for offloaded members, kept free of system calls so they can be
// tested on their own: which events a member reports given the socket's readiness and event
// marks, for level- and edge-triggered, EPOLLONESHOT and EPOLLRDHUP (epoll(7)).
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>

#include "channel/host.hh"
#include "shim/fd_table.hh"

namespace pno::shim {

/// Events that are always reported, whether asked for or not (epoll_ctl(2)).
inline constexpr std::uint32_t kAlwaysReported = EPOLLERR | EPOLLHUP;
/// Flags of the interest word that are not events.
inline constexpr std::uint32_t kEpollModeFlags = EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP;

/// Per-member state the report rules need.
struct MemberState {
  std::uint32_t events = 0;  ///< interest as given to epoll_ctl (events + mode flags)
  channel::EdgeMarks last{};
  bool seen = false;         ///< false until the first consuming look (and after EPOLL_CTL_MOD)
  bool disabled = false;     ///< EPOLLONESHOT fired; re-armed by EPOLL_CTL_MOD
  /// The last look reported nothing while the socket's event_seq was `quiet_seq`. Everything that
  /// can make a socket ready is published by the engine with an event_seq bump (the host's own
  /// calls only take readiness away), so until the sequence moves the member can be passed over
  /// with one load instead of reading its readiness and marks: most members of a busy epoll set
  /// are idle at any one time.
  bool quiet = false;
  std::uint32_t quiet_seq = 0;
};

/// Whether moving from `was` to `now` is an edge for a member asking for `events`: a status change
/// wakes every waiter (as Linux's state-change wake-up carries no key), new bytes or connections
/// only EPOLLIN members, send-ring room only EPOLLOUT members (fs/eventpoll.c ep_poll_callback
/// drops wake-ups whose key is outside the interest mask).
inline bool epoll_edge(std::uint32_t events, const channel::EdgeMarks& was, const channel::EdgeMarks& now) {
  if (was.status != now.status) return true;
  if ((events & (EPOLLIN | EPOLLRDNORM)) != 0 && was.in != now.in) return true;
  return (events & (EPOLLOUT | EPOLLWRNORM)) != 0 && was.out != now.out;
}

/// The events `m` reports for a socket whose readiness is `ready` and whose edge marks are
/// `marks`. With `consume` (epoll_wait) the member's state advances: an edge-triggered member then
/// stays quiet until an edge it asks for (epoll_edge), a one-shot member is disabled after
/// reporting. Without it (nested epoll readiness, poll on an epoll fd) nothing changes.
inline std::uint32_t epoll_member_events(MemberState& m, std::uint32_t ready, const channel::EdgeMarks& marks,
                                         bool consume) {
  if (m.disabled) return 0;
  if ((m.events & EPOLLET) != 0 && m.seen && !epoll_edge(m.events, m.last, marks)) return 0;
  std::uint32_t wanted = (m.events & ~kEpollModeFlags) | kAlwaysReported;
  std::uint32_t out = ready & wanted;
  if (consume) {
    // Edge-triggered: a look that found nothing the member asks for still counts as seen, so the
    // member waits for the next edge rather than reporting a later unrelated change.
    m.last = marks;
    m.seen = true;
    if (out != 0 && (m.events & EPOLLONESHOT) != 0) m.disabled = true;
  }
  return out;
}

/// Validates an epoll_ctl request the way Linux does (fs/eventpoll.c); 0 or an errno.
/// `target_is_epoll`: the fd being added is itself an epoll instance.
inline int epoll_ctl_check(int op, std::uint32_t events, bool existing, bool existing_exclusive,
                           bool target_is_epoll) {
  switch (op) {
    case EPOLL_CTL_ADD:
      if (existing) return EEXIST;
      if ((events & EPOLLEXCLUSIVE) != 0) {
        constexpr std::uint32_t allowed = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP |
                                          EPOLLET | EPOLLEXCLUSIVE;
        if ((events & ~allowed) != 0 || target_is_epoll) return EINVAL;
      }
      return 0;
    case EPOLL_CTL_MOD:
      if (!existing) return ENOENT;
      if ((events & EPOLLEXCLUSIVE) != 0 || existing_exclusive) return EINVAL;
      return 0;
    case EPOLL_CTL_DEL:
      if (!existing) return ENOENT;
      return 0;
    default:
      return EINVAL;
  }
}

enum class MemberKind : std::uint8_t { socket, nested };

/// One offloaded member of an emulated epoll instance. Guarded by the instance's lock.
struct EpollMember {
  std::atomic<std::uint32_t> next_free;
  std::uint32_t next;        ///< next member of the same instance (0 = end)
  std::uint32_t prev;        ///< previous member (0 = head)
  std::uint32_t owner;       ///< the EpollDesc index it belongs to; 0 while free
  int fd;                    ///< the fd number it was added under (key for MOD/DEL)
  MemberKind kind;
  std::uint32_t target;      ///< SockDesc index, or EpollDesc index for a nested instance
  std::uint32_t target_gen;  ///< the target's generation when added: a freed target is dropped
  std::uint64_t data;
  MemberState st;
};

/// An emulated epoll instance: the kernel epoll fd (its number is the application's epfd) holds
/// the kernel members and a kick eventfd; the offloaded members live here.
struct EpollDesc {
  std::atomic<std::uint32_t> next_free;
  std::atomic<std::uint32_t> refs;
  std::atomic<std::uint32_t> gen;
  SpinLock lock;
  std::uint32_t head, tail;            ///< member list, guarded by lock
  std::atomic<std::uint32_t> n_members;
  std::atomic<std::uint32_t> n_nested;
  std::atomic<std::uint32_t> sleepers;  ///< threads blocked in a wait on this instance
  /// Kernel-set entries this process added and did not delete (the kick eventfd aside). While it is
  /// 0, and no fork shares the set with another process, the kernel set can report nothing but the
  /// kick, so a wait with offloaded members skips its epoll_wait(0) system call.
  std::atomic<std::uint32_t> n_kernel;
  std::uint32_t fork_epoch;  ///< State::fork_epoch when created: another value means shared by fork
  std::atomic<std::uint32_t> unharvested;  ///< waits in a row that returned offloaded events only
  /// eventfd in the kernel set, written on epoll_ctl changes. Atomic: a close()/dup2() of the
  /// application onto its number moves it (epoll_relocate_kick) while other threads use it.
  std::atomic<int> kick_fd;
  std::atomic<std::uint32_t> kick_users;  ///< threads between loading kick_fd and using it

  void reset() {
    refs.store(0);
    lock.reset();
    head = tail = 0;
    n_members.store(0);
    n_nested.store(0);
    sleepers.store(0);
    n_kernel.store(0);
    fork_epoch = 0;
    unharvested.store(0);
    kick_fd.store(-1);
    kick_users.store(0);
  }
};

/// Data tag of the kick eventfd's entry in the kernel set; filtered out of every result.
inline constexpr std::uint64_t kKickTag = 0x706e6f2d6b69636bULL;  // "pno-kick"

}  // namespace pno::shim
