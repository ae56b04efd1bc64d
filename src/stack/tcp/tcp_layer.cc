// TcpLayer: socket slab, demux, the socket API with Linux semantics, readiness and events, and the
// poll/next_deadline driver. Protocol processing lives in input.cc, output.cc, recovery.cc and
// listener.cc (see layer_impl.hh).
#include "stack/tcp/tcp_layer.hh"

#include <algorithm>
#include <bit>
#include <cstring>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

// =============================================================================================
// Impl: slab, tables, state helpers

TcpLayer::Impl::Impl(const TcpConfig& c, Ipv4Output& ipo, Counters& counters, std::uint64_t secret, Instant t)
    : cfg(c),
      ip(ipo),
      ctr(counters),
      isn(secret),
      wheel(t),
      now(t),
      conns(std::max<std::uint32_t>(c.max_sockets, 16)) {
  cfg.max_sockets = std::clamp<std::uint32_t>(cfg.max_sockets, 16, kSlotMask);
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
  // Scheduling flags stay: a stale entry on the pending list or event queue is harmless, and
  // clearing the flag could queue the slot twice.
  const std::uint32_t gen = s.gen % ((1u << (32 - kSlotBits)) - 1) + 1;
  const bool in_pending = s.in_pending, event_queued = s.event_queued;
  s.tcb = Tcb(cfg);
  s.opt = SockOptions{};
  s.orphan = s.bound = s.bound_any = s.autobound = s.hashed = s.ever_connected = s.in_accept_queue = false;
  s.local = s.remote = Endpoint{};
  s.so_error = Errc::ok;
  s.backlog = 0;
  s.syn_queue = s.accept_len = 0;
  s.accept_head = s.accept_tail = s.parent = s.next_accept = kNoSlot;
  s.parent_gen = 0;
  s.wheel_at = kNever;
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
  s.tcb.state = st;
  rcv_budget_sync(s);
}

void TcpLayer::Impl::notify(Sock& s) {
  if (s.orphan || s.event_queued || !s.in_use) return;
  s.event_queued = true;
  events[(ev_head + ev_len) % events.size()] = slot_of(s);
  ++ev_len;
}

void TcpLayer::Impl::program(Sock& s) {
  if (s.in_pending) return;
  s.in_pending = true;
  pending.push_back(slot_of(s));
}

void TcpLayer::Impl::arm(Sock& s) {
  if (!s.in_use) return;
  const Instant d = s.tcb.timers.earliest();
  if (d == kNever) {
    s.wheel_at = kNever;  // any entry still in the wheel is now stale
    return;
  }
  if (s.wheel_at == kNever || d < s.wheel_at) {
    wheel.schedule(id_of(s), d);
    s.wheel_at = d;
  }
  // A later deadline keeps the earlier entry: it fires early, finds nothing due and re-arms.
}

std::size_t TcpLayer::Impl::sndbuf_limit(const Sock& s) const {
  if (s.opt.sndbuf != 0) return s.opt.sndbuf;
  // Linux tcp_sndbuf_expand: room for about two congestion windows.
  const std::size_t want = 2 * std::size_t{s.tcb.cc.cwnd()};
  return std::clamp<std::size_t>(want, cfg.sndbuf_initial, std::max(cfg.sndbuf_initial, cfg.sndbuf_max));
}

