// The socket calls with Linux semantics: socket, bind, listen, accept, connect, send/recv (copying
// and zero-copy), shutdown, close and abort.
#include <algorithm>
#include <bit>
#include <cstring>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

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

namespace {

/// Linux __sys_listen: `if ((unsigned int)backlog > somaxconn) backlog = somaxconn;` (so a
/// negative backlog means somaxconn).
int clamp_backlog(int backlog, const TcpConfig& cfg) {
  const auto cap = std::min<std::uint32_t>(cfg.somaxconn, 65535);
  return static_cast<int>(std::min(static_cast<std::uint32_t>(backlog), cap));
}

}  // namespace

Errc TcpLayer::listen(SocketId id, int backlog) {
  Impl& m = *impl_;
  Sock* s = m.lookup(id);
  if (s == nullptr) return Errc::badf;
  if (s->tcb.state == TcpState::listen) {
    s->backlog = clamp_backlog(backlog, m.cfg);
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
  s->backlog = clamp_backlog(backlog, m.cfg);
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
  if (m.close_idle(s)) return Errc::ok;
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
  if (m.close_idle(s)) return Errc::ok;
  m.reset_conn(s);
  return Errc::ok;
}

}  // namespace pno::tcp
