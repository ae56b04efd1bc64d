// The shim's bookkeeping of descriptors: which fd numbers are offloaded sockets, pending AF_INET
// stream sockets (still kernel sockets, not yet decided), emulated epoll instances, or the shim's
// own internal fds. Everything lives in fixed-size tables mapped once at start-up, so no lookup or
// update ever calls malloc or takes a lock: a lookup is one atomic load.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/socket.hh"

namespace pno::shim {

/// A tiny test-and-set lock, held only for a few list operations (never across a system call that
/// can block).
class SpinLock {
 public:
  void lock() {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) __builtin_ia32_pause();
    }
  }
  bool try_lock() { return !flag_.exchange(true, std::memory_order_acquire); }
  void unlock() { flag_.store(false, std::memory_order_release); }
  /// In a forked child: another thread of the parent may have held it at fork time.
  void reset() { flag_.store(false, std::memory_order_relaxed); }

 private:
  std::atomic<bool> flag_{false};
};

class SpinGuard {
 public:
  explicit SpinGuard(SpinLock& l) : l_(l) { l_.lock(); }
  ~SpinGuard() { l_.unlock(); }
  SpinGuard(const SpinGuard&) = delete;
  SpinGuard& operator=(const SpinGuard&) = delete;

 private:
  SpinLock& l_;
};

/// An anonymous, lazily-touched mapping of `count` zero-filled T. Pages are only backed once used,
/// so large capacities cost address space, not memory.
template <typename T>
class Mapping {

 public:
  Mapping() = default;
  ~Mapping() {
    if (items_ != nullptr) ::munmap(static_cast<void*>(items_), bytes());
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  bool init(std::size_t count) {
    count_ = count;
    void* p = ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    // Zero pages are a valid initial state for every T used here (atomics and integers), so no
    // constructor runs: touching every element would back the whole mapping.
    items_ = static_cast<T*>(p);
    return true;
  }
  [[nodiscard]] bool ready() const { return items_ != nullptr; }
  [[nodiscard]] std::size_t size() const { return count_; }
  T& operator[](std::size_t i) { return items_[i]; }
  const T& operator[](std::size_t i) const { return items_[i]; }

 private:
  [[nodiscard]] std::size_t bytes() const { return count_ * sizeof(T); }
  T* items_ = nullptr;
  std::size_t count_ = 0;
};

/// A fixed pool of T with a lock-free free list (Treiber stack, tagged against ABA). Index 0 is
/// never handed out, so 0 means "none". T needs a `std::atomic<std::uint32_t> next_free`.
template <typename T>
class Pool {
 public:
  bool init(std::uint32_t capacity) {
    capacity_ = capacity;
    return items_.init(std::size_t{capacity} + 1);
  }
  [[nodiscard]] bool ready() const { return items_.ready(); }
  [[nodiscard]] std::uint32_t capacity() const { return capacity_; }

  /// 0 when full.
  std::uint32_t alloc() {
    std::uint64_t head = free_.load(std::memory_order_acquire);
    for (;;) {
      auto idx = static_cast<std::uint32_t>(head);
      if (idx == 0) break;
      std::uint32_t next = items_[idx].next_free.load(std::memory_order_relaxed);
      std::uint64_t tagged = ((head >> 32) + 1) << 32 | next;
      if (free_.compare_exchange_weak(head, tagged, std::memory_order_acq_rel)) return idx;
    }
    std::uint32_t idx = bump_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (idx > capacity_) {
      bump_.fetch_sub(1, std::memory_order_relaxed);
      return 0;
    }
    return idx;
  }
  void free(std::uint32_t idx) {
    std::uint64_t head = free_.load(std::memory_order_acquire);
    for (;;) {
      items_[idx].next_free.store(static_cast<std::uint32_t>(head), std::memory_order_relaxed);
      std::uint64_t tagged = ((head >> 32) + 1) << 32 | idx;
      if (free_.compare_exchange_weak(head, tagged, std::memory_order_acq_rel)) return;
    }
  }
  T& operator[](std::uint32_t idx) { return items_[idx]; }
  const T& operator[](std::uint32_t idx) const { return items_[idx]; }
  /// Highest index ever handed out (for scans).
  [[nodiscard]] std::uint32_t high_water() const { return bump_.load(std::memory_order_relaxed); }

 private:
  Mapping<T> items_;
  std::uint32_t capacity_ = 0;
  std::atomic<std::uint64_t> free_{0};
  std::atomic<std::uint32_t> bump_{0};
};

enum class FdKind : std::uint8_t {
  kernel = 0,    ///< not the shim's business: every call goes straight to libc
  pending = 1,   ///< an AF_INET stream socket still in the kernel, handed over at bind/connect/listen
  socket = 2,    ///< an offloaded socket: the kernel fd is a placeholder eventfd
  epoll = 3,     ///< an emulated epoll instance (the fd is its kernel epoll fd)
  internal = 4,  ///< one of the shim's own fds: the application may not close it
};

/// One fd's entry packed in a word: kind in the low 4 bits, object index above.
struct FdRef {
  FdKind kind = FdKind::kernel;
  std::uint32_t index = 0;
  static constexpr std::uint32_t pack(FdKind k, std::uint32_t idx) {
    return (idx << 4) | static_cast<std::uint32_t>(k);
  }
  static constexpr FdRef unpack(std::uint32_t w) {
    return {static_cast<FdKind>(w & 0xf), w >> 4};
  }
};

/// fd number -> FdRef. Fds at or above capacity() are never tracked (they stay with the kernel).
class FdTable {
 public:
  bool init(int capacity) { return slots_.init(static_cast<std::size_t>(capacity)); }
  [[nodiscard]] int capacity() const { return static_cast<int>(slots_.size()); }
  [[nodiscard]] bool in_range(int fd) const { return fd >= 0 && fd < capacity(); }

