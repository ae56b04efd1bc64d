// The command ring's operations on the TcpLayer, and pre-accept into a listener's accept queue.
#include <cstring>

#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

using namespace host;

namespace {

/// `cp` answering with `e` (Errc::ok: success).
c::Completion answer(c::Completion cp, Errc e) {
  cp.err = to_errno(e);
  return cp;
}

}  // namespace

c::Completion HostService::Impl::execute(Family& f, const c::Command& cmd) {
  ++stats.commands;
  c::Completion cp;
  cp.tag = cmd.tag;
  cp.op = cmd.op;
  if (cmd.op == c::Op::socket) {
    if (f.free_slots.empty()) return answer(cp, Errc::too_many);
    const auto r = tcp->socket();
    if (!r) return answer(cp, r.error());
    std::uint32_t i = 0;
    if (!alloc_slot(f, *r, c::SlotState::open, i)) {
      tcp->close(*r);
      return answer(cp, Errc::too_many);
    }
    cp.value = handle(f.socks[i], i);
    return cp;
  }
  if (cmd.op == c::Op::proc_register) return answer(cp, register_proc(f, cmd.value, cmd.addr));
  std::uint32_t i = 0;
  EngSock* sp = resolve(f, cmd.sock, i);
  if (sp == nullptr) {
    // A live process's last close racing with the death of the other holder: both saw the socket
    // unheld and the engine closed it first. The close is done; not an unknown handle.
    if (cmd.op == c::Op::close && i < f.socks.size() && f.socks[i].death_closed &&
        f.socks[i].gen == c::handle_gen(cmd.sock)) {
      return cp;
    }
    return answer(cp, Errc::badf);
  }
  switch (cmd.op) {
    case c::Op::bind:
    case c::Op::listen:
    case c::Op::connect:
      return exec_setup(f, i, *sp, cmd, cp);
    case c::Op::shutdown:
    case c::Op::close:
      return exec_teardown(f, i, *sp, cmd, cp);
    default:
      return exec_query(f, i, *sp, cmd, cp);
  }
}

/// bind, listen, connect.
c::Completion HostService::Impl::exec_setup(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                            c::Completion cp) {
  if (s.id == kInvalidSocket) return answer(cp, Errc::inval);
  switch (cmd.op) {
    case c::Op::bind:
      return answer(cp, tcp->bind(s.id, Endpoint{Ipv4Addr{cmd.addr}, cmd.port}));
    case c::Op::listen: {
      const Errc e = tcp->listen(s.id, cmd.value);
      if (e == Errc::ok && s.state != c::SlotState::listening) {
        s.state = c::SlotState::listening;
        s.changed = true;
        publish(f, i, s);  // before the completion: the host sees a listener once listen() returns
        mark_dirty(f, i);
      }
      return answer(cp, e);
    }
    case c::Op::connect: {
      const Errc e = tcp->connect(s.id, Endpoint{Ipv4Addr{cmd.addr}, cmd.port});
      if ((e == Errc::in_progress || e == Errc::ok) && s.state == c::SlotState::open) {
        s.state = c::SlotState::connecting;
        s.changed = true;
        publish(f, i, s);
        mark_dirty(f, i);
      }
      return answer(cp, e);
    }
    default:
      return answer(cp, Errc::inval);
  }
}

/// shutdown, close.
c::Completion HostService::Impl::exec_teardown(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                               c::Completion cp) {
  if (cmd.op == c::Op::shutdown) {
    if (cmd.how > static_cast<std::uint16_t>(ShutdownHow::both)) return answer(cp, Errc::inval);
    if (s.state != c::SlotState::connected && s.state != c::SlotState::connecting) return answer(cp, Errc::not_conn);
    const auto how = static_cast<ShutdownHow>(cmd.how);
    if (how != ShutdownHow::write) {
      tcp->shutdown(s.id, ShutdownHow::read);
      s.flags |= c::kFlagRxEof;
      s.rx_eof = true;
      s.changed = true;
    }
    if (how != ShutdownHow::read) {
      // Published at once: the host's readiness turns writable now (HostChannel::readiness),
      // and pollers skip sockets whose event_seq has not moved.
      s.shut_wr_pending = true;
      s.changed = true;
    }
    publish(f, i, s);
    mark_dirty(f, i);
    return cp;
  }
  if (s.state == c::SlotState::connected && s.id != kInvalidSocket) {
    const auto lg = tcp->getsockopt(s.id, SockOpt::linger);
    if (lg && *lg > 0) {
      s.linger_wait = true;
      s.linger_tag = cmd.tag;
      s.linger_until = now + std::chrono::seconds(*lg);
      close_socket(f, i, s);
      cp.tag = kDeferred;
      return cp;
    }
  }
  close_socket(f, i, s);
  return cp;
}