std::uint32_t TcpLayer::Impl::readiness(const Sock& s) const {
  const Tcb& t = s.tcb;
  if (t.state == TcpState::listen) return s.accept_len > 0 ? std::uint32_t{kReadable} : 0u;
  std::uint32_t r = 0;
  if (s.so_error != Errc::ok) r |= kError;
  const bool closed = t.state == TcpState::closed;
  // Linux tcp_poll: RCV_SHUTDOWN gives IN|RDHUP; both shut (or CLOSE) gives HUP; SEND_SHUTDOWN OUT.
  const bool rcv_shut = t.fin_rcvd || t.rd_shut || (closed && s.ever_connected);
  const bool snd_shut = t.fin_queued || (closed && s.ever_connected);
  if (rcv_shut) r |= kReadable | kReadHangup;
  if (!t.rcvq.empty()) r |= kReadable;
  if ((rcv_shut && snd_shut) || closed) r |= kHangup;
  if (t.state == TcpState::syn_sent || t.state == TcpState::syn_received) return r;
  if (snd_shut || closed) {
    r |= kWritable;
  } else {
    const std::size_t limit = sndbuf_limit(s);
    const std::size_t used = t.sndq.size();
    if (used < limit && limit - used >= used / 2) r |= kWritable;
  }
  return r;
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

void TcpLayer::Impl::enter_time_wait(Sock& s) {
  Tcb& t = s.tcb;
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

// =============================================================================================
// TcpLayer: driver

TcpLayer::TcpLayer(const TcpConfig& cfg, Ipv4Output& ip, Counters& counters, std::uint64_t secret, Instant now)
    : impl_(std::make_unique<Impl>(cfg, ip, counters, secret, now)) {}

TcpLayer::~TcpLayer() = default;

void TcpLayer::on_segment(const Ipv4RxInfo& ip, ByteSpan segment, Instant now) {
  Impl& m = *impl_;
  m.now = std::max(m.now, now);
  m.ctr.inc(Counter::tcp_rx);
  const auto r = wire::TcpRepr::parse(segment, ip.src, ip.dst, !ip.l4_checksum_good);
  if (!r) {
    m.ctr.inc(r.reason());
    return;
  }
  const wire::TcpRepr& seg = *r;
  // Flag combinations no correct sender produces; Linux drops SYN+RST and SYN+FIN too.
  const std::uint8_t f = seg.flags;
  if ((f & wire::tcp_flag::kSyn) && (f & (wire::tcp_flag::kRst | wire::tcp_flag::kFin))) {
    m.ctr.inc(Counter::tcp_drop_bad_flags);
    return;
  }
  if (seg.src_port == 0 || seg.dst_port == 0) {
    m.ctr.inc(Counter::tcp_drop_bad_flags);
    return;
  }
  m.input(SegIn{ip, seg});
}

void TcpLayer::poll(Instant now) {
  Impl& m = *impl_;
  m.now = std::max(m.now, now);
  m.wheel.expire(m.now, [&m](std::uint32_t key, Instant deadline) {
    const std::uint32_t slot = key & kSlotMask;
    if (slot >= m.slots) return;
    Sock& s = m.at(slot);
    if (!s.in_use || s.gen != (key >> kSlotBits) || s.wheel_at != deadline) return;  // stale
    s.wheel_at = kNever;
    m.on_timers(s);
    m.arm(s);
  });
  // Flush everything programmed. Flushing may program more (a freed slot reused by accept...),
  // so loop until the list is empty.
  for (std::size_t i = 0; i < m.pending.size(); ++i) {
    const std::uint32_t slot = m.pending[i];
    Sock& s = m.at(slot);
    s.in_pending = false;
    if (s.in_use) m.flush(s);
  }
  m.pending.clear();
}

Instant TcpLayer::next_deadline() const {
  const Impl& m = *impl_;
  if (!m.pending.empty()) return m.now;
  return m.wheel.next_deadline();
}

// =============================================================================================
// Socket API

Result<SocketId> TcpLayer::socket() {
  Impl& m = *impl_;
  Sock* s = m.alloc();
  if (s == nullptr) return Errc::too_many;
  return m.id_of(*s);
}

Errc TcpLayer::bind(SocketId id, Endpoint local) {
  Impl& m = *impl_;
  Sock* s = m.lookup(id);
  if (s == nullptr) return Errc::badf;
  if (s->bound || s->tcb.state != TcpState::closed || s->ever_connected) return Errc::inval;
  if (!local.addr.is_any() && local.addr != m.ip.local_addr()) return Errc::addr_not_avail;
  if (local.port == 0) {
    local.port = m.pick_ephemeral(Endpoint{});
    if (local.port == 0) return Errc::addr_in_use;
  } else if (m.port_bound(local.port, s, s->opt.reuseaddr, false, s->opt.reuseport)) {
    return Errc::addr_in_use;
  }
  s->local = Endpoint{m.ip.local_addr(), local.port};
  s->bound = true;
  s->bound_any = local.addr.is_any();
  return Errc::ok;
}

Errc TcpLayer::listen(SocketId id, int backlog) {
  Impl& m = *impl_;
  Sock* s = m.lookup(id);
  if (s == nullptr) return Errc::badf;
  if (s->tcb.state == TcpState::listen) {
    s->backlog = std::clamp(backlog, 0, 65535);
    return Errc::ok;
  }
  if (s->tcb.state != TcpState::closed || s->ever_connected) return Errc::inval;
  if (!s->bound) {
    const std::uint16_t p = m.pick_ephemeral(Endpoint{});
    if (p == 0) return Errc::addr_in_use;
    s->local = Endpoint{m.ip.local_addr(), p};
    s->bound = true;
    s->bound_any = true;  // inet_autobind() binds the wildcard address
  }
  // Linux checks the port again at listen() (inet_csk_get_port): joining listeners needs
  // SO_REUSEPORT on every member, as set now.
  if (const auto it = m.listeners.find(s->local.port); it != m.listeners.end()) {
    if (!s->opt.reuseport) return Errc::addr_in_use;
    for (const std::uint32_t o : it->second) {
      if (!m.at(o).opt.reuseport) return Errc::addr_in_use;
    }
  }
  m.listener_add(*s);
  s->backlog = std::clamp(backlog, 0, 65535);
  m.set_state(*s, TcpState::listen);
  return Errc::ok;
}

Result<SocketId> TcpLayer::accept(SocketId lid, Endpoint* peer) {
  Impl& m = *impl_;
  Sock* l = m.lookup(lid);
  if (l == nullptr) return Errc::badf;
  if (l->tcb.state != TcpState::listen) return Errc::inval;
  if (l->accept_head == kNoSlot) return Errc::again;
  Sock& c = m.at(l->accept_head);
  l->accept_head = c.next_accept;
  if (l->accept_head == kNoSlot) l->accept_tail = kNoSlot;
  --l->accept_len;
  c.next_accept = kNoSlot;
  c.in_accept_queue = false;
  c.parent = kNoSlot;
  c.orphan = false;
  if (peer != nullptr) *peer = c.remote;
  if (m.readiness(c) != 0) m.notify(c);
  return m.id_of(c);
}

Errc TcpLayer::connect(SocketId id, Endpoint remote) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  switch (t.state) {
    case TcpState::syn_sent:
    case TcpState::syn_received:
      return Errc::already;
    case TcpState::listen:
      return Errc::inval;
    case TcpState::closed:
      break;
    default:
      return Errc::is_conn;
  }
  if (remote.addr.is_any() || remote.port == 0 || remote.addr.is_multicast() ||
      remote.addr == Ipv4Addr::broadcast()) {
    return Errc::inval;
  }
  if (!s.bound) {
    const std::uint16_t p = m.pick_ephemeral(remote);
    if (p == 0) return Errc::addr_not_avail;
    s.local = Endpoint{m.ip.local_addr(), p};
    s.bound = true;
    s.autobound = true;
  } else if (m.tuple_in_use(s.local.port, remote)) {
    return Errc::addr_not_avail;
  }
  s.remote = remote;
  if (!m.hash(s)) return Errc::addr_not_avail;
  t = Tcb(m.cfg);
  s.so_error = Errc::ok;
  s.ever_connected = true;
  const FourTuple tuple{s.local, s.remote};
  t.init_send(m.isn.isn(tuple, m.now));
  t.ts_offset = m.isn.ts_offset(tuple);
  t.rcv.wscale = m.cfg.window_scaling ? our_wscale(m.cfg, s.opt.rcvbuf) : 0;
  t.rtt_timing = true;  // time the SYN (Karn: cancelled if it is retransmitted)
  t.rtt_seq = t.snd.iss;
  t.rtt_start = m.now;
  t.last_rcv = m.now;
  m.set_state(s, TcpState::syn_sent);
  t.pend.syn = true;
  m.ctr.inc(Counter::tcp_conn_active_opens);
  m.program(s);
  return Errc::in_progress;
}

Result<std::size_t> TcpLayer::send(SocketId id, ByteSpan data, bool more) {
  if (data.empty()) {
    // Keep send()'s order of checks for an empty buffer: errors and state first, then 0.
    auto sp = send_space(id, 0);
    if (!sp) return sp.error();
    return std::size_t{0};
  }
  auto sp = send_space(id, data.size());
  if (!sp) return sp.error();
  const auto [a, b] = *sp;
  std::memcpy(a.data(), data.data(), a.size());
  if (!b.empty()) std::memcpy(b.data(), data.data() + a.size(), b.size());
  return send_commit(id, a.size() + b.size(), more);
}

Result<std::pair<MutByteSpan, MutByteSpan>> TcpLayer::send_space(SocketId id, std::size_t max) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  if (s.so_error != Errc::ok) {
    const Errc e = s.so_error;
    s.so_error = Errc::ok;
    return e;
  }
  switch (t.state) {
    case TcpState::established:
    case TcpState::close_wait:
      break;
    case TcpState::syn_sent:
    case TcpState::syn_received:
      return Errc::again;
    default:
      return Errc::pipe;
  }
  if (t.fin_queued) return Errc::pipe;
  if (max == 0) return std::pair<MutByteSpan, MutByteSpan>{};
  const std::size_t limit = m.sndbuf_limit(s);
  const std::size_t used = t.sndq.size();
  if (used >= limit) return Errc::again;
  const std::size_t want = std::min(max, limit - used);
  if (t.sndq.free_space() < want && t.sndq.capacity() < limit) {
    // Grow toward the limit (doubling): a few times per connection, not per segment.
    t.sndq.grow(std::min(std::bit_ceil(used + want), std::bit_ceil(limit)));
  }
  auto spans = t.sndq.writable(want);
  if (spans.first.empty()) return Errc::again;
  return spans;
}

