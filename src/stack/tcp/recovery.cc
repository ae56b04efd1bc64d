// ACK processing and loss recovery: RFC 5961 §5 ACK acceptability, RFC 9293 window update rules,
// RTT sampling (RFC 7323 §4 timestamps, else Karn-filtered timing, RFC 6298 §3), fast retransmit
// (RFC 5681 §3.2) with NewReno partial ACKs (RFC 6582) or SACK-based recovery (RFC 6675), and
// receive buffer auto-tuning. Timer expiry (RTO, tail loss probe, persist, keepalive) is timers.cc.
#include <algorithm>
#include <bit>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

using wire::TcpRepr;
namespace flag = wire::tcp_flag;

void TcpLayer::Impl::rtt_sample(Sock& s, Duration rtt) {
  if (rtt < Duration::zero() || rtt > std::chrono::seconds(120)) return;  // wrapped or bogus echo
  s.tcb.rtt.sample(std::max<Duration>(rtt, std::chrono::microseconds(100)));
}

void TcpLayer::Impl::restart_rto(Sock& s) {
  Tcb& t = s.tcb;
  // RFC 6298 §5.2/§5.3: stop when all is acknowledged, else restart with the current RTO.
  t.timers.rto = t.snd.una == t.snd.max ? kNever : now + t.rtt.rto();
  if (t.timers.rto != kNever) t.timers.persist = kNever;
}

namespace {
/// What the SACK option of an ACK told the scoreboard.
struct SackNews {
  std::uint32_t newly_sacked = 0;  ///< octets SACKed for the first time
  bool dsack = false;              ///< the first block reports a duplicate (RFC 2883)
};

/// The cumulative ACK moves SND.UNA to `ack` (> SND.UNA): acknowledged data leaves the send
/// queue. Returns the sequence space acknowledged (our SYN included).
std::uint32_t take_cumulative_ack(Tcb& t, SeqNum ack) {
  const std::uint32_t acked = ack.since(t.snd.una);
  std::uint32_t data_acked = acked - (t.syn_unacked() ? 1 : 0);
  const std::uint32_t q = std::min<std::uint32_t>(data_acked, static_cast<std::uint32_t>(t.sndq.size()));
  t.sndq.consume(q);
  t.bytes_acked += q;
  t.snd.una = ack;
  if (t.snd.nxt < t.snd.una) t.snd.nxt = t.snd.una;
  return acked;
}

/// The segment's SACK blocks into the scoreboard (RFC 6675 §5 update, RFC 2883 D-SACK check).
SackNews take_sack(Tcb& t, const TcpRepr& seg) {
  SackNews n;
  if (!t.sack_ok || (seg.opts.sack_count == 0 && t.sb.empty())) return n;
  // RFC 2883 §4: a first block below the cumulative ACK, or inside the second, reports a
  // duplicate (D-SACK); the scoreboard ignores it, the tail loss probe response uses it.
  if (seg.opts.sack_count > 0) {
    const SackBlock& b0 = seg.opts.sack[0];
    n.dsack = b0.left < seg.ack || (seg.opts.sack_count > 1 && seg.opts.sack[1].left <= b0.left &&
                                    b0.right <= seg.opts.sack[1].right);
  }
  n.newly_sacked = t.sb.update(t.snd.una, t.snd.max,
                               std::span<const SackBlock>(seg.opts.sack.data(), seg.opts.sack_count));
  return n;
}
}  // namespace

