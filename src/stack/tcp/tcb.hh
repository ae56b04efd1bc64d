// The transmission control block (RFC 9293 §3.3.1): everything one connection knows, grouped by
// direction with the RFC's names. Timers are data (one deadline per kind); the timer wheel only
// holds one "look at this connection at time T" entry per socket (see timer_wheel.hh).
#pragma once

#include <cstdint>
#include <optional>

#include "base/addr.hh"
#include "base/errc.hh"
#include "stack/seq.hh"
#include "base/socket.hh"
#include "stack/tcp/byte_ring.hh"
#include "stack/tcp/congestion.hh"
#include "stack/tcp/reassembly.hh"
#include "stack/tcp/rtt.hh"
#include "stack/tcp/sack_scoreboard.hh"
#include "stack/tcp/tcp_state.hh"
#include "base/time.hh"
#include "stack/config.hh"

namespace pno::tcp {

/// Send sequence variables (RFC 9293 §3.3.1, RFC 5961 §5, RFC 6675).
struct SendVars {
  SeqNum una{};        ///< SND.UNA: oldest unacknowledged
  SeqNum nxt{};        ///< SND.NXT: next to send (rewinds to una after an RTO: go-back-N)
  SeqNum max{};        ///< highest sequence number sent + 1 (what the peer may acknowledge)
  SeqNum sml{};        ///< end of the last partial segment sent (Minshall's Nagle, like Linux)
  SeqNum wl1{};        ///< SND.WL1: SEG.SEQ of the last window update
  SeqNum wl2{};        ///< SND.WL2: SEG.ACK of the last window update
  SeqNum iss{};        ///< ISS
  std::uint32_t wnd = 0;      ///< SND.WND in bytes (already scaled)
  std::uint32_t max_wnd = 0;  ///< MAX.SND.WND, largest window the peer offered (RFC 5961 §5)
  std::uint8_t wscale = 0;    ///< Snd.Wind.Shift: the peer's shift (RFC 7323 §2.3)
  std::uint32_t mss = 536;    ///< payload of a full segment: peer MSS minus fixed options
};

/// Receive sequence variables.
struct RecvVars {
  SeqNum nxt{};        ///< RCV.NXT
  SeqNum irs{};        ///< IRS
  SeqNum adv_edge{};   ///< RCV.NXT + RCV.WND as last advertised; never moves left (RFC 7323 §2.4)
  std::uint8_t wscale = 0;    ///< Rcv.Wind.Shift: our shift
  std::uint32_t mss = 536;    ///< estimate of the peer's full segment size (delayed ACK decisions)
};

/// Per-socket options (socket.hh SockOpt).
struct SockOptions {
  bool nodelay = false;
  bool cork = false;
  bool keepalive = false;
  bool reuseaddr = false;
  bool reuseport = false;
  int linger = -1;                 ///< -1 off, else seconds
  std::uint32_t rcvbuf = 0;        ///< 0 = auto-tuned
  std::uint32_t sndbuf = 0;        ///< 0 = auto
  std::uint16_t maxseg = 0;        ///< 0 = from the path
  std::uint32_t user_timeout_ms = 0;
  Duration keepidle{}, keepintvl{};
  std::uint8_t keepcnt = 0;
};

/// Timer deadlines, kNever when not armed.
struct Timers {
  Instant rto = kNever;        ///< retransmission (also SYN and SYN-ACK), RFC 6298
  Instant delack = kNever;     ///< delayed ACK, RFC 9293 §3.8.6.3
  Instant persist = kNever;    ///< zero-window probe, RFC 9293 §3.8.6.1
  Instant keepalive = kNever;  ///< RFC 9293 §3.8.4
  Instant linger = kNever;     ///< TIME-WAIT 2*MSL, or orphaned FIN-WAIT-2 timeout
  Instant reo = kNever;        ///< RACK reordering window over, RFC 8985 §6.2
  Instant tlp = kNever;        ///< tail loss probe timeout (PTO), RFC 8985 §7.2
  [[nodiscard]] Instant earliest() const {
    Instant t = rto;
    if (reo < t) t = reo;
    if (tlp < t) t = tlp;
    if (delack < t) t = delack;
    if (persist < t) t = persist;
    if (keepalive < t) t = keepalive;
    if (linger < t) t = linger;
    return t;
  }
};

/// What input and the socket API asked output to send (program, then flush).
struct Pending {
  bool ack_now = false;        ///< an ACK must go out with the next flush
  bool syn = false;            ///< SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) to (re)send
  bool rst = false;            ///< abort: send <SEQ=SND.NXT><CTL=RST>, then close
  bool probe = false;          ///< zero-window or keepalive probe <SEQ=SND.UNA-1>
  bool retransmit_head = false;  ///< resend the segment at SND.UNA (fast retransmit)
  bool force_push = false;     ///< persist timer: send what the window allows, even a runt (RFC 9293 §3.8.6.2.1)
  std::uint32_t unacked_bytes = 0;  ///< in-order bytes received since our last ACK
};

enum class Recovery : std::uint8_t {
  none,
  fast,  ///< fast retransmit/recovery (RFC 6582 NewReno, or RFC 6675 SACK)
};

struct Tcb {
  TcpState state = TcpState::closed;
  SendVars snd{};
  RecvVars rcv{};