Result<std::size_t> TcpLayer::send_commit(SocketId id, std::size_t n, bool more) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  if (n == 0) return std::size_t{0};
  n = std::min(n, t.sndq.free_space());
  t.sndq.commit(n);
  t.more = more;
  m.program(s);
  return n;
}

Result<std::size_t> TcpLayer::recv(SocketId id, MutByteSpan buf, bool peek) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  if (t.state == TcpState::listen) return Errc::not_conn;
  if (buf.empty()) return std::size_t{0};
  if (!t.rcvq.empty() && !t.rd_shut) {
    const std::size_t n = t.rcvq.peek(0, buf);
    if (!peek) {
      t.rcvq.consume(n);
      t.copied += n;
      m.rcv_autotune(s);
      m.maybe_window_update(s);
    }
    return n;
  }
  if (t.rd_shut || t.fin_rcvd) return std::size_t{0};
  if (s.so_error != Errc::ok) {
    const Errc e = s.so_error;
    s.so_error = Errc::ok;
    return e;
  }
  if (t.state == TcpState::closed) {
    if (s.ever_connected) return std::size_t{0};
    return Errc::not_conn;
  }
  return Errc::again;
}

std::pair<ByteSpan, ByteSpan> TcpLayer::recv_view(SocketId id, std::size_t max) const {
  const Impl& m = *impl_;
  const Sock* sp = m.lookup(id);
  if (sp == nullptr) return {};
  const Tcb& t = sp->tcb;
  if (t.state == TcpState::listen || t.rd_shut) return {};
  return t.rcvq.readable(0, max);
}