bool TcpLayer::Impl::process_ack(Sock& s, const TcpRepr& seg) {
  Tcb& t = s.tcb;
  const SeqNum ack = seg.ack;
  if (!check_ack_range(s, seg)) return false;
  const std::uint32_t seg_wnd = static_cast<std::uint32_t>(seg.window) << t.snd.wscale;
  const bool window_changed = seg_wnd != t.snd.wnd;
  // Any acceptable ACK shows the peer alive (zero-window probes answered, RFC 1122 §4.2.2.17).
  t.probes_out = 0;

  const std::uint32_t flight_before = t.flight();
  const SeqNum old_una = t.snd.una;
  const bool sacked_above = t.sack_ok && !t.sb.empty();
  const SeqNum prev_high_sacked = t.sb.high_sacked();
  const std::uint32_t acked = ack > t.snd.una ? take_cumulative_ack(t, ack) : 0;
  const SackNews sack = take_sack(t, seg);
  if (sack.dsack) on_dsack(s);
  // RFC 8985 §6.2 (RACK.reord): the cumulative ACK filled a hole below SACKed data with octets
  // never retransmitted, so they were late, not lost.
  if (acked > 0 && sacked_above && old_una < prev_high_sacked && t.high_rxt < old_una) note_reordering(s);
  if (acked > 0) {
    on_new_ack(s, seg, acked);
  } else if (ack == t.snd.una && t.snd.una != t.snd.max) {
    // RFC 5681 §2 duplicate ACK: no data, no SYN/FIN, same window, data outstanding; or, with
    // SACK, any ACK that reports newly SACKed data (RFC 6675 §2 "duplicate acknowledgment").
    const bool classic = seg.payload.empty() && !seg.fin() && !window_changed;
    if (classic || sack.newly_sacked > 0) on_dup_ack(s, seg, sack.newly_sacked);
  }
  if (t.tlp_out && t.snd.una >= t.tlp_end) {
    const bool pure_dup = acked == 0 && sack.newly_sacked == 0 && seg.payload.empty();
    on_tlp_ack(s, sack.dsack || pure_dup, flight_before);
  }
  if (t.sack_ok && t.snd.una != t.snd.max) {
    if (acked > 0 || sack.newly_sacked > 0) detect_losses(s);
    maybe_enter_recovery(s);
  } else {
    t.timers.reo = kNever;  // nothing outstanding: no hole to time
  }
  update_send_window(s, seg, seg_wnd);
  if (!on_fin_acked(s)) return false;
  if (acked > 0 && !s.orphan) notify(s);  // send space freed
  return true;
}

bool TcpLayer::Impl::check_ack_range(Sock& s, const TcpRepr& seg) {
  const Tcb& t = s.tcb;
  const SeqNum ack = seg.ack;
  if (ack > t.snd.max) {
    // RFC 9293 §3.10.7.4: an ACK for something not yet sent: send an ACK, drop the segment.
    ctr.inc(Counter::tcp_drop_bad_ack);
    oow_ack(s, seg);
    return false;
  }
  // RFC 5961 §5.2: older than SND.UNA - MAX.SND.WND is unacceptable (a blind injection guess).
  const std::uint32_t max_wnd = std::max<std::uint32_t>(t.snd.max_wnd, 1);
  if (ack < t.snd.una - max_wnd) {
    ctr.inc(Counter::tcp_drop_bad_ack);
    challenge_ack(s);
    return false;
  }
  return true;
}

void TcpLayer::Impl::on_tlp_ack(Sock& s, bool needless, std::uint32_t flight_before) {
  Tcb& t = s.tcb;
  // RFC 8985 §7.4 (as Linux tcp_process_tlp_ack): a probe of new data is done once acknowledged.
  // A retransmitted probe was needless if a D-SACK reports it (or a pure duplicate ACK answers
  // it): the original arrived and only its ACK was late. It repaired a loss only if the ACK goes
  // beyond the probe; an ACK of exactly the probed data may be the late ACK of the original, so
  // the D-SACK that follows it decides.
  if (!t.tlp_rxt) {
    t.tlp_out = false;
  } else if (needless) {
    t.tlp_out = false;
    // The receiver holds its ACK longer than this PTO allowed (Linux waits for its application
    // to read when its window would not grow): double the margin for the next probes, as
    // D-SACKs widen the reordering window (§6.2 step 4), up to the worst-case delayed ACK.
    if (t.tlp_spurious < kTlpSpuriousMax) ++t.tlp_spurious;
    ctr.inc(Counter::tcp_loss_probes_spurious);
  } else if (t.snd.una > t.tlp_end) {
    // A loss was repaired: reduce cwnd as for any loss, outside a recovery that already did.
    t.tlp_out = false;
    t.tlp_spurious = 0;
    if (t.recovery == Recovery::none) {
      t.cc.on_loss(std::min(t.tlp_flight, flight_before), now);
      t.cc.on_recovery_end(now);
    }
  }
}

