// Timer expiry of one connection: the dispatch over its deadlines, the RFC 6298 RTO with backoff
// and the retries2/syn_retries limits, the tail loss probe (RFC 8985 §7), the persist timer
// (zero-window probes, RFC 9293 §3.8.6.1) and keepalive (RFC 9293 §3.8.4). The 2*MSL and FIN-WAIT-2
// deadlines end the connection here.
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

namespace flag = wire::tcp_flag;

void TcpLayer::Impl::on_timers(Sock& s) {
  Tcb& t = s.tcb;
  const std::uint32_t gen = s.gen;
  const auto alive = [&] { return s.in_use && s.gen == gen; };
  if (t.timers.linger <= now) {
    t.timers.linger = kNever;
    finish(s);  // TIME-WAIT over, or an orphaned FIN-WAIT-2 gave up
    return;
  }
  if (t.timers.rto <= now) on_rto(s);
  if (!alive()) return;
  if (t.timers.reo <= now) on_reo_timer(s);
  if (t.timers.tlp <= now) on_tlp(s);
  if (!alive()) return;
  if (t.timers.delack <= now) {
    t.timers.delack = kNever;
    t.pend.ack_now = true;
    program(s);
  }
  if (t.timers.persist <= now) on_persist(s);
  if (!alive()) return;
  if (t.timers.keepalive <= now) on_keepalive(s);
}

void TcpLayer::Impl::on_rto(Sock& s) {
  Tcb& t = s.tcb;
  t.timers.rto = kNever;
  if (t.snd.una == t.snd.max) return;  // everything acknowledged meanwhile
  if (t.first_rto_at == kNever) t.first_rto_at = now;
  ++t.rto_count;
  const unsigned limit = t.state == TcpState::syn_sent       ? cfg.syn_retries
                         : t.state == TcpState::syn_received ? cfg.synack_retries
                                                             : cfg.retries2;
  const bool user_timeout = s.opt.user_timeout_ms != 0 &&
                            now - t.first_rto_at >= std::chrono::milliseconds(s.opt.user_timeout_ms);
  if (t.rto_count > limit || user_timeout) {
    // Linux tcp_write_timeout: give up with ETIMEDOUT, no RST.
    ctr.inc(Counter::tcp_conn_timeouts);
    drop_conn(s, Errc::timed_out);
    return;
  }
  ctr.inc(Counter::tcp_rto_expired);
  t.rtt.backoff();  // RFC 6298 §5.5
  t.rtt_timing = false;
  if (t.state == TcpState::syn_sent || t.state == TcpState::syn_received) {
    t.pend.syn = true;  // RFC 6298 §5.4 for the SYN / SYN-ACK
    ctr.inc(Counter::tcp_retransmits);
    ++t.total_retrans;
    t.timers.rto = now + t.rtt.rto();
    program(s);
    return;
  }
  // RFC 5681 §3.1: ssthresh from the flight, cwnd to one segment; RFC 6582 §4: "recover" moves
  // to SND.MAX so duplicate ACKs of the old flight do not start a fast retransmit.
  t.cc.on_rto(t.flight(), now);
  t.recovery = Recovery::none;
  t.dupacks = 0;
  t.recover = t.snd.max;
  t.high_rxt = t.snd.una - 1;
  t.lost_end = t.snd.una;
  t.rescue_done = false;
  t.tlp_out = false;
  t.timers.reo = kNever;
  t.timers.tlp = kNever;
  // Go back N: resend from SND.UNA as cwnd allows (SACKed segments are skipped).
  t.snd.nxt = t.snd.una;
  retransmit(s, t.snd.una, t.snd.mss);
  if (t.snd.nxt < t.high_rxt + 1) t.snd.nxt = seq_min(t.high_rxt + 1, t.snd.max);
  t.timers.rto = now + t.rtt.rto();  // RFC 6298 §5.6
  program(s);
}

void TcpLayer::Impl::arm_tlp(Sock& s) {
  Tcb& t = s.tcb;
  // RFC 8985 §7.2 (and Linux tcp_schedule_loss_probe): with SACK, in the open state, data in
  // flight, no probe outstanding, and not retransmitting after an RTO.
  const bool eligible = t.sack_ok && t.recovery == Recovery::none && !t.tlp_out && t.rto_count == 0 &&
                        t.snd.una != t.snd.max && t.snd.nxt == t.snd.max && t.timers.rto != kNever &&
                        is_synchronized(t.state) && t.state != TcpState::syn_received;
  if (!eligible) {
    t.timers.tlp = kNever;
    return;
  }
  if (t.timers.tlp != kNever && !t.tlp_rearm) return;
  t.tlp_rearm = false;
  // PTO = 2 * SRTT, plus the worst-case delayed ACK (WCDelAckT) when the receiver may hold its ACK
  // back; never after the RTO. §7.2 names one segment in flight; a receiver owes an immediate ACK
  // only for every second full-sized segment (RFC 5681 §4.2, RFC 1122 §4.2.3.2), and Linux delays
  // it (until its application reads or its 40+ ms timer) whenever less than two full segments are
  // unacknowledged and its window does not grow. So the allowance covers any flight below two full
  // segments; a probe sooner draws a D-SACK, not a repair. Above that, 2 ms of margin (Linux's
  // TCP_TIMEOUT_MIN) keeps real tail losses quick to repair.
  // Each probe a D-SACK showed needless doubles that margin (up to WCDelAckT); a probe that repaired
  // a loss resets it.
  Duration pto = std::chrono::seconds(1);
  if (t.rtt.has_sample()) {
    constexpr Duration kWcDelAckT = std::chrono::milliseconds(200);
    constexpr Duration kMargin = std::chrono::milliseconds(2);
    pto = 2 * t.rtt.srtt();
    pto += t.flight() < 2 * seg_room(s) ? kWcDelAckT : std::min(kMargin * (1u << t.tlp_spurious), kWcDelAckT);
  }
  t.timers.tlp = std::min(now + pto, t.timers.rto);
}

