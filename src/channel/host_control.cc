// The host end of the channel (see host.hh, contract.hh and README.md): control calls (one command
// on the command ring, answered on the completion ring through a reply slot), socket references,
// and the process table entries of fork.
#include <cstring>
#include <type_traits>

#include "channel/host_impl.hh"

namespace pno::channel {

namespace {
Errc cpl_err(const c::Completion& cp) { return static_cast<Errc>(cp.err); }

c::Command sock_cmd(c::Op op, HostSocket s) {
  c::Command cmd;
  cmd.op = op;
  cmd.sock = s;
  return cmd;
}

/// A command naming an address and port (bind, connect).
c::Command endpoint_cmd(c::Op op, HostSocket s, Endpoint ep) {
  c::Command cmd = sock_cmd(op, s);
  cmd.addr = ep.addr.v;
  cmd.port = ep.port;
  return cmd;
}
}  // namespace

// --- the command ring and reply slots

bool HostChannel::Impl::push_command(const c::Command& cmd) {
  for (;;) {
    std::size_t pushed = 0;
    {
      RegionLock lk(hdr->cmd_lock.owner, pid);
      pushed = ring<c::Command>(geo.cmd_off, geo.cmd_entries).push(std::span(&cmd, 1));
    }
    notify();
    if (pushed == 1) return true;
    if (!check_alive()) return false;
    sched_yield();  // a full command ring: the engine is behind, let it run
  }
}

bool HostChannel::Impl::post(c::Command cmd) {
  cmd.tag = c::kNoReply;
  if (dead.load(std::memory_order_relaxed)) return false;
  return push_command(cmd);
}

std::uint32_t HostChannel::Impl::claim_reply_slot() {
  for (;;) {
    const std::uint32_t start = at(hdr->reply_alloc).fetch_add(1, std::memory_order_relaxed);
    for (std::uint32_t k = 0; k < c::kReplySlots; ++k) {
      const std::uint32_t t = (start + k) % c::kReplySlots;
      std::uint32_t expect = 0;
      if (at(reply(t).state).compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) return t;
    }
    sched_yield();
  }
}

bool HostChannel::Impl::call(c::Command cmd, c::Completion& out) {
  if (dead.load(std::memory_order_relaxed)) return false;
  // A reply slot: its index is the tag.
  const std::uint32_t tag = claim_reply_slot();
  cmd.tag = static_cast<std::uint16_t>(tag);
  if (!push_command(cmd)) {
    at(reply(tag).state).store(0, std::memory_order_release);
    return false;
  }
  c::ReplySlot& rs = reply(tag);
  Waiter* w = nullptr;
  for (std::uint32_t spins = 0;; ++spins) {
    drain_completions((spins & 63) == 63);
    if (at(rs.state).load(std::memory_order_acquire) == 2) break;
    if (spins < 200) continue;
    if (spins < 400) {
      sched_yield();
      continue;
    }
    // Sleep until the engine makes progress (it wakes armed waiters after posting completions).
    if (w == nullptr) w = thread_waiter();
    if (w != nullptr) {
      arm(*w);
      drain_completions();
      if (at(rs.state).load(std::memory_order_acquire) != 2) {
        pollfd p[2] = {{w->fd(), POLLIN, 0}, {conn_fd.load(), POLLIN, 0}};
        ::poll(p, 2, 100);
      }
      disarm(*w);
    } else {
      pollfd p{conn_fd.load(), POLLIN, 0};
      ::poll(&p, 1, 1);
    }
    if (!check_alive()) {
      // Leave the slot "waiting": a late completion for it is dropped by the state check.
      return false;
    }
  }
  out = rs.cpl;
  at(rs.state).store(0, std::memory_order_release);
  return true;
}

void HostChannel::Impl::drain_completions(bool may_steal) {
  c::RegionHeader& h = *hdr;
  std::uint32_t expect = 0;
  if (!at(h.cpl_lock.owner).compare_exchange_strong(expect, pid, std::memory_order_acquire)) {
    // Someone else drains for everyone. A holder killed while draining would block every control
    // call of the family: take the lock over once its process is gone.
    if (!may_steal || expect == pid || ::kill(static_cast<pid_t>(expect), 0) == 0 || errno != ESRCH) return;
    if (!at(h.cpl_lock.owner).compare_exchange_strong(expect, pid, std::memory_order_acquire)) return;
  }
  auto r = ring<c::Completion>(geo.cpl_off, geo.cpl_entries);
  c::Completion batch[8];
  for (;;) {
    const std::size_t n = r.pop(batch);
    for (std::size_t k = 0; k < n; ++k) {
      if (batch[k].tag >= c::kReplySlots) continue;
      c::ReplySlot& rs = reply(batch[k].tag);
      if (at(rs.state).load(std::memory_order_acquire) != 1) continue;
      rs.cpl = batch[k];
      at(rs.state).store(2, std::memory_order_release);
    }
    if (n < std::size(batch)) break;
  }
  at(h.cpl_lock.owner).store(0, std::memory_order_release);
}

Result<c::Completion> HostChannel::Impl::sock_call(HostSocket s, const c::Command& cmd, Errc if_gone) {
  if (lookup(s) == nullptr) return Errc::badf;
  c::Completion cp;
  if (!call(cmd, cp)) return if_gone;
  if (cp.err != 0) return cpl_err(cp);
  return cp;
}

Errc HostChannel::Impl::errc_call(HostSocket s, const c::Command& cmd, Errc if_gone) {
  return sock_call(s, cmd, if_gone).error();
}

Result<Endpoint> HostChannel::Impl::endpoint_call(HostSocket s, c::Op op) {
  const Errc if_gone = op == c::Op::peer_endpoint ? Errc::not_conn : Errc::conn_reset;
  const Result<c::Completion> cp = sock_call(s, sock_cmd(op, s), if_gone);
  if (!cp) return cp.error();
  const c::PackedEndpoint ep = c::endpoint_unpack(cp.value().value);
  return Endpoint{Ipv4Addr{ep.addr}, ep.port};
}

// --- control calls

Result<HostSocket> HostChannel::socket() {
  c::Command cmd;
  cmd.op = c::Op::socket;
  c::Completion cp;
  if (!impl_->call(cmd, cp)) return Errc::no_mem;
  if (cp.err != 0) return cpl_err(cp);
  const auto h = static_cast<HostSocket>(cp.value);
  if (impl_->lookup(h) == nullptr) return Errc::no_mem;
  impl_->hold_new(h);
  return h;
}

Errc HostChannel::bind(HostSocket s, Endpoint local) {
  return impl_->errc_call(s, endpoint_cmd(c::Op::bind, s, local), Errc::addr_not_avail);
}

Errc HostChannel::listen(HostSocket s, int backlog) {
  c::Command cmd = sock_cmd(c::Op::listen, s);
  cmd.value = backlog;
  return impl_->errc_call(s, cmd, Errc::inval);
}

Result<HostSocket> HostChannel::accept(HostSocket listener, Endpoint* peer) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(listener);
  if (sl == nullptr) return Errc::badf;
  if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_aborted;
  c::AcceptEntry e{};
  bool was_full = false;
  {
    RegionLock lk(sl->recv_lock.owner, im.pid);
    const std::uint32_t head = at(sl->acc_head).load(std::memory_order_relaxed);
    const std::uint32_t tail = at(sl->acc_tail).load(std::memory_order_acquire);
    if (tail == head || tail - head > c::kAcceptQueue) {
      return at(sl->state).load(std::memory_order_relaxed) == c::SlotState::listening ? Errc::again : Errc::inval;
    }
    e = sl->accq[head % c::kAcceptQueue];
    at(sl->acc_head).store(head + 1, std::memory_order_release);
    // Dekker with the engine's refill (it stores acc_tail, fences, re-reads acc_head): whether the
    // queue was full before this accept is judged by the tail as it is after our head store, so a
    // refill racing with this accept is seen here or sees our head there. The engine moves waiting
    // connections into a full queue only when kicked.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    was_full = at(sl->acc_tail).load(std::memory_order_acquire) - head >= c::kAcceptQueue;
  }
  if (was_full) im.kick(c::handle_index(listener));
  c::SocketSlot* ns = im.lookup(e.sock);
  if (ns == nullptr) return Errc::conn_aborted;
  im.hold_new(e.sock);
  if (peer != nullptr) *peer = Endpoint{Ipv4Addr{e.addr}, e.port};
  return static_cast<HostSocket>(e.sock);
}

