// Segment output: flush() turns what input, timers and the socket API programmed into segments
// (RST, SYN/SYN-ACK, probes, retransmissions, new data with Nagle and SWS avoidance, FIN, pure
// ACKs), builds their options (MSS/WS/SACK-permitted/timestamps/SACK blocks) and sends them
// through Ipv4Output. Also the stateless RST of RFC 9293 §3.10.7.1.
#include <algorithm>
#include <bit>
#include <cstring>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

using wire::TcpRepr;
namespace flag = wire::tcp_flag;

std::uint32_t TcpLayer::Impl::ts_now(const Sock& s) const {
  // RFC 7323 §5.4: a 1 ms timestamp clock, offset per connection (§7.1).
  return static_cast<std::uint32_t>(to_ns(now) / 1'000'000) + s.tcb.ts_offset;
}

std::uint16_t TcpLayer::Impl::our_mss() const {
  const std::size_t l4 = ip.max_l4_len();
  return static_cast<std::uint16_t>(std::clamp<std::size_t>(l4 > 20 ? l4 - 20 : 536, 88, 65535));
}

std::uint32_t TcpLayer::Impl::effective_mss(const Sock& s) const {
  const Tcb& t = s.tcb;
  std::uint32_t m = std::min<std::uint32_t>(t.peer_mss, our_mss());
  if (s.opt.maxseg != 0) m = std::min<std::uint32_t>(m, s.opt.maxseg);
  // RFC 6691: the MSS counts no options; timestamps on every segment take 12 bytes of it.
  if (t.ts_ok) m -= 12;
  return std::max<std::uint32_t>(m, 64);
}

std::uint32_t TcpLayer::Impl::rcv_window(const Sock& s) const {
  const Tcb& t = s.tcb;
  std::size_t cap = t.rcvq.capacity();
  if (cap == 0) cap = std::bit_ceil<std::size_t>(std::max<std::size_t>(s.opt.rcvbuf ? s.opt.rcvbuf : cfg.rcvbuf_initial, 4096));
  if (s.opt.rcvbuf != 0) cap = std::min<std::size_t>(cap, s.opt.rcvbuf);
  const std::size_t used = t.rcvq.size();
  std::size_t w = cap > used ? cap - used : 0;
  w = std::min<std::size_t>(w, std::size_t{65535} << t.rcv.wscale);
  return static_cast<std::uint32_t>(w);
}

std::uint16_t TcpLayer::Impl::window_field(Sock& s, bool syn) {
  Tcb& t = s.tcb;
  std::uint32_t w = rcv_window(s);
  if (syn) {
    // RFC 7323 §2.2: the window of a <SYN> is not scaled.
    const auto field = static_cast<std::uint16_t>(std::min<std::uint32_t>(w, 65535));
    if (t.state == TcpState::syn_received) t.rcv.adv_edge = seq_max(t.rcv.adv_edge, t.rcv.nxt + field);
    rcv_budget_sync(s);
    return field;
  }
  // Stop opening the window past the layer's receive budget (rcv_budget.cc); `cur` below keeps
  // what was already offered.
  w = rcv_budget_cap(s, w);
  const std::uint32_t cur = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  if (w <= cur) {
    w = cur;  // never shrink the window (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4)
  } else {
    // Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): move the right edge only by at least
    // min(buffer/2, MSS).
    const std::uint32_t cap = static_cast<std::uint32_t>(std::max<std::size_t>(t.rcvq.capacity(), 1));
    if (w - cur < std::min(cap / 2, t.rcv.mss)) w = cur;
  }
  std::uint32_t field = w >> t.rcv.wscale;
  if ((field << t.rcv.wscale) < cur) ++field;  // rounding must not move the edge left
  field = std::min<std::uint32_t>(field, 65535);
  const SeqNum edge = t.rcv.nxt + (field << t.rcv.wscale);
  if (edge > t.rcv.adv_edge) t.rcv.adv_edge = edge;
  rcv_budget_sync(s);
  return static_cast<std::uint16_t>(field);
}