  // Negotiated options.
  bool ws_ok = false, ts_ok = false, sack_ok = false;
  std::uint16_t peer_mss = 536;  ///< MSS option of the peer's SYN (RFC 9293 §3.7.1 default 536)

  // Timestamps, RFC 7323 §4.3 and §5.
  std::uint32_t ts_recent = 0;
  Instant ts_recent_at{};        ///< when ts_recent was set (PAWS 24-day rule, §5.5)
  std::uint32_t ts_offset = 0;   ///< added to our ms clock: randomized TSval start
  SeqNum last_ack_sent{};        ///< Last.ACK.sent

  // Buffers.
  ByteRing sndq;   ///< bytes from SND.UNA (after the SYN) that the user wrote
  ByteRing rcvq;   ///< in-order bytes not yet read; out-of-order bytes past its tail
  Reassembly ooo;
  SackScoreboard sb;
  RttEstimator rtt;
  CongestionControl cc;

  // FIN bookkeeping.
  bool fin_queued = false;      ///< user shut the write side: FIN follows the queued data
  bool fin_sent = false;
  bool fin_rcvd = false;        ///< peer's FIN consumed: RCV.NXT is past it
  std::optional<SeqNum> ooo_fin;  ///< peer's FIN seen beyond a gap
  bool rd_shut = false;         ///< shutdown(SHUT_RD)
  bool more = false;            ///< MSG_MORE on the last send(): hold a partial segment

  Pending pend{};
  Timers timers{};

