// Segment arrival, RFC 9293 §3.10.7, one function per state family: LISTEN (listener.cc),
// SYN-SENT, and the synchronized states (incl. SYN-RECEIVED), with the numbered steps of
// §3.10.7.4 and the RFC 5961 / RFC 7323 checks in front of them. Input only updates state and
// programs output (ack_now, data, retransmit); poll() sends.
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

using wire::TcpRepr;

void TcpLayer::Impl::input(const SegIn& in) {
  const TcpRepr& seg = in.seg;
  const std::uint32_t slot = conns.find(ConnTable::key(seg.dst_port, Endpoint{in.ip.src, seg.src_port}));
  if (slot != ConnTable::kNone) {
    Sock& s = at(slot);
    Tcb& t = s.tcb;
    if (t.state == TcpState::time_wait && seg.syn() && !seg.has_ack()) {
      // A new SYN may reuse a TIME-WAIT 4-tuple if it is clearly newer (RFC 6191 with
      // timestamps, RFC 1122 §4.2.2.13 by sequence number), as Linux allows.
      const bool newer_ts = !t.ts_ok || !seg.opts.has_timestamps ||
                            static_cast<std::int32_t>(seg.opts.ts.tsval - t.ts_recent) > 0;
      if (seg.seq > t.rcv.nxt && newer_ts) {
        if (Sock* l = listener_for(seg.dst_port, Endpoint{in.ip.src, seg.src_port})) {
          if (s.orphan) {
            free_sock(s);
          } else {
            unhash(s);
            set_state(s, TcpState::closed);
            t.timers = Timers{};
            notify(s);
          }
          input_listen(*l, in);
          return;
        }
      }
    }
    t.last_rcv = now;
    t.keepalive_count = 0;
    if (t.state == TcpState::syn_sent) {
      input_syn_sent(s, in);
    } else {
      input_synchronized(s, in);
    }
    if (s.in_use) arm(s);
    return;
  }
  if (Sock* l = listener_for(seg.dst_port, Endpoint{in.ip.src, seg.src_port})) {
    input_listen(*l, in);
    return;
  }
  // RFC 9293 §3.10.7.1: CLOSED. Anything but a RST gets a RST.
  ctr.inc(Counter::tcp_drop_no_socket);
  send_rst_reply(in.ip, seg);
}

void TcpLayer::Impl::take_options(Sock& s, const TcpRepr& syn) {
  Tcb& t = s.tcb;
  const wire::TcpOptions& o = syn.opts;
  // RFC 9293 §3.7.1: without the option, assume 536. Linux floors it at TCP_MIN_MSS (88).
  t.peer_mss = o.has_mss ? std::max<std::uint16_t>(o.mss, 88) : 536;
  t.ws_ok = cfg.window_scaling && o.has_wscale;
  if (t.ws_ok) {
    t.snd.wscale = std::min(o.wscale, wire::kTcpMaxWindowScale);  // RFC 7323 §2.3
  } else {
    t.snd.wscale = 0;
    t.rcv.wscale = 0;
  }
  t.ts_ok = cfg.timestamps && o.has_timestamps;
  if (t.ts_ok) {
    t.ts_recent = o.ts.tsval;
    t.ts_recent_at = now;
  }
  t.sack_ok = cfg.sack && o.sack_permitted;
  t.snd.mss = effective_mss(s);
  t.rcv.mss = std::min<std::uint32_t>(our_mss(), t.peer_mss) - (t.ts_ok ? 12 : 0);
  t.cc.set_mss(t.snd.mss);
}

void TcpLayer::Impl::update_ts_recent(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  // RFC 7323 §4.3 (2): remember the newest TSval of a segment covering Last.ACK.sent.
  if (!t.ts_ok || !seg.opts.has_timestamps) return;
  // §5.5: a TS.Recent idle for more than 24 days is invalid, so any accepted TSval replaces it
  // (Linux tcp_replace_ts_recent after tcp_paws_check).
  const bool newer = static_cast<std::int32_t>(seg.opts.ts.tsval - t.ts_recent) >= 0 || now - t.ts_recent_at > kPawsIdle;
  if (newer && seg.seq <= t.last_ack_sent) {
    t.ts_recent = seg.opts.ts.tsval;
    t.ts_recent_at = now;
  }
}