void TcpLayer::Impl::update_send_window(Sock& s, const TcpRepr& seg, std::uint32_t seg_wnd) {
  Tcb& t = s.tcb;
  // Window update (RFC 9293 §3.10.7.4): only from a segment at least as new as the last one used.
  if (!(t.snd.wl1 < seg.seq || (t.snd.wl1 == seg.seq && t.snd.wl2 <= seg.ack))) return;
  const bool opened = seg_wnd > t.snd.wnd;
  t.snd.wnd = seg_wnd;
  t.snd.wl1 = seg.seq;
  t.snd.wl2 = seg.ack;
  t.snd.max_wnd = std::max(t.snd.max_wnd, seg_wnd);
  if (seg_wnd > 0 && opened) {
    t.persist_count = 0;
    t.timers.persist = kNever;
    program(s);
  }
}

bool TcpLayer::Impl::on_fin_acked(Sock& s) {
  Tcb& t = s.tcb;
  // Our FIN acknowledged? It is the last sequence number sent.
  const bool fin_acked = t.fin_sent && t.snd.una == t.snd.max;
  if (!fin_acked) return true;
  switch (t.state) {
    case TcpState::fin_wait_1:
      set_state(s, TcpState::fin_wait_2);
      t.timers.rto = kNever;
      if (s.orphan) t.timers.linger = now + kFinWait2Timeout;
      notify(s);
      break;
    case TcpState::closing:
      if (!enter_time_wait(s)) return false;
      break;
    case TcpState::last_ack:
      finish(s);
      return false;
    default:
      break;
  }
  return true;
}

void TcpLayer::Impl::note_reordering(Sock& s) {
  Tcb& t = s.tcb;
  if (t.reord_seen || !t.sack_ok) return;
  // From now on a hole is lost when it stayed a hole for the reordering window (detect_losses),
  // not as soon as DupThresh segments above it are SACKed: under reordering that rule resends
  // every late segment (RFC 8985 §6.2, reo_wnd is 0 only while RACK.reord is false).
  t.reord_seen = true;
  t.sb.set_dupthresh(false);
  ctr.inc(Counter::tcp_reordering_seen);
}

void TcpLayer::Impl::on_dsack(Sock& s) {
  Tcb& t = s.tcb;
  ctr.inc(Counter::tcp_dsack_rx);
  // A D-SACK of our retransmission says the original arrived too: it was late (or its ACK was
  // lost). RFC 8985 §6.2 step 4: widen the reordering window once per round trip that reports
  // D-SACKs, and keep it wide for the next 16 recoveries.
  note_reordering(s);
  if (t.snd.una >= t.dsack_round_end) {
    if (t.reo_wnd_mult < 255) ++t.reo_wnd_mult;
    t.dsack_round_end = t.snd.max;
    t.reo_wnd_persist = 16;
  }
}

void TcpLayer::Impl::on_new_ack(Sock& s, const TcpRepr& seg, std::uint32_t acked) {
  Tcb& t = s.tcb;
  // RTT: timestamps give a sample from every ACK of new data (RFC 7323 §4.1); else time one
  // segment at a time and drop the sample if it was retransmitted (Karn, RFC 6298 §3).
  if (t.ts_ok && seg.opts.has_timestamps && seg.opts.ts.tsecr != 0) {
    rtt_sample(s, std::chrono::milliseconds(static_cast<std::int32_t>(ts_now(s) - seg.opts.ts.tsecr)));
  } else if (t.rtt_timing && seg.ack > t.rtt_seq) {
    rtt_sample(s, now - t.rtt_start);
    t.rtt_timing = false;
  }
  t.rto_count = 0;
  t.first_rto_at = kNever;
  const std::uint32_t flight_after = t.flight();
  if (t.recovery == Recovery::fast) {
    if (seg.ack >= t.recover) {
      // Full ACK: recovery is over (RFC 6582 §3.2 step 3, RFC 6675 §5 step (A) end).
      t.recovery = Recovery::none;
      t.dupacks = 0;
      if (t.recovery_reduced) t.cc.on_recovery_end(now);
      // RFC 8985 §6.2 step 4: the widened window lasts 16 recoveries without D-SACK.
      if (t.reo_wnd_persist > 0 && --t.reo_wnd_persist == 0) t.reo_wnd_mult = 1;
    } else if (!t.sack_ok) {
      // NewReno partial ACK (RFC 6582 §3.2 step 4): resend the next hole, deflate cwnd by the
      // amount acknowledged, add back one SMSS, and restart the RTO for the first partial ACK.
      t.pend.retransmit_head = true;
      const std::uint32_t cwnd = t.cc.cwnd();
      const std::uint32_t deflated = cwnd > acked ? cwnd - acked : 0;
      t.cc.set_cwnd(std::max(deflated + (acked >= t.snd.mss ? t.snd.mss : 0), t.snd.mss));
    } else {
      // RFC 6675: a partial ACK continues recovery; the HighRxt bookkeeping needs no change
      // except that it may not fall behind SND.UNA.
      if (t.high_rxt < t.snd.una - 1) t.high_rxt = t.snd.una - 1;
    }
  } else {
    t.dupacks = 0;
    // Every byte acknowledged counts (congestion.hh): a stretch ACK grows cwnd like the ACKs it
    // stands for.
    t.cc.on_ack(acked, flight_after, t.rtt.srtt(), now);
  }
  if (t.high_rxt < t.snd.una - 1) t.high_rxt = t.snd.una - 1;  // HighRxt never lags SND.UNA
  // "recover" is only ever compared with SND.UNA: keeping it from lagging behind SND.UNA changes no
  // decision, and stops it from reading as ahead of SND.UNA after 2^31 bytes (modular compare).
  if (t.recover < t.snd.una) t.recover = t.snd.una;
  if (t.recovery == Recovery::none) t.rescue_done = false;
  if (t.lost_end < t.snd.una) t.lost_end = t.snd.una;
  t.tlp_rearm = true;
  restart_rto(s);
  program(s);
}

