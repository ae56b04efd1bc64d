// What crosses the host<->engine "PCIe link": the attach messages, the shared region's layout, and
// the records of its rings. Both ends include this header and nothing else of each other. Every
// field the host writes is untrusted input for the engine (see dma.hh and README.md).
//
// All structures are plain, trivially copyable, fixed-size records with explicit padding; atomics
// are applied to their fields with std::atomic_ref (host) or DmaChannel word accesses (engine).
// Indices are free-running 32-bit counters (ring position = index & (entries - 1)); each ring's
// producer and consumer indices sit on separate cache lines, written by one side each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <type_traits>

namespace pno::channel::contract {

/// Bumped on every incompatible change of anything in this header. Compatible additions do not
/// bump it: they take reserved words (zero means "absent") and, where behaviour changes, a feature
/// bit both ends agree on at attach (`kFeatures...` below).
inline constexpr std::uint32_t kAbiVersion = 5;
inline constexpr std::uint64_t kRegionMagic = 0x314e414843'4f4e50ULL;  // "PNOCHAN1" (little endian)
inline constexpr std::uint32_t kAttachMagic = 0x504e4f41;              // "PNOA"
inline constexpr std::size_t kCacheLine = 64;
inline constexpr char kDefaultSocketPath[] = "/run/pno/engine.sock";

// ------------------------------------------------------------------------------------ attach socket
// SOCK_SEQPACKET over a path-named Unix socket. The host sends AttachRequest; the engine answers
// AttachReply with SCM_RIGHTS [region memfd, doorbell eventfd] on success, without fds on refusal.
// Later the host registers waiters: WaiterRegister + SCM_RIGHTS [eventfd] -> WaiterReply.
//
// Messages only grow at their end: an engine reads the first 8 bytes (magic, version) of any
// request and answers a host of another version with `version_mismatch` in a reply whose prefix
// (up to `why`) every version shares, so either side can say what is wrong.

/// Optional behaviour both ends must agree on. The host asks for the bits it understands
/// (AttachRequest::features); the engine grants a subset (AttachReply::features, repeated in
/// RegionHeader::features) and never a bit the host did not ask for. None is defined yet: a change
/// that an older peer cannot follow either takes a bit here or bumps kAbiVersion.
inline constexpr std::uint64_t kFeaturesKnown = 0;

enum class AttachStatus : std::uint32_t { ok = 0, version_mismatch = 1, refused = 2, no_resources = 3 };

struct AttachRequest {
  std::uint32_t magic = kAttachMagic;
  std::uint32_t abi_version = kAbiVersion;
  std::uint32_t pid = 0;
  std::uint32_t reserved0 = 0;
  std::uint64_t features = 0;       ///< feature bits the host understands
  std::uint32_t reserved[6] = {};   ///< zero
};
static_assert(sizeof(AttachRequest) == 48);
static_assert(offsetof(AttachRequest, features) == 16);

struct AttachReply {
  std::uint32_t magic = kAttachMagic;
  std::uint32_t abi_version = kAbiVersion;  ///< the version the engine speaks
  AttachStatus status = AttachStatus::ok;
  std::uint32_t reserved0 = 0;
  std::uint64_t region_bytes = 0;
  char why[160] = {};                       ///< NUL-terminated reason on refusal
  std::uint64_t features = 0;               ///< feature bits granted (a subset of the request's)
  std::uint32_t reserved[6] = {};           ///< zero
};
static_assert(offsetof(AttachReply, why) == 24);  // the prefix every version shares
static_assert(offsetof(AttachReply, features) == 184);
static_assert(sizeof(AttachReply) == 216);

enum class CtlOp : std::uint32_t { register_waiter = 1, unregister_waiter = 2 };

struct WaiterRegister {
  std::uint32_t magic = kAttachMagic;
  CtlOp op = CtlOp::register_waiter;
  std::uint32_t index = 0;  ///< waiter table entry the host claimed
  std::uint32_t reserved = 0;
};
static_assert(sizeof(WaiterRegister) == 16);

struct WaiterReply {
  std::uint32_t magic = kAttachMagic;
  std::int32_t err = 0;  ///< errno value, 0 on success
};
static_assert(sizeof(WaiterReply) == 8);

// ------------------------------------------------------------------------------------- the region
//
//   offset 0        RegionHeader (4 KiB): engine-written description + host locks/flags
//   cmd_off         command ring      (host -> engine)  RingIndices + Command[cmd_entries]
//   cpl_off         completion ring   (engine -> host)  RingIndices + Completion[cpl_entries]
//   kick_off        kick ring         (host -> engine)  RingIndices + u32 slot index[kick_entries]
//   changed_off     changed ring      (engine -> host)  RingIndices + u32 HostSocket[changed_entries]
//   waiters_off     WaiterEntry[max_waiters]           (host-written arm words)
//   replies_off     ReplySlot[kReplySlots]             (host only: completions sorted by tag)
//   slots_off       SocketSlot[max_sockets]
//   procs_off       ProcEntry[max_procs]                (process table, see below)
//   counts_off      u32[max_procs][max_sockets]         (per process: its descriptors per socket)
//   data_off        per socket i: send ring at data_off + i*2*R, receive ring right after (R bytes)

/// One ring's indices: consumer (head) and producer (tail) on their own cache lines. A ring at
/// offset `off` has its entries at `off + kRingEntries`: one spare line after the indices leaves
/// room for a per-ring word later without moving the entries.
struct alignas(kCacheLine) RingIndices {
  std::uint32_t head = 0;  ///< next entry the consumer reads; written by the consumer only
  std::uint8_t pad0[kCacheLine - 4] = {};
  std::uint32_t tail = 0;  ///< next entry the producer writes; written by the producer only
  std::uint8_t pad1[kCacheLine - 4] = {};
};
static_assert(sizeof(RingIndices) == 2 * kCacheLine);
static_assert(offsetof(RingIndices, tail) == kCacheLine);
inline constexpr std::uint64_t kRingEntries = sizeof(RingIndices) + kCacheLine;

/// A host-side spin lock word (0 free, else the holder's pid). One per cache line.
struct alignas(kCacheLine) LockWord {
  std::uint32_t owner = 0;
  std::uint8_t pad[kCacheLine - 4] = {};
};
static_assert(sizeof(LockWord) == kCacheLine);

struct AddrRecord {
  std::uint32_t addr = 0;  ///< host byte order
  std::uint8_t prefix_len = 0;
  std::uint8_t pad[3] = {};
};

/// RegionHeader::engine_sleeping after a host rang the doorbell for the engine's current sleep.
inline constexpr std::uint32_t kDoorbellRung = 2;

struct alignas(kCacheLine) RegionHeader {
  // lines 0-7: written by the engine before the region is handed over, read-only afterwards. The
  // host uses the offsets as published (after `validate`), so an engine may place the parts
  // differently, or add some, without the host recomputing its layout.
  std::uint64_t magic = kRegionMagic;
  std::uint32_t abi_version = kAbiVersion;
  std::uint32_t max_procs = 0;  ///< process table entries (the last one is kProcShared)
  std::uint64_t region_bytes = 0;
  std::uint32_t max_sockets = 0;
  std::uint32_t stream_ring_bytes = 0;
  std::uint32_t max_waiters = 0;
  std::uint32_t cmd_entries = 0;
  std::uint32_t cpl_entries = 0;
  std::uint32_t kick_entries = 0;
  std::uint32_t changed_entries = 0;
  std::uint32_t n_addrs = 0;
  std::uint64_t cmd_off = 0, cpl_off = 0, kick_off = 0, changed_off = 0;
  std::uint64_t waiters_off = 0, replies_off = 0, slots_off = 0, data_off = 0;
  AddrRecord addrs[8] = {};
  std::uint64_t procs_off = 0;
  std::uint64_t counts_off = 0;  ///< u32[max_procs][max_sockets]
  std::uint64_t features = 0;    ///< feature bits in force for this family (AttachReply::features)
  std::uint32_t reserved[76] = {};  ///< zero: room for fields a compatible version adds

