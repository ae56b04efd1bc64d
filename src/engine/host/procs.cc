// The process table: watched pids (pidfds), and dropping a dead process's references.
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/host/impl.hh"

namespace pno::engine {

using namespace host;

/// Starts watching `pid` as the process of table entry `e`. A pid already gone counts as a death
/// (a child killed right after fork, before its parent registered it), handled by serve_deaths():
/// the host decides how many registrations it sends, so their deaths are budgeted per pass.
Errc HostService::Impl::watch_proc(Family& f, std::uint32_t e, pid_t pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    const int err = errno;
    if (err == ESRCH) {
      f.procs[e].pid = pid;
      if (!f.procs[e].gone) {
        f.procs[e].gone = true;
        ++f.gone;
      }
      return Errc::ok;
    }
    if (!f.watch_warned) {  // once: the host can ask for this as often as it likes
      f.watch_warned = true;
      log("cannot watch pid %d: %s (its sockets close with its family)", static_cast<int>(pid), std::strerror(err));
    }
    return static_cast<Errc>(err);
  }
  f.procs[e] = ProcWatch{fd, pid};  // pidfds are close-on-exec
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagProc | (std::uint64_t{e} << 40) | f.id;
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return Errc::ok;
}

/// Op::proc_register: the host forked a child that uses entry `e`. Everything is host input: an
/// index out of range, the shared entry or an entry already watched is refused.
Errc HostService::Impl::register_proc(Family& f, std::int64_t e, std::uint32_t pid) {
  if (e < 0 || e >= static_cast<std::int64_t>(c::proc_shared(f.geo)) || pid == 0 || pid > 0x3fffffff) {
    return Errc::inval;
  }
  if (!f.watch_pids) return Errc::op_not_supp;
  const auto idx = static_cast<std::uint32_t>(e);
  if (f.procs[idx].pidfd >= 0 || f.procs[idx].gone) return static_cast<Errc>(EBUSY);
  f.dma->write_u32(c::proc_off(f.geo, idx), static_cast<std::uint32_t>(c::ProcState::live));
  return watch_proc(f, idx, static_cast<pid_t>(pid));
}

/// Registrations of processes that were already gone: their deaths, kDeathBudget per pass.
void HostService::Impl::serve_deaths(Family& f) {
  std::uint32_t budget = kDeathBudget;
  for (std::uint32_t e = 0; f.gone > 0 && budget > 0 && e < f.procs.size(); ++e) {
    if (!f.procs[e].gone) continue;
    proc_died(f, e);
    --budget;
  }
  if (f.gone > 0) busy = true;  // the rest next pass, without sleeping first
}

/// Process table entry `e`'s process died (pidfd readable, or gone before it was watched): drop
/// its references. Its row is stable now (only its process wrote it). The entry is marked dead,
/// then (after a full fence: Dekker with the host's close(), see contract.hh) every socket it
/// held, and the one it was closing, is closed as Op::close would if no other entry counts it.
void HostService::Impl::proc_died(Family& f, std::uint32_t e) {
  ++stats.proc_deaths;
  busy = true;
  if (f.procs[e].gone) --f.gone;
  close_fd(f.procs[e].pidfd);
  const pid_t pid = f.procs[e].pid;
  f.procs[e] = ProcWatch{};
  const std::uint32_t n = f.geo.max_sockets;
  proc_row.assign(n, 0);
  f.dma->read(c::count_off(f.geo, e, 0), std::as_writable_bytes(std::span(proc_row)));
  std::uint32_t pending = 0;
  f.dma->read_u32(c::proc_off(f.geo, e) + offsetof(c::ProcEntry, pending), pending);
  f.dma->write_u32(c::proc_off(f.geo, e), static_cast<std::uint32_t>(c::ProcState::dead));
  f.dma->fence();
  proc_states.assign(f.geo.max_procs, c::ProcEntry{});
  f.dma->read(c::proc_off(f.geo, 0), std::as_writable_bytes(std::span(proc_states)));
  // The candidates: open sockets it counted, and the handle it was closing (its count may already
  // be zero while nobody sent the close).
  for (std::uint32_t i = 0; i < n; ++i) {
    proc_row[i] = proc_row[i] != 0 && f.socks[i].state != c::SlotState::free && !f.socks[i].closing ? 1 : 0;
  }
  if (const std::uint32_t pi = c::handle_index(pending); pending != 0 && pi < n &&
                                                        f.socks[pi].gen == c::handle_gen(pending) &&
                                                        f.socks[pi].state != c::SlotState::free && !f.socks[pi].closing) {
    proc_row[pi] = 1;
  }
  const std::uint32_t closed = drop_unheld(f, e);
  f.dma->write_u32(c::proc_off(f.geo, e), static_cast<std::uint32_t>(c::ProcState::free));
  if (closed != 0) {
    log("pid %d of pid %d's family died: %u of its sockets closed", static_cast<int>(pid), static_cast<int>(f.pid),
        closed);
  }
}

/// Closes each candidate socket (proc_row[i] != 0) that no entry other than the dead `e` counts
/// (`proc_states` read after the fence; `claiming` rows are being cleared and count nothing).
/// Unknown states count: a garbled table keeps sockets open, it never closes one another process
/// holds; so does a row that cannot be read. One row read per other counting entry, however many
/// sockets the host says the dead process held. Returns how many were closed.
std::uint32_t HostService::Impl::drop_unheld(Family& f, std::uint32_t e) {
  const std::uint32_t n = f.geo.max_sockets;
  std::uint32_t left = 0;
  for (std::uint32_t i = 0; i < n; ++i) left += proc_row[i];
  proc_other.resize(n);
  for (std::uint32_t o = 0; o < proc_states.size() && left > 0; ++o) {
    const auto st = static_cast<c::ProcState>(proc_states[o].state);
    if (o == e || st == c::ProcState::free || st == c::ProcState::dead || st == c::ProcState::claiming) continue;
    if (!f.dma->read(c::count_off(f.geo, o, 0), std::as_writable_bytes(std::span(proc_other)))) return 0;
    left = 0;
    for (std::uint32_t i = 0; i < n; ++i) {  // branch-free: vectorised, ~n/8 steps per row
      proc_row[i] = proc_other[i] != 0 ? 0 : proc_row[i];
      left += proc_row[i];
    }
  }
  std::uint32_t closed = 0;
  for (std::uint32_t i = 0; i < n && closed < left; ++i) {
    if (proc_row[i] == 0) continue;
    EngSock& s = f.socks[i];
    s.linger_wait = false;
    s.death_closed = true;
    ++stats.death_closes;
    close_socket(f, i, s);
    ++closed;
  }
  return closed;
}

}  // namespace pno::engine
