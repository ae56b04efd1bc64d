// Declarations shared by the shim's files, each section under the file that defines it. Calls go
// one way: exports.cc (the interposed functions) calls into every file; handover.cc calls
// descriptors.cc, epoll_set.cc, wait.cc and lifecycle.cc; data.cc calls wait.cc; exec.cc and
// descriptors.cc call lifecycle.cc. lifecycle.cc, wait.cc, epoll_set.cc and sockopt.cc call none
// of them: a blocking socket call waits through wait_socket(), never the other way round.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/select.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "shim/real.hh"
#include "shim/state.hh"

namespace pno::shim {

inline int fail(int e) {
  errno = e;
  return -1;
}

/// The offloaded socket behind `fd`, if it is one.
struct SockRef {
  SockDesc* d = nullptr;
  std::uint32_t index = 0;
  HostSocket s = channel::kNoSocket;
  explicit operator bool() const { return d != nullptr; }
};

inline SockRef offloaded(State* st, int fd) {
  FdRef r = st->fds.get(fd);
  if (r.kind != FdKind::socket) return {};
  SockDesc& d = st->socks[r.index];
  return {&d, r.index, d.sock.load(std::memory_order_acquire)};
}

/// Readiness of an offloaded socket; a dead engine makes every socket EPOLLERR|EPOLLHUP.
inline std::uint32_t ready_of(State* st, HostSocket s) {
  if (!st->ch->alive()) return EPOLLERR | EPOLLHUP;
  return st->ch->readiness(s);
}

/// Readiness for epoll/poll/select. A listener of a dead engine shows nothing: it will never have a
/// connection, and a level-triggered loop that keeps it registered (redis) would spin on
/// EPOLLERR|EPOLLHUP; accept() on it fails with ECONNABORTED at once.
inline std::uint32_t poll_ready_of(State* st, const SockDesc& d) {
  // One liveness check per call: this runs for every member of every emulated epoll scan.
  if (!st->ch->alive()) return d.listening.load(std::memory_order_relaxed) != 0 ? 0U : EPOLLERR | EPOLLHUP;
  const std::uint32_t r = st->ch->readiness(d.sock.load(std::memory_order_acquire));
  // After connect() reported the failure the socket is disconnected (tcp_disconnect): tcp_poll
  // shows TCP_CLOSE without shutdown flags, OUT|HUP.
  if ((r & EPOLLHUP) != 0 &&
      d.conn_state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(ConnState::failed)) {
    return EPOLLOUT | EPOLLHUP;
  }
  return r;
}

/// Deadlines on the CLOCK_MONOTONIC nanosecond scale of now_ns(); -1: none.
inline std::int64_t deadline_from_ms(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ns() + static_cast<std::int64_t>(timeout_ms) * 1'000'000;
}

inline std::int64_t deadline_from_ts(const timespec* ts) {
  if (ts == nullptr) return -1;
  return now_ns() + static_cast<std::int64_t>(ts->tv_sec) * 1'000'000'000 + ts->tv_nsec;
}

/// A call's SO_RCVTIMEO/SO_SNDTIMEO budget: Linux counts it for the whole call, not per wait.
class CallTimeout {
 public:
  explicit CallTimeout(std::int64_t timeo_us)
      : timeo_(timeo_us), deadline_(timeo_us > 0 ? now_ns() + timeo_us * 1000 : 0) {}
  /// What is left for the next wait, in wait_socket()'s terms (0 forever, -1 none left).
  [[nodiscard]] std::int64_t left_us() const {
    if (timeo_ <= 0) return timeo_;
    std::int64_t left = (deadline_ - now_ns()) / 1000;
    return left > 0 ? left : -1;
  }

