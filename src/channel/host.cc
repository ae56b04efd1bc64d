// The host end of the channel (see host.hh, contract.hh and README.md).
#include "channel/host.hh"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "channel/contract.hh"
#include "channel/spsc.hh"

namespace pno::channel {

namespace c = contract;

namespace {

template <typename T>
std::atomic_ref<T> at(T& w) {
  return std::atomic_ref<T>(w);
}

void say(std::span<char> why, const char* fmt, const char* a = "", long b = 0, long d = 0) {
  if (why.empty()) return;
  std::snprintf(why.data(), why.size(), fmt, a, b, d);
}

/// Moves `fd` to a high descriptor number, close-on-exec, so the application's fd numbering is
/// unaffected and dup2(x, small) never hits it. Returns the new fd (or the old one on failure).
/// A close-on-exec duplicate of `fd` at the lowest free number of the top 64 below RLIMIT_NOFILE
/// (or, when those are all taken, any free number above 2); -1 with errno when none is free.
int dup_high(int fd) {
  rlimit rl{};
  long top = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) top = static_cast<long>(rl.rlim_cur);
  top = std::min<long>(top, 1 << 20);
  const long min = std::max<long>(top - 64, 3);
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, static_cast<int>(min));
  if (nfd < 0) nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return nfd;
}

int move_high(int fd) {
  const int nfd = dup_high(fd);
  if (nfd < 0) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
  }
  ::close(fd);
  return nfd;
}

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

std::size_t iov_total(std::span<const iovec> iov) {
  std::size_t n = 0;
  for (const auto& v : iov) n += v.iov_len;
  return n;
}

}  // namespace

bool EngineInfo::is_local(Ipv4Addr a) const {
  for (std::uint8_t i = 0; i < n_addrs && i < addrs.size(); ++i) {
    if (addrs[i].addr == a) return true;
  }
  return false;
}

bool EngineInfo::routes(Ipv4Addr a) const {
  for (std::uint8_t i = 0; i < n_addrs && i < addrs.size(); ++i) {
    if (addrs[i].contains(a)) return true;
  }
  return false;
}

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
                       reinterpret_cast<T*>(base + off + sizeof(c::RingIndices)), n);
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

  /// Files completions into their reply slots (whoever holds the lock does it for everyone).
  void drain_completions(bool may_steal = false) {
    c::RegionHeader& h = *hdr;
    std::uint32_t expect = 0;
    if (!at(h.cpl_lock.owner).compare_exchange_strong(expect, pid, std::memory_order_acquire)) {
      // Someone else drains for everyone. A holder killed while draining would block every control
      // call of the family: take the lock over once its process is gone.
      if (!may_steal || expect == pid || ::kill(static_cast<pid_t>(expect), 0) == 0 || errno != ESRCH) return;
      if (!at(h.cpl_lock.owner).compare_exchange_strong(expect, pid, std::memory_order_acquire)) return;
    }
    auto r = ring<c::Completion>(geo.cpl_off, geo.cpl_entries);
    c::Completion batch[8];
    for (;;) {
      const std::size_t n = r.pop(batch);
      for (std::size_t k = 0; k < n; ++k) {
        if (batch[k].tag >= c::kReplySlots) continue;
        c::ReplySlot& rs = reply(batch[k].tag);
        if (at(rs.state).load(std::memory_order_acquire) != 1) continue;
        rs.cpl = batch[k];
        at(rs.state).store(2, std::memory_order_release);
      }
      if (n < std::size(batch)) break;
    }
    at(h.cpl_lock.owner).store(0, std::memory_order_release);
  }

  Waiter* thread_waiter();

  Result<Endpoint> endpoint_call(HostSocket s, c::Op op) {
    if (lookup(s) == nullptr) return Errc::badf;
    c::Command cmd;
    cmd.op = op;
    cmd.sock = s;
    c::Completion cp;
    if (!call(cmd, cp)) return op == c::Op::peer_endpoint ? Errc::not_conn : Errc::conn_reset;
    if (cp.err != 0) return static_cast<Errc>(cp.err);
    const auto v = static_cast<std::uint64_t>(cp.value);
    return Endpoint{Ipv4Addr{static_cast<std::uint32_t>(v >> 16)}, static_cast<std::uint16_t>(v & 0xffff)};
  }

  /// One control call: command out, block until its completion (or the engine dies).
  bool call(c::Command cmd, c::Completion& out);
  /// A control call on an existing socket whose answer is only an error code: badf for an unknown
  /// handle, `if_gone` when the engine does not answer.
  Errc errc_call(HostSocket s, const c::Command& cmd, Errc if_gone) {
    if (lookup(s) == nullptr) return Errc::badf;
    c::Completion cp;
    if (!call(cmd, cp)) return if_gone;
    return static_cast<Errc>(cp.err);
  }
};

namespace {
struct ThreadWaiter {
  const void* owner = nullptr;  ///< the HostChannel::Impl the waiter belongs to
  std::uint32_t fork_gen = 0;
  Waiter* w = nullptr;
};
thread_local ThreadWaiter t_waiter;
}  // namespace

