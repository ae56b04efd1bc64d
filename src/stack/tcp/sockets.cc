// Socket slab (SocketId = 20-bit slot + generation), the 4-tuple and port tables, and the
// connection lifecycle shared by input, timers and the socket API: state changes, the send-buffer
// limit, drop, finish, TIME-WAIT, the queued FIN of shutdown/close, and the RST of an abort.
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

TcpLayer::Impl::Impl(const TcpConfig& c, Ipv4Output& ipo, Counters& counters, std::uint64_t secret, Instant t)
    : cfg(c),
      ip(ipo),
      ctr(counters),
      isn(secret),
      wheel(t),
      now(t),
      conns(std::max<std::uint32_t>(c.max_sockets, 16)) {
  cfg.max_sockets = std::clamp<std::uint32_t>(cfg.max_sockets, 16, kSlotMask);
  tw_cap = cfg.max_tw_buckets.value_or(cfg.max_sockets / 2);
  pending.reserve(cfg.max_sockets);
  events.resize(cfg.max_sockets);
  free_slots.reserve(cfg.max_sockets);
  port_counter = static_cast<std::uint32_t>(isn.hash(secret, 0x706f7274));
}

Sock* TcpLayer::Impl::lookup(SocketId id) {
  const std::uint32_t slot = id & kSlotMask;
  if (id == kInvalidSocket || slot >= slots) return nullptr;
  Sock& s = at(slot);
  // Orphans (closed by the user, or not yet accepted) finish their protocol work through the slot;
  // their ids are dead to the API, as a closed fd (EBADF).
  if (!s.in_use || s.gen != (id >> kSlotBits) || s.orphan) return nullptr;
  return &s;
}

const Sock* TcpLayer::Impl::lookup(SocketId id) const {
  return const_cast<Impl*>(this)->lookup(id);
}

Sock* TcpLayer::Impl::alloc() {
  std::uint32_t slot;
  if (!free_slots.empty()) {
    slot = free_slots.back();
    free_slots.pop_back();
  } else {
    if (slots >= cfg.max_sockets) return nullptr;
    if (slots % kChunk == 0) {
      // A chunk of sockets at a time: setup cost, never per segment.
      auto chunk = std::make_unique<std::vector<Sock>>();
      chunk->reserve(kChunk);
      for (std::size_t i = 0; i < kChunk; ++i) {
        chunk->emplace_back(cfg);
        chunk->back().slot = static_cast<std::uint32_t>(chunks.size() * kChunk + i);
      }
      chunks.push_back(std::move(chunk));
      wheel.reserve(static_cast<std::uint32_t>(chunks.size() * kChunk));
    }
    slot = slots++;
  }
  Sock& s = at(slot);
  s.in_use = true;
  ++live;
  return &s;
}

void TcpLayer::Impl::free_sock(Sock& s) {
  if (!s.in_use) return;
  unhash(s);
  if (s.tcb.state == TcpState::listen) listener_remove(s);
  rcv_budget_forget(s);
  wheel.cancel(slot_of(s));
  // Scheduling flags stay: a stale entry on the pending list or event queue is harmless, and
  // clearing the flag could queue the slot twice.
  const std::uint32_t gen = s.gen % ((1u << (32 - kSlotBits)) - 1) + 1;
  const bool in_pending = s.in_pending, event_queued = s.event_queued;
  if (s.tcb.state == TcpState::time_wait) --tw_count;
  s.tcb = Tcb(cfg);
  s.opt = SockOptions{};
  s.orphan = s.bound = s.bound_any = s.autobound = s.hashed = s.ever_connected = s.in_accept_queue = false;
  s.local = s.remote = Endpoint{};
  s.so_error = Errc::ok;
  s.backlog = 0;
  s.syn_queue = s.accept_len = 0;
  s.accept_head = s.accept_tail = s.parent = s.next_accept = kNoSlot;
  s.parent_gen = 0;
  s.gen = gen;
  s.in_pending = in_pending;
  s.event_queued = event_queued;
  s.in_use = false;
  free_slots.push_back(slot_of(s));
  --live;
}

bool TcpLayer::Impl::hash(Sock& s) {
  if (s.hashed) return true;
  if (!conns.insert(ConnTable::key(s.local.port, s.remote), slot_of(s))) return false;
  s.hashed = true;
  return true;
}

void TcpLayer::Impl::unhash(Sock& s) {
  if (!s.hashed) return;
  conns.erase(ConnTable::key(s.local.port, s.remote));
  s.hashed = false;
}

bool TcpLayer::Impl::tuple_in_use(std::uint16_t local_port, Endpoint remote) const {
  return conns.find(ConnTable::key(local_port, remote)) != ConnTable::kNone;
}

