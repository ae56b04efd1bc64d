// The host end's internals, shared by host_attach.cc, host_control.cc, host_data.cc and
// host_wait.cc: HostChannel::Impl (the mapped region, the channel's fds, the waiter list) and the
// small primitives every part uses (region locks, doorbell, kicks, liveness).
#pragma once

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <memory>
#include <vector>

#include "channel/contract.hh"
#include "channel/fd_passing.hh"
#include "channel/host.hh"
#include "channel/spsc.hh"

namespace pno::channel {

namespace c = contract;

template <typename T>
std::atomic_ref<T> at(T& w) {
  return std::atomic_ref<T>(w);
}

/// A close-on-exec duplicate of `fd` at the lowest free number of the top 64 below RLIMIT_NOFILE
/// (or, when those are all taken, any free number above 2); -1 with errno when none is free.
int dup_high(int fd);
/// Moves `fd` to a high descriptor number, close-on-exec, so the application's fd numbering is
/// unaffected and dup2(x, small) never hits it. Returns the new fd (or the old one on failure).
int move_high(int fd);

/// A spin lock on a region word shared by threads and processes. The word holds the holder's pid:
/// a holder killed inside the critical section (kill -9) is detected and its lock taken over.
class RegionLock {
 public:
  RegionLock(std::uint32_t& word, std::uint32_t pid) : w_(word) {
    std::uint32_t spins = 0;
    for (;;) {
      std::uint32_t expect = 0;
      if (at(w_).compare_exchange_weak(expect, pid, std::memory_order_acquire, std::memory_order_relaxed)) return;
      if (++spins < 64) continue;
      sched_yield();
      if (spins % 4096 == 0 && expect != 0 && expect != pid && ::kill(static_cast<pid_t>(expect), 0) != 0 &&
          errno == ESRCH) {
        at(w_).compare_exchange_strong(expect, 0, std::memory_order_relaxed);
      }
    }
  }
  ~RegionLock() { at(w_).store(0, std::memory_order_release); }
  RegionLock(const RegionLock&) = delete;
  RegionLock& operator=(const RegionLock&) = delete;

 private:
  std::uint32_t& w_;
};

/// A process-local spin lock (the waiter list).
class LocalLock {
 public:
  explicit LocalLock(std::atomic<bool>& f) : f_(f) {
    while (f_.exchange(true, std::memory_order_acquire)) sched_yield();
  }
  ~LocalLock() { f_.store(false, std::memory_order_release); }
  LocalLock(const LocalLock&) = delete;
  LocalLock& operator=(const LocalLock&) = delete;

 private:
  std::atomic<bool>& f_;
};

struct HostChannel::Impl {
  // Atomic: relocate_fd() may move them while other threads use them.
  std::atomic<int> conn_fd{-1};
  std::atomic<int> doorbell_fd{-1};
  std::atomic<int> region_fd{-1};               ///< the region's memfd (kept for exec)
  std::atomic<std::uint32_t> relocations{0};    ///< bumped by every relocate_fd()
  std::atomic<std::uint32_t> doorbell_users{0};  ///< threads between loading doorbell_fd and writing it
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  c::RegionHeader* hdr = nullptr;
  c::RegionHeader geo{};  ///< our own copy of the layout, read once at attach (the engine wrote it)
  EngineInfo info;
  std::atomic<bool> dead{false};
  std::atomic<std::int64_t> next_alive_check_ns{0};  ///< see check_alive()
  std::uint32_t pid = 0;
  std::atomic<std::uint32_t> fork_gen{0};
  std::atomic<std::uint32_t> arm_gen{0};
  std::atomic<bool> waiters_lock{false};
  std::vector<std::unique_ptr<Waiter>> waiters;
  /// This process's process table entry (contract.hh): kProcFirst after attach, the one its parent
  /// reserved after fork, the shared one when the table was full.
  std::uint32_t proc = c::kNoProc;
  /// Per socket slot: its rings are already in this process's page tables (see warm()).
  std::unique_ptr<std::atomic<bool>[]> warmed;