bool HostChannel::Impl::call(c::Command cmd, c::Completion& out) {
  if (dead.load(std::memory_order_relaxed)) return false;
  // A reply slot: its index is the tag.
  std::uint32_t tag = c::kReplySlots;
  for (std::uint32_t tries = 0; tag == c::kReplySlots; ++tries) {
    const std::uint32_t start = at(hdr->reply_alloc).fetch_add(1, std::memory_order_relaxed);
    for (std::uint32_t k = 0; k < c::kReplySlots; ++k) {
      const std::uint32_t t = (start + k) % c::kReplySlots;
      std::uint32_t expect = 0;
      if (at(reply(t).state).compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
        tag = t;
        break;
      }
    }
    if (tag == c::kReplySlots) sched_yield();
  }
  cmd.tag = static_cast<std::uint16_t>(tag);
  for (;;) {
    std::size_t pushed = 0;
    {
      RegionLock lk(hdr->cmd_lock.owner, pid);
      pushed = ring<c::Command>(geo.cmd_off, geo.cmd_entries).push(std::span(&cmd, 1));
    }
    notify();
    if (pushed == 1) break;
    if (!check_alive()) {
      at(reply(tag).state).store(0, std::memory_order_release);
      return false;
    }
    sched_yield();
  }
  c::ReplySlot& rs = reply(tag);
  Waiter* w = nullptr;
  for (std::uint32_t spins = 0;; ++spins) {
    drain_completions((spins & 63) == 63);
    if (at(rs.state).load(std::memory_order_acquire) == 2) break;
    if (spins < 200) continue;
    if (spins < 400) {
      sched_yield();
      continue;
    }
    // Sleep until the engine makes progress (it wakes armed waiters after posting completions).
    if (w == nullptr) w = thread_waiter();
    if (w != nullptr) {
      const std::uint32_t gen = arm_gen.fetch_add(1, std::memory_order_relaxed) + 1;
      at(waiter(w->index_).armed).store((gen << 1) | 1, std::memory_order_seq_cst);
      at(hdr->armed_waiters).fetch_add(1, std::memory_order_seq_cst);
      drain_completions();
      if (at(rs.state).load(std::memory_order_acquire) != 2) {
        pollfd p[2] = {{w->fd(), POLLIN, 0}, {conn_fd.load(), POLLIN, 0}};
        ::poll(p, 2, 100);
      }
      at(waiter(w->index_).armed).store(0, std::memory_order_relaxed);
      at(hdr->armed_waiters).fetch_sub(1, std::memory_order_relaxed);
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(w->fd(), &v, sizeof(v));
    } else {
      pollfd p{conn_fd.load(), POLLIN, 0};
      ::poll(&p, 1, 1);
    }
    if (!check_alive()) {
      // Leave the slot "waiting": a late completion for it is dropped by the state check.
      return false;
    }
  }
  out = rs.cpl;
  at(rs.state).store(0, std::memory_order_release);
  return true;
}

Waiter* HostChannel::Impl::thread_waiter() {
  const std::uint32_t fg = fork_gen.load(std::memory_order_acquire);
  if (t_waiter.owner == this && t_waiter.fork_gen == fg && t_waiter.w != nullptr) return t_waiter.w;
  if (dead.load(std::memory_order_relaxed)) return nullptr;
  // Claim a table entry.
  std::uint32_t idx = geo.max_waiters;
  for (std::uint32_t i = 0; i < geo.max_waiters; ++i) {
    std::uint32_t expect = 0;
    if (at(waiter(i).in_use).compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
      idx = i;
      break;
    }
  }
  if (idx == geo.max_waiters) return nullptr;
  std::uint32_t hwm = at(hdr->waiter_hwm).load(std::memory_order_relaxed);
  while (hwm < idx + 1 && !at(hdr->waiter_hwm).compare_exchange_weak(hwm, idx + 1, std::memory_order_relaxed)) {
  }
  at(waiter(idx).armed).store(0, std::memory_order_relaxed);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) {
    at(waiter(idx).in_use).store(0, std::memory_order_release);
    return nullptr;
  }
  efd = move_high(efd);
  // Register the eventfd with the engine over the attach connection (shared by the family: the
  // ctl lock keeps request and reply of one thread together).
  bool ok = false;
  {
    RegionLock lk(hdr->ctl_lock.owner, pid);
    c::WaiterRegister req;
    req.index = idx;
    iovec iov{&req, sizeof(req)};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof(cbuf);
    cmsghdr* cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &efd, sizeof(int));
    if (::sendmsg(conn_fd, &m, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof(req))) {
      pollfd p{conn_fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) == 1) {
        c::WaiterReply rep;
        const ssize_t r = ::recv(conn_fd, &rep, sizeof(rep), 0);
        if (r == static_cast<ssize_t>(sizeof(rep)) && rep.magic == c::kAttachMagic && rep.err == 0) ok = true;
        if (r == 0) dead.store(true);
      }
    } else if (errno == EPIPE || errno == ECONNRESET) {
      dead.store(true);
    }
  }
  if (!ok) {
    ::close(efd);
    at(waiter(idx).in_use).store(0, std::memory_order_release);
    return nullptr;
  }
  auto w = std::make_unique<Waiter>();
  w->fd_ = efd;
  w->index_ = idx;
  Waiter* raw = w.get();
  {
    LocalLock lk(waiters_lock);
    waiters.push_back(std::move(w));
  }
  t_waiter = ThreadWaiter{this, fg, raw};
  return raw;
}

// ------------------------------------------------------------------------------------- HostChannel

HostChannel::HostChannel() : impl_(std::make_unique<Impl>()) {}
HostChannel::~HostChannel() = default;