bool TcpLayer::Impl::emit(Sock& s, std::uint8_t flags, SeqNum seq, std::uint32_t len) {
  Tcb& t = s.tcb;
  TcpRepr r;
  r.src_port = s.local.port;
  r.dst_port = s.remote.port;
  r.seq = seq;
  r.flags = flags;
  r.ack = t.rcv.nxt;
  const bool syn = (flags & flag::kSyn) != 0;
  wire::TcpOptions& o = r.opts;
  if (syn) {
    const bool active = t.state == TcpState::syn_sent;
    o.has_mss = true;
    o.mss = our_mss();
    if (s.opt.maxseg != 0) o.mss = std::min(o.mss, s.opt.maxseg);
    // In a SYN-ACK only what the peer offered (RFC 7323 §1.3, RFC 2018 §2).
    if (active ? cfg.window_scaling : t.ws_ok) {
      o.has_wscale = true;
      o.wscale = t.rcv.wscale;
    }
    o.sack_permitted = active ? cfg.sack : t.sack_ok;
    if (active ? cfg.timestamps : t.ts_ok) {
      o.has_timestamps = true;
      o.ts = {ts_now(s), active ? 0u : t.ts_recent};
    }
  } else {
    if (t.ts_ok) {
      o.has_timestamps = true;
      o.ts = {ts_now(s), t.ts_recent};
    }
    if (t.sack_ok && !t.ooo.empty() && (flags & flag::kRst) == 0) {
      o.sack_count = static_cast<std::uint8_t>(
          t.ooo.sack_blocks(std::span<SackBlock>(o.sack.data(), t.ts_ok ? 3 : 4)));
    }
  }
  if ((flags & flag::kRst) == 0) r.window = window_field(s, syn);
  const std::size_t hlen = r.header_len();
  const std::size_t total = hlen + len;
  MutByteSpan buf = ip.ip_begin(s.remote.addr, kIpProtoTcp, total);
  if (buf.size() < total) {
    if (!buf.empty()) ip.ip_abort();
    // No buffer or no route: the segment counts as sent and lost; retransmission recovers.
    ctr.inc(Counter::eth_tx_no_buffer);
  } else {
    r.emit_header(buf);
    if (len > 0) {
      const std::size_t off = seq.since(t.data_base());
      const auto [a, b] = t.sndq.readable(off, len);
      std::memcpy(buf.data() + hlen, a.data(), a.size());
      if (!b.empty()) std::memcpy(buf.data() + hlen + a.size(), b.data(), b.size());
    }
    const bool offload = ip.tcp_checksum_offload();
    wire::fill_tcp_checksum(buf.first(total), s.local.addr, s.remote.addr, offload);
    ip.ip_commit(offload);
    ctr.inc(Counter::tcp_tx);
  }
  if (flags & flag::kAck) {
    t.last_ack_sent = t.rcv.nxt;
    t.pend.ack_now = false;
    t.pend.unacked_bytes = 0;
    t.timers.delack = kNever;
    if (t.quickacks > 0) --t.quickacks;
  }
  return true;
}

void TcpLayer::Impl::send_raw(Ipv4Addr dst, const TcpRepr& r) {
  const std::size_t total = r.buffer_len();
  MutByteSpan buf = ip.ip_begin(dst, kIpProtoTcp, total);
  if (buf.size() < total) {
    if (!buf.empty()) ip.ip_abort();
    ctr.inc(Counter::eth_tx_no_buffer);
    return;
  }
  const bool offload = ip.tcp_checksum_offload();
  r.emit(buf, ip.local_addr(), dst, offload);
  ip.ip_commit(offload);
  ctr.inc(Counter::tcp_tx);
}