/// Options, names, TcpInfo, the pending error.
c::Completion HostService::Impl::exec_query(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                            c::Completion cp) {
  if (cmd.op == c::Op::take_error) {
    if ((s.flags & c::kFlagError) != 0) {
      const auto e = static_cast<Errc>(s.err);
      s.flags &= ~c::kFlagError;
      s.changed = true;
      publish(f, i, s);
      return answer(cp, e);
    }
    return answer(cp, s.id == kInvalidSocket ? Errc::ok : tcp->take_error(s.id));
  }
  const bool known = cmd.op == c::Op::setsockopt || cmd.op == c::Op::getsockopt ||
                     cmd.op == c::Op::local_endpoint || cmd.op == c::Op::peer_endpoint || cmd.op == c::Op::info;
  if (!known || s.id == kInvalidSocket) return answer(cp, Errc::inval);
  switch (cmd.op) {
    case c::Op::setsockopt:
      return answer(cp, tcp->setsockopt(s.id, static_cast<SockOpt>(cmd.how), cmd.value));
    case c::Op::getsockopt: {
      const auto r = tcp->getsockopt(s.id, static_cast<SockOpt>(cmd.how));
      if (!r) return answer(cp, r.error());
      cp.value = *r;
      return cp;
    }
    case c::Op::local_endpoint:
    case c::Op::peer_endpoint: {
      const auto r = cmd.op == c::Op::local_endpoint ? tcp->local_endpoint(s.id) : tcp->peer_endpoint(s.id);
      if (!r) return answer(cp, r.error());
      cp.value = c::endpoint_pack((*r).addr.v, (*r).port);
      return cp;
    }
    default: {  // Op::info
      const auto r = tcp->info(s.id);
      if (!r) return answer(cp, r.error());
      static_assert(sizeof(TcpInfo) <= sizeof(cp.payload));
      std::memcpy(cp.payload, &*r, sizeof(TcpInfo));
      return cp;
    }
  }
}

void HostService::Impl::pre_accept(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl) {
  const std::uint64_t so = c::slot_off(f.geo, i);
  std::uint32_t head = hl.acc_head;
  for (;;) {
    std::uint32_t q = s.acc_tail - head;
    if (q > c::kAcceptQueue) q = c::kAcceptQueue;  // nonsense from the host: treat as full
    bool any = false;
    while (q < c::kAcceptQueue) {
      if (f.free_slots.empty()) {
        // No slot for another connection: it stays in TCP's accept queue (up to the backlog, as
        // Linux leaves it in the listener's queue; SYNs beyond are refused there), and the
        // listener is pumped again once a slot is free (serve()). Never reset for lack of a slot.
        f.accept_starved = true;
        break;
      }
      Endpoint peer;
      const auto r = tcp->accept(s.id, &peer);
      if (!r) break;
      std::uint32_t ni = 0;
      if (!alloc_slot(f, *r, c::SlotState::connected, ni)) {
        tcp->abort(*r);
        continue;
      }
      c::AcceptEntry e{};
      e.sock = handle(f.socks[ni], ni);
      e.addr = peer.addr.v;
      e.port = peer.port;
      f.dma->write(so + offsetof(c::SocketSlot, accq) + (s.acc_tail % c::kAcceptQueue) * sizeof(e),
                   std::as_bytes(std::span(&e, 1)));
      ++s.acc_tail;
      ++q;
      ++stats.accepted;
      any = true;
      mark_dirty(f, ni);
    }
    if (!any) return;
    f.dma->write_u32(so + offsetof(c::SocketSlot, acc_tail), s.acc_tail);
    s.changed = true;
    // Dekker with the host's accept(), which stores acc_head, fences, then re-reads acc_tail and
    // kicks only if the queue was full before its accept. Our acc_head was read before this
    // refill: an accept meanwhile saw the old tail (no kick) and leaves the queue short of full
    // from then on, so no kick would ever come while TCP still holds connections. Re-read it
    // after the tail store: either we see that accept and fill again, or it sees our tail.
    f.dma->fence();
    std::uint32_t now_head = head;
    if (!f.dma->read_u32(so + offsetof(c::SocketSlot, acc_head), now_head) || now_head == head) return;
    head = now_head;
  }
}

}  // namespace pno::engine
