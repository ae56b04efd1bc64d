// Socket options, names and ioctls of offloaded sockets (the engine answers, or the shim's
// per-socket state: O_NONBLOCK, SO_LINGER, SO_RCVTIMEO/SO_SNDTIMEO, TCP_QUICKACK), and the options
// a pending socket records for its hand-over.
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cstring>

#include "shim/internal.hh"

namespace pno::shim {
namespace {

int write_int(void* optval, socklen_t* optlen, int v) {
  if (optval == nullptr || optlen == nullptr) return fail(EFAULT);
  if (static_cast<int>(*optlen) < 0) return fail(EINVAL);
  socklen_t n = std::min<socklen_t>(*optlen, sizeof(int));
  std::memcpy(optval, &v, n);
  *optlen = n;
  return 0;
}

Result<int> read_int_opt(const void* optval, socklen_t optlen) {
  if (optlen < static_cast<socklen_t>(sizeof(int))) return Errc::inval;
  if (optval == nullptr) return static_cast<Errc>(EFAULT);
  int v;
  std::memcpy(&v, optval, sizeof v);
  return v;
}

int setsockopt_offloaded(State* st, SockRef r, int level, int name, const void* optval, socklen_t optlen) {
  OptInfo oi = classify_opt(level, name);
  SockDesc& d = *r.d;
  switch (oi.cls) {
    case OptClass::engine_int: {
      Result<int> v = read_int_opt(optval, optlen);
      if (!v) return fail(to_errno(v.error()));
      int val = oi.boolean ? (*v != 0 ? 1 : 0) : *v;
      Errc e = st->ch->setsockopt(r.s, oi.opt, val);
      return e == Errc::ok ? 0 : fail(to_errno(e));
    }
    case OptClass::linger: {
      if (optlen < static_cast<socklen_t>(sizeof(linger))) return fail(EINVAL);
      if (optval == nullptr) return fail(EFAULT);
      linger l;
      std::memcpy(&l, optval, sizeof l);
      Errc e = st->ch->setsockopt(r.s, SockOpt::linger, l.l_onoff != 0 ? std::max(l.l_linger, 0) : -1);
      if (e != Errc::ok) return fail(to_errno(e));
      d.linger_on.store(l.l_onoff != 0 ? 1 : 0);
      d.linger_secs.store(l.l_linger);
      return 0;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      if (optval == nullptr) return fail(EFAULT);
      Result<std::int64_t> us = timeval_to_us(optval, optlen);
      if (!us) return fail(to_errno(us.error()));
      (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).store(*us);
      return 0;
    }
    case OptClass::quickack: {
      Result<int> v = read_int_opt(optval, optlen);
      if (!v) return fail(to_errno(v.error()));
      d.quickack.store(*v == 0 ? 1 : 0);
      return 0;
    }
    default:
      return fail(ENOPROTOOPT);
  }
}

/// setsockopt() on a pending socket: the kernel socket takes it (and validates it), the shim
/// remembers what must be replayed to the engine at hand-over.
void record_pending_opt(SockDesc& d, int level, int name, const void* optval, socklen_t optlen) {
  OptInfo oi = classify_opt(level, name);
  SpinGuard lk(d.lock);
  switch (oi.cls) {
    case OptClass::engine_int: {
      Result<int> v = read_int_opt(optval, optlen);
      if (v && !d.record(oi.opt, oi.boolean ? (*v != 0 ? 1 : 0) : *v)) {
        d.unreplayable = 1;
        d.unreplayable_level = level;
        d.unreplayable_name = name;
      }
      return;
    }
    case OptClass::linger: {
      linger l;
      std::memcpy(&l, optval, sizeof l);
      d.record(SockOpt::linger, l.l_onoff != 0 ? std::max(l.l_linger, 0) : -1);
      d.linger_on.store(l.l_onoff != 0 ? 1 : 0);
      d.linger_secs.store(l.l_linger);
      return;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      Result<std::int64_t> us = timeval_to_us(optval, optlen);
      if (us) (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).store(*us);
      return;
    }
    case OptClass::quickack: {
      Result<int> v = read_int_opt(optval, optlen);
      if (v) d.quickack.store(*v == 0 ? 1 : 0);
      return;
    }
    default:
      d.unreplayable = 1;
      d.unreplayable_level = level;
      d.unreplayable_name = name;
      return;
  }
}

}  // namespace

int getsockopt_impl(State* st, SockRef r, int level, int name, void* optval, socklen_t* optlen) {
  if (optlen == nullptr) return fail(EFAULT);
  if (static_cast<int>(*optlen) < 0) return fail(EINVAL);
  OptInfo oi = classify_opt(level, name);
  SockDesc& d = *r.d;
  switch (oi.cls) {
    case OptClass::unsupported: return fail(ENOPROTOOPT);
    case OptClass::engine_int: {
      Result<int> v = st->ch->getsockopt(r.s, oi.opt);
      if (!v) return fail(to_errno(v.error()));
      return write_int(optval, optlen, oi.boolean ? (*v != 0 ? 1 : 0) : *v);
    }
    case OptClass::linger: {
      linger l{d.linger_on.load(), d.linger_secs.load()};
      socklen_t n = std::min<socklen_t>(*optlen, sizeof l);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &l, n);
      *optlen = n;
      return 0;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      std::int64_t us = (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).load();
      timeval tv{};
      if (us > 0) {
        tv.tv_sec = us / 1000000;
        tv.tv_usec = us % 1000000;
      }
      socklen_t n = std::min<socklen_t>(*optlen, sizeof tv);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &tv, n);
      *optlen = n;
      return 0;
    }
    case OptClass::error: {
      int e = st->ch->alive() ? to_errno(st->ch->take_error(r.s)) : ECONNRESET;
      return write_int(optval, optlen, e);
    }
    case OptClass::type: return write_int(optval, optlen, SOCK_STREAM);
    case OptClass::domain: return write_int(optval, optlen, AF_INET);
    case OptClass::protocol: return write_int(optval, optlen, IPPROTO_TCP);
    case OptClass::acceptconn: return write_int(optval, optlen, d.listening.load() != 0 ? 1 : 0);
    case OptClass::quickack: return write_int(optval, optlen, d.quickack.load() == 0 ? 1 : 0);
    case OptClass::tcp_info: {
      Result<TcpInfo> ti = st->ch->info(r.s);
      if (!ti) return fail(to_errno(ti.error()));
      LinuxTcpInfo li = to_linux_tcp_info(*ti);
      socklen_t n = std::min<socklen_t>(*optlen, sizeof li);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &li, n);
      *optlen = n;
      return 0;
    }
  }
  return fail(ENOPROTOOPT);
}

