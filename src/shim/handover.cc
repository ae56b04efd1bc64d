// The socket calls that decide where a socket lives (bind, listen, connect; see the README's
// "Offload decisions"), the hand-over of a pending kernel socket to the engine, connect() and
// accept() on offloaded sockets.
#include <cstring>

#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {
namespace {

void warn_unreplayable(const SockDesc& d, int fd) {
  log(LogLevel::warn,
      "socket %d: option (level %d, name %d) set before hand-over is not supported by the engine "
      "and is not applied there",
      fd, d.unreplayable_level, d.unreplayable_name);
}

/// Hands the pending kernel socket `fd` over to the engine and runs `act` on the new engine
/// socket. On failure the socket stays a pending kernel socket and the engine socket is closed.
template <typename Act>
Errc handover(State* st, int fd, FdRef ref, Act&& act) {
  SockDesc& d = st->socks[ref.index];
  Result<HostSocket> rs = [&] {
    InChannel guard;
    return st->ch->socket();
  }();
  if (!rs) return rs.error();
  HostSocket s = *rs;
  {
    SpinGuard lk(d.lock);
    for (std::uint32_t i = 0; i < d.n_opts; ++i) {
      Errc e = st->ch->setsockopt(s, d.opts[i].opt, d.opts[i].value);
      if (e != Errc::ok) {
        log(LogLevel::warn, "socket %d: engine refused option %d=%d (%s)", fd,
            static_cast<int>(d.opts[i].opt), d.opts[i].value, std::strerror(to_errno(e)));
      }
    }
    if (d.unreplayable != 0) warn_unreplayable(d, fd);
  }
  int fl = PNO_REAL(fcntl)(fd, F_GETFL);
  int fdfl = PNO_REAL(fcntl)(fd, F_GETFD);
  if (fl < 0 || fdfl < 0) {
    st->ch->close(s);
    return Errc::badf;
  }
  Errc e = act(s);
  if (e != Errc::ok && e != Errc::in_progress) {
    st->ch->close(s);
    return e;
  }
  d.sock.store(s, std::memory_order_release);
  d.nonblock.store((fl & O_NONBLOCK) != 0 ? 1 : 0);
  // The table says "socket" before the kernel socket goes: a concurrent call never reaches the
  // placeholder.
  st->fds.set(fd, FdKind::socket, ref.index);
  epoll_adopt_pending(st, fd, ref.index);
  if (make_placeholder(fd, (fdfl & FD_CLOEXEC) != 0) < 0) {
    log(LogLevel::error, "socket %d: cannot make its placeholder fd (%s)", fd, std::strerror(errno));
  }
  return e;
}

/// The outcome of a connect() in progress, as net/ipv4/af_inet.c __inet_stream_connect() reports
/// it: still in progress (EALREADY / wait), failed (the pending error, once; ECONNABORTED when it was
/// already taken through SO_ERROR) or done (0, and SS_CONNECTED from then on).
int resolve_connect(State* st, SockRef r, bool first_call) {
  SockDesc& d = *r.d;
  std::uint32_t rd = ready_of(st, r.s);
  if ((rd & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
    bool nb = d.nonblock.load() != 0;
    std::int64_t timeo = nb ? -1 : d.sndtimeo_us.load();
    if (timeo < 0) return fail(first_call ? EINPROGRESS : EALREADY);
    int w = wait_socket(st, r.s, EPOLLOUT | EPOLLHUP, timeo);
    if (w == EAGAIN) return fail(first_call ? EINPROGRESS : EALREADY);  // SO_SNDTIMEO expired
    if (w != 0) return fail(w);
    rd = ready_of(st, r.s);
  }
  if ((rd & (EPOLLERR | EPOLLHUP)) != 0) {
    Errc err = st->ch->alive() ? st->ch->take_error(r.s) : Errc::conn_reset;
    d.conn_state.store(static_cast<std::uint32_t>(ConnState::failed));
    return fail(err != Errc::ok ? to_errno(err) : ECONNABORTED);
  }
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
  return 0;
}

/// connect() on an offloaded socket (also right after the hand-over started the handshake).
int connect_offloaded(State* st, SockRef r, const Endpoint* remote, Errc started) {
  SockDesc& d = *r.d;
  if (d.listening.load() != 0) return fail(EISCONN);  // a listener is not in TCP_CLOSE
  auto state = static_cast<ConnState>(d.conn_state.load());
  if (state == ConnState::connected) return fail(EISCONN);
  if (state == ConnState::connecting) return resolve_connect(st, r, false);
  Errc e = started;
  if (remote != nullptr) e = st->ch->connect(r.s, *remote);
  if (e == Errc::ok) {
    d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
    return 0;
  }
  if (e != Errc::in_progress) return fail(to_errno(e));
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connecting));
  if (d.nonblock.load() != 0) return fail(EINPROGRESS);
  return resolve_connect(st, r, true);
}