  // Engine-written, live.
  /// 0: awake. The engine stores 1 before it sleeps: a host that produced must ring the doorbell.
  /// The host that rings first stores kDoorbellRung, so the others skip the system call until the
  /// engine wakes and stores 0 (the engine only writes this word, never reads it).
  alignas(kCacheLine) std::uint32_t engine_sleeping = 0;
  std::uint32_t changed_overflow = 0;   ///< bumped when the changed ring was full (host rescans)

  // Host-written, live.
  alignas(kCacheLine) std::uint32_t armed_waiters = 0;  ///< waiters armed right now (engine hint)
  std::uint32_t waiter_hwm = 0;         ///< 1 + highest waiter index ever claimed
  std::uint32_t changed_overflow_seen = 0;
  std::uint32_t reply_alloc = 0;        ///< host-only: next reply tag to try

  // Host-only spin locks that serialise the host's producers/consumers (threads and processes).
  LockWord cmd_lock, cpl_lock, kick_lock, changed_lock, ctl_lock;
};
static_assert(std::is_trivially_copyable_v<RegionHeader>);
static_assert(offsetof(RegionHeader, counts_off) == 3 * kCacheLine);
static_assert(offsetof(RegionHeader, engine_sleeping) == 8 * kCacheLine);
static_assert(offsetof(RegionHeader, armed_waiters) == 9 * kCacheLine);
static_assert(offsetof(RegionHeader, cmd_lock) == 10 * kCacheLine);
static_assert(sizeof(RegionHeader) <= 4096);
inline constexpr std::size_t kHeaderBytes = 4096;

// ------------------------------------------------------------------------------- commands/results

enum class Op : std::uint16_t {
  nop = 0,
  socket = 1,
  bind = 2,
  listen = 3,
  connect = 4,
  shutdown = 5,
  close = 6,
  setsockopt = 7,
  getsockopt = 8,
  local_endpoint = 9,
  peer_endpoint = 10,
  info = 11,
  take_error = 12,
  /// A forked child's process table entry: `value` = entry index, `addr` = the child's pid. The
  /// engine watches the pid and drops the entry's references when it dies. Answers errno.
  proc_register = 13,
};

/// Command::tag of a command nobody waits for: the engine executes it and posts no completion
/// (close() without SO_LINGER: Linux's close does not wait for the connection's end either).
inline constexpr std::uint16_t kNoReply = 0xffff;

/// host -> engine. `sock` is a HostSocket handle (index + 1 in the low 16 bits, generation above).
struct Command {
  Op op = Op::nop;
  std::uint16_t tag = 0;   ///< echoed in the completion: the host's reply slot
  std::uint32_t sock = 0;
  std::uint32_t addr = 0;  ///< bind/connect: IPv4 host order
  std::uint16_t port = 0;
  std::uint16_t how = 0;   ///< shutdown: ShutdownHow; setsockopt/getsockopt: SockOpt
  std::int32_t value = 0;  ///< listen: backlog; setsockopt: value
  std::uint8_t pad[44] = {};
};
static_assert(sizeof(Command) == 64);
static_assert(std::is_trivially_copyable_v<Command>);

/// engine -> host. `value`: socket handle, option value or endpoint (`endpoint_pack`);
/// `payload` carries TcpInfo for Op::info.
struct Completion {
  std::uint16_t tag = 0;
  Op op = Op::nop;
  std::int32_t err = 0;    ///< errno value, 0 on success
  std::int64_t value = 0;
  std::uint8_t payload[112] = {};
};
static_assert(sizeof(Completion) == 128);
static_assert(std::is_trivially_copyable_v<Completion>);

/// Host-only: a blocked control call's mailbox. Whoever drains the completion ring files each
/// completion into the slot its tag names.
inline constexpr std::uint32_t kReplySlots = 256;
static_assert(kNoReply >= kReplySlots, "a no-reply tag names no reply slot");
struct alignas(kCacheLine) ReplySlot {
  std::uint32_t state = 0;  ///< 0 free, 1 waiting, 2 answered
  std::uint32_t pad0 = 0;
  Completion cpl;
};
static_assert(sizeof(ReplySlot) == 192);

// ----------------------------------------------------------------------------------- waiter table

struct alignas(kCacheLine) WaiterEntry {
  std::uint32_t in_use = 0;  ///< host: claimed by a thread (registered with the engine)
  std::uint32_t armed = 0;   ///< host: 0 idle, else an arm generation the engine wakes once
  std::uint8_t pad[kCacheLine - 8] = {};
};
static_assert(sizeof(WaiterEntry) == kCacheLine);

// ------------------------------------------------------------------------------------ socket slots

enum class SlotState : std::uint32_t { free = 0, open = 1, listening = 2, connecting = 3, connected = 4, closed = 5 };

/// Engine-published socket flags (SocketSlot::flags).
enum SlotFlag : std::uint32_t {
  kFlagSendable = 1u << 0,   ///< established and not shut for writing: send ring bytes will go out
  kFlagRxEof = 1u << 1,      ///< every byte before the peer's FIN is in the receive ring
  kFlagError = 1u << 2,      ///< `err` holds a pending asynchronous error
  kFlagSendClosed = 1u << 3, ///< send side gone (shutdown or connection over): send() gives EPIPE
  kFlagWasConnected = 1u << 4,
  kFlagRxBlocked = 1u << 5,  ///< the engine holds more received bytes than the ring had room for
};

inline constexpr std::uint32_t kAcceptQueue = 32;

struct AcceptEntry {
  std::uint32_t sock = 0;  ///< HostSocket of the accepted connection
  std::uint32_t addr = 0;  ///< peer
  std::uint16_t port = 0;
  std::uint16_t pad = 0;
  std::uint32_t pad2 = 0;
};
static_assert(sizeof(AcceptEntry) == 16);

struct alignas(kCacheLine) SocketSlot {
  // line 0: engine-written state.
  std::uint32_t gen = 0;        ///< generation of the handle owning the slot now
  SlotState state = SlotState::free;
  std::uint32_t tcp_ready = 0;  ///< TCP readiness the host reads: HUP/RDHUP/ERR, and OUT unless kFlagSendable
  std::uint32_t event_seq = 0;
  std::uint32_t flags = 0;      ///< SlotFlag
  std::int32_t err = 0;         ///< pending error (errno) when kFlagError
  std::uint8_t pad0[kCacheLine - 24] = {};
  // line 1: engine-written indices.
  std::uint32_t snd_head = 0;   ///< send ring: bytes the engine took
  std::uint32_t rcv_tail = 0;   ///< receive ring: bytes the engine wrote
  std::uint32_t acc_tail = 0;   ///< accept queue: connections the engine queued
  std::uint32_t kick_done = 0;  ///< last kick_req the engine has seen
  std::uint8_t pad1[kCacheLine - 16] = {};
  // line 2: host-written (untrusted for the engine).
  std::uint32_t snd_tail = 0;
  std::uint32_t rcv_head = 0;
  std::uint32_t acc_head = 0;
  std::uint32_t kick_req = 0;
  /// Bumped when a send found the ring without room or left it below the writability mark (a
  /// quarter free): the host may now wait for room, and the engine publishes an event once that
  /// much is free again (Linux's SOCK_NOSPACE / sk_stream_write_space). Without it no event is
  /// sent for send-ring progress, so a request-response server is not woken for its own replies.
  std::uint32_t snd_nospace = 0;
  std::uint32_t more = 0;       ///< the last send() asked for MSG_MORE
  std::uint32_t err_taken = 0;  ///< host reported the pending error once
  std::uint32_t host_shut_wr = 0;
  std::uint32_t host_linger = 0;  ///< host-only: SO_LINGER with a timeout is on, so the last close waits
  std::uint8_t pad2[kCacheLine - 36] = {};
  // line 3: host-only locks.
  LockWord send_lock;
  LockWord recv_lock;
  // lines 5-12: accept queue (engine writes entries, host reads).
  AcceptEntry accq[kAcceptQueue];
};
static_assert(offsetof(SocketSlot, snd_head) == kCacheLine);
static_assert(offsetof(SocketSlot, snd_tail) == 2 * kCacheLine);
static_assert(offsetof(SocketSlot, send_lock) == 3 * kCacheLine);
static_assert(offsetof(SocketSlot, accq) == 5 * kCacheLine);
static_assert(sizeof(SocketSlot) == 13 * kCacheLine);
static_assert(std::is_trivially_copyable_v<SocketSlot>);

/// The engine-written status line of a slot (line 0), as the engine publishes it in one transfer.
struct SlotEngineLine {
  std::uint32_t gen;
  SlotState state;
  std::uint32_t tcp_ready, event_seq, flags;
  std::int32_t err;
};
static_assert(sizeof(SlotEngineLine) == 24);
static_assert(std::is_trivially_copyable_v<SlotEngineLine>);
static_assert(offsetof(SlotEngineLine, gen) == offsetof(SocketSlot, gen));
static_assert(offsetof(SlotEngineLine, state) == offsetof(SocketSlot, state));
static_assert(offsetof(SlotEngineLine, tcp_ready) == offsetof(SocketSlot, tcp_ready));
static_assert(offsetof(SlotEngineLine, event_seq) == offsetof(SocketSlot, event_seq));
static_assert(offsetof(SlotEngineLine, flags) == offsetof(SocketSlot, flags));
static_assert(offsetof(SlotEngineLine, err) == offsetof(SocketSlot, err));

/// The host-written line of a slot, as the engine reads it in one transfer.
struct SlotHostLine {
  std::uint32_t snd_tail, rcv_head, acc_head, kick_req, snd_nospace, more, err_taken, host_shut_wr;
};
static_assert(sizeof(SlotHostLine) == 32);

// --------------------------------------------------------------------------------- process table
// Which process of the family holds how many descriptors of each socket. Entry e has a ProcEntry
// and a row of max_sockets u32 counts; only the process owning the entry writes its row (and its
// parent, before fork, into the reserved row of the child). A socket is open while the sum of its
// counts over the entries in state reserved/live/shared is non-zero: the host's close() that
// takes it to zero sends Op::close; when a process dies the engine marks its entry dead and closes
// every socket of its row (and its `pending` one) whose sum over the other entries is zero.
// Both sides store (count / state) then load (states / counts) with seq_cst: a host close racing
// with a death is seen by at least one of them (both is harmless: the engine's close is
// idempotent by handle generation). Everything here is host-written and untrusted by the engine.

enum class ProcState : std::uint32_t {
  free = 0,
  reserved = 1,  ///< host: taken for a child being forked; counts, not watched yet
  live = 2,      ///< engine: the pid is watched
  dead = 3,      ///< engine: the process died, its references are being dropped
  shared = 4,    ///< engine: proc_shared(), counts of processes without an entry of their own
  claiming = 5,  ///< host: taken by fork_reserve, its stale row being cleared (counts nothing)
};

struct ProcEntry {
  std::uint32_t state = 0;    ///< ProcState
  std::uint32_t pid = 0;      ///< host: the pid using the entry (informational)
  std::uint32_t pending = 0;  ///< host: handle being closed right now (0: none)
  std::uint32_t pad = 0;
};
static_assert(sizeof(ProcEntry) == 16);
static_assert(std::is_trivially_copyable_v<ProcEntry>);

/// The entry of the first process of a family (set live by the engine at attach).
inline constexpr std::uint32_t kProcFirst = 0;
inline constexpr std::uint32_t kNoProc = 0xffffffffu;

// ----------------------------------------------------------------------------------- handles

inline constexpr std::uint32_t kMaxSockets = 0xffff;
inline constexpr std::uint32_t handle_make(std::uint32_t index, std::uint32_t gen) {
  return ((gen & 0xffff) << 16) | ((index + 1) & 0xffff);
}
inline constexpr std::uint32_t handle_index(std::uint32_t h) { return (h & 0xffff) - 1; }
inline constexpr std::uint32_t handle_gen(std::uint32_t h) { return h >> 16; }

// ----------------------------------------------------------------------------------- geometry

struct Geometry {
  std::uint32_t max_sockets = 1024;
  std::uint32_t stream_ring_bytes = 256 * 1024;  ///< power of two
  std::uint32_t max_waiters = 256;
  std::uint32_t cmd_entries = 256;
  std::uint32_t cpl_entries = 256;
  std::uint32_t changed_entries = 4096;
  std::uint32_t max_procs = 64;  ///< process table entries, >= 2 (the last is shared)
};

inline constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }
inline constexpr bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