Errc HostChannel::connect(HostSocket s, Endpoint remote) {
  return impl_->errc_call(s, endpoint_cmd(c::Op::connect, s, remote), Errc::net_unreach);
}

Errc HostChannel::shutdown(HostSocket s, ShutdownHow how) {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  if (how != ShutdownHow::read) {
    // Taken under the send lock: a send() racing with shutdown either lands before the FIN or fails.
    RegionLock lk(sl->send_lock.owner, impl_->pid);
    at(sl->host_shut_wr).store(1, std::memory_order_release);
  }
  c::Command cmd = sock_cmd(c::Op::shutdown, s);
  cmd.how = static_cast<std::uint16_t>(how);
  c::Completion cp;
  if (!impl_->call(cmd, cp)) return Errc::not_conn;
  return cpl_err(cp);
}

Errc HostChannel::setsockopt(HostSocket s, SockOpt opt, int value) {
  c::Command cmd = sock_cmd(c::Op::setsockopt, s);
  cmd.how = static_cast<std::uint16_t>(opt);
  cmd.value = value;
  const Errc e = impl_->errc_call(s, cmd, Errc::conn_reset);
  if (opt == SockOpt::linger && e == Errc::ok) {
    // In the region, not in this process: whichever process of the family closes last must know.
    if (c::SocketSlot* sl = impl_->lookup(s); sl != nullptr) {
      at(sl->host_linger).store(value > 0 ? 1 : 0, std::memory_order_relaxed);
    }
  }
  return e;
}

