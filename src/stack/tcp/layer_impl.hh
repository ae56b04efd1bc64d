// TcpLayer::Impl: the state shared by the TCP layer's source files (internal header).
//   tcp_layer.cc   driver (segment entry, poll/next_deadline), flush list, timer wheel, readiness/events
//   sockets.cc     socket slab, 4-tuple and port tables, connection lifecycle (drop, TIME-WAIT, close)
//   socket_api.cc  socket calls: bind, listen, accept, connect, send/recv, shutdown, close, abort
//   sockopt.cc     socket options and queries (SO_ERROR, names, TCP_INFO)
//   input.cc       segment arrival, RFC 9293 §3.10.7
//   output.cc      segment emission: flush of programmed work, Nagle, SWS, options
//   recovery.cc    ACK processing, fast retransmit, SACK recovery, auto-tuning
//   timers.cc      timer expiry: RTO, tail loss probe, persist, keepalive
//   listener.cc    passive open: SYN queue, accept queue, SYN cookies, ephemeral ports
//   rcv_budget.cc  receive-window budget across connections
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "stack/config.hh"
#include "stack/tcp/conn_table.hh"
#include "stack/tcp/isn.hh"
#include "stack/tcp/tcb.hh"
#include "stack/tcp/tcp_layer.hh"
#include "stack/tcp/timer_wheel.hh"
#include "stack/wire/tcp.hh"

namespace pno::tcp {

inline constexpr std::uint32_t kNoSlot = 0xffffffffu;
inline constexpr unsigned kSlotBits = 20;
inline constexpr std::uint32_t kSlotMask = (1u << kSlotBits) - 1;
/// Linux TCP_MAX_QUICKACKS.
inline constexpr unsigned kMaxQuickAcks = 16;
/// Doublings of the tail loss probe's 2 ms margin after needless probes (2 ms << 7 passes WCDelAckT).
inline constexpr std::uint8_t kTlpSpuriousMax = 7;
/// Linux tcp_fin_timeout: an orphaned FIN-WAIT-2 connection is dropped after this.
inline constexpr Duration kFinWait2Timeout = std::chrono::seconds(60);
/// RFC 7323 §5.5: ts_recent older than 24 days is invalid.
inline constexpr Duration kPawsIdle = std::chrono::hours(24 * 24);
/// PAWS slack in the peer's timestamp ticks (Linux TCP_PAWS_WINDOW): segments sent within the same
/// tick or the next may arrive in either order.
inline constexpr std::int32_t kPawsWindow = 1;
/// Out-of-window duplicate ACKs at most this often per connection (Linux tcp_invalid_ratelimit).
inline constexpr Duration kOowAckInterval = std::chrono::milliseconds(500);
/// Receive-window budget: a connection counts as receiving for one to two epochs after its last data.
inline constexpr Duration kRcvBudgetEpoch = std::chrono::milliseconds(100);
/// RFC 5961 §7: challenge ACKs per second for the whole stack (Linux tcp_challenge_ack_limit).
inline constexpr std::uint32_t kChallengeAckLimit = 1000;

/// Our window shift: the smallest that lets the 16-bit window cover the largest receive buffer.
std::uint8_t our_wscale(const TcpConfig& cfg, std::uint32_t rcvbuf);

/// One socket: a fresh socket, a listener, or a connection.
struct Sock {
  explicit Sock(const TcpConfig& cfg) : tcb(cfg) {}

  std::uint32_t slot = 0;      ///< index in the slab (fixed for the Sock's lifetime)
  std::uint32_t gen = 1;       ///< generation, in the SocketId above the slot bits
  bool in_use = false;
  bool orphan = false;         ///< user closed it (or never accepted): no events, freed when CLOSED
  bool bound = false;
  bool bound_any = false;      ///< bound to INADDR_ANY: the name stays 0.0.0.0 until connect picks one
  bool autobound = false;      ///< port picked by connect(): other destinations may share it
  bool hashed = false;         ///< in the 4-tuple table
  bool ever_connected = false; ///< SYN-SENT or later was reached (recv/send errors differ)
  Endpoint local{}, remote{};
  SockOptions opt{};
  Errc so_error = Errc::ok;