/// Fills the layout fields of `h` from `g`; false when `g` is unusable.
inline bool layout(const Geometry& g, RegionHeader& h) {
  if (g.max_sockets == 0 || g.max_sockets > kMaxSockets - 1 || !is_pow2(g.stream_ring_bytes) ||
      g.stream_ring_bytes < 4096 || !is_pow2(g.cmd_entries) || !is_pow2(g.cpl_entries) ||
      !is_pow2(g.changed_entries) || g.max_waiters == 0 || g.max_waiters > 4096 || g.max_procs < 2 ||
      g.max_procs > 4096) {
    return false;
  }
  std::uint32_t kick = 1;
  while (kick < g.max_sockets * 2) kick <<= 1;
  h.max_sockets = g.max_sockets;
  h.stream_ring_bytes = g.stream_ring_bytes;
  h.max_waiters = g.max_waiters;
  h.cmd_entries = g.cmd_entries;
  h.cpl_entries = g.cpl_entries;
  h.kick_entries = kick;
  h.changed_entries = g.changed_entries;
  h.max_procs = g.max_procs;
  std::uint64_t off = kHeaderBytes;
  h.cmd_off = off;
  off = align_up(off + kRingEntries + std::uint64_t{g.cmd_entries} * sizeof(Command), kCacheLine);
  h.cpl_off = off;
  off = align_up(off + kRingEntries + std::uint64_t{g.cpl_entries} * sizeof(Completion), kCacheLine);
  h.kick_off = off;
  off = align_up(off + kRingEntries + std::uint64_t{kick} * 4, kCacheLine);
  h.changed_off = off;
  off = align_up(off + kRingEntries + std::uint64_t{g.changed_entries} * 4, kCacheLine);
  h.waiters_off = off;
  off = align_up(off + std::uint64_t{g.max_waiters} * sizeof(WaiterEntry), kCacheLine);
  h.replies_off = off;
  off = align_up(off + std::uint64_t{kReplySlots} * sizeof(ReplySlot), kCacheLine);
  h.slots_off = off;
  off = align_up(off + std::uint64_t{g.max_sockets} * sizeof(SocketSlot), kCacheLine);
  h.procs_off = off;
  off = align_up(off + std::uint64_t{g.max_procs} * sizeof(ProcEntry), kCacheLine);
  h.counts_off = off;
  off = align_up(off + std::uint64_t{g.max_procs} * g.max_sockets * 4, 4096);
  h.data_off = off;
  off += std::uint64_t{g.max_sockets} * 2 * g.stream_ring_bytes;
  h.region_bytes = off;
  return true;
}