void TcpLayer::Impl::on_dup_ack(Sock& s, const TcpRepr&, std::uint32_t) {
  Tcb& t = s.tcb;
  if (t.recovery == Recovery::fast) {
    // RFC 6582 §3.2 step 3 (NewReno): each further duplicate inflates cwnd by one SMSS.
    // With SACK the scoreboard lowered `pipe` instead (RFC 6675).
    if (!t.sack_ok) t.cc.set_cwnd(t.cc.cwnd() + t.snd.mss);
    program(s);
    return;
  }
  ++t.dupacks;
  // RFC 3042 limited transmit: the first two duplicate ACKs may each clock out one new segment
  // (send_data allows cwnd + dupacks * SMSS), so a small window still gets its third dup ACK.
  program(s);
  if (!t.sack_ok) maybe_enter_recovery(s);  // with SACK process_ack does it after loss detection
}

void TcpLayer::Impl::maybe_enter_recovery(Sock& s) {
  Tcb& t = s.tcb;
  if (t.recovery != Recovery::none || t.snd.una == t.snd.max) return;
  // Counting rules (three duplicate ACKs, RFC 6675 IsLost) until reordering was seen; with SACK
  // after that only time (lost_end, from the reordering window) says a hole is lost, RFC 8985 §6.2.
  const bool by_count = !(t.sack_ok && t.reord_seen) &&
                        (t.dupacks >= SackScoreboard::kDupThresh || (t.sack_ok && t.sb.loss_detected(t.snd.una, t.snd.mss)));
  const bool lost = by_count || (t.sack_ok && t.lost_end > t.snd.una);
  if (!lost) return;
  // RFC 6582 §3.2 step 2 / §4: without SACK, only when the ACK covers more than "recover", so
  // duplicate ACKs of a flight that was already answered (by recovery or an RTO) do not cause a
  // second reduction. With SACK the scoreboard tells which segments are lost, so a loss among
  // the retransmissions after an RTO starts recovery instead of waiting for another RTO (as
  // Linux in its Loss state).
  if (!t.sack_ok && t.snd.una < t.recover) return;
  // Losses within a flight already answered (by an RTO, or a recovery that ended early) reduce
  // cwnd once only: recovery then just repairs them with the cwnd it has (RFC 6582 §4 spirit).
  const bool reduce = !(t.snd.una < t.recover);
  t.recovery = Recovery::fast;
  t.recovery_reduced = reduce;
  t.recover = t.snd.max;
  // After an RTO the octets resent going back stay counted as retransmitted.
  if (reduce) t.high_rxt = t.snd.una - 1;
  t.rxt_mark = t.snd.max;
  t.rescue_done = false;
  t.rtt_timing = false;
  t.timers.tlp = kNever;
  ctr.inc(Counter::tcp_fast_retransmits);
  // ssthresh from what is really in flight: after an RTO, SND.MAX - SND.UNA still counts data
  // already known lost, and cwnd is the better measure (Linux uses cwnd).
  if (reduce) {
    t.cc.on_loss(std::min(t.flight(), std::max(t.cc.cwnd(), 2 * t.snd.mss)), now);
    if (!t.sack_ok) t.cc.set_cwnd(t.cc.ssthresh() + 3 * t.snd.mss);  // RFC 6582 §3.2 step 2
  }
  t.pend.retransmit_head = true;  // RFC 5681 §3.2 step 2, RFC 6675 §5 step (4.3)
  program(s);
}

