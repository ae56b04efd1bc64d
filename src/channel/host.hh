// The host side of the host<->engine channel: the only API the shim (libpno.so) uses to reach the
// engine. Everything below it — the attach protocol, the shared region, the rings, the doorbells —
// is private to src/channel/ and defined by the contract header (contract.hh).
//
// One HostChannel per process family: a forked child keeps using the region it inherited (the
// mapping is MAP_SHARED), so sockets inherited across fork work in parent and child alike. The
// engine cleans up a family's sockets when the last process holding the attach connection exits.
//
// Threading: every method is thread-safe and may be called from several processes of the family
// at once. The data path (send, recv, readiness, readable_bytes) makes no system call unless the
// engine is asleep and must be woken. Nothing here calls malloc after attach() returns, and no
// method takes a lock that a signal handler re-entering the same method on another socket could
// deadlock on (per-socket locks are spin locks held only for a copy).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "base/addr.hh"
#include "base/errc.hh"
#include "base/socket.hh"
#include "base/time.hh"

namespace pno::channel {

/// A socket of this process family, as the engine knows it: an index into the region's socket
/// table with a generation, so a stale handle never reaches a reused slot. 0 is never valid.
using HostSocket = std::uint32_t;
inline constexpr HostSocket kNoSocket = 0;

/// What the engine told us at attach time.
struct EngineInfo {
  std::uint32_t abi_version = 0;
  std::uint32_t max_sockets = 0;      ///< socket slots in this process family's region
  std::uint32_t stream_ring_bytes = 0;  ///< size of each per-socket send and receive ring
  std::uint8_t n_addrs = 0;
  std::array<Ipv4Cidr, 8> addrs{};    ///< the engine's interface addresses and their subnets

  /// True when `a` is one of the engine's own addresses.
  [[nodiscard]] bool is_local(Ipv4Addr a) const;
  /// True when a connection to `a` leaves through the engine (on one of its subnets).
  [[nodiscard]] bool routes(Ipv4Addr a) const;
};

/// A thread's way to sleep until the engine has news for this process family. The shim adds fd()
/// (an eventfd the engine writes) and control_fd() (hangs up when the engine dies) to whatever the
/// thread sleeps in: poll(), or the kernel epoll set behind an emulated epoll instance.
///
///   ch.arm(w);                         // from now on, any engine progress wakes w.fd()
///   if (!conditions_hold()) poll({..., w.fd(), ch.control_fd()}, timeout);
///   ch.disarm(w);                      // resets w.fd() if it was written
class Waiter {
 public:
  /// Read atomically: HostChannel::relocate_fd() may move it while the owning thread runs.
  [[nodiscard]] int fd() const { return __atomic_load_n(&fd_, __ATOMIC_ACQUIRE); }
  [[nodiscard]] std::uint32_t index() const { return index_; }

 private:
  friend class HostChannel;
  int fd_ = -1;
  std::uint32_t index_ = 0;
};

/// What edge-triggered epoll compares between two looks at a socket: each field moves exactly when
/// the matching kind of event happened, so an edge for EPOLLIN is not confused with, say, the send
/// ring draining (Linux's wake-up callback likewise ignores keys outside the interest mask).
struct EdgeMarks {
  std::uint32_t in = 0;      ///< bytes or connections the engine delivered (receive ring, accept queue)
  std::uint32_t out = 0;     ///< bytes the engine took from the send ring
  std::uint64_t status = 0;  ///< state, flags, hang-up bits, shutdown(SHUT_WR), error: any change is an edge
};

class HostChannel {
 public:
  /// Connects to the engine's attach socket (a path; works across network namespaces), checks the
  /// ABI version, maps the region. On failure returns nullptr and writes a one-line reason into
  /// `why` (e.g. "engine at /run/pno/engine.sock refused ABI version 1: engine speaks 2").
  static std::unique_ptr<HostChannel> attach(const char* path, std::span<char> why);
  ~HostChannel();
  HostChannel(const HostChannel&) = delete;
  HostChannel& operator=(const HostChannel&) = delete;

