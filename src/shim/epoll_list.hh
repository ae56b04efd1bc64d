// The member list of an emulated epoll instance (EpollDesc, under its lock): shared by the
// interest list (epoll_ctl), the waits that scan it and the instance's last close.
#pragma once

#include "shim/state.hh"

namespace pno::shim {

inline EpollDesc* epoll_of(State* st, int epfd, std::uint32_t* idx = nullptr) {
  FdRef r = st->fds.get(epfd);
  if (r.kind != FdKind::epoll) return nullptr;
  if (idx != nullptr) *idx = r.index;
  return &st->epolls[r.index];
}

inline void link_tail(State* st, EpollDesc& ep, std::uint32_t mi) {
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
inline void detach(State* st, EpollDesc& ep, std::uint32_t mi) {
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

inline void unlink_member(State* st, EpollDesc& ep, std::uint32_t mi) {
  detach(st, ep, mi);
  EpollMember& m = st->members[mi];
  if (m.kind == MemberKind::nested) ep.n_nested.fetch_sub(1);
  m.owner = 0;
  st->members.free(mi);
  ep.n_members.fetch_sub(1);
}

inline bool member_alive(State* st, const EpollMember& m) {
  if (m.kind == MemberKind::socket) {
    return st->socks[m.target].gen.load(std::memory_order_acquire) == m.target_gen;
  }
  return st->epolls[m.target].gen.load(std::memory_order_acquire) == m.target_gen;
}

}  // namespace pno::shim