void TcpLayer::recv_consume(SocketId id, std::size_t n) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr || n == 0) return;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  if (t.state == TcpState::listen || t.rd_shut) return;
  n = std::min(n, t.rcvq.size());
  t.rcvq.consume(n);
  t.copied += n;
  m.rcv_autotune(s);
  m.maybe_window_update(s);
}

Errc TcpLayer::shutdown(SocketId id, ShutdownHow how) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  switch (s.tcb.state) {
    case TcpState::closed:
    case TcpState::listen:
      return Errc::not_conn;
    default:
      break;
  }
  if (how == ShutdownHow::read || how == ShutdownHow::both) {
    s.tcb.rd_shut = true;
    m.notify(s);
  }
  if (how == ShutdownHow::write || how == ShutdownHow::both) m.start_close(s);
  if (s.in_use) m.arm(s);
  return Errc::ok;
}

Errc TcpLayer::close(SocketId id) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  Tcb& t = s.tcb;
  if (t.state == TcpState::listen) {
    m.listener_close(s);
    return Errc::ok;
  }
  s.orphan = true;
  if (t.state == TcpState::closed) {
    m.free_sock(s);
    return Errc::ok;
  }
  if (t.state == TcpState::time_wait) {
    m.enter_time_wait(s);  // keeps the 2*MSL deadline's owner; buffers released
    t.timers.linger = std::min(t.timers.linger, m.now + 2 * m.cfg.msl);
    m.arm(s);
    return Errc::ok;
  }
  // Linux tcp_close: unread data or SO_LINGER 0 aborts with RST (RFC 2525 §2.17).
  if (!t.rcvq.empty() || s.opt.linger == 0) {
    m.reset_conn(s);
    return Errc::ok;
  }
  m.start_close(s);
  if (!s.in_use) return Errc::ok;
  if (t.state == TcpState::fin_wait_2) t.timers.linger = m.now + kFinWait2Timeout;
  m.arm(s);
  return Errc::ok;
}

