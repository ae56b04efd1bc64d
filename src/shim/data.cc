// The data path of offloaded sockets: recv/send and their vector and message forms, sendfile,
// shutdown. Each call moves what the rings allow, then (blocking) waits in wait.cc until the
// socket is ready, within the call's SO_RCVTIMEO/SO_SNDTIMEO budget. No lock, no malloc.
#include <climits>
#include <optional>

#include "shim/internal.hh"

namespace pno::shim {
namespace {

/// A cursor over an iovec array that yields windows of at most 64 entries, the first one
/// trimmed by what was already transferred.
class IovCursor {
 public:
  IovCursor(const iovec* iov, std::size_t n) : iov_(iov), n_(n) {
    for (std::size_t i = 0; i < n; ++i) total_ += iov[i].iov_len;
  }
  [[nodiscard]] std::size_t total() const { return total_; }
  [[nodiscard]] std::size_t done() const { return done_; }
  [[nodiscard]] bool finished() const { return done_ >= total_; }
  std::span<const iovec> window() {
    std::size_t k = 0;
    std::size_t off = off_;
    for (std::size_t i = i_; i < n_ && k < std::size(win_); ++i) {
      if (iov_[i].iov_len <= off) {
        off = 0;
        continue;
      }
      win_[k].iov_base = static_cast<char*>(iov_[i].iov_base) + off;
      win_[k].iov_len = iov_[i].iov_len - off;
      off = 0;
      ++k;
    }
    return {win_, k};
  }
  void advance(std::size_t bytes) {
    done_ += bytes;
    while (bytes > 0 && i_ < n_) {
      std::size_t left = iov_[i_].iov_len - off_;
      if (bytes < left) {
        off_ += bytes;
        return;
      }
      bytes -= left;
      ++i_;
      off_ = 0;
    }
  }