  [[nodiscard]] const EngineInfo& engine() const;
  /// False once the engine has gone away (its end of the attach connection hung up). Every call on
  /// a socket then fails: conn_reset for data calls, not_conn/pipe as Linux would, never a hang.
  [[nodiscard]] bool alive() const;
  /// The attach connection: POLLHUP/POLLIN on it means the engine died.
  [[nodiscard]] int control_fd() const;
  /// True for every fd the channel itself holds (the shim must keep the app from closing or dup2-ing
  /// over them; they are kept at high numbers, close-on-exec).
  [[nodiscard]] bool owns_fd(int fd) const;
  /// Moves the channel's own descriptor `fd` (one owns_fd() accepts) to another high number,
  /// close-on-exec, and closes `fd`: the application may then use that number (dup2 onto it, or
  /// see it closed after close()). Every user inside the channel switches to the new number; a
  /// thread already sleeping on the old number holds the same open file and is still woken (a
  /// waiter's sleeper is also woken once, so it rebuilds its poll set). Returns the new fd, or -1
  /// with errno (EBADF: not the channel's; EMFILE: no number free) and then nothing changed.
  int relocate_fd(int fd);

  // --- control calls: one command on the command ring, answered on the completion ring. They
  // block the calling thread (briefly spinning, then sleeping) until the engine answers.
  Result<HostSocket> socket();
  Errc bind(HostSocket s, Endpoint local);
  Errc listen(HostSocket s, int backlog);
  /// Takes one connection from the listener's accept queue, which the engine fills ahead of time
  /// (no command on this path). Errc::again when empty. `peer` filled if non-null.
  Result<HostSocket> accept(HostSocket listener, Endpoint* peer);
  /// Starts the handshake: Errc::in_progress, then completion shows as kWritable (success) or
  /// kError with take_error() (failure), as a non-blocking Linux connect does.
  Errc connect(HostSocket s, Endpoint remote);
  Errc shutdown(HostSocket s, ShutdownHow how);
  Errc setsockopt(HostSocket s, SockOpt opt, int value);
  Result<int> getsockopt(HostSocket s, SockOpt opt);
  Result<Endpoint> local_endpoint(HostSocket s);
  Result<Endpoint> peer_endpoint(HostSocket s);
  Result<TcpInfo> info(HostSocket s);
  /// SO_ERROR: the pending asynchronous error, cleared by reading it.
  Errc take_error(HostSocket s);

  /// Reference counting across dup() and fork(): the shim calls retain() once per new descriptor
  /// that refers to `s`, and close() once per descriptor closed. The engine closes the socket (FIN,
  /// or RST when unread data is pending or linger is 0) when the last reference goes. The last
  /// close returns at once unless SO_LINGER with a timeout was set through setsockopt() (in any
  /// process of the family): then it waits for the connection's end or the timeout, as on Linux.
  void retain(HostSocket s);
  Errc close(HostSocket s);