bool TcpLayer::Impl::port_bound(std::uint16_t port, const Sock* except, bool reuseaddr, bool explicit_only,
                                bool reuseport) const {
  // Linux inet_csk_bind_conflict: two sockets may share a port if both set SO_REUSEPORT (socket(7);
  // the same-uid rule has no meaning here), or if both set SO_REUSEADDR and neither listens.
  // Binds are rare, so a scan is fine here.
  for (std::uint32_t i = 0; i < slots; ++i) {
    const Sock& o = at(i);
    if (!o.in_use || &o == except || !o.bound || o.local.port != port) continue;
    if (explicit_only && o.autobound) continue;
    if (reuseport && o.opt.reuseport) continue;
    if (o.tcb.state == TcpState::listen) return true;
    if (!(reuseaddr && o.opt.reuseaddr)) return true;
  }
  return false;
}

void TcpLayer::Impl::set_state(Sock& s, TcpState st) {
  if (s.tcb.state == TcpState::time_wait) --tw_count;
  if (st == TcpState::time_wait) ++tw_count;
  s.tcb.state = st;
  rcv_budget_sync(s);
}

std::size_t TcpLayer::Impl::sndbuf_limit(const Sock& s) const {
  if (s.opt.sndbuf != 0) return s.opt.sndbuf;
  // Linux tcp_sndbuf_expand: room for about two congestion windows.
  const std::size_t want = 2 * std::size_t{s.tcb.cc.cwnd()};
  return std::clamp<std::size_t>(want, cfg.sndbuf_initial, std::max(cfg.sndbuf_initial, cfg.sndbuf_max));
}

void TcpLayer::Impl::drop_conn(Sock& s, Errc err) {
  Tcb& t = s.tcb;
  if (err != Errc::ok) s.so_error = err;
  if (err == Errc::conn_reset) ctr.inc(Counter::tcp_conn_resets);
  unhash(s);
  set_state(s, TcpState::closed);
  t.timers = Timers{};
  t.pend = Pending{};
  t.sndq.consume(t.sndq.size());
  if (s.parent != kNoSlot) {
    child_gone(s);
    return;
  }
  if (s.orphan) {
    free_sock(s);
    return;
  }
  notify(s);
}

void TcpLayer::Impl::finish(Sock& s) { drop_conn(s, Errc::ok); }

bool TcpLayer::Impl::enter_time_wait(Sock& s) {
  Tcb& t = s.tcb;
  if (t.state != TcpState::time_wait && tw_count >= tw_cap) {
    // Linux tcp_time_wait(): no TIME-WAIT bucket ("time wait bucket table overflow"), so the
    // connection is done at once (tcp_done); the ACK of the peer's FIN goes first (tcp_fin).
    ctr.inc(Counter::tcp_tw_overflow);
    if (t.pend.ack_now) {
      t.pend.ack_now = false;
      emit(s, wire::tcp_flag::kAck, t.snd.max, 0);
    }
    finish(s);
    return false;
  }
  set_state(s, TcpState::time_wait);
  t.timers = Timers{};
  t.timers.linger = now + 2 * cfg.msl;  // RFC 9293 §3.10.7.4: 2*MSL
  t.recovery = Recovery::none;
  if (s.orphan) {
    // Nothing will read or write again: give the buffers back, keep only the sequence state.
    t.sndq = ByteRing{};
    t.rcvq = ByteRing{};
  }
  notify(s);
  return true;
}

void TcpLayer::Impl::start_close(Sock& s) {
  Tcb& t = s.tcb;
  if (t.fin_queued) return;
  switch (t.state) {
    case TcpState::syn_received:
      // RFC 9293 §3.10.4: queue the FIN until ESTABLISHED; the ACK of our SYN moves us to
      // FIN-WAIT-1 (input.cc) and the FIN follows the SYN.
      t.fin_queued = true;
      break;
    case TcpState::established:
      t.fin_queued = true;
      set_state(s, TcpState::fin_wait_1);
      break;
    case TcpState::close_wait:
      t.fin_queued = true;
      set_state(s, TcpState::last_ack);
      break;
    case TcpState::syn_sent:
      finish(s);
      return;
    default:
      return;
  }
  program(s);
  notify(s);
}

void TcpLayer::Impl::reset_conn(Sock& s) {
  // Linux tcp_need_reset: a RST only where the peer may hold state for us.
  switch (s.tcb.state) {
    case TcpState::established:
    case TcpState::close_wait:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
    case TcpState::syn_received:
      s.tcb.pend.rst = true;
      program(s);
      return;
    default:
      finish(s);
  }
}

bool TcpLayer::Impl::close_idle(Sock& s) {
  if (s.tcb.state == TcpState::listen) {
    listener_close(s);
    return true;
  }
  s.orphan = true;
  if (s.tcb.state == TcpState::closed) {
    free_sock(s);
    return true;
  }
  return false;
}

}  // namespace pno::tcp