  [[nodiscard]] FdRef get(int fd) const {
    if (!in_range(fd)) return {};
    return FdRef::unpack(slots_[static_cast<std::size_t>(fd)].load(std::memory_order_acquire));
  }
  /// False when `fd` is out of range (the caller keeps it in the kernel).
  bool set(int fd, FdKind k, std::uint32_t idx) {
    if (!in_range(fd)) return false;
    slots_[static_cast<std::size_t>(fd)].store(FdRef::pack(k, idx), std::memory_order_release);
    int hw = high_.load(std::memory_order_relaxed);
    while (fd >= hw && !high_.compare_exchange_weak(hw, fd + 1, std::memory_order_relaxed)) {
    }
    return true;
  }
  /// Clears the entry and returns what it held, atomically: exactly one closer gets the object.
  FdRef take(int fd) {
    if (!in_range(fd)) return {};
    return FdRef::unpack(slots_[static_cast<std::size_t>(fd)].exchange(0, std::memory_order_acq_rel));
  }
  /// Takes the entry only if it still holds `expected`.
  bool take_if(int fd, FdRef expected) {
    if (!in_range(fd)) return false;
    std::uint32_t want = FdRef::pack(expected.kind, expected.index);
    return slots_[static_cast<std::size_t>(fd)].compare_exchange_strong(want, 0, std::memory_order_acq_rel);
  }
  /// One above the highest fd ever set: scans stop here.
  [[nodiscard]] int high_water() const { return high_.load(std::memory_order_relaxed); }

 private:
  Mapping<std::atomic<std::uint32_t>> slots_;
  std::atomic<int> high_{0};
};

/// What connect() has done on a socket (struct socket's SS_UNCONNECTED / SS_CONNECTING /
/// SS_CONNECTED in Linux): connect()'s answers depend on it, not only on the TCP state.
/// `failed`: connect() itself reported the handshake's failure; Linux then disconnects the socket
/// (inet_stream_connect -> tcp_disconnect clears sk_shutdown), so recv() is ENOTCONN and poll
/// shows OUT|HUP, unlike after SO_ERROR took the error (EOF, IN|OUT|HUP|RDHUP).
enum class ConnState : std::uint32_t { unconnected = 0, connecting = 1, connected = 2, failed = 3 };

/// An option set on a pending socket, replayed to the engine at hand-over.
struct RecordedOpt {
  SockOpt opt;
  int value;
};

inline constexpr std::uint32_t kPendingEpollRegs = 8;

/// A pending socket's registration in an emulated epoll instance. The kernel holds it while the
/// socket is a kernel socket; at hand-over it becomes an offloaded member with the same events and
/// data (the kernel entry would vanish with the kernel socket).
struct PendingEpollReg {
  std::uint32_t epoll;      ///< EpollDesc index
  std::uint32_t epoll_gen;  ///< its generation at registration: a closed instance is skipped
  int epfd;                 ///< the epoll fd it was registered through (to remove the kernel entry)
  std::uint32_t events;
  std::uint64_t data;
};

/// The shim's "open file description" of a tracked socket: shared by every fd dup'ed from it, so
/// O_NONBLOCK and the timeouts are common to them, as in Linux.
struct SockDesc {
  std::atomic<std::uint32_t> next_free;
  std::atomic<std::uint32_t> refs;   ///< fds of this process referring to it
  std::atomic<std::uint32_t> gen;    ///< bumped on free: epoll members notice a dead socket
  std::atomic<std::uint32_t> sock;   ///< channel::HostSocket once offloaded
  std::atomic<std::uint32_t> nonblock;
  std::atomic<std::int64_t> rcvtimeo_us;  ///< 0: block forever (SO_RCVTIMEO)
  std::atomic<std::int64_t> sndtimeo_us;
  std::atomic<std::uint32_t> listening;
  std::atomic<std::uint32_t> conn_state;  ///< ConnState: Linux's socket state (SS_*) for connect()
  std::atomic<std::int32_t> linger_on, linger_secs;  ///< as set, for getsockopt(SO_LINGER)
  std::atomic<std::uint32_t> quickack;
  // Pending state (before hand-over), guarded by `lock`.
  SpinLock lock;
  std::uint32_t n_opts;
  RecordedOpt opts[16];
  std::uint32_t unreplayable;  ///< options the kernel took that the engine cannot honour
  int unreplayable_level, unreplayable_name;
  std::uint32_t bound_any_port0;  ///< bind(0.0.0.0:0) was deferred to the kernel socket
  std::uint32_t n_epoll_regs;
  PendingEpollReg epoll_regs[kPendingEpollRegs];  ///< emulated epoll sets the pending socket is in

  /// Records (or updates) an option for replay; false when the record is full.
  bool record(SockOpt o, int v) {
    for (std::uint32_t i = 0; i < n_opts; ++i) {
      if (opts[i].opt == o) {
        opts[i].value = v;
        return true;
      }
    }
    if (n_opts == std::size(opts)) return false;
    opts[n_opts++] = {o, v};
    return true;
  }
  /// Back to the zero state before reuse (the slot is not in any table then).
  void reset() {
    refs.store(0);
    sock.store(0);
    nonblock.store(0);
    rcvtimeo_us.store(0);
    sndtimeo_us.store(0);
    listening.store(0);
    conn_state.store(0);
    linger_on.store(0);
    linger_secs.store(0);
    quickack.store(0);
    lock.reset();
    n_opts = 0;
    unreplayable = 0;
    unreplayable_level = unreplayable_name = 0;
    bound_any_port0 = 0;
    n_epoll_regs = 0;
  }
};

}  // namespace pno::shim