bool HostChannel::Impl::map_region(std::uint64_t region_bytes, const char* path, std::span<char> why) {
  void* map = mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, 0);
  if (map == MAP_FAILED) {
    std::snprintf(why.data(), why.size(), "cannot map the engine's region (%llu bytes): %s",
                  static_cast<unsigned long long>(region_bytes), std::strerror(errno));
    return false;
  }
  base = static_cast<std::byte*>(map);
  bytes = region_bytes;
  hdr = reinterpret_cast<c::RegionHeader*>(base);
  std::memcpy(&geo, hdr, sizeof(geo));
  // Check the layout fits what was mapped before trusting any offset in it.
  c::RegionHeader expect = geo;
  c::Geometry g{geo.max_sockets, geo.stream_ring_bytes, geo.max_waiters, geo.cmd_entries,
                geo.cpl_entries, geo.changed_entries, geo.max_procs};
  if (geo.magic != c::kRegionMagic || geo.abi_version != c::kAbiVersion || !c::layout(g, expect) ||
      std::memcmp(&expect, &geo, sizeof(expect)) != 0 || geo.region_bytes != region_bytes) {
    std::snprintf(why.data(), why.size(), "engine at %s: region layout does not match ABI version %u", path,
                  c::kAbiVersion);
    return false;
  }
  pid = static_cast<std::uint32_t>(getpid());
  warmed = std::make_unique<std::atomic<bool>[]>(geo.max_sockets);
  EngineInfo& e = info;
  e.abi_version = geo.abi_version;
  e.max_sockets = geo.max_sockets;
  e.stream_ring_bytes = geo.stream_ring_bytes;
  e.n_addrs = static_cast<std::uint8_t>(std::min<std::uint32_t>(geo.n_addrs, 8));
  for (std::uint8_t i = 0; i < e.n_addrs; ++i) {
    e.addrs[i] = Ipv4Cidr{Ipv4Addr{geo.addrs[i].addr}, geo.addrs[i].prefix_len};
  }
  return true;
}

std::unique_ptr<HostChannel> HostChannel::attach(const char* path, std::span<char> why) {
  if (path == nullptr) path = c::kDefaultSocketPath;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof(sa.sun_path)) {
    say(why, "engine socket path too long: %s", path);
    return nullptr;
  }
  std::strcpy(sa.sun_path, path);
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    say(why, "socket(AF_UNIX): %s", std::strerror(errno));
    return nullptr;
  }
  std::unique_ptr<HostChannel> ch(new HostChannel());  // private constructor: make_unique cannot reach it
  Impl& im = *ch->impl_;
  im.conn_fd = fd;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    const int e = errno;
    std::snprintf(why.data(), why.size(), "cannot reach the engine at %s: %s", path, std::strerror(e));
    return nullptr;
  }
  c::AttachRequest req;
  req.pid = static_cast<std::uint32_t>(getpid());
  if (::send(fd, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    std::snprintf(why.data(), why.size(), "engine at %s: send: %s", path, std::strerror(errno));
    return nullptr;
  }
  c::AttachReply rep;
  iovec iov{&rep, sizeof(rep)};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(2 * sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof(cbuf);
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) {
    std::snprintf(why.data(), why.size(), "engine at %s did not answer the attach request", path);
    return nullptr;
  }
  const ssize_t r = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
  int fds[2] = {-1, -1};
  for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm != nullptr; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      const std::size_t n = std::min<std::size_t>((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int), 2);
      std::memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
    }
  }
  auto close_fds = [&] {
    for (int f : fds) {
      if (f >= 0) ::close(f);
    }
  };
  if (r != static_cast<ssize_t>(sizeof(rep)) || rep.magic != c::kAttachMagic) {
    close_fds();
    std::snprintf(why.data(), why.size(), "engine at %s sent a malformed attach reply", path);
    return nullptr;
  }
  rep.why[sizeof(rep.why) - 1] = '\0';
  if (rep.status != c::AttachStatus::ok) {
    close_fds();
    if (rep.status == c::AttachStatus::version_mismatch) {
      std::snprintf(why.data(), why.size(), "engine at %s refused ABI version %u: engine speaks %u (%s)", path,
                    c::kAbiVersion, rep.abi_version, rep.why);
    } else {
      std::snprintf(why.data(), why.size(), "engine at %s refused the attach: %s", path, rep.why);
    }
    std::fprintf(stderr, "pno: %s\n", why.data());
    return nullptr;
  }
  if (fds[0] < 0 || fds[1] < 0 || rep.region_bytes < c::kHeaderBytes) {
    close_fds();
    std::snprintf(why.data(), why.size(), "engine at %s sent no region", path);
    return nullptr;
  }
  im.doorbell_fd = move_high(fds[1]);
  im.conn_fd = move_high(im.conn_fd.load());
  // The region fd is kept (close-on-exec, high): exec() hands it to the next image (adopt()).
  im.region_fd = move_high(fds[0]);
  if (!im.map_region(rep.region_bytes, path, why)) return nullptr;
  im.proc = c::kProcFirst;  // the engine made it live for our pid
  return ch;
}

const EngineInfo& HostChannel::engine() const { return impl_->info; }
bool HostChannel::alive() const { return impl_->check_alive(); }
int HostChannel::control_fd() const { return impl_->conn_fd; }

bool HostChannel::owns_fd(int fd) const {
  Impl& im = *impl_;
  if (fd < 0) return false;
  if (fd == im.conn_fd || fd == im.doorbell_fd || fd == im.region_fd) return true;
  LocalLock lk(im.waiters_lock);
  for (const auto& w : im.waiters) {
    if (w->fd() == fd) return true;
  }
  return false;
}

int HostChannel::relocate_fd(int fd) {
  Impl& im = *impl_;
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  if (fd == im.conn_fd.load()) {
    // The ctl lock keeps a waiter registration (sendmsg + recv on conn_fd) off the number.
    RegionLock lk(im.hdr->ctl_lock.owner, im.pid);
    const int nfd = dup_high(fd);
    if (nfd < 0) return -1;
    im.conn_fd.store(nfd, std::memory_order_seq_cst);
    im.relocations.fetch_add(1, std::memory_order_acq_rel);
    ::close(fd);
    return nfd;
  }
  if (fd == im.region_fd.load()) {
    // Used only by exec (prepare_exec), which reads the number when it runs.
    const int nfd = dup_high(fd);
    if (nfd < 0) return -1;
    im.region_fd.store(nfd, std::memory_order_seq_cst);
    im.relocations.fetch_add(1, std::memory_order_acq_rel);
    ::close(fd);
    return nfd;
  }
  if (fd == im.doorbell_fd.load()) {
    const int nfd = dup_high(fd);
    if (nfd < 0) return -1;
    im.doorbell_fd.store(nfd, std::memory_order_seq_cst);
    im.relocations.fetch_add(1, std::memory_order_acq_rel);
    // A notify() that loaded the old number finishes its write before the number is released.
    while (im.doorbell_users.load(std::memory_order_seq_cst) != 0) sched_yield();
    ::close(fd);
    return nfd;
  }
  LocalLock lk(im.waiters_lock);
  for (const auto& w : im.waiters) {
    if (w->fd() != fd) continue;
    const int nfd = dup_high(fd);
    if (nfd < 0) return -1;
    __atomic_store_n(&w->fd_, nfd, __ATOMIC_SEQ_CST);
    im.relocations.fetch_add(1, std::memory_order_acq_rel);
    // Wake the owner if it sleeps (on the same open file): it re-checks and rebuilds its poll set
    // with the new number. Waiters tolerate spurious wake-ups.
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(nfd, &one, sizeof(one));
    ::close(fd);
    return nfd;
  }
  errno = EBADF;
  return -1;
}