 private:
  const iovec* iov_;
  std::size_t n_;
  std::size_t i_ = 0, off_ = 0;
  std::size_t total_ = 0, done_ = 0;
  iovec win_[64];
};

bool nonblocking(const SockDesc& d, int flags) {
  return (flags & MSG_DONTWAIT) != 0 || d.nonblock.load(std::memory_order_relaxed) != 0;
}

void raise_sigpipe(int flags) {
  // Linux sends SIGPIPE to the calling thread on EPIPE unless MSG_NOSIGNAL (net/core/stream.c).
  if ((flags & MSG_NOSIGNAL) == 0) ::raise(SIGPIPE);
}

/// The call a data-path loop serves: the readiness it waits for and how it reports an ended
/// connection differ.
enum class Transfer : std::uint8_t { recv, send, sendfile };

/// How a call that has moved nothing reports a socket showing EPOLLERR/EPOLLHUP (`rd`); nullopt:
/// it waits after all (recv on EPOLLERR without a pending error).
std::optional<ssize_t> report_ended(State* st, HostSocket s, Transfer t, std::uint32_t rd, int flags) {
  switch (t) {
    case Transfer::recv: {
      // A pending error with nothing to read: report it (once), as tcp_recvmsg() does. A hang-up
      // with an empty ring is EOF: the channel shows EPOLLHUP only once every byte before it is
      // in the ring. Never wait on either.
      Errc err = st->ch->alive() ? st->ch->take_error(s) : Errc::conn_reset;
      if (err != Errc::ok) return fail(to_errno(err));
      if ((rd & EPOLLHUP) != 0) return ssize_t{0};
      return std::nullopt;
    }
    case Transfer::send: {
      // The connection is gone but the ring claims to be full: EPIPE (the error first, if any).
      Errc err = st->ch->alive() ? st->ch->take_error(s) : Errc::pipe;
      if (err == Errc::ok) err = Errc::pipe;
      if (err == Errc::pipe) raise_sigpipe(flags);
      return fail(to_errno(err));
    }
    case Transfer::sendfile:
      raise_sigpipe(flags);
      return fail(EPIPE);
  }
  return std::nullopt;
}

/// The tail of the recv/send/sendfile loops once the channel moved nothing (`e`): the `done`
/// bytes this call moved already are its result before any error; else the channel's error, the
/// socket's end, EAGAIN when the call's budget is spent, or a wait until the socket is ready.
/// nullopt: try the transfer again.
std::optional<ssize_t> after_no_progress(State* st, HostSocket s, Transfer t, Errc e, std::size_t done,
                                         const CallTimeout& timeo, int flags) {
  const auto moved = static_cast<ssize_t>(done);
  if (e != Errc::again) {
    if (done > 0) return moved;
    if (e == Errc::pipe && t != Transfer::recv) raise_sigpipe(flags);
    return fail(to_errno(e));
  }
  if (std::uint32_t rd = ready_of(st, s); (rd & (EPOLLERR | EPOLLHUP)) != 0) {
    if (done > 0) return moved;
    if (std::optional<ssize_t> end = report_ended(st, s, t, rd, flags)) return end;
  }
  if (timeo.left_us() < 0) return done > 0 ? moved : fail(EAGAIN);
  const std::uint32_t want = t == Transfer::recv ? EPOLLIN : EPOLLOUT;
  int w = wait_socket(st, s, want | EPOLLHUP, timeo.left_us());
  if (w != 0) return done > 0 ? moved : fail(w);
  return std::nullopt;
}

}  // namespace

ssize_t do_recv(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags) {
  if ((flags & MSG_OOB) != 0) return fail(EINVAL);  // no urgent data is ever kept (SO_OOBINLINE off)
  if ((flags & MSG_ERRQUEUE) != 0) return fail(EAGAIN);
  if ((flags & MSG_TRUNC) != 0) return fail(EOPNOTSUPP);
  if (iovcnt > IOV_MAX) return fail(EINVAL);
  bool peek = (flags & MSG_PEEK) != 0;
  bool nb = nonblocking(*r.d, flags);
  CallTimeout timeo(nb ? -1 : r.d->rcvtimeo_us.load(std::memory_order_relaxed));
  bool waitall = (flags & MSG_WAITALL) != 0 && !peek && !nb;
  IovCursor cur(iov, iovcnt);
  if (cur.total() == 0) {
    // Linux reports errors and EOF even for zero-length reads only through poll; a 0-byte read
    // returns 0 at once.
    return 0;
  }
  for (;;) {
    Result<std::size_t> got = st->ch->recv(r.s, cur.window(), peek);
    if (got) {
      if (*got == 0) {
        // EOF, except on a socket whose failed connect() disconnected it (Linux: TCP_CLOSE with
        // no shutdown flags, tcp_recvmsg gives ENOTCONN).
        if (cur.done() == 0 && r.d->conn_state.load(std::memory_order_relaxed) ==
                                   static_cast<std::uint32_t>(ConnState::failed)) {
          return fail(ENOTCONN);
        }
        return static_cast<ssize_t>(cur.done());
      }
      cur.advance(*got);
      if (!waitall || cur.finished()) return static_cast<ssize_t>(cur.done());
      continue;
    }
    std::optional<ssize_t> res = after_no_progress(st, r.s, Transfer::recv, got.error(), cur.done(), timeo, flags);
    if (res) return *res;
  }
}

ssize_t do_send(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags) {
  if ((flags & (MSG_OOB | MSG_FASTOPEN)) != 0) return fail(EOPNOTSUPP);
  if (iovcnt > IOV_MAX) return fail(EINVAL);
  bool nb = nonblocking(*r.d, flags);
  CallTimeout timeo(nb ? -1 : r.d->sndtimeo_us.load(std::memory_order_relaxed));
  bool more = (flags & MSG_MORE) != 0;
  IovCursor cur(iov, iovcnt);
  for (;;) {
    Result<std::size_t> put = st->ch->send(r.s, cur.window(), more);
    if (put) {
      cur.advance(*put);
      if (cur.finished() || nb) return static_cast<ssize_t>(cur.done());
      continue;
    }
    std::optional<ssize_t> res = after_no_progress(st, r.s, Transfer::send, put.error(), cur.done(), timeo, flags);
    if (res) return *res;
  }
}

ssize_t do_sendfile(State* st, SockRef r, int in_fd, off_t* offset, std::size_t count) {
  bool nb = nonblocking(*r.d, 0);
  CallTimeout timeo(nb ? -1 : r.d->sndtimeo_us.load(std::memory_order_relaxed));
  std::size_t done = 0;
  while (done < count) {
    Result<std::size_t> put = st->ch->send_file(r.s, in_fd, offset, count - done);
    if (put) {
      if (*put == 0) break;  // end of file
      done += *put;
      if (nb) break;
      continue;
    }
    std::optional<ssize_t> res = after_no_progress(st, r.s, Transfer::sendfile, put.error(), done, timeo, 0);
    if (res) return *res;
  }
  return static_cast<ssize_t>(done);
}

ssize_t recvmsg_impl(State* st, SockRef r, msghdr* msg, int flags) {
  if (msg == nullptr) return fail(EFAULT);
  ssize_t n = do_recv(st, r, msg->msg_iov, msg->msg_iovlen, flags);
  if (n >= 0) {
    msg->msg_namelen = 0;  // TCP reports no source address (net/socket.c ____sys_recvmsg)
    msg->msg_controllen = 0;
    msg->msg_flags = 0;
  }
  return n;
}

int recvmmsg_impl(State* st, SockRef r, mmsghdr* vec, unsigned int vlen, int flags) {
  if (vec == nullptr) return fail(EFAULT);
  unsigned int i = 0;
  for (; i < vlen; ++i) {
    ssize_t n = recvmsg_impl(st, r, &vec[i].msg_hdr, flags);
    if (n < 0) {
      if (i > 0) break;
      return -1;
    }
    vec[i].msg_len = static_cast<unsigned int>(n);
    if ((flags & MSG_WAITFORONE) != 0) flags |= MSG_DONTWAIT;
    if (n == 0) {
      ++i;
      break;
    }
  }
  return static_cast<int>(i);
}

int sendmmsg_impl(State* st, SockRef r, mmsghdr* vec, unsigned int vlen, int flags) {
  if (vec == nullptr) return fail(EFAULT);
  unsigned int i = 0;
  for (; i < vlen; ++i) {
    ssize_t n = do_send(st, r, vec[i].msg_hdr.msg_iov, vec[i].msg_hdr.msg_iovlen, flags);
    if (n < 0) {
      if (i > 0) break;
      return -1;
    }
    vec[i].msg_len = static_cast<unsigned int>(n);
  }
  return static_cast<int>(i);
}

int shutdown_impl(State* st, SockRef r, int how) {
  ShutdownHow h;
  switch (how) {
    case SHUT_RD: h = ShutdownHow::read; break;
    case SHUT_WR: h = ShutdownHow::write; break;
    case SHUT_RDWR: h = ShutdownHow::both; break;
    default: return fail(EINVAL);
  }
  Errc e = st->ch->shutdown(r.s, h);
  return e == Errc::ok ? 0 : fail(to_errno(e));
}

}  // namespace pno::shim