Result<int> HostChannel::getsockopt(HostSocket s, SockOpt opt) {
  c::Command cmd = sock_cmd(c::Op::getsockopt, s);
  cmd.how = static_cast<std::uint16_t>(opt);
  const Result<c::Completion> cp = impl_->sock_call(s, cmd, Errc::conn_reset);
  if (!cp) return cp.error();
  return static_cast<int>(cp.value().value);
}

Result<Endpoint> HostChannel::local_endpoint(HostSocket s) { return impl_->endpoint_call(s, c::Op::local_endpoint); }
Result<Endpoint> HostChannel::peer_endpoint(HostSocket s) { return impl_->endpoint_call(s, c::Op::peer_endpoint); }

Result<TcpInfo> HostChannel::info(HostSocket s) {
  static_assert(sizeof(TcpInfo) <= sizeof(c::Completion::payload));
  static_assert(std::is_trivially_copyable_v<TcpInfo>);
  const Result<c::Completion> cp = impl_->sock_call(s, sock_cmd(c::Op::info, s), Errc::conn_reset);
  if (!cp) return cp.error();
  TcpInfo ti;
  std::memcpy(&ti, cp.value().payload, sizeof(ti));
  return ti;
}

Errc HostChannel::take_error(HostSocket s) {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  if (impl_->dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
  if (at(sl->err_taken).load(std::memory_order_acquire) != 0) return Errc::ok;
  c::Completion cp;
  if (!impl_->call(sock_cmd(c::Op::take_error, s), cp)) return Errc::conn_reset;
  if (cp.err != 0) at(sl->err_taken).store(1, std::memory_order_release);
  return cpl_err(cp);
}

void HostChannel::retain(HostSocket s) {
  if (impl_->lookup(s) != nullptr) impl_->count_up(impl_->own_proc(), c::handle_index(s));
}

Errc HostChannel::Impl::close_unheld(HostSocket s, bool wait) {
  // Without a lingering close nothing about the connection's end is reported to the caller, so
  // the close is posted and the caller goes on (a control round trip per close otherwise: a spin,
  // yields and often a sleep while the engine is busy). Commands run in ring order, so anything
  // the process asks next (a bind to the same port, say) comes after it.
  if (!wait) {
    post(sock_cmd(c::Op::close, s));
    return Errc::ok;
  }
  c::Completion cp;
  if (!call(sock_cmd(c::Op::close, s), cp)) return Errc::ok;  // a dead engine: nothing left to close
  return cpl_err(cp);
}

Errc HostChannel::close(HostSocket s) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const bool lingering = at(sl->host_linger).load(std::memory_order_relaxed) != 0;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t e = im.own_proc();
  // `pending` tells the engine which socket we were closing should we die inside this call (our
  // count already down, the close not sent yet).
  const bool mine = e != c::proc_shared(im.geo);
  if (mine) at(im.pentry(e).pending).store(s, std::memory_order_relaxed);
  // Still counted by this entry: not the last reference, nothing to scan.
  Errc r = Errc::ok;
  if (im.count_down(e, i) == 0 && im.unheld(i)) r = im.close_unheld(s, lingering);
  if (mine) at(im.pentry(e).pending).store(0, std::memory_order_relaxed);
  return r;
}

