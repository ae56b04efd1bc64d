// libpno.so's interposed functions, by section: the shim's whole surface but for the sigaction
// family (signals.cc) and syscall() (syscall.cc). Each looks its fd up in the fd table (one atomic
// load); kernel fds go straight to libc, the shim's own to the file of their concern (see
// internal.hh).
#include <cstdarg>
#include <optional>

#include "shim/exec.hh"
#include "shim/internal.hh"

namespace pno::shim {
namespace {

// ---------------------------------------------------------------------------------------------
// Load: the options from the environment, then the previous image's attachment when this image
// replaced one by exec, else the start-up check (no attach: a process attaches at its first
// bind/connect/listen that the engine may serve).

__attribute__((constructor)) void pno_shim_init() {
  real::resolve_all();
  const char* path = configure_from_env();
  if (path == nullptr) return;  // PNO_DISABLE=1
  // This image replaced one that had offloaded sockets without FD_CLOEXEC: take its attachment.
  if (std::optional<int> sfd = take_exec_state(); sfd && adopt_after_exec(*sfd)) return;
  start_unattached(path);
}

}  // namespace
}  // namespace pno::shim

using namespace pno;
using namespace pno::shim;

#define PNO_EXPORT extern "C" __attribute__((visibility("default")))

// ---------------------------------------------------------------------------------------------
// Processes: fork, exit, exec (lifecycle.cc, exec.cc)

PNO_EXPORT pid_t fork() noexcept {
  const pid_t r = PNO_REAL(fork)();
  if (r != 0) fork_done_parent(r);
  return r;
}

PNO_EXPORT void _exit(int status) {
  release_all_refs();
  PNO_REAL(_exit)(status);
  __builtin_unreachable();
}

PNO_EXPORT void _Exit(int status) { _exit(status); }

PNO_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(execve)(path, argv, env); });
}

PNO_EXPORT int execv(const char* path, char* const argv[]) noexcept {
  return exec_keeping_sockets(nullptr, [&](char* const* env) { return PNO_REAL(execve)(path, argv, env); });
}

PNO_EXPORT int execvp(const char* file, char* const argv[]) noexcept {
  return exec_keeping_sockets(nullptr, [&](char* const* env) { return PNO_REAL(execvpe)(file, argv, env); });
}

PNO_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(execvpe)(file, argv, env); });
}

PNO_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(fexecve)(fd, argv, env); });
}

// execl, execle, execlp: glibc's own call its internal execve, past the shim; these collect the
// arguments (on the stack, as glibc does) and take the execv* path above.
namespace {
template <typename Then>
int with_arg_list(const char* arg, va_list ap, bool want_envp, Then&& then) {
  std::size_t n = 0;  // arguments before the terminating null
  if (arg != nullptr) {
    va_list count;
    va_copy(count, ap);
    n = 1;
    while (va_arg(count, const char*) != nullptr) ++n;
    va_end(count);
  }
  auto** argv = static_cast<char**>(__builtin_alloca((n + 1) * sizeof(char*)));
  if (n > 0) argv[0] = const_cast<char*>(arg);
  for (std::size_t i = 1; i < n; ++i) argv[i] = va_arg(ap, char*);
  if (n > 0) (void)va_arg(ap, char*);  // the terminating null
  argv[n] = nullptr;
  char* const* envp = want_envp ? va_arg(ap, char* const*) : nullptr;
  return then(argv, envp);
}
}  // namespace

PNO_EXPORT int execl(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, false, [&](char** argv, char* const*) { return execv(path, argv); });
  va_end(ap);
  return r;
}

PNO_EXPORT int execle(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, true, [&](char** argv, char* const* envp) { return execve(path, argv, envp); });
  va_end(ap);
  return r;
}

PNO_EXPORT int execlp(const char* file, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, false, [&](char** argv, char* const*) { return execvp(file, argv); });
  va_end(ap);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Sockets: creation (descriptors.cc), and the calls that decide where a socket lives (handover.cc)

PNO_EXPORT int socket(int domain, int type, int protocol) noexcept {
  int fd = PNO_REAL(socket)(domain, type, protocol);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  bool tcp4 = domain == AF_INET && (type & 0xf) == SOCK_STREAM &&
              (protocol == 0 || protocol == IPPROTO_TCP);
  track_new(st, fd, tcp4);
  return fd;
}

PNO_EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  int r = PNO_REAL(socketpair)(domain, type, protocol, sv);
  State* st = state();
  if (r == 0 && st != nullptr) {
    track_new(st, sv[0], false);
    track_new(st, sv[1], false);
  }
  return r;
}

PNO_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(bind)(fd, addr, len);
  return bind_impl(st, fd, addr, len);
}