  // Listener side.
  int backlog = 0;
  std::uint32_t syn_queue = 0;      ///< children in SYN-RECEIVED
  std::uint32_t accept_len = 0;
  std::uint32_t accept_head = kNoSlot, accept_tail = kNoSlot;
  // Child side.
  std::uint32_t parent = kNoSlot;   ///< listener slot while in its SYN or accept queue
  std::uint32_t parent_gen = 0;
  std::uint32_t next_accept = kNoSlot;
  bool in_accept_queue = false;

  // Scheduling.
  // Receive-window budget (rcv_budget.cc).
  std::uint32_t rcv_held = 0;       ///< open window counted in Impl::rcv_held_sum
  std::uint32_t rcv_epoch = 0;      ///< last epoch this connection received data in (0 = never)

  bool in_pending = false;          ///< on the flush list
  bool event_queued = false;        ///< on the event queue

  Tcb tcb;
};

/// A received segment with what demux learned about it.
struct SegIn {
  const Ipv4RxInfo& ip;
  const wire::TcpRepr& seg;
};

struct TcpLayer::Impl {
  Impl(const TcpConfig& cfg, Ipv4Output& ip, Counters& counters, std::uint64_t secret, Instant now);

  TcpConfig cfg;
  Ipv4Output& ip;
  Counters& ctr;
  IsnGenerator isn;
  TimerWheel wheel;  ///< one entry per socket, id = slot
  Instant now;

  // --- socket slab (sockets.cc) ---
  static constexpr std::size_t kChunk = 256;
  std::vector<std::unique_ptr<std::vector<Sock>>> chunks;
  std::uint32_t slots = 0;             ///< slots created so far
  std::vector<std::uint32_t> free_slots;
  std::size_t live = 0;
  std::uint32_t tw_count = 0;          ///< sockets in TIME-WAIT (set_state / free_sock keep it)
  std::uint32_t tw_cap = 0;            ///< TcpConfig::max_tw_buckets, resolved

  ConnTable conns;
  /// port -> listening slots, in listen() order. More than one only for an SO_REUSEPORT group;
  /// the vector is allocated by listen(), never on the packet path.
  std::unordered_map<std::uint16_t, std::vector<std::uint32_t>> listeners;
  std::vector<std::uint32_t> pending;   ///< slots with output programmed
  std::vector<std::uint32_t> events;    ///< ring of slots with a readiness change
  std::size_t ev_head = 0, ev_len = 0;
  Instant chal_start{};
  std::uint32_t chal_count = 0;
  std::uint32_t port_counter = 0;       ///< RFC 6056 §3.3.3 "next_ephemeral"

  // Receive-window budget (rcv_budget.cc): the sum of every connection's open window, and how
  // many connections received data in the current and the previous epoch (exactly, each counted
  // once: a connection seen in both epochs moves to the current count).
  std::uint64_t rcv_held_sum = 0;
  std::uint32_t rcv_epoch_no = 1;
  Instant rcv_epoch_start{};
  std::uint32_t rcv_active_cur = 0, rcv_active_prev = 0;

  Sock& at(std::uint32_t slot) { return (*chunks[slot / kChunk])[slot % kChunk]; }
  const Sock& at(std::uint32_t slot) const { return (*chunks[slot / kChunk])[slot % kChunk]; }
  static std::uint32_t slot_of(const Sock& s) { return s.slot; }
  SocketId id_of(const Sock& s) const { return (s.gen << kSlotBits) | slot_of(s); }
  Sock* lookup(SocketId id);
  const Sock* lookup(SocketId id) const;
  Sock* alloc();
  void free_sock(Sock& s);
  bool hash(Sock& s);
  void unhash(Sock& s);
  [[nodiscard]] bool tuple_in_use(std::uint16_t local_port, Endpoint remote) const;
  /// `explicit_only`: ignore ports connect() picked itself (only the 4-tuple must be unique).
  /// `reuseport`: the binding socket set SO_REUSEPORT (it may join others that set it too).
  [[nodiscard]] bool port_bound(std::uint16_t port, const Sock* except, bool reuseaddr,
                                bool explicit_only = false, bool reuseport = false) const;
  void listener_add(Sock& l);
  void listener_remove(Sock& l);

  // --- flush list, timer wheel, readiness and events (tcp_layer.cc) ---
  void notify(Sock& s);
  void program(Sock& s);
  void arm(Sock& s);
  [[nodiscard]] std::uint32_t readiness(const Sock& s) const;

