// HostService::Impl: the state shared by the host service's source files (internal header).
//   attach.cc        attach socket and control connections: handshake, region, waiter registration
//   slots.cc         a family's socket slots: handles, allocation, errors, publication
//   pump.cc          one socket's work: send ring -> TCP, close, TCP -> receive ring, state
//   commands.cc      the command ring's operations, pre-accept into a listener's accept queue
//   linger.cc        SO_LINGER: a close() that waits for the FIN to be acknowledged
//   procs.cc         the process table: watched pids, a dead process's references
//   family.cc        closing sockets, a family that detached, its end
//   serve.cc         one pass over a family (commands, kicks, dirty sockets) and its wake-ups
//   host_service.cc  the public HostService (Service, IdleWake, statistics, test hooks)
//
// One instance owns everything it serves: its attach socket and epoll set, the families attached
// to it (regions, rings, waiter eventfds, pidfds), the map from its TcpLayer's sockets to slots,
// its staging buffer, counters and PCIe model. It drives one TcpLayer and keeps no global state,
// so each engine lcore can run an instance of its own on its own stack (with its own socket path).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "channel/contract.hh"
#include "channel/dma.hh"
#include "channel/fd_passing.hh"
#include "channel/pcie_model.hh"
#include "channel/spsc.hh"
#include "engine/host_service.hh"
#include "base/socket.hh"
#include "base/time.hh"

namespace pno::tcp {
class TcpLayer;
}

namespace pno::engine {
namespace c = channel::contract;
}