int setsockopt_impl(State* st, int fd, int level, int name, const void* optval, socklen_t optlen) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) return setsockopt_offloaded(st, offloaded(st, fd), level, name, optval, optlen);
  int rc = PNO_REAL(setsockopt)(fd, level, name, optval, optlen);
  if (rc == 0 && ref.kind == FdKind::pending) {
    record_pending_opt(st->socks[ref.index], level, name, optval, optlen);
  }
  return rc;
}

int ioctl_impl(State* st, SockRef r, unsigned long req, void* arg) {
  switch (req) {
    case FIONBIO: {
      if (arg == nullptr) return fail(EFAULT);
      int on;
      std::memcpy(&on, arg, sizeof on);
      r.d->nonblock.store(on != 0 ? 1 : 0);
      return 0;
    }
    case FIONREAD: {  // == SIOCINQ
      if (arg == nullptr) return fail(EFAULT);
      if (r.d->listening.load() != 0) return fail(EINVAL);
      Result<std::size_t> n = st->ch->readable_bytes(r.s);
      if (!n) return fail(to_errno(n.error()));
      int v = static_cast<int>(std::min<std::size_t>(*n, INT32_MAX));
      std::memcpy(arg, &v, sizeof v);
      return 0;
    }
    case FIOCLEX:
    case FIONCLEX:
      return -2;  // acts on the fd itself: the placeholder takes it
    default:
      return fail(ENOTTY);
  }
}

int name_out(const Result<Endpoint>& ep, sockaddr* addr, socklen_t* len) {
  if (!ep) return fail(to_errno(ep.error()));
  if (addr == nullptr || len == nullptr) return fail(EFAULT);
  if (static_cast<int>(*len) < 0) return fail(EINVAL);
  endpoint_to(*ep, addr, len);
  return 0;
}

}  // namespace pno::shim