// --- fork

std::uint32_t HostChannel::fork_reserve() {
  Impl& im = *impl_;
  const std::uint32_t shared = c::proc_shared(im.geo);
  for (std::uint32_t e = 0; e < shared; ++e) {
    std::uint32_t expect = static_cast<std::uint32_t>(c::ProcState::free);
    // Claimed in a state nobody counts while the stale row of a previous process is cleared.
    if (!at(im.pentry(e).state)
             .compare_exchange_strong(expect, static_cast<std::uint32_t>(c::ProcState::claiming),
                                      std::memory_order_acq_rel)) {
      continue;
    }
    for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) at(im.count(e, i)).store(0, std::memory_order_relaxed);
    at(im.pentry(e).pid).store(0, std::memory_order_relaxed);
    at(im.pentry(e).pending).store(0, std::memory_order_relaxed);
    at(im.pentry(e).state).store(static_cast<std::uint32_t>(c::ProcState::reserved), std::memory_order_seq_cst);
    return e;
  }
  return shared;  // table full: the child's references go with the family, as before
}

void HostChannel::fork_retain(std::uint32_t ticket, HostSocket s) {
  Impl& im = *impl_;
  if (ticket >= im.geo.max_procs || im.lookup(s) == nullptr) return;
  im.count_up(ticket, c::handle_index(s));
}

void HostChannel::fork_parent(std::uint32_t ticket, pid_t child) {
  Impl& im = *impl_;
  if (ticket >= c::proc_shared(im.geo)) return;
  if (child > 0) {
    at(im.pentry(ticket).pid).store(static_cast<std::uint32_t>(child), std::memory_order_relaxed);
    c::Command cmd;
    cmd.op = c::Op::proc_register;
    cmd.value = static_cast<std::int32_t>(ticket);
    cmd.addr = static_cast<std::uint32_t>(child);
    c::Completion cp;
    // Not registered (engine gone or out of pidfds): the entry keeps counting until the family ends.
    (void)im.call(cmd, cp);
    return;
  }
  // No child: its references go as if it had closed them, then the entry is free again.
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) {
    if (at(im.count(ticket, i)).exchange(0, std::memory_order_seq_cst) == 0) continue;
    if (!im.unheld(i)) continue;
    c::SocketSlot& sl = im.slot(i);
    if (at(sl.state).load(std::memory_order_acquire) == c::SlotState::free) continue;
    (void)im.close_unheld(c::handle_make(i, at(sl.gen).load(std::memory_order_acquire)), false);
  }
  at(im.pentry(ticket).state).store(static_cast<std::uint32_t>(c::ProcState::free), std::memory_order_seq_cst);
}

void HostChannel::after_fork_child() { after_fork_child(c::kNoProc); }

void HostChannel::after_fork_child(std::uint32_t ticket) {
  Impl& im = *impl_;
  // Without a ticket (retain() before fork, as before the process table) the child counts in its
  // parent's entry: exact while both live, but the parent's death drops the child's references too.
  if (ticket < im.geo.max_procs) {
    im.proc = ticket;
    if (ticket != c::proc_shared(im.geo)) {
      at(im.pentry(ticket).pid).store(static_cast<std::uint32_t>(getpid()), std::memory_order_relaxed);
    }
  }
  im.pid = static_cast<std::uint32_t>(getpid());
  im.fork_gen.fetch_add(1, std::memory_order_release);
  im.drop_parent_waiters();
  // A shared file mapping's page table entries are not copied to the child.
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) im.warmed[i].store(false, std::memory_order_relaxed);
}

}  // namespace pno::channel