PNO_EXPORT int listen(int fd, int backlog) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(listen)(fd, backlog);
  return listen_impl(st, fd, backlog);
}

PNO_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(connect)(fd, addr, len);
  return connect_impl(st, fd, addr, len);
}

PNO_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  State* st = state();
  if (st == nullptr || !offloaded(st, fd)) {
    int r = PNO_REAL(accept4)(fd, addr, len, flags);
    if (r >= 0 && st != nullptr) track_new(st, r, false);
    return r;
  }
  return accept_impl(st, fd, addr, len, flags);
}

PNO_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
  State* st = state();
  if (st == nullptr || !offloaded(st, fd)) {
    int r = PNO_REAL(accept)(fd, addr, len);
    if (r >= 0 && st != nullptr) track_new(st, r, false);
    return r;
  }
  return accept_impl(st, fd, addr, len, 0);
}

// ---------------------------------------------------------------------------------------------
// Data path (data.cc)

PNO_EXPORT ssize_t read(int fd, void* buf, size_t n) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(read)(fd, buf, n);
  iovec iov{buf, n};
  return do_recv(st, r, &iov, 1, 0);
}

PNO_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(write)(fd, buf, n);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, 0);
}

PNO_EXPORT ssize_t readv(int fd, const iovec* iov, int cnt) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(readv)(fd, iov, cnt);
  if (cnt < 0) return fail(EINVAL);
  return do_recv(st, r, iov, static_cast<std::size_t>(cnt), 0);
}

PNO_EXPORT ssize_t writev(int fd, const iovec* iov, int cnt) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(writev)(fd, iov, cnt);
  if (cnt < 0) return fail(EINVAL);
  return do_send(st, r, iov, static_cast<std::size_t>(cnt), 0);
}

PNO_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recv)(fd, buf, n, flags);
  iovec iov{buf, n};
  return do_recv(st, r, &iov, 1, flags);
}

PNO_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* alen) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvfrom)(fd, buf, n, flags, addr, alen);
  iovec iov{buf, n};
  ssize_t got = do_recv(st, r, &iov, 1, flags);
  if (got >= 0 && addr != nullptr && alen != nullptr) *alen = 0;  // TCP has no source address
  return got;
}

PNO_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvmsg)(fd, msg, flags);
  return recvmsg_impl(st, r, msg, flags);
}

PNO_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvmmsg)(fd, vec, vlen, flags, timeout);
  return recvmmsg_impl(st, r, vec, vlen, flags);
}

PNO_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(send)(fd, buf, n, flags);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, flags);
}

PNO_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t alen) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendto)(fd, buf, n, flags, addr, alen);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, flags);  // a connected TCP socket ignores the address
}

PNO_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendmsg)(fd, msg, flags);
  if (msg == nullptr) return fail(EFAULT);
  return do_send(st, r, msg->msg_iov, msg->msg_iovlen, flags);
}

PNO_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendmmsg)(fd, vec, vlen, flags);
  return sendmmsg_impl(st, r, vec, vlen, flags);
}

PNO_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(sendfile)(out_fd, in_fd, offset, count);
  if (offloaded(st, in_fd)) return fail(EINVAL);  // the source must be mmap-able (sendfile(2))
  SockRef r = offloaded(st, out_fd);
  if (!r) return PNO_REAL(sendfile)(out_fd, in_fd, offset, count);
  return do_sendfile(st, r, in_fd, offset, count);
}

PNO_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  return sendfile(out_fd, in_fd, offset, count);
}

PNO_EXPORT int shutdown(int fd, int how) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(shutdown)(fd, how);
  return shutdown_impl(st, r, how);
}

// ---------------------------------------------------------------------------------------------
// Names, options, ioctl (sockopt.cc)

PNO_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getsockname)(fd, addr, len);
  return name_out(st->ch->local_endpoint(r.s), addr, len);
}

PNO_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getpeername)(fd, addr, len);
  return name_out(st->ch->peer_endpoint(r.s), addr, len);
}

PNO_EXPORT int getsockopt(int fd, int level, int name, void* optval, socklen_t* optlen) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getsockopt)(fd, level, name, optval, optlen);
  return getsockopt_impl(st, r, level, name, optval, optlen);
}

PNO_EXPORT int setsockopt(int fd, int level, int name, const void* optval, socklen_t optlen) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(setsockopt)(fd, level, name, optval, optlen);
  return setsockopt_impl(st, fd, level, name, optval, optlen);
}

PNO_EXPORT int ioctl(int fd, unsigned long req, ...) noexcept {
  va_list ap;
  va_start(ap, req);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(ioctl)(fd, req, arg);
  int rc = ioctl_impl(st, r, req, arg);
  return rc == -2 ? PNO_REAL(ioctl)(fd, req, arg) : rc;
}