// --- control calls

namespace {
Errc cpl_err(const c::Completion& cp) { return static_cast<Errc>(cp.err); }
}  // namespace

Result<HostSocket> HostChannel::socket() {
  c::Command cmd;
  cmd.op = c::Op::socket;
  c::Completion cp;
  if (!impl_->call(cmd, cp)) return Errc::no_mem;
  if (cp.err != 0) return cpl_err(cp);
  const auto h = static_cast<HostSocket>(cp.value);
  c::SocketSlot* sl = impl_->lookup(h);
  if (sl == nullptr) return Errc::no_mem;
  impl_->count_up(impl_->own_proc(), c::handle_index(h));
  impl_->warm(c::handle_index(h));
  return h;
}

namespace {
c::Command sock_cmd(c::Op op, HostSocket s) {
  c::Command cmd;
  cmd.op = op;
  cmd.sock = s;
  return cmd;
}
}  // namespace

Errc HostChannel::bind(HostSocket s, Endpoint local) {
  c::Command cmd = sock_cmd(c::Op::bind, s);
  cmd.addr = local.addr.v;
  cmd.port = local.port;
  return impl_->errc_call(s, cmd, Errc::addr_not_avail);
}

Errc HostChannel::listen(HostSocket s, int backlog) {
  c::Command cmd = sock_cmd(c::Op::listen, s);
  cmd.value = backlog;
  return impl_->errc_call(s, cmd, Errc::inval);
}

Result<HostSocket> HostChannel::accept(HostSocket listener, Endpoint* peer) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(listener);
  if (sl == nullptr) return Errc::badf;
  if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_aborted;
  c::AcceptEntry e{};
  bool was_full = false;
  {
    RegionLock lk(sl->recv_lock.owner, im.pid);
    const std::uint32_t head = at(sl->acc_head).load(std::memory_order_relaxed);
    const std::uint32_t tail = at(sl->acc_tail).load(std::memory_order_acquire);
    if (tail == head || tail - head > c::kAcceptQueue) {
      return at(sl->state).load(std::memory_order_relaxed) == c::SlotState::listening ? Errc::again : Errc::inval;
    }
    e = sl->accq[head % c::kAcceptQueue];
    at(sl->acc_head).store(head + 1, std::memory_order_release);
    // Dekker with the engine's refill (it stores acc_tail, fences, re-reads acc_head): whether the
    // queue was full before this accept is judged by the tail as it is after our head store, so a
    // refill racing with this accept is seen here or sees our head there. The engine moves waiting
    // connections into a full queue only when kicked.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    was_full = at(sl->acc_tail).load(std::memory_order_acquire) - head >= c::kAcceptQueue;
  }
  if (was_full) im.kick(c::handle_index(listener));
  c::SocketSlot* ns = im.lookup(e.sock);
  if (ns == nullptr) return Errc::conn_aborted;
  im.count_up(im.own_proc(), c::handle_index(e.sock));
  im.warm(c::handle_index(e.sock));
  if (peer != nullptr) *peer = Endpoint{Ipv4Addr{e.addr}, e.port};
  return static_cast<HostSocket>(e.sock);
}

Errc HostChannel::connect(HostSocket s, Endpoint remote) {
  c::Command cmd = sock_cmd(c::Op::connect, s);
  cmd.addr = remote.addr.v;
  cmd.port = remote.port;
  return impl_->errc_call(s, cmd, Errc::net_unreach);
}

Errc HostChannel::shutdown(HostSocket s, ShutdownHow how) {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  if (how != ShutdownHow::read) {
    // Taken under the send lock: a send() racing with shutdown either lands before the FIN or fails.
    RegionLock lk(sl->send_lock.owner, impl_->pid);
    at(sl->host_shut_wr).store(1, std::memory_order_release);
  }
  c::Command cmd = sock_cmd(c::Op::shutdown, s);
  cmd.how = static_cast<std::uint16_t>(how);
  c::Completion cp;
  if (!impl_->call(cmd, cp)) return Errc::not_conn;
  return cpl_err(cp);
}

Errc HostChannel::setsockopt(HostSocket s, SockOpt opt, int value) {
  c::Command cmd = sock_cmd(c::Op::setsockopt, s);
  cmd.how = static_cast<std::uint16_t>(opt);
  cmd.value = value;
  const Errc e = impl_->errc_call(s, cmd, Errc::conn_reset);
  if (opt == SockOpt::linger && e == Errc::ok) {
    // In the region, not in this process: whichever process of the family closes last must know.
    if (c::SocketSlot* sl = impl_->lookup(s); sl != nullptr) {
      at(sl->host_linger).store(value > 0 ? 1 : 0, std::memory_order_relaxed);
    }
  }
  return e;
}