bool TcpLayer::Impl::check_paws(Sock& s, const TcpRepr& seg) {
  const Tcb& t = s.tcb;
  // RFC 7323 §5.3 R1: a non-RST segment whose TSval is older than TS.Recent is a duplicate from
  // an earlier incarnation of the sequence space. §5.5: TS.Recent older than 24 days is void.
  if (!t.ts_ok || !seg.opts.has_timestamps || seg.rst()) return true;
  const std::int32_t behind = static_cast<std::int32_t>(t.ts_recent - seg.opts.ts.tsval);
  // One tick of slack, as Linux (tcp_paws_discard): reordering across a clock tick is no replay.
  if (behind <= kPawsWindow) return true;
  if (now - t.ts_recent_at > kPawsIdle) return true;
  // Linux tcp_disordered_ack: a pure duplicate ACK at RCV.NXT that would not update the window,
  // overtaken by a newer segment and less than an RTO's worth of ticks old, is reordering (for
  // which RFC 7323 §5.3 gives no reason to drop it: it carries no data to protect). Dropping it
  // would lose the SACK information and duplicate-ACK count that loss recovery needs.
  if (!seg.has_ack() || seg.syn() || seg.fin() || !seg.payload.empty()) return false;
  if (seg.seq != t.rcv.nxt || seg.ack != t.snd.una) return false;
  const std::uint32_t wnd = static_cast<std::uint32_t>(seg.window) << t.snd.wscale;
  const bool may_update_window = t.snd.wl1 < seg.seq || (t.snd.wl1 == seg.seq && (wnd > t.snd.wnd || wnd == 0));
  if (may_update_window) return false;
  const auto rto_ticks = std::chrono::duration_cast<std::chrono::milliseconds>(t.rtt.rto()).count();
  return behind <= rto_ticks;
}

bool TcpLayer::Impl::acceptable(const Sock& s, const TcpRepr& seg) const {
  const Tcb& t = s.tcb;
  const SeqLen wnd = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  const SeqLen len = seg.seg_len();
  // RFC 9293 §3.10.7.4 table, in Linux's form (tcp_sequence): the segment must end at or after
  // the last ACK we sent and start no later than the right window edge. For a zero window this
  // accepts SEG.SEQ = RCV.NXT (so ACKs, RSTs and window probes are processed, as the RFC asks).
  const SeqNum rcv_wup = seq_min(t.last_ack_sent, t.rcv.nxt);
  if (seg.seq + len < rcv_wup) return false;
  if (len == 0 && seg.seq < rcv_wup) return false;
  return seg.seq <= t.rcv.nxt + wnd;
}

void TcpLayer::Impl::oow_ack(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  // Linux tcp_oow_rate_limited: duplicate ACKs for data are never limited (the peer needs them
  // for loss recovery); pure ACKs and SYNs out of window get at most one answer per 500 ms, so
  // two stacks can not ACK each other in a loop.
  if (seg.payload.empty() || seg.syn()) {
    if (t.last_oow_ack != Instant{} && now - t.last_oow_ack < kOowAckInterval) return;
    t.last_oow_ack = now;
  }
  t.pend.ack_now = true;
  program(s);
}

void TcpLayer::Impl::challenge_ack(Sock& s) {
  // RFC 5961 §7: a stack-wide limit on challenge ACKs per second, plus the per-connection limit.
  if (now - chal_start >= std::chrono::seconds(1)) {
    chal_start = now;
    chal_count = 0;
  }
  if (chal_count >= kChallengeAckLimit) return;
  Tcb& t = s.tcb;
  if (t.last_oow_ack != Instant{} && now - t.last_oow_ack < kOowAckInterval) return;
  t.last_oow_ack = now;
  ++chal_count;
  ctr.inc(Counter::tcp_challenge_acks);
  t.pend.ack_now = true;
  program(s);
}