  // Retransmission state.
  unsigned rto_count = 0;       ///< consecutive RTO expiries without progress (retries2)
  Instant first_rto_at = kNever;  ///< start of the current run of retransmissions (TCP_USER_TIMEOUT)
  unsigned persist_count = 0;   ///< zero-window probes without a window (backoff, RFC 9293 §3.8.6.1)
  unsigned probes_out = 0;      ///< zero-window probes unanswered by any ACK (RFC 1122 §4.2.2.17)
  unsigned keepalive_count = 0; ///< keepalive probes unanswered
  Recovery recovery = Recovery::none;
  unsigned dupacks = 0;
  SeqNum recover{};             ///< RFC 6582 "recover" / RFC 6675 RecoveryPoint
  SeqNum high_rxt{};            ///< RFC 6675 HighRxt (last octet retransmitted in this recovery)
  bool recovery_reduced = false; ///< this recovery reduced cwnd (restore ssthresh at its end)
  SeqNum rescue_rxt{};          ///< RFC 6675 RescueRxt (valid while rescue_done)
  bool rescue_done = false;
  // Time-based loss detection in RFC 8985's spirit on a sequence-ordered scoreboard: a hole below
  // SACKed data that stays a hole for the reordering window is lost; a retransmission is lost
  // once data first sent after it is SACKed.
  SeqNum lost_end{};            ///< non-SACKed octets below this are lost
  SeqNum rxt_mark{};            ///< SND.MAX when the latest retransmission of this round went out
  SeqNum reo_end{};             ///< highest SACKed octet + 1 when the reordering timer was armed
  // RFC 8985 §6.2 reordering window.
  bool reord_seen = false;      ///< RACK.reord: reordering seen, loss goes by time, not DupThresh
  std::uint8_t reo_wnd_mult = 1;    ///< RACK.reo_wnd_mult: reo_wnd = mult * SRTT / 4, at most SRTT
  std::uint8_t reo_wnd_persist = 0; ///< RACK.reo_wnd_persist: recoveries before mult returns to 1
  SeqNum dsack_round_end{};     ///< RACK.dsack_round: D-SACKs raise the multiplier once per round
  // Tail loss probe, RFC 8985 §7.
  bool tlp_out = false;         ///< a probe is outstanding (one per tail)
  bool tlp_rxt = false;         ///< ... and it was a retransmission
  bool tlp_rearm = false;       ///< data sent or acknowledged since the PTO was last armed
  SeqNum tlp_end{};             ///< SND.MAX when the probe was sent
  std::uint32_t tlp_flight = 0; ///< flight when the probe was sent (cwnd response, §7.4.2)
  std::uint8_t tlp_spurious = 0; ///< recent probes a D-SACK showed needless (widens the PTO margin)
  bool rtt_timing = false;      ///< Karn-filtered timing of one segment (no timestamps)
  SeqNum rtt_seq{};
  Instant rtt_start{};

  // Receive side.
  unsigned quickacks = 0;       ///< segments still to ACK at once (Linux quick-ACK mode)
  Instant last_rcv{};           ///< last segment from the peer (keepalive idle)
  Instant last_send{};          ///< last data sent (idle restart, RFC 5681 §4.1)
  Instant last_oow_ack{};       ///< last out-of-window duplicate ACK (rate limit, like Linux)
  // Receive buffer auto-tuning (Linux DRS).
  std::uint64_t copied = 0;     ///< bytes the user read, total
  std::uint64_t drs_copied = 0; ///< `copied` at the start of the measurement
  Instant drs_start{};
  Duration rcv_rtt{};           ///< receiver-side RTT estimate (timestamps), 0 = none

  // Statistics (TcpInfo).
  std::uint32_t total_retrans = 0;
  std::uint64_t bytes_acked = 0, bytes_received = 0;

  Tcb(const TcpConfig& cfg)
      : rtt(cfg.rto_initial, cfg.rto_min, cfg.rto_max), cc(cfg.congestion, 536) {}

  /// Sets the ISS and every send-side sequence variable derived from it. The recovery marks must
  /// start at the ISS too: SeqNum compares modulo 2^32, so a mark left at 0 lies "ahead" of
  /// SND.UNA for half of all ISSs and would read as known loss (spurious fast retransmits).
  void init_send(SeqNum iss) {
    snd.iss = iss;
    snd.una = snd.nxt = snd.max = snd.sml = iss;
    snd.wl2 = iss;
    recover = iss;
    high_rxt = iss - 1;
    lost_end = rxt_mark = reo_end = tlp_end = rescue_rxt = rtt_seq = dsack_round_end = iss;
  }
  /// Bytes in flight by sequence space (SYN and FIN included).
  [[nodiscard]] std::uint32_t flight() const { return snd.max.since(snd.una); }
  /// SYN still unacknowledged: data offsets are shifted by one.
  [[nodiscard]] bool syn_unacked() const { return snd.una == snd.iss; }
  /// First data byte's sequence number (the byte at offset 0 of sndq).
  [[nodiscard]] SeqNum data_base() const { return syn_unacked() ? snd.una + 1 : snd.una; }
  /// Sequence number one past the last queued data byte (= FIN's sequence number).
  [[nodiscard]] SeqNum data_end() const { return data_base() + static_cast<SeqLen>(sndq.size()); }
};

}  // namespace pno::tcp