void TcpLayer::Impl::detect_losses(Sock& s) {
  Tcb& t = s.tcb;
  if (t.sb.empty()) {
    t.timers.reo = kNever;
    return;
  }
  const SeqNum high_sacked = t.sb.high_sacked();
  // A retransmission is lost when data first sent after it has been SACKed (RFC 8985 §6.2 with
  // sequence order for time order): start a new round from SND.UNA with everything retransmitted
  // so far marked lost, so NextSeg resends it instead of waiting for the RTO.
  if (t.recovery == Recovery::fast && t.high_rxt >= t.snd.una && high_sacked > t.rxt_mark) {
    SeqNum seq;
    std::uint32_t len = 0;
    if (t.sb.next_hole(t.snd.una, t.snd.mss, seq, len) && seq <= t.high_rxt) {
      ctr.inc(Counter::tcp_lost_retransmits);
      t.lost_end = seq_max(t.lost_end, t.high_rxt + 1);
      t.high_rxt = t.snd.una - 1;
      t.rxt_mark = t.snd.max;
    }
  }
  // RFC 8985 §6.2: a hole below SACKed data (sent before it) is lost once it stayed a hole for
  // the reordering window, RACK.reo_wnd = min(reo_wnd_mult * RACK.min_RTT / 4, SRTT) (SRTT for
  // min_RTT here).
  SeqNum seq;
  std::uint32_t len = 0;
  const SeqNum from = seq_max(t.lost_end, t.snd.una);
  if (!t.sb.next_hole(from, t.snd.mss, seq, len)) {
    t.timers.reo = kNever;
    return;
  }
  // A timer armed for holes that are all acknowledged or marked by now is stale: arm it afresh
  // for this one, or its early expiry would only re-arm it and delay the mark by a whole window.
  if (t.timers.reo == kNever || t.reo_end <= from) {
    const Duration srtt = t.rtt.has_sample() ? t.rtt.srtt() : std::chrono::milliseconds(100);
    t.reo_end = high_sacked;
    const Duration reo_wnd = std::min<Duration>(srtt / 4 * t.reo_wnd_mult, srtt);
    t.timers.reo = now + std::max<Duration>(reo_wnd, std::chrono::milliseconds(1));
  }
}

void TcpLayer::Impl::on_reo_timer(Sock& s) {
  Tcb& t = s.tcb;
  t.timers.reo = kNever;
  if (!t.sack_ok || t.snd.una == t.snd.max || !is_synchronized(t.state)) return;
  if (t.reo_end > t.lost_end && t.reo_end <= t.snd.max) {
    t.lost_end = t.reo_end;
    ctr.inc(Counter::tcp_rack_marks);
  }
  if (t.lost_end < t.snd.una) t.lost_end = t.snd.una;
  maybe_enter_recovery(s);
  detect_losses(s);  // holes above reo_end get their own window
  program(s);
}

void TcpLayer::Impl::retransmit(Sock& s, SeqNum seq, std::uint32_t len) {
  Tcb& t = s.tcb;
  if (seq < t.data_base()) return;  // only the SYN lies there: it has its own path
  // Only octets sent before are sent again (Linux retransmits skbs of its rtx queue, never past
  // SND.NXT). A retransmission that ran past SND.MAX (room grows when SACK blocks no longer ride
  // on our segments) would carry new data outside the congestion window, and SND.MAX would not
  // cover it: the peer's ACK of those octets then reads as an ACK of unsent data, which is
  // dropped (RFC 9293 §3.10.7.4) with the data it carries, on every retransmission, for good.
  const SeqNum end = seq_min(t.data_end(), t.snd.max);
  std::uint8_t flags = flag::kAck;
  if (seq >= end) {
    // Only the FIN is outstanding at `seq`.
    if (!t.fin_sent) return;
    len = 0;
    flags |= flag::kFin;
  } else {
    len = std::min({len, end.since(seq), seg_room(s)});
    if (seq + len == end && t.fin_sent) flags |= flag::kFin;
    if (seq + len == end) flags |= flag::kPsh;
  }
  emit(s, flags, seq, len);
  ctr.inc(Counter::tcp_retransmits);
  ++t.total_retrans;
  if (t.rtt_timing && t.rtt_seq >= seq && t.rtt_seq < seq + len + 1) t.rtt_timing = false;  // Karn
  const SeqNum last = seq + len + ((flags & flag::kFin) ? 1 : 0);
  if (last > t.snd.una && last - 1 > t.high_rxt) t.high_rxt = last - 1;
  t.rxt_mark = t.snd.max;
}