void TcpLayer::Impl::send_rst_reply(const Ipv4RxInfo& rx, const TcpRepr& seg) {
  if (seg.rst()) return;  // never answer a RST with a RST
  TcpRepr r;
  r.src_port = seg.dst_port;
  r.dst_port = seg.src_port;
  if (seg.has_ack()) {
    r.seq = seg.ack;  // <SEQ=SEG.ACK><CTL=RST>
    r.flags = flag::kRst;
  } else {
    // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    r.seq = SeqNum(0);
    r.ack = seg.seq + seg.seg_len();
    r.flags = flag::kRst | flag::kAck;
  }
  ctr.inc(Counter::tcp_rst_tx);
  send_raw(rx.src, r);
}

namespace {
/// Bytes of SACK option a non-SYN segment of this connection carries now.
std::uint32_t sack_opt_len(const Tcb& t) {
  if (!t.sack_ok || t.ooo.empty()) return 0;
  const std::size_t blocks = std::min<std::size_t>(t.ooo.range_count(), t.ts_ok ? 3 : 4);
  return static_cast<std::uint32_t>(4 + 8 * blocks);
}
}  // namespace

std::uint32_t TcpLayer::Impl::seg_room(const Sock& s) const {
  // Linux tcp_current_mss: the full-segment payload minus the SACK blocks this segment will
  // carry (timestamps are already out of snd.mss), so header + payload never exceed the MTU.
  const Tcb& t = s.tcb;
  return t.snd.mss - std::min(t.snd.mss - 64, sack_opt_len(t));
}

namespace {
bool may_send_data(TcpState st) {
  switch (st) {
    case TcpState::established:
    case TcpState::close_wait:
    case TcpState::fin_wait_1:
    case TcpState::closing:
    case TcpState::last_ack:
      return true;
    default:
      return false;
  }
}
}  // namespace

/// Sends one new (or, after an RTO rewind, re-sent) data segment from SND.NXT if the rules allow,
/// with `room` bytes of congestion window. Returns the sequence space sent (0 = nothing).
std::uint32_t TcpLayer::Impl::send_one(Sock& s, std::uint32_t room) {
  Impl& m = *this;
  Tcb& t = s.tcb;
  const SeqNum end = t.data_end();
  if (t.snd.nxt >= end) return 0;
  const std::uint32_t avail = end.since(t.snd.nxt);
  const std::uint32_t mss = m.seg_room(s);
  const SeqNum wnd_edge = t.snd.una + t.snd.wnd;
  const std::uint32_t usable = wnd_edge > t.snd.nxt ? wnd_edge.since(t.snd.nxt) : 0;
  std::uint32_t len = std::min({avail, mss, usable, room});
  if (len == 0) return 0;
  const bool rexmit = t.snd.nxt < t.snd.max;
  const bool force = t.pend.force_push;
  if (len < mss && len < avail && !rexmit && !force) {
    // Limited by the window or cwnd to a runt: sender SWS avoidance (RFC 9293 §3.8.6.2.1) waits
    // unless it is at least half the largest window the peer ever offered.
    if (room < mss && room == len) return 0;
    if (len < t.snd.max_wnd / 2) return 0;
  }
  if (len == avail && len < mss && !rexmit && !force && !t.fin_queued) {
    // Nagle (RFC 9293 §3.7.4) in Minshall's form, as Linux: a partial segment waits while an
    // earlier partial segment is unacknowledged, unless TCP_NODELAY; TCP_CORK / MSG_MORE hold it
    // regardless.
    if (s.opt.cork || t.more) return 0;
    // Linux tcp_minshall_check also requires SND.SML <= SND.NXT, so a mark 2^31 bytes old does
    // not read as outstanding.
    if (!s.opt.nodelay && t.snd.sml > t.snd.una && t.snd.sml <= t.snd.nxt) return 0;
  }
  t.pend.force_push = false;
  if (rexmit && t.sack_ok && len > 0 && t.sb.is_sacked(t.snd.nxt) && t.sb.is_sacked(t.snd.nxt + len - 1)) {
    // Going back after an RTO: the receiver holds this already (RFC 6675 §5.1 keeps the board).
    t.snd.nxt += len;
    return len;
  }
  std::uint8_t flags = flag::kAck;
  if (len == avail) flags |= flag::kPsh;
  const bool with_fin = len == avail && t.fin_queued;
  if (with_fin) flags |= flag::kFin;
  const SeqNum seq = t.snd.nxt;
  m.emit(s, flags, seq, len);
  if (rexmit) {
    m.ctr.inc(Counter::tcp_retransmits);
    ++t.total_retrans;
    if (t.rtt_timing && t.rtt_seq >= seq) t.rtt_timing = false;  // Karn
    // Going back after an RTO: these octets are retransmitted (RFC 6675 HighRxt, counted by pipe).
    if (seq + len - 1 > t.high_rxt) t.high_rxt = seq + len - 1;
    // A go-back segment may reach past SND.MAX (its room grew): those octets are new.
    if (seq + len > t.snd.max) m.ctr.inc(Counter::tcp_tx_bytes, (seq + len).since(t.snd.max));
  } else {
    m.ctr.inc(Counter::tcp_tx_bytes, len);
    t.tlp_rearm = true;
    if (!t.ts_ok && !t.rtt_timing) {
      t.rtt_timing = true;
      t.rtt_seq = seq;
      t.rtt_start = m.now;
    }
  }
  if (len < mss) t.snd.sml = seq + len;
  const std::uint32_t sent = len + (with_fin ? 1 : 0);
  t.snd.nxt += sent;
  if (with_fin) t.fin_sent = true;
  t.snd.max = seq_max(t.snd.max, t.snd.nxt);
  if (t.timers.rto == kNever) m.restart_rto(s);  // RFC 6298 §5.1
  t.last_send = m.now;
  return sent;
}

