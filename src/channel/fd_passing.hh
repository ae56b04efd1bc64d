// One message with file descriptors attached (SCM_RIGHTS), as both ends of the attach socket send
// and receive them: the engine hands over the region memfd and the doorbell, the host registers
// its waiters' eventfds. Header-only: libpno.so and the engine each compile it.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <span>

namespace pno::channel {

/// Most descriptors one attach-socket message carries (the attach reply: memfd and doorbell).
inline constexpr std::size_t kMaxPassedFds = 2;

/// sendmsg() of `len` bytes with `fds` attached (none when empty). Returns what sendmsg returned.
inline ssize_t send_with_fds(int sock, const void* buf, std::size_t len, std::span<const int> fds, int flags) {
  iovec iov{const_cast<void*>(buf), len};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(kMaxPassedFds * sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (!fds.empty()) {
    const std::size_t n = fds.size() < kMaxPassedFds ? fds.size() : kMaxPassedFds;
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(n * sizeof(int));
    cmsghdr* cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(n * sizeof(int));
    std::memcpy(CMSG_DATA(cm), fds.data(), n * sizeof(int));
  }
  return ::sendmsg(sock, &m, flags | MSG_NOSIGNAL);
}

/// recvmsg() of one message into `buf` (MSG_CMSG_CLOEXEC is always added). The first out.size()
/// descriptors that came with it land in `out` (the rest of `out` is -1); any further ones are
/// closed, so a peer cannot make the receiver hold descriptors it did not ask for.
inline ssize_t recv_with_fds(int sock, void* buf, std::size_t len, std::span<int> out, int flags) {
  for (int& fd : out) fd = -1;
  iovec iov{buf, len};
  // Room for a few more than asked for: extras arrive and are closed rather than left to
  // MSG_CTRUNC (which discards them too, but says nothing about it).
  alignas(cmsghdr) char cbuf[CMSG_SPACE((kMaxPassedFds + 2) * sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof(cbuf);
  const ssize_t r = ::recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
  if (r < 0) return r;
  std::size_t taken = 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm != nullptr; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t k = 0; k < n; ++k) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
      if (taken < out.size()) {
        out[taken++] = fd;
      } else {
        ::close(fd);
      }
    }
  }
  return r;
}

}  // namespace pno::channel