namespace pno::engine::host {

inline constexpr std::size_t kStaging = 64 * 1024;
inline constexpr Duration kControlInterval = std::chrono::microseconds(200);
inline constexpr std::uint64_t kTagListener = 1ULL << 32;
inline constexpr std::uint64_t kTagConn = 2ULL << 32;
inline constexpr std::uint64_t kTagDoorbell = 3ULL << 32;
inline constexpr std::uint64_t kTagProc = 4ULL << 32;  ///< | entry << 40 | family id: a watched pid's pidfd
inline constexpr std::uint64_t kTagMask = 0xff00000000ULL;
inline constexpr int kErrCorrupt = EIO;
/// A family that died: how long one of its connections may go without handing a byte of its send
/// ring to TCP (the peer reads nothing) before it is reset, and how long they may take in all.
/// Never a FIN after a gap: a connection that cannot deliver its whole ring is reset (Linux keeps
/// an orphan's whole queue and resets it when it gives up: tcp_orphan_retries, tcp_out_of_resources).
inline constexpr Duration kDyingLimit = std::chrono::seconds(30);
inline constexpr Duration kDyingMax = std::chrono::minutes(10);
inline constexpr std::uint16_t kDeferred = 0xfffe;
/// Work one family gets per engine pass; the rest waits for the next pass, so one family's flood
/// delays only itself. A death (a registration of a pid already gone) reads the process table's
/// rows: at most kDeathBudget of them per pass.
inline constexpr std::uint32_t kCommandBudget = 64;
inline constexpr std::uint32_t kKickBudget = 256;
inline constexpr std::uint32_t kControlBudget = 16;
inline constexpr std::uint32_t kDeathBudget = 1;  ///< execute(): the completion comes later (blocking close)

void close_fd(int& fd);

/// A descriptor the engine owns, closed with its owner.
struct OwnedFd {
  int fd = -1;
  OwnedFd() = default;
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { close_fd(fd); }
};
/// Closes a descriptor the host passed and the engine did not verify, on a thread of its own: its
/// close() may run a flush or release that blocks (a FUSE file, a tty, a lingering socket).
void close_off_loop(int& fd);
/// True when `fd` is an eventfd opened non-blocking (the only waiter the engine accepts).
bool is_nonblocking_eventfd(int fd);
/// Wakes a waiter: writes 1 to its eventfd without blocking. False when the host made it
/// blocking (the family is then hostile). Only under a WakeGuardScope.
bool wake_eventfd(int fd);
/// While one lives, a write of this thread that blocks is interrupted (EINTR) within a
/// millisecond: the guard of wake()'s eventfd writes (serve.cc says why).
class WakeGuardScope {
 public:
  WakeGuardScope();
  ~WakeGuardScope();
  WakeGuardScope(const WakeGuardScope&) = delete;
  WakeGuardScope& operator=(const WakeGuardScope&) = delete;
};

/// The TCP readiness bits the host reads from a slot (HostChannel::readiness): hang-ups and errors,
/// and writability while the send ring is not in use. TCP's own IN bit and, on a sendable socket,
/// its OUT bit move with nearly every segment; publishing them would bump event_seq and wake the
/// host for changes it cannot see (and re-arm edge-triggered epoll members for nothing).
inline std::uint32_t host_visible(std::uint32_t tcp_ready, std::uint32_t flags) {
  std::uint32_t v = tcp_ready & (kHangup | kReadHangup | kError);
  if ((flags & c::kFlagSendable) == 0) v |= tcp_ready & kWritable;
  return v;
}

/// The engine's own view of one socket of a family (trusted state; the slot is its publication).
struct EngSock {
  SocketId id = kInvalidSocket;
  std::uint16_t gen = 0;
  c::SlotState state = c::SlotState::free;
  bool dirty = false;
  bool changed = false;
  bool closing = false;          ///< the host closed it: drain the send ring, then close
  bool shut_wr_pending = false;  ///< shutdown(write) after the send ring drained
  bool shut_wr_done = false;
  bool rx_eof = false;
  bool linger_wait = false;      ///< SO_LINGER > 0: the close() completion waits (tag below)
  bool linger_fin = false;       ///< our FIN is queued; waiting for everything to be acked
  bool death_closed = false;     ///< closed because its last holder died (until the slot is reused)
  std::uint16_t linger_tag = 0;
  Instant linger_until{};
  Instant orphan_until{};          ///< family dying: reset unless the send ring moves before this
  std::uint32_t orphan_tail = 0;   ///< family dying: the send ring's end, read once at its death
  std::uint32_t snd_head = 0, rcv_tail = 0, acc_tail = 0;
  std::uint32_t nospace_seen = 0;  ///< the host's last snd_nospace answered with an event
  std::uint32_t flags = 0, tcp_ready = 0, event_seq = 0;
  std::int32_t err = 0;
};

/// A process of a family the engine watches (its process table entry is live).
struct ProcWatch {
  int pidfd = -1;
  pid_t pid = 0;
  bool gone = false;  ///< registered after its process had exited: its death waits for serve_deaths()
};

struct Family {
  std::uint32_t id = 0;
  int conn_fd = -1, doorbell_fd = -1;
  bool active = false;  ///< region handed over (false: attach handshake pending)
  Instant accepted_at{};  ///< when the attach connection was accepted (handshake timeout)
  pid_t pid = 0;
  uid_t uid = 0;
  std::byte* map = nullptr;
  std::uint64_t bytes = 0;
  std::unique_ptr<channel::MemcpyDma> dma;
  c::RegionHeader geo{};
  std::vector<EngSock> socks;
  std::vector<std::uint32_t> free_slots;
  std::vector<bool> prepared;  ///< slot rings already made resident (DmaChannel::prepare)
  std::vector<std::uint32_t> dirty;
  std::vector<int> waiter_fds;
  std::vector<std::uint32_t> woken;
  std::vector<std::uint32_t> registered;
  std::vector<ProcWatch> procs;  ///< per process table entry
  bool watch_pids = false;       ///< the host's pids are ours (same pid namespace): watch them
  std::uint32_t gone = 0;        ///< entries whose ProcWatch::gone is set
  bool watch_warned = false;     ///< a failed pidfd_open was logged (once per family)
  channel::DmaRingConsumer<c::Command> cmd;
  channel::DmaRingProducer<c::Completion> cpl;
  channel::DmaRingConsumer<std::uint32_t> kicks;
  channel::DmaRingProducer<std::uint32_t> changed;
  std::vector<c::Completion> backlog;  ///< completions that did not fit the ring yet
  std::uint32_t changed_overflow = 0;
  bool progress = false;
  bool accept_starved = false;  ///< a listener left connections in TCP for want of a slot
  bool dead = false;    ///< hung up or corrupt
  bool dying = false;   ///< its sockets are being closed (see start_dying)
  Instant dying_until{};

  Family() = default;
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;
  ~Family();

  /// Socket `i`'s send ring (host -> engine) and receive ring (engine -> host).
  channel::DmaByteRing send_ring(std::uint32_t i) {
    return {dma.get(), c::send_ring_off(geo, i), geo.stream_ring_bytes};
  }
  channel::DmaByteRing recv_ring(std::uint32_t i) {
    return {dma.get(), c::recv_ring_off(geo, i), geo.stream_ring_bytes};
  }
};

/// Which family's which slot a stack socket belongs to (routing TcpLayer events to the host).
struct SlotRef {
  std::uint32_t family;
  std::uint32_t index;
};

}  // namespace pno::engine::host

namespace pno::engine {

struct HostService::Impl {
  using Family = host::Family;
  using EngSock = host::EngSock;