// ---------------------------------------------------------------------------------------------
// Descriptors: close, fcntl, dup (descriptors.cc)

PNO_EXPORT int close(int fd) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(close)(fd);
  return close_impl(st, fd);
}

PNO_EXPORT int close_range(unsigned int first, unsigned int last, int flags) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(close_range)(first, last, flags);
  return close_range_impl(st, first, last, flags);
}

PNO_EXPORT void closefrom(int lowfd) noexcept {
  (void)close_range(static_cast<unsigned int>(std::max(lowfd, 0)), ~0U, 0);
}

namespace {
int fcntl_entry(int fd, int cmd, long arg) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(fcntl)(fd, cmd, arg);
  return fcntl_impl(st, fd, cmd, arg);
}
}  // namespace

// fcntl and fcntl64 take one optional argument of pointer or int size; reading it as a long is
// what glibc itself does.
PNO_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl_entry(fd, cmd, arg);
}

PNO_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl_entry(fd, cmd, arg);
}

PNO_EXPORT int dup(int fd) noexcept {
  State* st = state();
  int r = PNO_REAL(dup)(fd);
  if (st != nullptr && r >= 0) track_dup(st, fd, st->fds.get(fd), r);
  return r;
}

PNO_EXPORT int dup2(int ofd, int nfd) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(dup2)(ofd, nfd);
  return dup_impl(st, ofd, nfd, 0, true);
}

PNO_EXPORT int dup3(int ofd, int nfd, int flags) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(dup3)(ofd, nfd, flags);
  return dup_impl(st, ofd, nfd, flags, false);
}

// ---------------------------------------------------------------------------------------------
// epoll: instances (descriptors.cc), interest lists (epoll_set.cc), waits (wait.cc)

PNO_EXPORT int epoll_create(int size) noexcept {
  int fd = PNO_REAL(epoll_create)(size);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  return track_epoll(st, fd);
}

PNO_EXPORT int epoll_create1(int flags) noexcept {
  int fd = PNO_REAL(epoll_create1)(flags);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  return track_epoll(st, fd);
}

PNO_EXPORT int epoll_ctl(int epfd, int op, int fd, epoll_event* ev) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(epoll_ctl)(epfd, op, fd, ev);
  return epoll_ctl_impl(st, epfd, op, fd, ev);
}

PNO_EXPORT int epoll_pwait2(int epfd, epoll_event* evs, int max, const timespec* timeout, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_pwait2)(epfd, evs, max, timeout, mask);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ts(timeout), mask);
}

PNO_EXPORT int epoll_pwait(int epfd, epoll_event* evs, int max, int timeout, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_pwait)(epfd, evs, max, timeout, mask);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ms(timeout), mask);
}

PNO_EXPORT int epoll_wait(int epfd, epoll_event* evs, int max, int timeout) {
  State* st = state();
  if (st == nullptr || st->fds.get(epfd).kind != FdKind::epoll) {
    return PNO_REAL(epoll_wait)(epfd, evs, max, timeout);
  }
  return epoll_wait_impl(st, epfd, evs, max, deadline_from_ms(timeout), nullptr);
}

// ---------------------------------------------------------------------------------------------
// poll and select (wait.cc)

PNO_EXPORT int poll(pollfd* fds, nfds_t n, int timeout) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(poll)(fds, n, timeout);
  return poll_impl(st, fds, n, deadline_from_ms(timeout), nullptr, false, timeout);
}

PNO_EXPORT int ppoll(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(ppoll)(fds, n, ts, mask);
  return poll_impl(st, fds, n, deadline_from_ts(ts), mask, true, -1);
}

PNO_EXPORT int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* tv) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(select)(nfds, rd, wr, ex, tv);
  return select_impl(st, nfds, rd, wr, ex, tv);
}

PNO_EXPORT int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* ts, const sigset_t* mask) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(pselect)(nfds, rd, wr, ex, ts, mask);
  return pselect_impl(st, nfds, rd, wr, ex, ts, mask);
}

// ---------------------------------------------------------------------------------------------
// glibc's fortified variants (_FORTIFY_SOURCE) check the buffer size, then do the plain call.
PNO_EXPORT void __chk_fail() __attribute__((noreturn));

PNO_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return read(fd, buf, n);
}

PNO_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return recv(fd, buf, n, flags);
}

PNO_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr,
                                  socklen_t* alen) {
  if (n > buflen) __chk_fail();
  return recvfrom(fd, buf, n, flags, addr, alen);
}

PNO_EXPORT int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
  if (fdslen / sizeof(pollfd) < n) __chk_fail();
  return poll(fds, n, timeout);
}

PNO_EXPORT int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* mask, size_t fdslen) {
  if (fdslen / sizeof(pollfd) < n) __chk_fail();
  return ppoll(fds, n, ts, mask);
}