  ~Impl() {
    for (auto& w : waiters) {
      if (w && w->fd_ >= 0) ::close(w->fd_);
    }
    if (base != nullptr) munmap(base, bytes);
    if (conn_fd >= 0) ::close(conn_fd);
    if (doorbell_fd >= 0) ::close(doorbell_fd);
    if (region_fd >= 0) ::close(region_fd);
  }

  /// Maps the region behind region_fd, checks its layout, fills info. False with `why` on failure.
  bool map_region(std::uint64_t region_bytes, const char* path, std::span<char> why);

  // --- region accessors (offsets from our copy of the layout, bounds known at attach)
  c::SocketSlot& slot(std::uint32_t i) const { return *reinterpret_cast<c::SocketSlot*>(base + c::slot_off(geo, i)); }
  std::byte* send_ring(std::uint32_t i) const { return base + c::send_ring_off(geo, i); }
  std::byte* recv_ring(std::uint32_t i) const { return base + c::recv_ring_off(geo, i); }
  c::WaiterEntry& waiter(std::uint32_t i) const {
    return reinterpret_cast<c::WaiterEntry*>(base + geo.waiters_off)[i];
  }
  c::ReplySlot& reply(std::uint32_t i) const { return reinterpret_cast<c::ReplySlot*>(base + geo.replies_off)[i]; }
  c::ProcEntry& pentry(std::uint32_t e) const { return *reinterpret_cast<c::ProcEntry*>(base + c::proc_off(geo, e)); }
  std::uint32_t& count(std::uint32_t e, std::uint32_t i) const {
    return *reinterpret_cast<std::uint32_t*>(base + c::count_off(geo, e, i));
  }
  [[nodiscard]] std::uint32_t own_proc() const { return proc < geo.max_procs ? proc : c::proc_shared(geo); }

  /// The first time this process holds socket slot `i`, maps its two rings (and allocates their
  /// pages) in one call: otherwise the first pass of the data through each ring takes a page fault
  /// per 4 KiB, 128 per socket, on the data path (a third of a proxy's CPU in its first seconds).
  /// Slots are reused last-freed-first, so a process warms about as many as it holds at once.
  void warm(std::uint32_t i) const {
    if (i >= geo.max_sockets || warmed[i].exchange(true, std::memory_order_relaxed)) return;
    // MADV_POPULATE_WRITE (Linux 5.14): on older kernels EINVAL, and the faults happen as before.
    (void)::madvise(send_ring(i), 2 * std::size_t{geo.stream_ring_bytes}, MADV_POPULATE_WRITE);
  }

  /// One more descriptor of entry `e` refers to socket slot `i`.
  void count_up(std::uint32_t e, std::uint32_t i) const { at(count(e, i)).fetch_add(1, std::memory_order_seq_cst); }
  /// One fewer (never below zero: the shared entry has several writers). Returns the new count.
  std::uint32_t count_down(std::uint32_t e, std::uint32_t i) const {
    std::uint32_t v = at(count(e, i)).load(std::memory_order_relaxed);
    while (v != 0 && !at(count(e, i)).compare_exchange_weak(v, v - 1, std::memory_order_seq_cst)) {
    }
    return v == 0 ? 0 : v - 1;
  }
  /// True when no entry that counts (reserved, live, shared) holds socket slot `i` any more. Runs
  /// after our own seq_cst count store; the engine stores `dead` into a dying entry, fences, then
  /// reads counts: at least one of us sees the other (contract.hh).
  [[nodiscard]] bool unheld(std::uint32_t i) const {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (std::uint32_t e = 0; e < geo.max_procs; ++e) {
      const auto st = static_cast<c::ProcState>(at(pentry(e).state).load(std::memory_order_seq_cst));
      if (st != c::ProcState::reserved && st != c::ProcState::live && st != c::ProcState::shared) continue;
      if (at(count(e, i)).load(std::memory_order_seq_cst) != 0) return false;
    }
    return true;
  }
  /// Sends Op::close for a handle no process holds any more. When a process holding it died at the
  /// same moment and the engine closed it first, the engine answers success.
  Errc close_unheld(HostSocket s, bool wait);
  /// Sends a command nobody waits for (tag kNoReply): false when the engine is gone.
  bool post(c::Command cmd);
  template <typename T>
  SpscRing<T> ring(std::uint64_t off, std::uint32_t n) const {
    return SpscRing<T>(reinterpret_cast<c::RingIndices*>(base + off),
                       reinterpret_cast<T*>(base + off + c::kRingEntries), n);
  }