Result<Endpoint> parse_addr(const sockaddr* a, socklen_t len) {
  Result<Endpoint> ep = endpoint_from(a, len);
  if (!ep && ep.error() == Errc::op_not_supp) return static_cast<Errc>(EAFNOSUPPORT);
  return ep;
}

}  // namespace

int accept_impl(State* st, int fd, sockaddr* addr, socklen_t* addrlen, int flags) {
  SockRef r = offloaded(st, fd);
  if ((flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0) return fail(EINVAL);
  if (addr != nullptr && addrlen == nullptr) return fail(EFAULT);
  if (addrlen != nullptr && static_cast<int>(*addrlen) < 0) return fail(EINVAL);
  // The descriptor first, then the connection, as Linux's __sys_accept4_file() reserves the fd
  // (get_unused_fd_flags) before do_accept(): at EMFILE / ENFILE the connection stays queued for
  // a later accept() instead of being taken and closed.
  std::uint32_t idx = st->socks.alloc();
  if (idx == 0) return fail(ENFILE);
  int nfd = make_placeholder(-1, (flags & SOCK_CLOEXEC) != 0);
  if (nfd < 0 || !st->fds.in_range(nfd)) {
    int e = nfd < 0 ? errno : EMFILE;
    if (nfd >= 0) PNO_REAL(close)(nfd);
    st->socks.free(idx);
    return fail(e);
  }
  const auto give_back = [&](int e) {
    PNO_REAL(close)(nfd);
    st->socks.free(idx);
    return fail(e);
  };
  bool nb = r.d->nonblock.load() != 0;
  CallTimeout timeo(nb ? -1 : r.d->rcvtimeo_us.load());
  Endpoint peer{};
  HostSocket ns = channel::kNoSocket;
  for (;;) {
    Result<HostSocket> a = st->ch->accept(r.s, &peer);
    if (a) {
      ns = *a;
      break;
    }
    if (a.error() != Errc::again) return give_back(to_errno(a.error()));
    if (timeo.left_us() < 0) return give_back(EAGAIN);
    if (!st->ch->alive()) return give_back(ECONNABORTED);
    if ((ready_of(st, r.s) & (EPOLLERR | EPOLLHUP)) != 0) return give_back(EINVAL);  // not listening
    int w = wait_socket(st, r.s, EPOLLIN | EPOLLHUP, timeo.left_us());
    if (w != 0) return give_back(w);
  }
  SockDesc& d = st->socks[idx];
  d.reset();
  d.refs.store(1);
  d.sock.store(ns);
  d.nonblock.store((flags & SOCK_NONBLOCK) != 0 ? 1 : 0);  // not inherited from the listener
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
  FdRef old = st->fds.take(nfd);
  if (old.kind != FdKind::kernel) untrack_fd(st, nfd, old);
  st->fds.set(nfd, FdKind::socket, idx);
  if (addr != nullptr) endpoint_to(peer, addr, addrlen);
  return nfd;
}

int bind_impl(State* st, int fd, const sockaddr* a, socklen_t len) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    Result<Endpoint> ep = parse_addr(a, len);
    if (!ep) return fail(to_errno(ep.error()));
    Errc e = st->ch->bind(st->socks[ref.index].sock.load(), *ep);
    return e == Errc::ok ? 0 : fail(to_errno(e));
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(bind)(fd, a, len);
  Result<Endpoint> ep = endpoint_from(a, len);
  if (!ep) return PNO_REAL(bind)(fd, a, len);  // the kernel reports the error
  if ((*ep).addr.is_any() && (*ep).port == 0) {
    // bind(INADDR_ANY:0) says nothing yet about where the socket goes: connect() or listen()
    // decides. The kernel socket takes the bind meanwhile (getsockname works). No attach yet.
    int r = PNO_REAL(bind)(fd, a, len);
    if (r == 0) st->socks[ref.index].bound_any_port0 = 1;
    return r;
  }
  // Loopback is never the engine's: decided without attaching.
  if ((*ep).addr.is_loopback() || ensure_attached(st) == nullptr ||
      route_for_bind(st->addrs, (*ep).addr) == Route::kernel) {
    int r = PNO_REAL(bind)(fd, a, len);
    if (r == 0 && st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return r;
  }
  Endpoint local = *ep;
  Errc e = handover(st, fd, ref, [&](HostSocket s) { return st->ch->bind(s, local); });
  return e == Errc::ok ? 0 : fail(to_errno(e));
}

int listen_impl(State* st, int fd, int backlog) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    SockDesc& d = st->socks[ref.index];
    Errc e = st->ch->listen(d.sock.load(), backlog);
    if (e != Errc::ok) return fail(to_errno(e));
    d.listening.store(1);
    return 0;
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(listen)(fd, backlog);
  if (ensure_attached(st) == nullptr) {
    if (st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return PNO_REAL(listen)(fd, backlog);
  }
  // An unbound listener binds to the wildcard address (Linux autobind): the engine's.
  Errc e = handover(st, fd, ref, [&](HostSocket s) {
    Errc b = st->ch->bind(s, Endpoint{Ipv4Addr::any(), 0});
    if (b != Errc::ok) return b;
    return st->ch->listen(s, backlog);
  });
  if (e != Errc::ok) return fail(to_errno(e));
  st->socks[ref.index].listening.store(1);
  return 0;
}

int connect_impl(State* st, int fd, const sockaddr* a, socklen_t len) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    SockRef r = offloaded(st, fd);
    Result<Endpoint> ep = parse_addr(a, len);
    if (!ep) {
      // connect(AF_UNSPEC) disconnects a Linux TCP socket; the engine has no such operation.
      return fail(ep.error() == static_cast<Errc>(EAFNOSUPPORT) ? EOPNOTSUPP : to_errno(ep.error()));
    }
    Endpoint remote = *ep;
    return connect_offloaded(st, r, &remote, Errc::ok);
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(connect)(fd, a, len);
  Result<Endpoint> ep = endpoint_from(a, len);
  // Loopback, the wildcard, multicast and broadcast are never the engine's: decided without
  // attaching. Anything else needs the engine's addresses, which come with the attach.
  if (!ep || (*ep).addr.is_loopback() || (*ep).addr.is_any() || (*ep).addr.is_multicast() ||
      (*ep).addr == Ipv4Addr::broadcast() || ensure_attached(st) == nullptr ||
      route_for_connect(st->addrs, (*ep).addr) == Route::kernel) {
    if (st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return PNO_REAL(connect)(fd, a, len);
  }
  Endpoint remote = *ep;
  Errc e = handover(st, fd, ref, [&](HostSocket s) { return st->ch->connect(s, remote); });
  if (e != Errc::ok && e != Errc::in_progress) return fail(to_errno(e));
  return connect_offloaded(st, offloaded(st, fd), nullptr, e);
}

}  // namespace pno::shim