void TcpLayer::Impl::establish(Sock& s) {
  Tcb& t = s.tcb;
  set_state(s, TcpState::established);
  if (t.rcvq.capacity() == 0) {
    const std::size_t cap = s.opt.rcvbuf ? s.opt.rcvbuf : cfg.rcvbuf_initial;
    t.rcvq = ByteRing(std::max<std::size_t>(cap, 4096));
  }
  if (t.sndq.capacity() == 0) t.sndq = ByteRing(std::min<std::size_t>(64 * 1024, sndbuf_limit(s)));
  // RFC 6298 §5.7: a retransmitted SYN leaves RTO at 3 s until the first sample; RFC 5681 §3.1:
  // and the initial window is one segment.
  if (t.rto_count > 0) t.cc.set_cwnd(t.snd.mss);
  t.rtt.reset_backoff();
  t.rto_count = 0;
  t.first_rto_at = kNever;
  t.quickacks = kMaxQuickAcks;
  t.drs_start = now;
  t.last_send = now;
  if (t.rcv.adv_edge < t.rcv.nxt) t.rcv.adv_edge = t.rcv.nxt;
  arm_keepalive(s);
}

// ---------------------------------------------------------------------------------------------
// SYN-SENT, RFC 9293 §3.10.7.3

void TcpLayer::Impl::input_syn_sent(Sock& s, const SegIn& in) {
  const TcpRepr& seg = in.seg;
  Tcb& t = s.tcb;
  // First, check the ACK bit: it must acknowledge our SYN and nothing more.
  const bool has_ack = seg.has_ack();
  if (has_ack && (seg.ack <= t.snd.iss || seg.ack > t.snd.max)) {
    ctr.inc(Counter::tcp_drop_bad_ack);
    send_rst_reply(in.ip, seg);  // never answers a RST
    return;
  }
  // Second, the RST bit: acceptable only with an ACK of our SYN (RFC 5961 §3.2 for SYN-SENT).
  if (seg.rst()) {
    if (has_ack) {
      ctr.inc(Counter::tcp_rst_rx);
      drop_conn(s, Errc::conn_refused);
    } else {
      ctr.inc(Counter::tcp_drop_rst_invalid);
    }
    return;
  }
  // Fourth, the SYN bit.
  if (!seg.syn()) return;
  t.rcv.irs = seg.seq;
  t.rcv.nxt = seg.seq + 1;
  // What our SYN offered (unscaled, RFC 7323 §2.2): data riding on the SYN-ACK fits in it.
  t.rcv.adv_edge = t.rcv.nxt + std::min<std::uint32_t>(rcv_window(s), 65535);
  t.last_ack_sent = t.rcv.nxt;
  take_options(s, seg);
  // The window of a <SYN> is never scaled (RFC 7323 §2.2).
  t.snd.wnd = seg.window;
  t.snd.max_wnd = std::max(t.snd.max_wnd, t.snd.wnd);
  t.snd.wl1 = seg.seq;
  t.snd.wl2 = seg.ack;
  if (has_ack) {
    // Our SYN is acknowledged: ESTABLISHED, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>.
    if (t.ts_ok && seg.opts.ts.tsecr != 0) {
      rtt_sample(s, std::chrono::milliseconds(ts_now(s) - seg.opts.ts.tsecr));
    } else if (t.rtt_timing) {
      rtt_sample(s, now - t.rtt_start);
    }
    t.rtt_timing = false;
    t.snd.una = seg.ack;
    if (t.snd.nxt < t.snd.una) t.snd.nxt = t.snd.una;
    t.timers.rto = kNever;
    establish(s);
    t.pend.ack_now = true;
    if (!seg.payload.empty()) process_data(s, seg);
    program(s);
    notify(s);
    return;
  }
  // Simultaneous open: SYN-RECEIVED, <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
  set_state(s, TcpState::syn_received);
  t.rtt_timing = false;
  t.pend.syn = true;
  program(s);
}

// ---------------------------------------------------------------------------------------------
// Synchronized states and SYN-RECEIVED, RFC 9293 §3.10.7.4

