// TcpLayer: the driver (segment entry, poll, next_deadline) and readiness: the flush list, the
// timer wheel, Linux tcp_poll bits and the event queue. Protocol processing lives in input.cc,
// output.cc, recovery.cc, timers.cc and listener.cc; the socket calls in socket_api.cc and
// sockopt.cc (see layer_impl.hh).
#include "stack/tcp/tcp_layer.hh"

#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

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
  m.wheel.expire(m.now, [&m](std::uint32_t slot, Instant) {
    // One entry per slot, cancelled when the socket is freed: every entry that fires is live.
    if (slot >= m.slots) return;
    Sock& s = m.at(slot);
    if (!s.in_use) return;
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
  // One wheel entry per socket (Linux sk_reset_timer reuses the socket's timer). It moves only
  // earlier: a later deadline (or none) keeps it, and it fires early, finds nothing due and
  // re-arms, rather than moving on every ACK that pushes the RTO back.
  if (!s.in_use) return;
  const Instant d = s.tcb.timers.earliest();
  if (d < wheel.deadline(slot_of(s))) wheel.schedule(slot_of(s), d);
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

std::uint32_t TcpLayer::readiness(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  return s == nullptr ? 0 : impl_->readiness(*s);
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

std::size_t TcpLayer::timer_entries() const { return impl_->wheel.size(); }

}  // namespace pno::tcp
