// The libc functions the shim interposes, resolved with dlsym(RTLD_NEXT) on first use (and all at
// once from the constructor, before the application runs, so the hot path never calls dlsym).
// dlsym may call calloc; the shim interposes no allocator, so that cannot recurse into it.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>


namespace pno::shim::real {

#define PNO_SHIM_REAL_FUNCTIONS(X)                                                          \
  X(socket) X(socketpair) X(bind) X(listen) X(accept) X(accept4) X(connect) X(read)        \
  X(write) X(readv) X(writev) X(recv) X(recvfrom) X(recvmsg) X(recvmmsg) X(send) X(sendto) \
  X(sendmsg) X(sendmmsg) X(sendfile) X(close) X(close_range) X(shutdown) X(getsockname)    \
  X(getpeername) X(getsockopt) X(setsockopt) X(fcntl) X(ioctl) X(dup) X(dup2) X(dup3)      \
  X(epoll_create) X(epoll_create1) X(epoll_ctl) X(epoll_wait) X(epoll_pwait)               \
  X(epoll_pwait2) X(poll) X(ppoll) X(select) X(pselect) X(syscall) X(_exit) X(execve)       \
  X(execv) X(execvp) X(execvpe) X(fexecve) X(eventfd) X(closefrom) X(sigaction) X(fork)

// One plain pointer per function (std::atomic<F> would drop the functions' attributes and
// warn); written with __atomic builtins since several threads may resolve it at once.
#define PNO_SHIM_REAL_SLOT(name)                                                   \
  inline decltype(&::name) p_##name = nullptr;                                     \
  inline decltype(&::name) resolve_##name() {                                      \
    auto f = reinterpret_cast<decltype(&::name)>(::dlsym(RTLD_NEXT, #name));       \
    __atomic_store_n(&p_##name, f, __ATOMIC_RELAXED);                              \
    return f;                                                                      \
  }
PNO_SHIM_REAL_FUNCTIONS(PNO_SHIM_REAL_SLOT)
#undef PNO_SHIM_REAL_SLOT

/// Resolves every function now (called from the constructor).
inline void resolve_all() {
#define PNO_SHIM_REAL_RESOLVE(name) resolve_##name();
  PNO_SHIM_REAL_FUNCTIONS(PNO_SHIM_REAL_RESOLVE)
#undef PNO_SHIM_REAL_RESOLVE
}

}  // namespace pno::shim::real

/// The next definition of libc function `name` (libc's own, or another preloaded library's).
#define PNO_REAL(name)                                                                   \
  (__builtin_expect(__atomic_load_n(&::pno::shim::real::p_##name, __ATOMIC_RELAXED) != nullptr, 1) \
       ? ::pno::shim::real::p_##name                                                     \
       : ::pno::shim::real::resolve_##name())