Errc TcpLayer::abort(SocketId id) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  if (s.tcb.state == TcpState::listen) {
    m.listener_close(s);
    return Errc::ok;
  }
  s.orphan = true;
  if (s.tcb.state == TcpState::closed) {
    m.free_sock(s);
    return Errc::ok;
  }
  m.reset_conn(s);
  return Errc::ok;
}

Errc TcpLayer::setsockopt(SocketId id, SockOpt opt, int value) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  SockOptions& o = s.opt;
  switch (opt) {
    case SockOpt::nodelay:
      o.nodelay = value != 0;
      if (o.nodelay) m.program(s);  // Linux pushes pending data when TCP_NODELAY is set
      return Errc::ok;
    case SockOpt::cork:
      o.cork = value != 0;
      if (!o.cork) m.program(s);
      return Errc::ok;
    case SockOpt::keepalive:
      o.keepalive = value != 0;
      m.arm_keepalive(s);
      m.arm(s);
      return Errc::ok;
    case SockOpt::keepidle:
      if (value < 1 || value > 32767) return Errc::inval;
      o.keepidle = std::chrono::seconds(value);
      m.arm_keepalive(s);
      m.arm(s);
      return Errc::ok;
    case SockOpt::keepintvl:
      if (value < 1 || value > 32767) return Errc::inval;
      o.keepintvl = std::chrono::seconds(value);
      return Errc::ok;
    case SockOpt::keepcnt:
      if (value < 1 || value > 127) return Errc::inval;
      o.keepcnt = static_cast<std::uint8_t>(value);
      return Errc::ok;
    case SockOpt::linger:
      o.linger = value < 0 ? -1 : value;
      return Errc::ok;
    case SockOpt::rcvbuf: {
      if (value < 0) return Errc::inval;
      // Linux doubles SO_RCVBUF (bookkeeping overhead) and clamps to a minimum.
      const std::uint64_t v = std::clamp<std::uint64_t>(2ull * static_cast<std::uint64_t>(value), 2304,
                                                        std::max<std::uint64_t>(m.cfg.rcvbuf_max, 2304));
      o.rcvbuf = static_cast<std::uint32_t>(v);
      if (s.tcb.rcvq.capacity() != 0 && s.tcb.rcvq.capacity() < o.rcvbuf) s.tcb.rcvq.grow(o.rcvbuf);
      return Errc::ok;
    }
    case SockOpt::sndbuf: {
      if (value < 0) return Errc::inval;
      const std::uint64_t v = std::clamp<std::uint64_t>(2ull * static_cast<std::uint64_t>(value), 4608,
                                                        std::max<std::uint64_t>(m.cfg.sndbuf_max, 4608));
      o.sndbuf = static_cast<std::uint32_t>(v);
      m.notify(s);
      return Errc::ok;
    }
    case SockOpt::reuseaddr:
      o.reuseaddr = value != 0;
      return Errc::ok;
    case SockOpt::reuseport:
      o.reuseport = value != 0;
      return Errc::ok;
    case SockOpt::maxseg:
      if (value != 0 && (value < 88 || value > 65535)) return Errc::inval;  // Linux TCP_MIN_MSS
      o.maxseg = static_cast<std::uint16_t>(value);
      return Errc::ok;
    case SockOpt::user_timeout:
      if (value < 0) return Errc::inval;
      o.user_timeout_ms = static_cast<std::uint32_t>(value);
      return Errc::ok;
  }
  return Errc::no_proto_opt;
}