  HostServiceConfig cfg;
  HostServiceStats stats;
  channel::DmaStats dma_past;
  tcp::TcpLayer* tcp = nullptr;
  int listen_fd = -1;
  int epfd = -1;
  host::OwnedFd reserve;         ///< given up at EMFILE to accept and shed a connection
  bool listener_paused = false;  ///< out of descriptors and no reserve: listener off epoll
  Instant listener_resume{};
  std::uint32_t next_family = 1;
  std::vector<std::unique_ptr<Family>> fams;  ///< in id order (ids only grow): family() bisects
  std::unordered_map<SocketId, host::SlotRef> by_tcp;
  std::vector<std::byte> staging = std::vector<std::byte>(host::kStaging);
  std::vector<std::uint32_t> work;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> lingering;  ///< (family, slot) in a blocking close
  std::vector<std::uint32_t> proc_row;        ///< proc_died(): the dead entry's counts
  std::vector<c::ProcEntry> proc_states;  ///< proc_died(): the process table after the fence
  std::vector<std::uint32_t> proc_other;      ///< proc_died(): another counting entry's row
  Instant next_control{};
  Instant now{};
  bool busy = false;
  bool idle = false;          ///< the loop sleeps between iterations (see woke())
  bool control_due = false;   ///< the last sleep ended on wait_fd() readiness
  channel::PcieModel pcie;    ///< one link for all families; settled once per on_tick / prepare_sleep

  explicit Impl(HostServiceConfig c);
  ~Impl();

  void log(const char* fmt, auto... args) {
    if (cfg.quiet) return;
    std::fprintf(stderr, "pno-engine: host: ");
    std::fprintf(stderr, fmt, args...);
    std::fprintf(stderr, "\n");
  }

  // attach.cc
  Errc listen_socket();
  void accept_attaches();
  bool admit(int fd, const ucred& cred);
  bool shed_one();
  void expire_handshakes();
  std::uint32_t families_of(uid_t uid) const;
  void handshake(Family& f);
  void refuse(Family& f, c::AttachReply& rep, c::AttachStatus status);
  bool send_region(Family& f, c::AttachReply& rep, int& memfd);
  bool create_region(Family& f, std::uint64_t features, int& memfd);
  void control(Family& f);
  void waiter_message(Family& f, const c::WaiterRegister& req, ssize_t len, int fd);
  void poll_control();

  // slots.cc
  static std::uint32_t handle(const EngSock& s, std::uint32_t i) { return c::handle_make(i, s.gen); }
  EngSock* resolve(Family& f, std::uint32_t h, std::uint32_t& i);
  bool alloc_slot(Family& f, SocketId id, c::SlotState st, std::uint32_t& out);
  void free_slot(Family& f, std::uint32_t i);
  void mark_dirty(Family& f, std::uint32_t i);
  void set_error(Family& f, std::uint32_t i, EngSock& s, Errc e);
  void poison(Family& f, std::uint32_t i, EngSock& s);
  void publish(Family& f, std::uint32_t i, EngSock& s);

  // pump.cc
  void pump(Family& f, std::uint32_t i);
  std::uint32_t pump_send(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl,
                          std::uint32_t pending);
  void note_send_room(EngSock& s, const c::SlotHostLine& hl, std::uint32_t pending, std::uint32_t ring);
  void pump_close(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl, std::uint32_t pending);
  void pump_receive(Family& f, std::uint32_t i, EngSock& s, std::uint32_t space);
  std::uint32_t fill_recv_ring(Family& f, std::uint32_t i, EngSock& s, std::uint32_t space);
  void note_fin_behind_full_ring(EngSock& s);
  void pump_state(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl);

  // commands.cc
  c::Completion execute(Family& f, const c::Command& cmd);
  c::Completion exec_setup(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                 c::Completion cp);
  c::Completion exec_teardown(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                    c::Completion cp);
  c::Completion exec_query(Family& f, std::uint32_t i, EngSock& s, const c::Command& cmd,
                                 c::Completion cp);
  void pre_accept(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl);

  // linger.cc
  bool linger_done(Family& f, std::uint32_t i, EngSock& s);
  void mark_lingering(Family& f, std::uint32_t i);
  void finish_linger(Family& f, EngSock& s);
  void recheck_lingering();

  // procs.cc
  Errc watch_proc(Family& f, std::uint32_t e, pid_t pid);
  Errc register_proc(Family& f, std::int64_t e, std::uint32_t pid);
  void proc_died(Family& f, std::uint32_t e);
  std::uint32_t drop_unheld(Family& f, std::uint32_t e);

  // family.cc
  Family* family(std::uint32_t id);
  void close_socket(Family& f, std::uint32_t i, EngSock& s);
  void close_listener(Family& f, std::uint32_t i, EngSock& s);
  void start_dying(Family& f);
  bool expire_orphans(Family& f);
  void finish_family(Family& f);
  void reap();

  // serve.cc
  void serve(Family& f);
  bool serve_commands(Family& f);
  bool serve_kicks(Family& f);
  void serve_deaths(Family& f);
  void pump_dirty(Family& f);
  void retry_accepts(Family& f);
  void flush_backlog(Family& f);
  void corrupt(Family& f, const char* what);
  void wake(Family& f);
};

}  // namespace pno::engine