void TcpLayer::Impl::input_synchronized(Sock& s, const SegIn& in) {
  const TcpRepr& seg = in.seg;

  // RFC 7323 §5.3 PAWS, then the first step: check the sequence number.
  if (!check_sequence(s, seg)) return;
  update_ts_recent(s, seg);

  // Second, check the RST bit.
  if (seg.rst()) {
    input_rst(s, seg);
    return;
  }

  // Third, the security check: no IP security compartments here (RFC 9293 §3.10.7.4).

  // Fourth, check the SYN bit.
  if (seg.syn() && !check_syn(s, seg)) return;

  // Fifth, check the ACK field: without it the segment is dropped (and counted).
  if (!seg.has_ack()) {
    ctr.inc(Counter::tcp_drop_bad_flags);
    return;
  }
  if (s.tcb.state == TcpState::syn_received && !ack_of_syn(s, in)) return;
  if (!process_ack(s, seg)) return;
  if (!s.in_use) return;

  // Sixth, the URG bit: urgent data is not supported (RFC 6093 discourages it); ignored.

  // Seventh, process the segment text.
  if (!seg.payload.empty()) {
    input_text(s, seg);
    if (!s.in_use) return;
  }

  // Eighth, check the FIN bit.
  if (seg.fin()) input_fin(s, seg);
}

bool TcpLayer::Impl::check_sequence(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  // RFC 7323 §5.3: PAWS comes before the sequence check.
  if (!check_paws(s, seg)) {
    ctr.inc(Counter::tcp_drop_paws);
    oow_ack(s, seg);
    return false;
  }
  if (acceptable(s, seg)) return true;
  ctr.inc(Counter::tcp_drop_out_of_window);
  if (!seg.rst()) {
    // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; a retransmitted FIN in TIME-WAIT also restarts 2*MSL.
    oow_ack(s, seg);
    if (t.state == TcpState::time_wait && seg.fin()) t.timers.linger = now + 2 * cfg.msl;
  } else {
    ctr.inc(Counter::tcp_drop_rst_invalid);
  }
  return false;
}

void TcpLayer::Impl::input_rst(Sock& s, const TcpRepr& seg) {
  const Tcb& t = s.tcb;
  // RFC 5961 §3.2: exactly RCV.NXT resets, anything else in the window gets a challenge ACK.
  if (seg.seq != t.rcv.nxt) {
    ctr.inc(Counter::tcp_drop_rst_invalid);
    challenge_ack(s);
    return;
  }
  ctr.inc(Counter::tcp_rst_rx);
  switch (t.state) {
    case TcpState::syn_received:
      // Passive open: back to LISTEN (the child just goes). Active (simultaneous) open: refused.
      drop_conn(s, s.parent != kNoSlot ? Errc::ok : Errc::conn_refused);
      return;
    case TcpState::established:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
    case TcpState::close_wait:
      drop_conn(s, Errc::conn_reset);
      return;
    default:  // CLOSING, LAST-ACK, TIME-WAIT
      finish(s);
      return;
  }
}

bool TcpLayer::Impl::check_syn(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  // RFC 5961 §4: a SYN in a synchronized state gets a challenge ACK.
  if (t.state == TcpState::syn_received && seg.seq == t.rcv.irs && !seg.has_ack()) {
    t.pend.syn = true;  // our SYN-ACK was lost: send it again
    program(s);
    return false;
  }
  // Simultaneous open: the peer's SYN-ACK of our SYN, in SYN-RECEIVED of an active open, is
  // the handshake's last step, not an attack (Linux tcp_validate_incoming does the same).
  const bool simultaneous_synack = t.state == TcpState::syn_received && s.parent == kNoSlot && seg.has_ack() &&
                                   seg.seq + 1 == t.rcv.nxt && seg.ack == t.snd.max;
  if (simultaneous_synack) return true;
  challenge_ack(s);
  return false;
}