 private:
  std::int64_t timeo_;
  std::int64_t deadline_;
};

// ---------------------------------------------------------------------------------------------
// lifecycle.cc: process-wide state, lazy attach, fork and exit

/// Reads the PNO_* variables: the engine socket path, or nullptr with PNO_DISABLE=1 (the shim
/// then leaves every call to libc).
const char* configure_from_env();

/// Start-up without an attach: checks that an engine may be there (PNO_REQUIRE_ENGINE: that it
/// answers, else exit 70) and maps the descriptor tables.
void start_unattached(const char* path);

/// The descriptor tables (mmap'd, no engine contact); nullptr when they cannot be mapped.
State* init_state();

/// Makes `ch` the state's channel and copies the engine's addresses: how many.
std::size_t install_channel(State* st, std::unique_ptr<HostChannel> ch);

/// Publishes the tables to the interposed functions and registers the fork and exit handlers.
/// `attached`: the channel is installed already (taken over exec).
void publish_state(State* st, bool attached);

/// The channel, attaching first if this process has not tried yet; nullptr when there is no
/// usable engine (then the caller keeps the socket in the kernel).
HostChannel* ensure_attached(State* st);

/// The channel if this process is attached (no attach attempt), else nullptr.
HostChannel* attached_channel(State* st);

/// False once an attach failed or the engine died: new sockets are not even tracked then.
bool may_offload(State* st);

/// In the parent after fork() returned: the engine learns the child's pid (and watches it) before
/// fork() returns to the application; a failed fork gives the reserved references back.
void fork_done_parent(pid_t child);

/// Closes this process's references to every offloaded socket (exit, or an exec into an image
/// that cannot reach the engine).
void release_all_refs();

// ---------------------------------------------------------------------------------------------
// descriptors.cc: what each fd number refers to

/// Drops one reference to SockDesc `idx` (freeing it with the last).
void release_desc(State* st, std::uint32_t idx);

/// A new kernel fd: forgets what the number referred to before; an AF_INET stream socket
/// (`want_pending`) is tracked as pending until bind/connect/listen decides.
void track_new(State* st, int fd, bool want_pending);

/// Makes the placeholder kernel fd for an offloaded socket: an eventfd dup'ed onto `fd` (or onto
/// the lowest free number when fd < 0). Returns the fd or -1 with errno.
int make_placeholder(int fd, bool cloexec);

/// A new fd `nfd` now refers to what `ofd` referred to (dup, dup2, F_DUPFD).
void track_dup(State* st, int ofd, FdRef o, int nfd);

/// Drops references of tracked objects when `fd` stops referring to them (close, dup2 over it).
void untrack_fd(State* st, int fd, FdRef r);

int dup_impl(State* st, int ofd, int nfd, int flags, bool is_dup2);
int close_impl(State* st, int fd);
int close_range_impl(State* st, unsigned int first, unsigned int last, int flags);
int fcntl_impl(State* st, int fd, int cmd, long arg);

/// Registers a new kernel epoll fd as an emulated instance. -1 with errno on failure (the epoll
/// fd is closed then).
int track_epoll(State* st, int epfd);

// ---------------------------------------------------------------------------------------------
// epoll_set.cc: the interest lists of emulated epoll instances

int epoll_ctl_impl(State* st, int epfd, int op, int fd, epoll_event* ev);

/// At hand-over of pending socket `fd` (SockDesc `sock_idx`, already marked offloaded): its
/// registrations in emulated epoll sets become offloaded members with the same events and data.
void epoll_adopt_pending(State* st, int fd, std::uint32_t sock_idx);

// ---------------------------------------------------------------------------------------------
// wait.cc: waiting

/// Waits until the socket shows one of `mask` or a pending error (EPOLLHUP only when in `mask`:
/// the TCP hang-up can precede the last bytes reaching the ring). timeout_us: 0 = forever,
/// -1 = do not wait. Returns 0, EAGAIN (timed out) or EINTR.
int wait_socket(State* st, HostSocket s, std::uint32_t mask, std::int64_t timeout_us);

/// epoll_wait on emulated instance `epfd`; `deadline_ns` < 0: none.
int epoll_wait_impl(State* st, int epfd, epoll_event* evs, int max, std::int64_t deadline_ns,
                    const sigset_t* mask);

/// poll() over a mix of offloaded and kernel fds (`use_ppoll`: the kernel part is a ppoll with
/// `mask`, else a poll with `timeout_ms`).
int poll_impl(State* st, pollfd* fds, nfds_t n, std::int64_t deadline_ns, const sigset_t* mask,
              bool use_ppoll, int timeout_ms);

/// select() and pselect(): sets without an offloaded fd go to libc unchanged.
int select_impl(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* tv);
int pselect_impl(State* st, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* ts,
                 const sigset_t* mask);

// ---------------------------------------------------------------------------------------------
// handover.cc: bind/listen/connect/accept, and the hand-over of pending sockets to the engine

int bind_impl(State* st, int fd, const sockaddr* a, socklen_t len);
int listen_impl(State* st, int fd, int backlog);
int connect_impl(State* st, int fd, const sockaddr* a, socklen_t len);
/// accept4() on offloaded listener `fd`.
int accept_impl(State* st, int fd, sockaddr* addr, socklen_t* addrlen, int flags);

// ---------------------------------------------------------------------------------------------
// data.cc: the data path of offloaded sockets

ssize_t do_recv(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags);
ssize_t do_send(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags);
ssize_t do_sendfile(State* st, SockRef r, int in_fd, off_t* offset, std::size_t count);
ssize_t recvmsg_impl(State* st, SockRef r, msghdr* msg, int flags);
int recvmmsg_impl(State* st, SockRef r, mmsghdr* vec, unsigned int vlen, int flags);
int sendmmsg_impl(State* st, SockRef r, mmsghdr* vec, unsigned int vlen, int flags);
int shutdown_impl(State* st, SockRef r, int how);

// ---------------------------------------------------------------------------------------------
// sockopt.cc: options, names and ioctls

int getsockopt_impl(State* st, SockRef r, int level, int name, void* optval, socklen_t* optlen);
/// setsockopt() on any tracked fd: offloaded sockets are answered by the engine, pending ones
/// also record the option for the hand-over.
int setsockopt_impl(State* st, int fd, int level, int name, const void* optval, socklen_t optlen);
/// -2: the request acts on the fd itself (the placeholder takes it).
int ioctl_impl(State* st, SockRef r, unsigned long req, void* arg);

/// The tail of getsockname/getpeername: the socket's error first (ENOTCONN), then the caller's
/// buffer (EFAULT, EINVAL), in the order Linux checks them.
int name_out(const Result<Endpoint>& ep, sockaddr* addr, socklen_t* len);

}  // namespace pno::shim