void TcpLayer::Impl::on_tlp(Sock& s) {
  Tcb& t = s.tcb;
  t.timers.tlp = kNever;
  if (!t.sack_ok || t.recovery != Recovery::none || t.tlp_out || t.snd.una == t.snd.max) return;
  if (t.timers.rto <= now) return;
  // RFC 8985 §7.3: send one new segment if the windows allow, else retransmit the last one, so
  // the ACK it draws (with SACK) reveals any loss in the tail without waiting for the RTO.
  const std::uint32_t flight = t.flight();
  const SeqNum max_before = t.snd.max;
  bool rxt = false;
  if (send_one(s, t.snd.mss) == 0 || t.snd.max == max_before) {
    // §7.3: else the highest-sequence segment sent so far, not the tail of the queue (data that
    // the windows held back was never sent).
    const SeqNum end = seq_min(t.data_end(), t.snd.max);
    std::uint32_t len = 0;
    SeqNum seq = end;
    if (end > t.snd.una) {
      len = std::min(end.since(t.snd.una), seg_room(s));
      seq = end - len;
    }
    if (len == 0 && !t.fin_sent) return;
    const SeqNum keep = t.high_rxt;
    retransmit(s, seq, len);
    t.high_rxt = keep;
    rxt = true;
  }
  ctr.inc(Counter::tcp_loss_probes);
  t.tlp_out = true;
  t.tlp_rxt = rxt;
  t.tlp_end = t.snd.max;
  t.tlp_flight = flight;
  restart_rto(s);  // §7.3: the RTO runs from the probe
  program(s);
}

void TcpLayer::Impl::on_persist(Sock& s) {
  Tcb& t = s.tcb;
  t.timers.persist = kNever;
  if (!(t.snd.nxt < t.data_end() && t.snd.una == t.snd.max)) return;
  if (t.probes_out >= cfg.retries2) {
    ctr.inc(Counter::tcp_conn_timeouts);
    drop_conn(s, Errc::timed_out);
    return;
  }
  ++t.probes_out;
  ++t.persist_count;
  const SeqNum wnd_edge = t.snd.una + t.snd.wnd;
  if (wnd_edge > t.snd.nxt) {
    t.pend.force_push = true;  // some window: send what fits (SWS override, RFC 9293 §3.8.6.2.1)
  } else {
    t.pend.probe = true;
    ctr.inc(Counter::tcp_zero_window_probes);
  }
  program(s);  // flush re-arms the persist timer with the backed-off interval
}

void TcpLayer::Impl::arm_keepalive(Sock& s) {
  Tcb& t = s.tcb;
  if (!s.opt.keepalive || !is_synchronized(t.state) || t.state == TcpState::time_wait) {
    t.timers.keepalive = kNever;
    return;
  }
  const Duration idle = s.opt.keepidle.count() ? s.opt.keepidle : cfg.keepalive_idle;
  t.timers.keepalive = t.last_rcv + idle;
}

void TcpLayer::Impl::on_keepalive(Sock& s) {
  Tcb& t = s.tcb;
  t.timers.keepalive = kNever;
  if (!s.opt.keepalive) return;
  switch (t.state) {
    case TcpState::established:
    case TcpState::close_wait:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
      break;
    default:
      return;
  }
  const Duration idle = s.opt.keepidle.count() ? s.opt.keepidle : cfg.keepalive_idle;
  const Duration intvl = s.opt.keepintvl.count() ? s.opt.keepintvl : cfg.keepalive_intvl;
  const unsigned cnt = s.opt.keepcnt ? s.opt.keepcnt : cfg.keepalive_probes;
  // Linux tcp_keepalive_timer: data in flight or queued is the RTO's or persist's business.
  if (t.snd.una != t.snd.max || t.snd.nxt < t.data_end()) {
    t.timers.keepalive = now + idle;
    return;
  }
  const Duration elapsed = now - t.last_rcv;
  if (elapsed < idle) {
    t.timers.keepalive = t.last_rcv + idle;
    return;
  }
  if (t.keepalive_count >= cnt) {
    // RFC 9293 §3.8.4 / Linux: the peer is gone. Linux sends a RST and reports ETIMEDOUT.
    ctr.inc(Counter::tcp_conn_timeouts);
    emit(s, flag::kRst | flag::kAck, t.snd.max, 0);
    ctr.inc(Counter::tcp_rst_tx);
    drop_conn(s, Errc::timed_out);
    return;
  }
  ++t.keepalive_count;
  t.pend.probe = true;
  ctr.inc(Counter::tcp_keepalive_probes);
  t.timers.keepalive = now + intvl;
  program(s);
}

}  // namespace pno::tcp