bool TcpLayer::Impl::ack_of_syn(Sock& s, const SegIn& in) {
  const TcpRepr& seg = in.seg;
  Tcb& t = s.tcb;
  if (!(t.snd.una < seg.ack && seg.ack <= t.snd.max)) {
    ctr.inc(Counter::tcp_drop_bad_ack);
    send_rst_reply(in.ip, seg);  // <SEQ=SEG.ACK><CTL=RST>
    return false;
  }
  Sock* l = parent_of(s);
  if (l != nullptr && l->accept_len > static_cast<std::uint32_t>(l->backlog)) {
    // Accept queue full: drop the ACK; the SYN-ACK retransmission gives the peer another try
    // (Linux, tcp_abort_on_overflow = 0).
    ctr.inc(Counter::tcp_drop_listen_overflow);
    return false;
  }
  if (t.ts_ok && seg.opts.has_timestamps && seg.opts.ts.tsecr != 0) {
    rtt_sample(s, std::chrono::milliseconds(ts_now(s) - seg.opts.ts.tsecr));
  } else if (t.rtt_timing && t.rto_count == 0) {
    rtt_sample(s, now - t.rtt_start);
  }
  t.rtt_timing = false;
  // The window of this first ACK is scaled; SND.WL1/WL2 come from it.
  t.snd.wnd = static_cast<std::uint32_t>(seg.window) << t.snd.wscale;
  t.snd.max_wnd = std::max(t.snd.max_wnd, t.snd.wnd);
  t.snd.wl1 = seg.seq;
  t.snd.wl2 = seg.ack;
  const bool fin_queued = t.fin_queued;
  establish(s);
  // A SYN that passed the fourth step is the simultaneous open's SYN-ACK:
  // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>.
  if (seg.syn()) t.pend.ack_now = true;
  if (fin_queued) set_state(s, TcpState::fin_wait_1);  // close() in SYN-RECEIVED
  if (l != nullptr) accept_enqueue(*l, s);
  notify(s);
  return true;
}

void TcpLayer::Impl::input_text(Sock& s, const TcpRepr& seg) {
  switch (s.tcb.state) {
    case TcpState::established:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
      process_data(s, seg);
      break;
    default:
      // After the peer's FIN no data can be new: a retransmission, answered with an ACK.
      s.tcb.pend.ack_now = true;
      program(s);
      break;
  }
}

void TcpLayer::Impl::input_fin(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  if (t.fin_rcvd) {
    // A retransmitted FIN: our ACK was lost. TIME-WAIT restarts its 2*MSL.
    t.pend.ack_now = true;
    if (t.state == TcpState::time_wait) t.timers.linger = now + 2 * cfg.msl;
    program(s);
  } else if (t.state == TcpState::established || t.state == TcpState::fin_wait_1 ||
             t.state == TcpState::fin_wait_2) {
    const SeqNum fin_seq = seg.seq + static_cast<SeqLen>(seg.payload.size());
    if (fin_seq == t.rcv.nxt) {
      process_fin(s);
    } else if (fin_seq > t.rcv.nxt) {
      t.ooo_fin = fin_seq;  // data missing before it: remember it until the gap fills
      t.pend.ack_now = true;
      program(s);
    }
  }
}