bool TcpLayer::Impl::send_recovery(Sock& s) {
  Tcb& t = s.tcb;
  bool sent = false;
  if (t.pend.retransmit_head) {
    t.pend.retransmit_head = false;
    if (t.snd.una != t.snd.max) {
      std::uint32_t len = t.snd.mss;
      if (t.sack_ok) {
        SeqNum lost;
        std::uint32_t l = 0;
        // The head is what is missing; stop it at the next SACKed byte.
        if (t.sb.next_lost(t.snd.una, t.snd.una - 1, t.snd.mss, lost, l) && lost == t.snd.una) len = l;
      }
      retransmit(s, t.snd.una, len);
      restart_rto(s);
      sent = true;
    }
  }
  if (!t.sack_ok || t.recovery != Recovery::fast) return sent;
  // RFC 6675 §5 step (C): while cwnd - pipe >= 1 SMSS, send NextSeg().
  const SeqNum lost_end = seq_max(t.lost_end, t.snd.una);
  for (int guard = 0; guard < 4096; ++guard) {
    const std::uint32_t pipe = t.sb.pipe(t.snd.una, t.snd.max, t.high_rxt, t.snd.mss, lost_end);
    const std::uint32_t cwnd = t.cc.cwnd();
    if (cwnd < pipe + t.snd.mss) break;
    SeqNum seq;
    std::uint32_t len = 0;
    if (t.sb.next_lost(t.snd.una, t.high_rxt, t.snd.mss, seq, len, lost_end)) {  // rule 1
      retransmit(s, seq, len);
      sent = true;
      continue;
    }
    // Rule 2: new data, if the window allows.
    if (send_one(s, cwnd - pipe) > 0) {
      sent = true;
      continue;
    }
    // Rule 3: a hole below the highest SACKed octet, lost or not yet known lost.
    if (t.sb.next_hole(seq_max(t.snd.una, t.high_rxt + 1), t.snd.mss, seq, len)) {
      retransmit(s, seq, len);
      sent = true;
      continue;
    }
    // Rule 4, rescue retransmission: once per recovery, the segment holding the highest
    // outstanding octet (the tail that no SACK can reveal as lost). HighRxt is not updated.
    if (!t.rescue_done || t.rescue_rxt < t.snd.una) {
      const SeqNum hs = t.sb.high_sacked();
      const SeqNum end = t.snd.max;
      if (hs < end && end.since(hs) > 0) {
        const std::uint32_t l = std::min(end.since(hs), t.snd.mss);
        const SeqNum keep = t.high_rxt;
        t.rescue_done = true;
        t.rescue_rxt = t.recover;
        retransmit(s, end - l, l);
        t.high_rxt = keep;
        sent = true;
        continue;
      }
    }
    break;
  }
  return sent;
}

void TcpLayer::Impl::rcv_autotune(Sock& s) {
  Tcb& t = s.tcb;
  // Linux tcp_rcv_space_adjust (dynamic right-sizing): once per receiver RTT, size the buffer for
  // twice what the application read in that RTT plus slack, so the window never limits a sender
  // the application keeps up with.
  if (s.opt.rcvbuf != 0 || t.rcvq.capacity() == 0) return;
  Duration rtt = t.rcv_rtt;
  if (rtt.count() == 0) rtt = t.rtt.has_sample() ? t.rtt.srtt() : std::chrono::milliseconds(100);
  if (now - t.drs_start < rtt) return;
  const std::uint64_t copied = t.copied - t.drs_copied;
  t.drs_start = now;
  t.drs_copied = t.copied;
  const std::uint64_t target = std::min<std::uint64_t>(4 * copied + 16ull * t.rcv.mss, cfg.rcvbuf_max);
  if (target > t.rcvq.capacity()) t.rcvq.grow(std::bit_ceil(static_cast<std::size_t>(target)));
}

}  // namespace pno::tcp
