// syscall(): applications (and runtimes such as Go's cgo or libuv) sometimes issue socket calls
// through syscall(2); route those numbers to the interposed functions so an offloaded socket
// never reaches the kernel as its placeholder eventfd.
#include <sys/syscall.h>

#include <cstdarg>

#include "shim/internal.hh"

using namespace pno::shim;

namespace {
template <typename T>
T as(long v) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<T>(v);
  } else {
    return static_cast<T>(v);
  }
}
}  // namespace

extern "C" __attribute__((visibility("default"))) long syscall(long nr, ...) noexcept {
  va_list ap;
  va_start(ap, nr);
  long a0 = va_arg(ap, long), a1 = va_arg(ap, long), a2 = va_arg(ap, long);
  long a3 = va_arg(ap, long), a4 = va_arg(ap, long), a5 = va_arg(ap, long);
  va_end(ap);
  if (state() != nullptr) {
    switch (nr) {
      case SYS_read: return ::read(as<int>(a0), as<void*>(a1), as<size_t>(a2));
      case SYS_write: return ::write(as<int>(a0), as<const void*>(a1), as<size_t>(a2));
      case SYS_readv: return ::readv(as<int>(a0), as<const iovec*>(a1), as<int>(a2));
      case SYS_writev: return ::writev(as<int>(a0), as<const iovec*>(a1), as<int>(a2));
      case SYS_close: return ::close(as<int>(a0));
      case SYS_close_range: return ::close_range(as<unsigned>(a0), as<unsigned>(a1), as<int>(a2));
      case SYS_socket: return ::socket(as<int>(a0), as<int>(a1), as<int>(a2));
      case SYS_socketpair: return ::socketpair(as<int>(a0), as<int>(a1), as<int>(a2), as<int*>(a3));
      case SYS_bind: return ::bind(as<int>(a0), as<const sockaddr*>(a1), as<socklen_t>(a2));
      case SYS_listen: return ::listen(as<int>(a0), as<int>(a1));
      case SYS_accept: return ::accept(as<int>(a0), as<sockaddr*>(a1), as<socklen_t*>(a2));
      case SYS_accept4: return ::accept4(as<int>(a0), as<sockaddr*>(a1), as<socklen_t*>(a2), as<int>(a3));
      case SYS_connect: return ::connect(as<int>(a0), as<const sockaddr*>(a1), as<socklen_t>(a2));
      case SYS_sendto:
        return ::sendto(as<int>(a0), as<const void*>(a1), as<size_t>(a2), as<int>(a3), as<const sockaddr*>(a4),
                        as<socklen_t>(a5));
      case SYS_recvfrom:
        return ::recvfrom(as<int>(a0), as<void*>(a1), as<size_t>(a2), as<int>(a3), as<sockaddr*>(a4),
                          as<socklen_t*>(a5));
      case SYS_sendmsg: return ::sendmsg(as<int>(a0), as<const msghdr*>(a1), as<int>(a2));
      case SYS_recvmsg: return ::recvmsg(as<int>(a0), as<msghdr*>(a1), as<int>(a2));
      case SYS_sendmmsg: return ::sendmmsg(as<int>(a0), as<mmsghdr*>(a1), as<unsigned>(a2), as<int>(a3));
      case SYS_recvmmsg:
        return ::recvmmsg(as<int>(a0), as<mmsghdr*>(a1), as<unsigned>(a2), as<int>(a3), as<timespec*>(a4));
      case SYS_shutdown: return ::shutdown(as<int>(a0), as<int>(a1));
      case SYS_getsockname: return ::getsockname(as<int>(a0), as<sockaddr*>(a1), as<socklen_t*>(a2));
      case SYS_getpeername: return ::getpeername(as<int>(a0), as<sockaddr*>(a1), as<socklen_t*>(a2));
      case SYS_getsockopt:
        return ::getsockopt(as<int>(a0), as<int>(a1), as<int>(a2), as<void*>(a3), as<socklen_t*>(a4));
      case SYS_setsockopt:
        return ::setsockopt(as<int>(a0), as<int>(a1), as<int>(a2), as<const void*>(a3), as<socklen_t>(a4));
      case SYS_fcntl: return ::fcntl(as<int>(a0), as<int>(a1), a2);
      case SYS_ioctl: return ::ioctl(as<int>(a0), as<unsigned long>(a1), as<void*>(a2));
      case SYS_dup: return ::dup(as<int>(a0));
      case SYS_dup2: return ::dup2(as<int>(a0), as<int>(a1));
      case SYS_dup3: return ::dup3(as<int>(a0), as<int>(a1), as<int>(a2));
      case SYS_epoll_create: return ::epoll_create(as<int>(a0));
      case SYS_epoll_create1: return ::epoll_create1(as<int>(a0));
      case SYS_epoll_ctl: return ::epoll_ctl(as<int>(a0), as<int>(a1), as<int>(a2), as<epoll_event*>(a3));
      case SYS_epoll_wait: return ::epoll_wait(as<int>(a0), as<epoll_event*>(a1), as<int>(a2), as<int>(a3));
      case SYS_epoll_pwait:
        return ::epoll_pwait(as<int>(a0), as<epoll_event*>(a1), as<int>(a2), as<int>(a3), as<const sigset_t*>(a4));
      case SYS_epoll_pwait2:
        return ::epoll_pwait2(as<int>(a0), as<epoll_event*>(a1), as<int>(a2), as<const timespec*>(a3),
                              as<const sigset_t*>(a4));
      case SYS_poll: return ::poll(as<pollfd*>(a0), as<nfds_t>(a1), as<int>(a2));
      case SYS_ppoll:
        return ::ppoll(as<pollfd*>(a0), as<nfds_t>(a1), as<const timespec*>(a2), as<const sigset_t*>(a3));
      case SYS_select:
        return ::select(as<int>(a0), as<fd_set*>(a1), as<fd_set*>(a2), as<fd_set*>(a3), as<timeval*>(a4));
      case SYS_pselect6: {
        // The kernel's sixth argument is {const sigset_t* ss; size_t ss_len} (or null).
        struct SigData {
          const sigset_t* ss;
          size_t len;
        };
        const auto* sd = as<const SigData*>(a5);
        return ::pselect(as<int>(a0), as<fd_set*>(a1), as<fd_set*>(a2), as<fd_set*>(a3), as<const timespec*>(a4),
                         sd != nullptr ? sd->ss : nullptr);
      }
      case SYS_sendfile: return ::sendfile(as<int>(a0), as<int>(a1), as<off_t*>(a2), as<size_t>(a3));
      default: break;
    }
  }
  return PNO_REAL(syscall)(nr, a0, a1, a2, a3, a4, a5);
}