inline constexpr std::uint64_t slot_off(const RegionHeader& h, std::uint32_t i) {
  return h.slots_off + std::uint64_t{i} * sizeof(SocketSlot);
}
/// The shared entry: processes that found the table full count here (never watched, never dead).
inline constexpr std::uint32_t proc_shared(const RegionHeader& h) { return h.max_procs - 1; }
inline constexpr std::uint64_t proc_off(const RegionHeader& h, std::uint32_t e) {
  return h.procs_off + std::uint64_t{e} * sizeof(ProcEntry);
}
/// Entry e's count of descriptors referring to socket slot i.
inline constexpr std::uint64_t count_off(const RegionHeader& h, std::uint32_t e, std::uint32_t i) {
  return h.counts_off + (std::uint64_t{e} * h.max_sockets + i) * 4;
}
inline constexpr std::uint64_t send_ring_off(const RegionHeader& h, std::uint32_t i) {
  return h.data_off + std::uint64_t{i} * 2 * h.stream_ring_bytes;
}
inline constexpr std::uint64_t recv_ring_off(const RegionHeader& h, std::uint32_t i) {
  return send_ring_off(h, i) + h.stream_ring_bytes;
}

/// Whether a header the engine published describes a usable region of `mapped` bytes: sizes in
/// range, ring sizes powers of two, every part inside the region and after the header, no two parts
/// overlapping, the stream rings page-aligned. nullptr when usable, else what is wrong. The host
/// checks this before it trusts any offset; the engine's own `layout` always passes it.
inline const char* validate(const RegionHeader& h, std::uint64_t mapped) {
  if (h.magic != kRegionMagic || h.abi_version != kAbiVersion) return "magic or version";
  if (h.region_bytes != mapped) return "region size";
  if (h.max_sockets == 0 || h.max_sockets > kMaxSockets - 1 || !is_pow2(h.stream_ring_bytes) ||
      h.stream_ring_bytes < 4096 || !is_pow2(h.cmd_entries) || !is_pow2(h.cpl_entries) ||
      !is_pow2(h.kick_entries) || h.kick_entries < 2 * h.max_sockets || !is_pow2(h.changed_entries) ||
      h.max_waiters == 0 || h.max_waiters > 4096 || h.max_procs < 2 || h.max_procs > 4096 || h.n_addrs > 8) {
    return "sizes";
  }
  struct Part {
    std::uint64_t off, len;
  };
  Part parts[] = {
      {h.cmd_off, kRingEntries + std::uint64_t{h.cmd_entries} * sizeof(Command)},
      {h.cpl_off, kRingEntries + std::uint64_t{h.cpl_entries} * sizeof(Completion)},
      {h.kick_off, kRingEntries + std::uint64_t{h.kick_entries} * 4},
      {h.changed_off, kRingEntries + std::uint64_t{h.changed_entries} * 4},
      {h.waiters_off, std::uint64_t{h.max_waiters} * sizeof(WaiterEntry)},
      {h.replies_off, std::uint64_t{kReplySlots} * sizeof(ReplySlot)},
      {h.slots_off, std::uint64_t{h.max_sockets} * sizeof(SocketSlot)},
      {h.procs_off, std::uint64_t{h.max_procs} * sizeof(ProcEntry)},
      {h.counts_off, std::uint64_t{h.max_procs} * h.max_sockets * 4},
      {h.data_off, std::uint64_t{h.max_sockets} * 2 * h.stream_ring_bytes},
  };
  for (const Part& p : parts) {
    if (p.off % kCacheLine != 0 || p.off < kHeaderBytes || p.off > mapped || p.len > mapped - p.off) {
      return "a part outside the region";
    }
  }
  if (h.data_off % 4096 != 0) return "stream rings not page-aligned";
  for (std::size_t a = 0; a < std::size(parts); ++a) {
    for (std::size_t b = a + 1; b < std::size(parts); ++b) {
      if (parts[a].off < parts[b].off + parts[b].len && parts[b].off < parts[a].off + parts[a].len) {
        return "overlapping parts";
      }
    }
  }
  return nullptr;
}

// ----------------------------------------------------------------------------------- endpoints
// An IPv4 endpoint in a completion's `value` (local_endpoint / peer_endpoint): address above the
// port. The one place both ends pack and unpack it.

struct PackedEndpoint {
  std::uint32_t addr = 0;  ///< host byte order
  std::uint16_t port = 0;
};
inline constexpr std::int64_t endpoint_pack(std::uint32_t addr, std::uint16_t port) {
  return static_cast<std::int64_t>((std::uint64_t{addr} << 16) | port);
}
inline constexpr PackedEndpoint endpoint_unpack(std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  return {static_cast<std::uint32_t>(u >> 16), static_cast<std::uint16_t>(u & 0xffff)};
}
static_assert(endpoint_unpack(endpoint_pack(0xc6120001u, 6379)).addr == 0xc6120001u);
static_assert(endpoint_unpack(endpoint_pack(0xffffffffu, 65535)).port == 65535);

}  // namespace pno::channel::contract