bool TcpLayer::Impl::send_data(Sock& s) {
  Tcb& t = s.tcb;
  if (!may_send_data(t.state) || t.syn_unacked()) return false;
  // RFC 5681 §4.1: after an idle period longer than RTO, restart from the restart window.
  if (t.snd.una == t.snd.max && t.snd.nxt < t.data_end() && now - t.last_send > t.rtt.rto()) {
    t.cc.on_idle_restart();
  }
  bool sent = false;
  // RFC 3042 limited transmit: each of the first two duplicate ACKs lets one segment of new data
  // out. With SACK the same comes from counting the flight as RFC 6675's pipe (SACKed octets are
  // not in flight; after an RTO, skipped SACKed segments use no cwnd, RFC 6675 §5.1).
  const bool use_pipe = t.sack_ok && !t.sb.empty();
  const std::uint32_t limited =
      !use_pipe && t.recovery == Recovery::none && t.snd.nxt == t.snd.max ? std::min(t.dupacks, 2u) * t.snd.mss : 0;
  for (int guard = 0; guard < 4096; ++guard) {
    const std::uint32_t flight =
        use_pipe ? t.sb.pipe(t.snd.una, t.snd.nxt, t.high_rxt, t.snd.mss, seq_max(t.lost_end, t.snd.una))
                 : t.snd.nxt.since(t.snd.una);
    const std::uint32_t cwnd = t.cc.cwnd() + (t.snd.nxt == t.snd.max ? limited : 0);
    const std::uint32_t room = cwnd > flight ? cwnd - flight : 0;
    if (send_one(s, room) == 0) break;
    sent = true;
  }
  return sent;
}