Result<int> HostChannel::getsockopt(HostSocket s, SockOpt opt) {
  if (impl_->lookup(s) == nullptr) return Errc::badf;
  c::Command cmd = sock_cmd(c::Op::getsockopt, s);
  cmd.how = static_cast<std::uint16_t>(opt);
  c::Completion cp;
  if (!impl_->call(cmd, cp)) return Errc::conn_reset;
  if (cp.err != 0) return cpl_err(cp);
  return static_cast<int>(cp.value);
}

Result<Endpoint> HostChannel::local_endpoint(HostSocket s) { return impl_->endpoint_call(s, c::Op::local_endpoint); }
Result<Endpoint> HostChannel::peer_endpoint(HostSocket s) { return impl_->endpoint_call(s, c::Op::peer_endpoint); }

Result<TcpInfo> HostChannel::info(HostSocket s) {
  static_assert(sizeof(TcpInfo) <= sizeof(c::Completion::payload));
  static_assert(std::is_trivially_copyable_v<TcpInfo>);
  if (impl_->lookup(s) == nullptr) return Errc::badf;
  c::Completion cp;
  if (!impl_->call(sock_cmd(c::Op::info, s), cp)) return Errc::conn_reset;
  if (cp.err != 0) return cpl_err(cp);
  TcpInfo ti;
  std::memcpy(&ti, cp.payload, sizeof(ti));
  return ti;
}

Errc HostChannel::take_error(HostSocket s) {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  if (impl_->dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
  if (at(sl->err_taken).load(std::memory_order_acquire) != 0) return Errc::ok;
  c::Completion cp;
  if (!impl_->call(sock_cmd(c::Op::take_error, s), cp)) return Errc::conn_reset;
  if (cp.err != 0) at(sl->err_taken).store(1, std::memory_order_release);
  return cpl_err(cp);
}

void HostChannel::retain(HostSocket s) {
  if (impl_->lookup(s) != nullptr) impl_->count_up(impl_->own_proc(), c::handle_index(s));
}

Errc HostChannel::Impl::close_unheld(HostSocket s, bool wait) {
  // Without a lingering close nothing about the connection's end is reported to the caller, so
  // the close is posted and the caller goes on (a control round trip per close otherwise: a spin,
  // yields and often a sleep while the engine is busy). Commands run in ring order, so anything
  // the process asks next (a bind to the same port, say) comes after it.
  if (!wait) {
    post(sock_cmd(c::Op::close, s));
    return Errc::ok;
  }
  c::Completion cp;
  if (!call(sock_cmd(c::Op::close, s), cp)) return Errc::ok;  // a dead engine: nothing left to close
  return cpl_err(cp);
}

bool HostChannel::Impl::post(c::Command cmd) {
  cmd.tag = c::kNoReply;
  for (;;) {
    if (dead.load(std::memory_order_relaxed)) return false;
    std::size_t pushed = 0;
    {
      RegionLock lk(hdr->cmd_lock.owner, pid);
      pushed = ring<c::Command>(geo.cmd_off, geo.cmd_entries).push(std::span(&cmd, 1));
    }
    notify();
    if (pushed == 1) return true;
    if (!check_alive()) return false;
    sched_yield();  // a full command ring: the engine is behind, let it run
  }
}

Errc HostChannel::close(HostSocket s) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const bool lingering = at(sl->host_linger).load(std::memory_order_relaxed) != 0;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t e = im.own_proc();
  // `pending` tells the engine which socket we were closing should we die inside this call (our
  // count already down, the close not sent yet).
  const bool mine = e != c::proc_shared(im.geo);
  if (mine) at(im.pentry(e).pending).store(s, std::memory_order_relaxed);
  // Still counted by this entry: not the last reference, nothing to scan.
  Errc r = Errc::ok;
  if (im.count_down(e, i) == 0 && im.unheld(i)) r = im.close_unheld(s, lingering);
  if (mine) at(im.pentry(e).pending).store(0, std::memory_order_relaxed);
  return r;
}

// --- fork

std::uint32_t HostChannel::fork_reserve() {
  Impl& im = *impl_;
  const std::uint32_t shared = c::proc_shared(im.geo);
  for (std::uint32_t e = 0; e < shared; ++e) {
    std::uint32_t expect = static_cast<std::uint32_t>(c::ProcState::free);
    // Claimed in a state nobody counts while the stale row of a previous process is cleared.
    if (!at(im.pentry(e).state)
             .compare_exchange_strong(expect, static_cast<std::uint32_t>(c::ProcState::claiming),
                                      std::memory_order_acq_rel)) {
      continue;
    }
    for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) at(im.count(e, i)).store(0, std::memory_order_relaxed);
    at(im.pentry(e).pid).store(0, std::memory_order_relaxed);
    at(im.pentry(e).pending).store(0, std::memory_order_relaxed);
    at(im.pentry(e).state).store(static_cast<std::uint32_t>(c::ProcState::reserved), std::memory_order_seq_cst);
    return e;
  }
  return shared;  // table full: the child's references go with the family, as before
}

void HostChannel::fork_retain(std::uint32_t ticket, HostSocket s) {
  Impl& im = *impl_;
  if (ticket >= im.geo.max_procs || im.lookup(s) == nullptr) return;
  im.count_up(ticket, c::handle_index(s));
}