  // --- connection lifecycle (sockets.cc) ---
  void set_state(Sock& s, TcpState st);
  [[nodiscard]] std::size_t sndbuf_limit(const Sock& s) const;
  /// The connection is gone (RST, timeout, or closed): CLOSED, error recorded, freed if orphaned.
  void drop_conn(Sock& s, Errc err);
  /// Graceful end of a connection (LAST-ACK acked, TIME-WAIT over, orphan timeouts).
  void finish(Sock& s);
  /// FIN-WAIT-2 or CLOSING to TIME-WAIT for 2*MSL. false: no TIME-WAIT bucket was free, so the
  /// connection was closed at once (freed if orphaned), after the ACK of the peer's FIN.
  bool enter_time_wait(Sock& s);
  void start_close(Sock& s);  ///< queue our FIN (shutdown(SHUT_WR) / close())
  void reset_conn(Sock& s);   ///< user abort: RST now
  /// close()/abort() of a socket with no connection to end: a listener closes, a CLOSED socket is
  /// freed (true). Otherwise the socket becomes an orphan and the caller ends its connection.
  bool close_idle(Sock& s);

  // --- input.cc ---
  void input(const SegIn& in);
  void input_syn_sent(Sock& s, const SegIn& in);
  void input_synchronized(Sock& s, const SegIn& in);
  // The numbered steps of RFC 9293 §3.10.7.4 that input_synchronized runs in order; `bool`
  // results: false = the segment is done with (dropped or answered). Inline: defined in input.cc
  // and called only there, so they fold back into input_synchronized (the per-segment path).
  inline bool check_sequence(Sock& s, const wire::TcpRepr& seg);  ///< PAWS and the first step
  inline void input_rst(Sock& s, const wire::TcpRepr& seg);       ///< second step, RST set
  inline bool check_syn(Sock& s, const wire::TcpRepr& seg);       ///< fourth step, SYN set
  inline bool ack_of_syn(Sock& s, const SegIn& in);               ///< fifth step in SYN-RECEIVED
  inline void input_text(Sock& s, const wire::TcpRepr& seg);      ///< seventh step, payload present
  inline void input_fin(Sock& s, const wire::TcpRepr& seg);       ///< eighth step, FIN set
  bool check_paws(Sock& s, const wire::TcpRepr& seg);
  [[nodiscard]] bool acceptable(const Sock& s, const wire::TcpRepr& seg) const;
  void process_data(Sock& s, const wire::TcpRepr& seg);
  /// false: the connection ended here (TIME-WAIT overflow).
  bool process_fin(Sock& s);
  void challenge_ack(Sock& s);
  void oow_ack(Sock& s, const wire::TcpRepr& seg);
  void take_options(Sock& s, const wire::TcpRepr& syn);
  void update_ts_recent(Sock& s, const wire::TcpRepr& seg);
  void establish(Sock& s);

  // --- output.cc ---
  void flush(Sock& s);
  /// Builds and sends one segment of the connection. `len` data bytes from sequence `seq`.
  bool emit(Sock& s, std::uint8_t flags, SeqNum seq, std::uint32_t len);
  [[nodiscard]] std::uint16_t window_field(Sock& s, bool syn);
  [[nodiscard]] std::uint32_t rcv_window(const Sock& s) const;  ///< free receive space we may offer
  [[nodiscard]] std::uint32_t ts_now(const Sock& s) const;
  [[nodiscard]] std::uint32_t effective_mss(const Sock& s) const;  ///< payload per full segment
  [[nodiscard]] std::uint16_t our_mss() const;                      ///< MSS option we announce
  /// Payload that fits in the next segment: effective MSS minus the SACK blocks it carries.
  [[nodiscard]] std::uint32_t seg_room(const Sock& s) const;
  /// RST in answer to a segment no connection accepts (RFC 9293 §3.10.7.1).
  void send_rst_reply(const Ipv4RxInfo& ip, const wire::TcpRepr& seg);
  void send_raw(Ipv4Addr dst, const wire::TcpRepr& r);
  bool send_data(Sock& s);
  /// One data segment from SND.NXT within `room` bytes of congestion window; sequence space sent.
  std::uint32_t send_one(Sock& s, std::uint32_t room);
  /// Resends `len` bytes from `seq` (loss recovery); adds the FIN if the segment reaches it.
  void retransmit(Sock& s, SeqNum seq, std::uint32_t len);
  bool send_fin_if_due(Sock& s);
  void maybe_window_update(Sock& s);