bool TcpLayer::Impl::send_fin_if_due(Sock& s) {
  Tcb& t = s.tcb;
  if (!t.fin_queued || t.syn_unacked() || !may_send_data(t.state)) return false;
  if (t.snd.nxt != t.data_end()) return false;  // data still queued (it carries the FIN), or sent
  const bool rexmit = t.snd.nxt < t.snd.max;
  emit(s, flag::kAck | flag::kFin, t.snd.nxt, 0);
  if (rexmit) {
    ctr.inc(Counter::tcp_retransmits);
    ++t.total_retrans;
  }
  t.snd.nxt += 1;
  t.fin_sent = true;
  t.snd.max = seq_max(t.snd.max, t.snd.nxt);
  if (t.timers.rto == kNever) restart_rto(s);
  return true;
}

void TcpLayer::Impl::maybe_window_update(Sock& s) {
  Tcb& t = s.tcb;
  if (!is_synchronized(t.state) || t.fin_rcvd) return;
  // Linux __tcp_cleanup_rbuf: announce when the window we could offer is at least twice what
  // the peer sees now, and the peer sees at most half of the buffer.
  const std::uint32_t cur = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  const std::uint32_t w = rcv_budget_cap(s, rcv_window(s));
  const std::uint32_t cap = static_cast<std::uint32_t>(std::max<std::size_t>(t.rcvq.capacity(), 1));
  if (2ull * cur > cap) return;
  if (w < cur + std::min(cap / 2, t.rcv.mss)) return;  // SWS avoidance
  if (w >= 2ull * cur) {
    t.pend.ack_now = true;
    program(s);
  }
}

void TcpLayer::Impl::flush(Sock& s) {
  Tcb& t = s.tcb;
  if (t.pend.rst) {
    // <SEQ=SND.NXT><CTL=RST,ACK>, as Linux's tcp_send_active_reset.
    t.pend.rst = false;
    emit(s, flag::kRst | flag::kAck, t.snd.max, 0);
    ctr.inc(Counter::tcp_rst_tx);
    drop_conn(s, Errc::ok);
    return;
  }
  if (t.pend.syn) {
    t.pend.syn = false;
    const bool active = t.state == TcpState::syn_sent;
    if (t.state == TcpState::syn_sent || t.state == TcpState::syn_received) {
      emit(s, active ? flag::kSyn : (flag::kSyn | flag::kAck), t.snd.iss, 0);
      t.snd.nxt = t.snd.iss + 1;
      t.snd.max = seq_max(t.snd.max, t.snd.nxt);
      if (t.timers.rto == kNever) restart_rto(s);
    }
  }
  if (t.state == TcpState::syn_sent || t.state == TcpState::syn_received || t.state == TcpState::closed) {
    arm(s);
    return;
  }
  if (t.pend.probe) {
    // Zero-window probe or keepalive: <SEQ=SND.UNA-1><CTL=ACK>, an old sequence number that
    // makes the peer answer with its current ACK and window (Linux tcp_xmit_probe_skb).
    t.pend.probe = false;
    emit(s, flag::kAck, t.snd.una - 1, 0);
  }
  if (t.recovery == Recovery::fast || t.pend.retransmit_head) send_recovery(s);
  if (t.recovery != Recovery::fast || !t.sack_ok) send_data(s);
  send_fin_if_due(s);
  if (t.pend.ack_now) emit(s, flag::kAck, t.snd.max, 0);
  arm_tlp(s);
  // Persist timer (RFC 9293 §3.8.6.1): data waiting, nothing in flight that an ACK could open the
  // window with, and nothing sent: probe the window later.
  const bool waiting = t.snd.nxt < t.data_end() && t.snd.una == t.snd.max && may_send_data(t.state);
  if (waiting && t.timers.rto == kNever) {
    if (t.timers.persist == kNever) {
      const Duration base = t.rtt.rto_base();
      const Duration d = std::min(base * (1 << std::min(t.persist_count, 16u)), cfg.rto_max);
      t.timers.persist = now + std::max(d, cfg.rto_min);
    }
  } else {
    t.timers.persist = kNever;
  }
  arm(s);
}

}  // namespace pno::tcp