void HostChannel::fork_parent(std::uint32_t ticket, pid_t child) {
  Impl& im = *impl_;
  if (ticket >= c::proc_shared(im.geo)) return;
  if (child > 0) {
    at(im.pentry(ticket).pid).store(static_cast<std::uint32_t>(child), std::memory_order_relaxed);
    c::Command cmd;
    cmd.op = c::Op::proc_register;
    cmd.value = static_cast<std::int32_t>(ticket);
    cmd.addr = static_cast<std::uint32_t>(child);
    c::Completion cp;
    // Not registered (engine gone or out of pidfds): the entry keeps counting until the family ends.
    (void)im.call(cmd, cp);
    return;
  }
  // No child: its references go as if it had closed them, then the entry is free again.
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) {
    if (at(im.count(ticket, i)).exchange(0, std::memory_order_seq_cst) == 0) continue;
    if (!im.unheld(i)) continue;
    c::SocketSlot& sl = im.slot(i);
    if (at(sl.state).load(std::memory_order_acquire) == c::SlotState::free) continue;
    (void)im.close_unheld(c::handle_make(i, at(sl.gen).load(std::memory_order_acquire)), false);
  }
  at(im.pentry(ticket).state).store(static_cast<std::uint32_t>(c::ProcState::free), std::memory_order_seq_cst);
}

// --- data path

Result<std::size_t> HostChannel::send(HostSocket s, std::span<const iovec> iov, bool more) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t R = im.geo.stream_ring_bytes;
  std::size_t total = 0;
  {
    RegionLock lk(sl->send_lock.owner, im.pid);
    if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
    const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
    if ((flags & c::kFlagError) != 0 && at(sl->err_taken).load(std::memory_order_relaxed) == 0 &&
        (flags & c::kFlagSendable) == 0) {
      at(sl->err_taken).store(1, std::memory_order_relaxed);
      return static_cast<Errc>(at(sl->err).load(std::memory_order_relaxed));
    }
    if (at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0 || (flags & c::kFlagSendClosed) != 0) {
      return Errc::pipe;
    }
    if ((flags & c::kFlagSendable) == 0) return Errc::not_conn;
    const std::uint32_t tail = at(sl->snd_tail).load(std::memory_order_relaxed);
    const std::uint32_t head = at(sl->snd_head).load(std::memory_order_acquire);
    const std::uint32_t used = tail - head;
    if (used >= R) {
      im.note_nospace(*sl, i);
      return Errc::again;
    }
    std::size_t room = R - used;
    std::byte* ring = im.send_ring(i);
    std::uint32_t pos = tail;
    for (const auto& v : iov) {
      const std::size_t n = std::min(room, v.iov_len);
      ring_copy_in(ring, R, pos, static_cast<const std::byte*>(v.iov_base), n);
      pos += static_cast<std::uint32_t>(n);
      room -= n;
      total += n;
      if (room == 0) break;
    }
    if (total == 0) return iov_total(iov) == 0 ? Result<std::size_t>(std::size_t{0}) : Result<std::size_t>(Errc::again);
    at(sl->more).store(more ? 1 : 0, std::memory_order_relaxed);
    if (R - (pos - head) < R / 4) im.bump_nospace(*sl);
    at(sl->snd_tail).store(pos, std::memory_order_release);
  }
  im.kick(i);
  return total;
}

Result<std::size_t> HostChannel::send_file(HostSocket s, int in_fd, off_t* offset, std::size_t count) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t R = im.geo.stream_ring_bytes;
  std::size_t total = 0;
  {
    RegionLock lk(sl->send_lock.owner, im.pid);
    if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
    const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
    if (at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0 || (flags & c::kFlagSendClosed) != 0) {
      return Errc::pipe;
    }
    if ((flags & c::kFlagSendable) == 0) return Errc::not_conn;
    const std::uint32_t tail = at(sl->snd_tail).load(std::memory_order_relaxed);
    const std::uint32_t head = at(sl->snd_head).load(std::memory_order_acquire);
    const std::uint32_t used = tail - head;
    if (used >= R) {
      im.note_nospace(*sl, i);
      return Errc::again;
    }
    std::size_t want = std::min<std::size_t>(count, R - used);
    std::byte* ring = im.send_ring(i);
    std::uint32_t pos = tail;
    while (want > 0) {
      const std::uint32_t p = pos & (R - 1);
      const std::size_t chunk = std::min<std::size_t>(want, R - p);
      const ssize_t r = offset != nullptr ? ::pread(in_fd, ring + p, chunk, *offset) : ::read(in_fd, ring + p, chunk);
      if (r < 0) {
        if (total == 0) return static_cast<Errc>(errno);
        break;
      }
      if (r == 0) break;
      if (offset != nullptr) *offset += r;
      pos += static_cast<std::uint32_t>(r);
      total += static_cast<std::size_t>(r);
      want -= static_cast<std::size_t>(r);
      if (static_cast<std::size_t>(r) < chunk) break;
    }
    if (total == 0) return std::size_t{0};
    at(sl->more).store(0, std::memory_order_relaxed);
    if (R - (pos - head) < R / 4) im.bump_nospace(*sl);
    at(sl->snd_tail).store(pos, std::memory_order_release);
  }
  im.kick(i);
  return total;
}

Result<std::size_t> HostChannel::recv(HostSocket s, std::span<const iovec> iov, bool peek) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t R = im.geo.stream_ring_bytes;
  std::size_t total = 0;
  bool kick = false;
  {
    RegionLock lk(sl->recv_lock.owner, im.pid);
    const std::uint32_t head = at(sl->rcv_head).load(std::memory_order_relaxed);
    const std::uint32_t tail = at(sl->rcv_tail).load(std::memory_order_acquire);
    std::uint32_t avail = tail - head;
    if (avail > R) avail = 0;
    if (avail == 0) {
      if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
      const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
      if ((flags & c::kFlagError) != 0 && at(sl->err_taken).load(std::memory_order_relaxed) == 0) {
        at(sl->err_taken).store(1, std::memory_order_relaxed);
        return static_cast<Errc>(at(sl->err).load(std::memory_order_relaxed));
      }
      if ((flags & c::kFlagRxEof) != 0 || (flags & c::kFlagError) != 0) return std::size_t{0};
      const auto st = at(sl->state).load(std::memory_order_relaxed);
      if (st == c::SlotState::open || st == c::SlotState::listening) return Errc::not_conn;
      if (iov_total(iov) == 0) return std::size_t{0};
      return Errc::again;
    }
    const std::byte* ring = im.recv_ring(i);
    std::uint32_t pos = head;
    for (const auto& v : iov) {
      const std::size_t n = std::min<std::size_t>(avail, v.iov_len);
      ring_copy_out(ring, R, pos, static_cast<std::byte*>(v.iov_base), n);
      pos += static_cast<std::uint32_t>(n);
      avail -= static_cast<std::uint32_t>(n);
      total += n;
      if (avail == 0) break;
    }
    if (!peek && total > 0) {
      at(sl->rcv_head).store(pos, std::memory_order_release);
      // The engine sets RxBlocked, fences, re-reads rcv_head: one of us sees the other.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      kick = (at(sl->flags).load(std::memory_order_acquire) & c::kFlagRxBlocked) != 0;
    }
  }
  if (kick) im.kick(i);
  return total;
}

