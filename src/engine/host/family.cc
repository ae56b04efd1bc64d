// A family's lifecycle: closing its sockets one by one, all of them once it detached, its end.
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

using namespace host;

void host::close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

host::Family::~Family() {
  for (int& fd : waiter_fds) close_fd(fd);
  for (ProcWatch& w : procs) close_fd(w.pidfd);
  close_fd(conn_fd);
  close_fd(doorbell_fd);
  if (map != nullptr) munmap(map, bytes);
}

HostService::Impl::Family* HostService::Impl::family(std::uint32_t id) {
  // On the data path (every TCP event): a binary search, not a scan of every family.
  const auto it = std::lower_bound(fams.begin(), fams.end(), id,
                                   [](const std::unique_ptr<Family>& f, std::uint32_t v) { return f->id < v; });
  return it != fams.end() && (*it)->id == id ? it->get() : nullptr;
}

/// The host's last reference went. Listeners close at once (the port is free again) and reset
/// the connections still in their accept queue, as Linux does; connections drain their send ring
/// first (pump() finishes them).
void HostService::Impl::close_socket(Family& f, std::uint32_t i, EngSock& s) {
  s.closing = true;
  if (s.state == c::SlotState::listening) {
    close_listener(f, i, s);
    return;
  }
  if (s.state == c::SlotState::open || s.state == c::SlotState::closed || s.id == kInvalidSocket) {
    if (s.id != kInvalidSocket) tcp->close(s.id);
    free_slot(f, i);
    return;
  }
  mark_dirty(f, i);
}

void HostService::Impl::close_listener(Family& f, std::uint32_t i, EngSock& s) {
  std::uint32_t acc_head = s.acc_tail;
  f.dma->read_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, acc_head), acc_head);
  if (s.acc_tail - acc_head > c::kAcceptQueue) acc_head = s.acc_tail;
  for (std::uint32_t k = acc_head; k != s.acc_tail; ++k) {
    c::AcceptEntry e{};
    f.dma->read(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, accq) + (k % c::kAcceptQueue) * sizeof(e),
                std::as_writable_bytes(std::span(&e, 1)));
    std::uint32_t ci = 0;
    // Only our own queued entries: the engine remembers what it queued by handle and state.
    if (EngSock* cs = resolve(f, e.sock, ci); cs != nullptr && cs->state == c::SlotState::connected) {
      tcp->abort(cs->id);
      free_slot(f, ci);
    }
  }
  if (s.id != kInvalidSocket) tcp->close(s.id);
  free_slot(f, i);
}

/// Every process of the family is gone: close its sockets as Linux does at exit. Listeners close
/// at once (port free, un-accepted connections reset); a connection with unread received data is
/// reset; the others first send everything their send ring still holds, then FIN (tcp_close with
/// data queued). The family lingers (region mapped, no commands; the host is gone, the region is
/// the engine's now) until the last of them is closed; a connection whose ring stops moving for
/// kDyingLimit, or that is not done after kDyingMax, is reset (expire_orphans).
void HostService::Impl::start_dying(Family& f) {
  f.dying = true;
  f.dying_until = now + kDyingMax;
  if (f.conn_fd >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, f.conn_fd, nullptr);
  if (f.doorbell_fd >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, f.doorbell_fd, nullptr);
  close_fd(f.conn_fd);
  close_fd(f.doorbell_fd);
  for (int& fd : f.waiter_fds) close_fd(fd);
  for (ProcWatch& w : f.procs) close_fd(w.pidfd);
  f.registered.clear();
  if (!f.active) return;
  for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::listening && !s.closing) close_socket(f, i, s);
  }
  for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::free) continue;
    s.linger_wait = false;
    s.closing = true;
    if (s.id == kInvalidSocket) {
      free_slot(f, i);
      continue;
    }
    const std::uint64_t so = c::slot_off(f.geo, i);
    std::uint32_t rcv_head = s.rcv_tail;
    f.dma->read_u32(so + offsetof(c::SocketSlot, rcv_head), rcv_head);
    if (s.rcv_tail != rcv_head) {
      tcp->abort(s.id);  // unread data: RST, the send ring is discarded (as Linux does)
      free_slot(f, i);
      continue;
    }
    // What the ring holds now is all there will be: a family marked dead for corruption may
    // still be writing, and its connection must end.
    s.orphan_tail = s.snd_head;
    f.dma->read_u32(so + offsetof(c::SocketSlot, snd_tail), s.orphan_tail);
    s.orphan_until = now + kDyingLimit;
    pump(f, i);  // drains what fits and closes when the ring is empty
  }
  log("pid %d's family detached; closing its sockets", static_cast<int>(f.pid));
}

/// A dying family's connections that could not deliver their whole send ring in time: reset (the
/// peer sees an error, never a clean EOF after a correct prefix). Returns whether any is left.
bool HostService::Impl::expire_orphans(Family& f) {
  bool left = false;
  for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::free) continue;
    if (now < s.orphan_until && now < f.dying_until) {
      left = true;
      continue;
    }
    if (s.id != kInvalidSocket) tcp->abort(s.id);
    free_slot(f, i);
  }
  return left;
}

/// The end of a dying family; nothing is open any more (expire_orphans reset what was left).
void HostService::Impl::finish_family(Family& f) {
  if (!f.active) return;
  for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::free) continue;
    if (s.id != kInvalidSocket) tcp->abort(s.id);  // never a FIN after what TCP did not get
    free_slot(f, i);
  }
  dma_past += f.dma->stats();
  ++stats.families_closed;
}

/// Families that are dead start dying; dying ones whose sockets are all closed go.
void HostService::Impl::reap() {
  for (std::size_t k = 0; k < fams.size();) {
    Family& f = *fams[k];
    if (f.dead && !f.dying) start_dying(f);
    if (f.dying && (!f.active || !expire_orphans(f))) {
      finish_family(f);
      fams.erase(fams.begin() + static_cast<std::ptrdiff_t>(k));
    } else {
      ++k;
    }
  }
}

bool HostService::hang_up_for_test(int family) {
  Impl& im = *impl_;
  if (family < 0 || static_cast<std::size_t>(family) >= im.fams.size()) return false;
  im.fams[static_cast<std::size_t>(family)]->dead = true;
  return true;
}

}  // namespace pno::engine