void TcpLayer::Impl::process_data(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  SeqNum seq = seg.seq + (seg.syn() ? 1 : 0);
  ByteSpan data = seg.payload;
  const SeqNum end = seq + static_cast<SeqLen>(data.size());
  if (s.orphan && t.fin_queued && end > t.rcv.nxt) {
    // Linux: new data for a connection the user closed can never be read: abort (RFC 2525 §2.17).
    t.pend.rst = true;
    program(s);
    return;
  }
  if (seq < t.rcv.nxt) {
    const SeqLen dup = t.rcv.nxt.since(seq);
    if (dup >= data.size()) {
      t.pend.ack_now = true;  // all duplicate: the peer missed our ACK
      program(s);
      return;
    }
    data = data.subspan(dup);
    seq = t.rcv.nxt;
  }
  const std::size_t cap = s.opt.rcvbuf ? std::min<std::size_t>(s.opt.rcvbuf, t.rcvq.capacity()) : t.rcvq.capacity();
  const std::size_t used = t.rcvq.size();
  const std::size_t space = cap > used ? cap - used : 0;
  const std::size_t off = seq.since(t.rcv.nxt);
  // RFC 9293 §3.10.7.4: with RCV.WND = 0 no data is acceptable (only the ACK is processed), even
  // if reads made buffer space we have not announced yet (Linux TCPZeroWindowDrop).
  const bool zero_window = !(t.rcv.adv_edge > t.rcv.nxt);
  if (off >= space || zero_window) {
    t.pend.ack_now = true;  // beyond our buffer (e.g. a zero-window probe): ACK shows the window
    program(s);
    return;
  }
  data = data.first(std::min(data.size(), space - off));
  if (t.ts_ok && seg.opts.has_timestamps && seg.opts.ts.tsecr != 0) {
    // Receiver-side RTT for buffer auto-tuning (Linux tcp_rcv_rtt_measure_ts).
    const std::int32_t ms = static_cast<std::int32_t>(ts_now(s) - seg.opts.ts.tsecr);
    if (ms >= 0) {
      const Duration sample = std::chrono::milliseconds(std::max(ms, 1));
      t.rcv_rtt = t.rcv_rtt.count() == 0 ? sample : (t.rcv_rtt * 7 + sample) / 8;
    }
  }
  if (off == 0) {
    t.rcvq.write_at(0, data);
    t.rcvq.commit(data.size());
    t.rcv.nxt += static_cast<SeqLen>(data.size());
    const bool had_ooo = !t.ooo.empty();
    SeqLen ext = 0;
    if (had_ooo) {
      ext = t.ooo.advance(t.rcv.nxt);
      t.rcvq.commit(ext);
      t.rcv.nxt += ext;
    }
    const std::uint64_t n = data.size() + ext;
    t.bytes_received += n;
    ctr.inc(Counter::tcp_rx_bytes, n);
    if (data.size() > t.rcv.mss) t.rcv.mss = static_cast<std::uint32_t>(data.size());
    t.pend.unacked_bytes += static_cast<std::uint32_t>(n);
    // RFC 5681 §4.2: ACK at least every second full segment, at once when a hole fills
    // (RFC 5681 §4.2 / RFC 2018), and at once in quick-ACK mode (Linux); else within 40 ms.
    // With a receive budget, also at once when the peer has less than two segments of window
    // left and the ACK would open it by a segment: the second full segment that would trigger
    // the ACK may never come (Linux __tcp_ack_snd_check likewise sends an ACK that opens the
    // window at once).
    const std::uint32_t left = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
    const bool window_starved = cfg.rcv_budget != 0 && left < 2 * t.rcv.mss &&
                                rcv_budget_cap(s, rcv_window(s), false) >= left + t.rcv.mss;
    if (had_ooo || t.quickacks > 0 || t.pend.unacked_bytes >= 2 * t.rcv.mss || window_starved) {
      t.pend.ack_now = true;
    } else if (t.timers.delack == kNever) {
      t.timers.delack = now + cfg.delayed_ack;
    }
    if (t.ooo_fin && *t.ooo_fin == t.rcv.nxt && !process_fin(s)) return;
    notify(s);
  } else {
    // Out of order: the bytes go into the ring at their offset, the range into Reassembly, and
    // the duplicate ACK (with SACK blocks) goes out at once (RFC 5681 §4.2).
    if (!t.ooo.insert(seq, static_cast<SeqLen>(data.size()))) {
      t.pend.ack_now = true;
      program(s);
      return;
    }
    t.rcvq.write_at(off, data);
    ctr.inc(Counter::tcp_ooo_segments);
    t.quickacks = std::max(t.quickacks, kMaxQuickAcks / 2);
    // One duplicate ACK per out-of-order segment, sent now rather than at the next flush: several
    // segments taken in one poll must not collapse into one ACK, or the sender never counts
    // three duplicates (RFC 5681 §4.2 "immediate duplicate ACK", RFC 5681 §3.2).
    emit(s, wire::tcp_flag::kAck, t.snd.max, 0);
  }
  rcv_budget_note_data(s);
  rcv_budget_sync(s);  // RCV.NXT moved: less of the window is still open
  program(s);
}

bool TcpLayer::Impl::process_fin(Sock& s) {
  Tcb& t = s.tcb;
  t.rcv.nxt += 1;
  t.fin_rcvd = true;
  t.ooo_fin.reset();
  t.pend.ack_now = true;
  program(s);
  switch (t.state) {
    case TcpState::syn_received:
    case TcpState::established:
      set_state(s, TcpState::close_wait);
      break;
    case TcpState::fin_wait_1:
      // Our FIN not yet acknowledged (else process_ack moved us to FIN-WAIT-2): simultaneous close.
      set_state(s, TcpState::closing);
      break;
    case TcpState::fin_wait_2:
      if (!enter_time_wait(s)) return false;
      break;
    default:
      break;
  }
  rcv_budget_sync(s);
  notify(s);
  return true;
}

}  // namespace pno::tcp