  /// The slot of a live handle, or nullptr (stale or out-of-range handle).
  c::SocketSlot* lookup(HostSocket s) const {
    const std::uint32_t i = c::handle_index(s);
    if (s == kNoSocket || i >= geo.max_sockets) return nullptr;
    c::SocketSlot& sl = slot(i);
    if ((at(sl.gen).load(std::memory_order_acquire) & 0xffff) != c::handle_gen(s)) return nullptr;
    if (at(sl.state).load(std::memory_order_acquire) == c::SlotState::free) return nullptr;
    return &sl;
  }

  /// Whether the engine is still there. The real check, a poll() of the attach socket (which hangs
  /// up when the engine dies), runs at most once per clock tick (1-4 ms) per process family: callers
  /// sit on the data path (every readiness check), where a system call per call would cost the host
  /// as much as the kernel's own stack. Sleepers have the attach socket in their poll set, so a death
  /// wakes them at once and is seen within that tick; once seen it is final.
  bool check_alive() {
    if (dead.load(std::memory_order_relaxed)) return false;
    // The coarse clock is a plain read of the vDSO page, without the TSC arithmetic of
    // CLOCK_MONOTONIC: this runs for every readiness check of every socket.
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    const std::int64_t now = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    std::int64_t due = next_alive_check_ns.load(std::memory_order_relaxed);
    if (now < due) return true;
    if (!next_alive_check_ns.compare_exchange_strong(due, now + 1'000'000, std::memory_order_relaxed)) return true;
    const std::uint32_t moves = relocations.load(std::memory_order_acquire);
    const int cfd = conn_fd.load(std::memory_order_acquire);
    pollfd p{cfd, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLIN)) != 0) {
      // The engine never sends unsolicited messages: readable means end of stream.
      char b;
      const ssize_t r = ::recv(cfd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      // A relocation meanwhile may have given the number to the application: look again later.
      const bool moved = relocations.load(std::memory_order_acquire) != moves;
      if (!moved && r <= 0 && !(r < 0 && errno == EAGAIN)) dead.store(true);
      if (moved) next_alive_check_ns.store(0, std::memory_order_relaxed);
    }
    return !dead.load(std::memory_order_relaxed);
  }