Result<std::size_t> HostChannel::readable_bytes(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t avail = at(sl->rcv_tail).load(std::memory_order_acquire) - at(sl->rcv_head).load(std::memory_order_acquire);
  return avail > impl_->geo.stream_ring_bytes ? std::size_t{0} : std::size_t{avail};
}

std::uint32_t HostChannel::readiness(HostSocket s) const {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return kError | kHangup;
  if (im.dead.load(std::memory_order_relaxed)) return kReadable | kWritable | kError | kHangup;
  const std::uint32_t R = im.geo.stream_ring_bytes;
  const auto st = at(sl->state).load(std::memory_order_acquire);
  const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
  const std::uint32_t tcp_ready = at(sl->tcp_ready).load(std::memory_order_acquire);
  if (st == c::SlotState::listening) {
    const std::uint32_t q = at(sl->acc_tail).load(std::memory_order_acquire) - at(sl->acc_head).load(std::memory_order_relaxed);
    return (q != 0 && q <= c::kAcceptQueue) ? std::uint32_t{kReadable} : std::uint32_t{0};
  }
  std::uint32_t r = tcp_ready & (kHangup | kReadHangup);
  // The TCP layer shows RDHUP/HUP as soon as the FIN arrives; the host may see them only once every
  // byte before the FIN is in the receive ring (as on Linux, where reading until EAGAIN after RDHUP
  // gets everything), or on an error.
  if ((flags & (c::kFlagRxEof | c::kFlagError)) == 0) r = 0;
  const bool err_pending = (flags & c::kFlagError) != 0 && at(sl->err_taken).load(std::memory_order_relaxed) == 0;
  if (err_pending) r |= kError;
  const std::uint32_t avail = at(sl->rcv_tail).load(std::memory_order_acquire) - at(sl->rcv_head).load(std::memory_order_relaxed);
  if ((avail != 0 && avail <= R) || (flags & (c::kFlagRxEof | c::kFlagError)) != 0) r |= kReadable;
  const bool shut_wr = at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0;
  if ((flags & c::kFlagSendable) != 0 && !shut_wr) {
    const std::uint32_t used = at(sl->snd_tail).load(std::memory_order_relaxed) - at(sl->snd_head).load(std::memory_order_acquire);
    if (used <= R && R - used >= R / 4) r |= kWritable;
  } else if ((shut_wr || (tcp_ready & kWritable) != 0) && st != c::SlotState::connecting) {
    // After shutdown(SHUT_WR) a socket polls writable at once (tcp_poll: SEND_SHUTDOWN gives OUT),
    // before the engine has even drained the ring and published the FIN.
    r |= kWritable;
  }
  return r;
}

std::uint32_t HostChannel::event_seq(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr || impl_->dead.load(std::memory_order_relaxed)) return 0xffffffffu;
  return at(sl->event_seq).load(std::memory_order_acquire);
}

EdgeMarks HostChannel::edge_marks(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr || impl_->dead.load(std::memory_order_relaxed)) return EdgeMarks{0, 0, ~std::uint64_t{0}};
  EdgeMarks e;
  e.in = at(sl->rcv_tail).load(std::memory_order_acquire) + at(sl->acc_tail).load(std::memory_order_acquire);
  e.out = at(sl->snd_head).load(std::memory_order_acquire);
  // Disjoint bit fields, so two different states never give the same word. shutdown(SHUT_WR) is in
  // it (the socket turns writable at once); RxBlocked is not (the engine's backlog, unseen by the
  // application).
  const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire) & ~std::uint32_t{c::kFlagRxBlocked};
  const std::uint32_t ready = at(sl->tcp_ready).load(std::memory_order_acquire) & 0xffffu;
  const auto state = static_cast<std::uint32_t>(at(sl->state).load(std::memory_order_acquire));
  static_assert(c::kFlagRxBlocked < (1u << 8) && static_cast<std::uint32_t>(c::SlotState::closed) < 16);
  const std::uint32_t shut_wr = at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0 ? 1u : 0u;
  e.status = (std::uint64_t{static_cast<std::uint32_t>(at(sl->err).load(std::memory_order_acquire))} << 32) |
             (state << 28) | (shut_wr << 24) | (ready << 8) | (flags & 0xffu);
  return e;
}

std::size_t HostChannel::drain_changed(std::span<HostSocket> out, bool& overflowed) {
  Impl& im = *impl_;
  overflowed = false;
  if (im.dead.load(std::memory_order_relaxed)) {
    overflowed = true;  // everything changed: the engine is gone
    return 0;
  }
  RegionLock lk(im.hdr->changed_lock.owner, im.pid);
  const std::uint32_t ov = at(im.hdr->changed_overflow).load(std::memory_order_acquire);
  if (ov != at(im.hdr->changed_overflow_seen).load(std::memory_order_relaxed)) {
    at(im.hdr->changed_overflow_seen).store(ov, std::memory_order_relaxed);
    overflowed = true;
  }
  return im.ring<std::uint32_t>(im.geo.changed_off, im.geo.changed_entries).pop(out);
}