  // --- rcv_budget.cc ---
  /// Recounts the connection's open window (RCV.NXT to the advertised edge) in the layer's sum;
  /// zero once it can receive no more (FIN received, closed, freed).
  void rcv_budget_sync(Sock& s);
  /// Data arrived on the connection: it counts as a receiver for this epoch and the next.
  void rcv_budget_note_data(Sock& s);
  /// `w` (free buffer we could offer) limited by the budget: what this connection may leave open.
  /// `count`: a window about to be offered (tcp_rcv_budget_limited counts it when limited).
  [[nodiscard]] std::uint32_t rcv_budget_cap(Sock& s, std::uint32_t w, bool count = true);
  /// Connections that received data in the current or the previous epoch.
  [[nodiscard]] std::uint32_t rcv_receivers();
  /// Takes the connection out of the budget entirely (socket freed).
  void rcv_budget_forget(Sock& s);

  // --- recovery.cc ---
  /// ACK processing in synchronized states (RFC 9293 §3.10.7.4 fifth step); false = drop segment.
  bool process_ack(Sock& s, const wire::TcpRepr& seg);
  // Parts of process_ack, in the order it runs them (inline: defined in recovery.cc and called
  // only there, so they fold back into process_ack).
  /// RFC 9293 §3.10.7.4 (nothing beyond SND.MAX) and RFC 5961 §5.2 (nothing below SND.UNA -
  /// MAX.SND.WND); false = segment dropped (answered with an ACK or a challenge ACK).
  inline bool check_ack_range(Sock& s, const wire::TcpRepr& seg);
  /// RFC 8985 §7.4: an ACK reaching past the tail loss probe; `needless`: a D-SACK or a pure
  /// duplicate ACK answered a retransmitted probe.
  inline void on_tlp_ack(Sock& s, bool needless, std::uint32_t flight_before);
  /// SND.WND/WL1/WL2 from the segment if it is at least as new as the last one used (RFC 9293).
  inline void update_send_window(Sock& s, const wire::TcpRepr& seg, std::uint32_t seg_wnd);
  /// FIN-WAIT-1, CLOSING and LAST-ACK move on once our FIN is acknowledged; false = the
  /// connection finished (LAST-ACK).
  inline bool on_fin_acked(Sock& s);
  void on_new_ack(Sock& s, const wire::TcpRepr& seg, std::uint32_t acked);
  void on_dup_ack(Sock& s, const wire::TcpRepr& seg, std::uint32_t newly_sacked);
  bool send_recovery(Sock& s);
  /// Loss detection after the scoreboard took an ACK: lost retransmissions, reordering timer.
  void detect_losses(Sock& s);
  /// Reordering seen (RFC 8985 RACK.reord): loss detection goes by time from now on.
  void note_reordering(Sock& s);
  /// An ACK reported a duplicate segment (D-SACK, RFC 2883): widen the reordering window.
  void on_dsack(Sock& s);
  /// Enters fast recovery if loss is known (3 duplicate ACKs, IsLost(SND.UNA), or time-based marks).
  void maybe_enter_recovery(Sock& s);
  void on_reo_timer(Sock& s);
  void restart_rto(Sock& s);
  void rcv_autotune(Sock& s);
  void rtt_sample(Sock& s, Duration rtt);

  // --- timers.cc ---
  void on_timers(Sock& s);
  void on_rto(Sock& s);
  void on_tlp(Sock& s);
  /// Arms or cancels the tail loss probe after a flush (RFC 8985 §7.2).
  void arm_tlp(Sock& s);
  void on_persist(Sock& s);
  void on_keepalive(Sock& s);
  void arm_keepalive(Sock& s);

  // --- listener.cc ---
  void input_listen(Sock& l, const SegIn& in);
  /// The listener a segment from `remote` to `port` goes to: one member of an SO_REUSEPORT group
  /// chosen by a keyed hash of the 4-tuple, so every segment of a handshake meets the same one.
  Sock* listener_for(std::uint16_t port, Endpoint remote);
  void accept_enqueue(Sock& l, Sock& child);
  void listener_close(Sock& l);
  void child_gone(Sock& child);
  Sock* parent_of(Sock& child);
  std::uint16_t pick_ephemeral(Endpoint remote);
  void send_cookie_synack(const SegIn& in);
  bool cookie_ack(Sock& l, const SegIn& in);
  void init_child(Sock& l, Sock& c, const SegIn& in, SeqNum iss);
};

}  // namespace pno::tcp