  /// After producing into a ring: ring the doorbell if the engine sleeps (Dekker: our index store,
  /// full fence, then its flag; the engine stores its flag, fences, then re-reads our indices).
  /// Only the producer that moves the flag from kEngineAsleep to kDoorbellRung writes the doorbell:
  /// the engine takes a while to wake and clear the flag, and every producer meanwhile (the other
  /// sends of the same event-loop pass, other threads and processes of the family) would otherwise
  /// pay one more system call for the same wake-up. A producer that sees kDoorbellRung needs none:
  /// the engine has not cleared the flag yet, so it still wakes, and before it sleeps again it
  /// stores kEngineAsleep, fences and re-reads the rings, where our fenced store is visible (the
  /// same Dekker pair as above).
  void notify() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    auto flag = at(hdr->engine_sleeping);
    std::uint32_t v = flag.load(std::memory_order_relaxed);
    if (v == 0 || v == c::kDoorbellRung) return;
    // Any other non-zero value means asleep (the engine writes 1). A failed exchange means the
    // engine woke (0) or another producer rang: either way nothing more to do.
    if (!flag.compare_exchange_strong(v, c::kDoorbellRung, std::memory_order_seq_cst)) return;
    const std::uint64_t one = 1;
    // Counted, so relocate_fd() never closes the number under a write in flight.
    doorbell_users.fetch_add(1, std::memory_order_seq_cst);
    [[maybe_unused]] ssize_t r = ::write(doorbell_fd.load(std::memory_order_seq_cst), &one, sizeof(one));
    doorbell_users.fetch_sub(1, std::memory_order_release);
  }

  /// Tells the engine socket `i` has host-side work, unless a kick for it is still outstanding (the
  /// engine stores kick_done before it reads the socket's host line, so an outstanding kick will see
  /// everything we published before this call).
  void kick(std::uint32_t i) {
    c::SocketSlot& sl = slot(i);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (at(sl.kick_req).load(std::memory_order_relaxed) != at(sl.kick_done).load(std::memory_order_acquire)) return;
    {
      RegionLock lk(hdr->kick_lock.owner, pid);
      const std::uint32_t req = at(sl.kick_req).load(std::memory_order_relaxed);
      if (req != at(sl.kick_done).load(std::memory_order_acquire)) return;
      at(sl.kick_req).store(req + 1, std::memory_order_relaxed);
      const std::uint32_t idx = i;
      ring<std::uint32_t>(geo.kick_off, geo.kick_entries).push(std::span(&idx, 1));
    }
    notify();
  }

  /// The send ring is (about to be) short of room: the engine publishes an event once a quarter of
  /// it is free again (contract SocketSlot::snd_nospace). Called with the send lock held, before
  /// the tail store that the engine's next look will see with it.
  void bump_nospace(c::SocketSlot& sl) {
    at(sl.snd_nospace).store(at(sl.snd_nospace).load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  /// A send found no room at all: the request goes out with a kick of its own, as no tail store
  /// follows (the send lock held, like bump_nospace).
  void note_nospace(c::SocketSlot& sl, std::uint32_t i) {
    bump_nospace(sl);
    kick(i);
  }
  /// A socket this process just got (socket(), accept()): counted in its own entry, rings warmed.
  void hold_new(HostSocket s) const {
    count_up(own_proc(), c::handle_index(s));
    warm(c::handle_index(s));
  }

  /// The asynchronous error of a socket, while it is pending (not yet reported by a data call or
  /// SO_ERROR).
  static bool error_pending(c::SocketSlot& sl, std::uint32_t flags) {
    return (flags & c::kFlagError) != 0 && at(sl.err_taken).load(std::memory_order_relaxed) == 0;
  }
  /// Reports the pending error once: a data call that returns it takes it, as sock_error() does.
  static Errc take_pending_error(c::SocketSlot& sl) {
    at(sl.err_taken).store(1, std::memory_order_relaxed);
    return static_cast<Errc>(at(sl.err).load(std::memory_order_relaxed));
  }

  /// Ends an arming of waiter entry `idx`, if it is armed.
  void unarm(std::uint32_t idx) const {
    if (at(waiter(idx).armed).exchange(0, std::memory_order_relaxed) != 0) {
      at(hdr->armed_waiters).fetch_sub(1, std::memory_order_relaxed);
    }
  }

  // --- control calls (host_control.cc)
  /// One control call: command out, block until its completion (or the engine dies).
  bool call(c::Command cmd, c::Completion& out);
  /// Pushes `cmd` onto the command ring and rings the doorbell, yielding while the ring is full:
  /// false when the engine is gone.
  bool push_command(const c::Command& cmd);
  /// A free reply slot, claimed (waiting): its index is a control call's tag.
  std::uint32_t claim_reply_slot();
  /// Files completions into their reply slots (whoever holds the lock does it for everyone).
  void drain_completions(bool may_steal = false);
  /// A control call on an existing socket: badf for an unknown handle, `if_gone` when the engine
  /// does not answer, the engine's error, else its completion.
  Result<c::Completion> sock_call(HostSocket s, const c::Command& cmd, Errc if_gone);
  /// A control call on an existing socket whose answer is only an error code: badf for an unknown
  /// handle, `if_gone` when the engine does not answer.
  Errc errc_call(HostSocket s, const c::Command& cmd, Errc if_gone);
  Result<Endpoint> endpoint_call(HostSocket s, c::Op op);

  // --- data path (host_data.cc)
  /// One send into the send ring of `s` (see the definition).
  template <typename Fill>
  Result<std::size_t> send_with(HostSocket s, bool more, Fill fill);

  // --- waiting (host_wait.cc)
  Waiter* thread_waiter();
  /// From now on any engine progress writes w's eventfd (see HostChannel::arm()).
  void arm(Waiter& w);
  /// Ends an arming of `w` and resets its eventfd.
  void disarm(Waiter& w);
  /// In a forked child: drops the parent's waiters (they belong to the parent's threads).
  void drop_parent_waiters();
};

}  // namespace pno::channel