// --- waiting

Waiter* HostChannel::thread_waiter() { return impl_->thread_waiter(); }

void HostChannel::arm(Waiter& w) {
  Impl& im = *impl_;
  if (w.index_ >= im.geo.max_waiters) return;
  const std::uint32_t gen = im.arm_gen.fetch_add(1, std::memory_order_relaxed) + 1;
  at(im.waiter(w.index_).armed).store((gen << 1) | 1, std::memory_order_seq_cst);
  at(im.hdr->armed_waiters).fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void HostChannel::disarm(Waiter& w) {
  Impl& im = *impl_;
  if (w.index_ >= im.geo.max_waiters) return;
  if (at(im.waiter(w.index_).armed).exchange(0, std::memory_order_relaxed) != 0) {
    at(im.hdr->armed_waiters).fetch_sub(1, std::memory_order_relaxed);
  }
  std::uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(w.fd(), &v, sizeof(v));
}

void HostChannel::after_fork_child() { after_fork_child(c::kNoProc); }

void HostChannel::after_fork_child(std::uint32_t ticket) {
  Impl& im = *impl_;
  // Without a ticket (retain() before fork, as before the process table) the child counts in its
  // parent's entry: exact while both live, but the parent's death drops the child's references too.
  if (ticket < im.geo.max_procs) {
    im.proc = ticket;
    if (ticket != c::proc_shared(im.geo)) {
      at(im.pentry(ticket).pid).store(static_cast<std::uint32_t>(getpid()), std::memory_order_relaxed);
    }
  }
  im.pid = static_cast<std::uint32_t>(getpid());
  im.fork_gen.fetch_add(1, std::memory_order_release);
  im.waiters_lock.store(false, std::memory_order_release);
  // The parent's waiters stay registered for the parent's threads; the child drops its copies.
  for (auto& w : im.waiters) {
    if (w->fd_ >= 0) ::close(w->fd_);
  }
  im.waiters.clear();
  t_waiter = ThreadWaiter{};
  // A shared file mapping's page table entries are not copied to the child.
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) im.warmed[i].store(false, std::memory_order_relaxed);
}

// ------------------------------------------------------------------------------------------- exec

namespace {
bool set_cloexec(int fd, bool on) {
  const int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return false;
  return fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC)) == 0;
}
}  // namespace

bool HostChannel::prepare_exec(ExecFds& out) {
  Impl& im = *impl_;
  out = ExecFds{im.conn_fd, im.region_fd, im.doorbell_fd, im.own_proc()};
  if (im.conn_fd < 0 || im.region_fd < 0 || im.doorbell_fd < 0) return false;
  if (set_cloexec(im.conn_fd, false) && set_cloexec(im.region_fd, false) && set_cloexec(im.doorbell_fd, false)) {
    return true;
  }
  exec_failed();
  return false;
}

void HostChannel::exec_failed() {
  Impl& im = *impl_;
  for (int fd : {im.conn_fd.load(), im.region_fd.load(), im.doorbell_fd.load()}) {
    if (fd >= 0) set_cloexec(fd, true);
  }
}

std::size_t HostChannel::waiter_indices(std::span<std::uint32_t> out) const {
  Impl& im = *impl_;
  LocalLock lk(im.waiters_lock);
  std::size_t n = 0;
  for (const auto& w : im.waiters) {
    if (n == out.size()) break;
    out[n++] = w->index_;
  }
  return n;
}

std::unique_ptr<HostChannel> HostChannel::adopt(ExecFds fds, std::span<const std::uint32_t> stale_waiters,
                                                std::span<char> why) {
  std::unique_ptr<HostChannel> ch(new HostChannel());
  Impl& im = *ch->impl_;
  // Owned from here on: the destructor closes them on failure.
  im.conn_fd = fds.conn;
  im.region_fd = fds.region;
  im.doorbell_fd = fds.doorbell;
  struct stat sb {};
  if (fds.conn < 0 || fds.region < 0 || fds.doorbell < 0 || !set_cloexec(fds.conn, true) ||
      !set_cloexec(fds.region, true) || !set_cloexec(fds.doorbell, true) || fstat(fds.region, &sb) != 0 ||
      sb.st_size < static_cast<off_t>(c::kHeaderBytes)) {
    std::snprintf(why.data(), why.size(), "the attachment inherited over exec is not usable");
    return nullptr;
  }
  if (!im.map_region(static_cast<std::uint64_t>(sb.st_size), "(inherited over exec)", why)) return nullptr;
  im.proc = fds.proc < im.geo.max_procs ? fds.proc : c::proc_shared(im.geo);  // same pid, same entry
  // The previous image's threads are gone: their waiters and any region lock they held.
  for (std::uint32_t i : stale_waiters) {
    if (i >= im.geo.max_waiters) continue;
    if (at(im.waiter(i).armed).exchange(0, std::memory_order_relaxed) != 0) {
      at(im.hdr->armed_waiters).fetch_sub(1, std::memory_order_relaxed);
    }
    at(im.waiter(i).in_use).store(0, std::memory_order_release);
  }
  const std::uint32_t self = im.pid;
  auto unlock_mine = [&](std::uint32_t& w) {
    std::uint32_t expect = self;
    at(w).compare_exchange_strong(expect, 0, std::memory_order_acq_rel);
  };
  for (c::LockWord* l : {&im.hdr->cmd_lock, &im.hdr->cpl_lock, &im.hdr->kick_lock, &im.hdr->changed_lock,
                         &im.hdr->ctl_lock}) {
    unlock_mine(l->owner);
  }
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) {
    unlock_mine(im.slot(i).send_lock.owner);
    unlock_mine(im.slot(i).recv_lock.owner);
  }
  return ch;
}

}  // namespace pno::channel