  // --- data path: no system call, no command; bytes go through the socket's stream rings.
  /// Copies as much of `iov` as fits into the send ring. Errc::again when the ring is full, pipe
  /// after shutdown(write) or when the connection is gone, not_conn before it is established.
  /// `more`: MSG_MORE (hold a partial segment back, as TCP_CORK does for one call).
  Result<std::size_t> send(HostSocket s, std::span<const iovec> iov, bool more = false);
  /// sendfile(): reads up to `count` bytes of `in_fd` (at *offset if non-null, advancing it; else at
  /// the file position) straight into the send ring. Same errors as send(); file errors as errno.
  Result<std::size_t> send_file(HostSocket s, int in_fd, off_t* offset, std::size_t count);
  /// Copies received bytes into `iov`. 0 means EOF; Errc::again when nothing is there yet;
  /// `peek` (MSG_PEEK) leaves the bytes in place. A reset connection gives conn_reset once.
  Result<std::size_t> recv(HostSocket s, std::span<const iovec> iov, bool peek = false);
  /// FIONREAD.
  [[nodiscard]] Result<std::size_t> readable_bytes(HostSocket s) const;
  /// Current readiness (Ready bits = EPOLLIN/OUT/ERR/HUP/RDHUP), computed from the shared state.
  [[nodiscard]] std::uint32_t readiness(HostSocket s) const;
  /// Changes every time the engine changes anything that may alter readiness of `s` (new bytes,
  /// window opened, connection accepted, FIN, error). Edge-triggered epoll compares it.
  [[nodiscard]] std::uint32_t event_seq(HostSocket s) const;
  /// The socket's edge marks now (see EdgeMarks); a status no live socket has once the engine is gone.
  [[nodiscard]] EdgeMarks edge_marks(HostSocket s) const;
  /// Sockets whose event_seq changed since the previous call, for scalable epoll: returns how many
  /// were written to `out`; `overflowed` set when more changed than fit (then rescan all).
  std::size_t drain_changed(std::span<HostSocket> out, bool& overflowed);

  // --- waiting (see Waiter)
  /// The calling thread's waiter, created and registered with the engine on first use (the one
  /// allocation/system-call path after attach). nullptr if the engine is gone or the table is full.
  Waiter* thread_waiter();
  void arm(Waiter& w);
  void disarm(Waiter& w);

  /// In a forked child, before anything else: drops the parent's waiters (they belong to the
  /// parent's threads) and resets locks the parent's other threads may have held. This form keeps
  /// the parent's process table entry (for a parent that retain()ed for the child); prefer the
  /// fork_reserve() sequence below, which gives the child an entry of its own.
  void after_fork_child();

  // --- fork with per-process references: the engine drops the references of a process that dies
  // (any signal) within one loop iteration, so each process counts its own descriptors.
  //   t = fork_reserve();                      // parent, before fork: the child's table entry
  //   fork_retain(t, s) for every descriptor   // the child's copies, counted in its entry
  //   pid = fork();
  //   parent: fork_parent(t, pid)              // registers the pid (pid < 0: undone)
  //   child:  after_fork_child(t)              // instead of after_fork_child()
  /// A process table entry for a child about to be forked (the shared one when the table is full).
  std::uint32_t fork_reserve();
  void fork_retain(std::uint32_t ticket, HostSocket s);
  void fork_parent(std::uint32_t ticket, pid_t child);
  void after_fork_child(std::uint32_t ticket);

  // --- exec: the attachment survives exec() of this process (same family, same references), so
  // offloaded sockets without FD_CLOEXEC reach the next program image as kernel sockets do.
  /// The fds that carry the attachment into the next image: the attach connection, the region
  /// (a memfd) and the doorbell.
  struct ExecFds {
    int conn = -1, region = -1, doorbell = -1;
    std::uint32_t proc = 0xffffffffu;  ///< this process's process table entry (kept across exec)
  };
  /// Clears close-on-exec on the three fds (nothing else changes). False when that fails; then
  /// they are close-on-exec again.
  bool prepare_exec(ExecFds& out);
  /// The exec failed: the three fds are close-on-exec again.
  void exec_failed();
  /// The indices of this process's registered waiters (their threads end with the image); returns
  /// how many were written.
  std::size_t waiter_indices(std::span<std::uint32_t> out) const;
  /// In the next image: takes over the inherited fds (close-on-exec again), maps the region, frees
  /// `stale_waiters` and releases the region locks the previous image of this pid held (its
  /// threads are gone). No new attach: the engine sees the same family. On failure nullptr, the
  /// fds closed, and a reason in `why`.
  static std::unique_ptr<HostChannel> adopt(ExecFds fds, std::span<const std::uint32_t> stale_waiters,
                                            std::span<char> why);

 private:
  HostChannel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pno::channel