Result<int> TcpLayer::getsockopt(SocketId id, SockOpt opt) const {
  const Impl& m = *impl_;
  const Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  const Sock& s = *sp;
  const SockOptions& o = s.opt;
  const auto secs = [](Duration d) { return static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(d).count()); };
  switch (opt) {
    case SockOpt::nodelay: return o.nodelay ? 1 : 0;
    case SockOpt::cork: return o.cork ? 1 : 0;
    case SockOpt::keepalive: return o.keepalive ? 1 : 0;
    case SockOpt::keepidle: return secs(o.keepidle.count() ? o.keepidle : m.cfg.keepalive_idle);
    case SockOpt::keepintvl: return secs(o.keepintvl.count() ? o.keepintvl : m.cfg.keepalive_intvl);
    case SockOpt::keepcnt: return o.keepcnt ? o.keepcnt : m.cfg.keepalive_probes;
    case SockOpt::linger: return o.linger;
    case SockOpt::rcvbuf:
      if (o.rcvbuf) return static_cast<int>(o.rcvbuf);
      return static_cast<int>(std::max<std::size_t>(s.tcb.rcvq.capacity(), m.cfg.rcvbuf_initial));
    case SockOpt::sndbuf: return static_cast<int>(m.sndbuf_limit(s));
    case SockOpt::reuseaddr: return o.reuseaddr ? 1 : 0;
    case SockOpt::reuseport: return o.reuseport ? 1 : 0;
    case SockOpt::maxseg:
      if (is_synchronized(s.tcb.state)) return static_cast<int>(s.tcb.snd.mss);
      return o.maxseg ? o.maxseg : 536;
    case SockOpt::user_timeout: return static_cast<int>(o.user_timeout_ms);
  }
  return Errc::no_proto_opt;
}

Errc TcpLayer::take_error(SocketId id) {
  Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  const Errc e = s->so_error;
  s->so_error = Errc::ok;
  return e;
}

std::uint32_t TcpLayer::readiness(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  return s == nullptr ? 0 : impl_->readiness(*s);
}

Result<Endpoint> TcpLayer::local_endpoint(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  // A socket bound to the wildcard reports 0.0.0.0 as long as it has no connection (Linux keeps
  // inet_rcv_saddr = INADDR_ANY for listeners; connect() fills in the route's source address).
  if (s->bound_any && !s->ever_connected &&
      (s->tcb.state == TcpState::listen || s->tcb.state == TcpState::closed)) {
    return Endpoint{Ipv4Addr{}, s->local.port};
  }
  return s->local;
}

Result<Endpoint> TcpLayer::peer_endpoint(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  switch (s->tcb.state) {
    case TcpState::closed:
    case TcpState::listen:
    case TcpState::syn_sent:
      return Errc::not_conn;
    default:
      return s->remote;
  }
}

Result<TcpInfo> TcpLayer::info(SocketId id) const {
  const Impl& m = *impl_;
  const Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  const Tcb& t = sp->tcb;
  const auto us = [](Duration d) {
    return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  TcpInfo i;
  i.state = static_cast<std::uint8_t>(t.state);
  i.rto_us = us(t.rtt.rto());
  i.rtt_us = us(t.rtt.srtt());
  i.rttvar_us = us(t.rtt.rttvar());
  i.snd_mss = t.snd.mss;
  i.rcv_mss = t.rcv.mss;
  i.snd_cwnd = t.cc.cwnd();
  i.snd_ssthresh = t.cc.ssthresh();
  i.snd_wnd = t.snd.wnd;
  i.rcv_wnd = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  i.unacked = is_synchronized(t.state) ? t.flight() : 0;
  i.retransmits = t.rto_count;
  i.total_retrans = t.total_retrans;
  i.snd_wscale = t.snd.wscale;
  i.rcv_wscale = t.rcv.wscale;
  i.timestamps = t.ts_ok;
  i.sack = t.sack_ok;
  i.bytes_acked = t.bytes_acked;
  i.bytes_received = t.bytes_received;
  return i;
}

Result<std::size_t> TcpLayer::readable_bytes(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  if (s->tcb.state == TcpState::listen) return Errc::inval;
  return s->tcb.rcvq.size();
}

bool TcpLayer::next_event(SocketEvent& out) {
  Impl& m = *impl_;
  while (m.ev_len > 0) {
    const std::uint32_t slot = m.events[m.ev_head];
    m.ev_head = (m.ev_head + 1) % m.events.size();
    --m.ev_len;
    Sock& s = m.at(slot);
    s.event_queued = false;
    if (!s.in_use || s.orphan) continue;
    out = SocketEvent{m.id_of(s), m.readiness(s)};
    return true;
  }
  return false;
}

std::size_t TcpLayer::socket_count() const { return impl_->live; }

}  // namespace pno::tcp
