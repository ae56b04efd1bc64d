// Socket options (setsockopt/getsockopt with Linux's ranges and doubling) and the queries:
// SO_ERROR, names, TCP_INFO, FIONREAD.
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

namespace {
/// SO_RCVBUF/SO_SNDBUF as Linux stores them: doubled (bookkeeping overhead), at least `floor`,
/// at most the layer's maximum.
std::uint32_t doubled_buf(int value, std::uint64_t floor, std::uint64_t max) {
  return static_cast<std::uint32_t>(
      std::clamp<std::uint64_t>(2ull * static_cast<std::uint64_t>(value), floor, std::max(max, floor)));
}
}  // namespace

Errc TcpLayer::setsockopt(SocketId id, SockOpt opt, int value) {
  Impl& m = *impl_;
  Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  Sock& s = *sp;
  SockOptions& o = s.opt;
  switch (opt) {
    case SockOpt::nodelay:
      o.nodelay = value != 0;
      if (o.nodelay) m.program(s);  // Linux pushes pending data when TCP_NODELAY is set
      return Errc::ok;
    case SockOpt::cork:
      o.cork = value != 0;
      if (!o.cork) m.program(s);
      return Errc::ok;
    case SockOpt::keepalive:
      o.keepalive = value != 0;
      m.arm_keepalive(s);
      m.arm(s);
      return Errc::ok;
    case SockOpt::keepidle:
      if (value < 1 || value > 32767) return Errc::inval;
      o.keepidle = std::chrono::seconds(value);
      m.arm_keepalive(s);
      m.arm(s);
      return Errc::ok;
    case SockOpt::keepintvl:
      if (value < 1 || value > 32767) return Errc::inval;
      o.keepintvl = std::chrono::seconds(value);
      return Errc::ok;
    case SockOpt::keepcnt:
      if (value < 1 || value > 127) return Errc::inval;
      o.keepcnt = static_cast<std::uint8_t>(value);
      return Errc::ok;
    case SockOpt::linger:
      o.linger = value < 0 ? -1 : value;
      return Errc::ok;
    case SockOpt::rcvbuf: {
      if (value < 0) return Errc::inval;
      // Linux doubles SO_RCVBUF (bookkeeping overhead) and clamps to a minimum.
      o.rcvbuf = doubled_buf(value, 2304, m.cfg.rcvbuf_max);
      if (s.tcb.rcvq.capacity() != 0 && s.tcb.rcvq.capacity() < o.rcvbuf) s.tcb.rcvq.grow(o.rcvbuf);
      return Errc::ok;
    }
    case SockOpt::sndbuf: {
      if (value < 0) return Errc::inval;
      o.sndbuf = doubled_buf(value, 4608, m.cfg.sndbuf_max);
      m.notify(s);
      return Errc::ok;
    }
    case SockOpt::reuseaddr:
      o.reuseaddr = value != 0;
      return Errc::ok;
    case SockOpt::reuseport:
      o.reuseport = value != 0;
      return Errc::ok;
    case SockOpt::maxseg:
      if (value != 0 && (value < 88 || value > 65535)) return Errc::inval;  // Linux TCP_MIN_MSS
      o.maxseg = static_cast<std::uint16_t>(value);
      return Errc::ok;
    case SockOpt::user_timeout:
      if (value < 0) return Errc::inval;
      o.user_timeout_ms = static_cast<std::uint32_t>(value);
      return Errc::ok;
  }
  return Errc::no_proto_opt;
}

Result<int> TcpLayer::getsockopt(SocketId id, SockOpt opt) const {
  const Impl& m = *impl_;
  const Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  const Sock& s = *sp;
  const SockOptions& o = s.opt;
  const auto secs = [](Duration d) { return static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(d).count()); };
  switch (opt) {
    case SockOpt::nodelay: return o.nodelay ? 1 : 0;
    case SockOpt::cork: return o.cork ? 1 : 0;
    case SockOpt::keepalive: return o.keepalive ? 1 : 0;
    case SockOpt::keepidle: return secs(o.keepidle.count() ? o.keepidle : m.cfg.keepalive_idle);
    case SockOpt::keepintvl: return secs(o.keepintvl.count() ? o.keepintvl : m.cfg.keepalive_intvl);
    case SockOpt::keepcnt: return o.keepcnt ? o.keepcnt : m.cfg.keepalive_probes;
    case SockOpt::linger: return o.linger;
    case SockOpt::rcvbuf:
      if (o.rcvbuf) return static_cast<int>(o.rcvbuf);
      return static_cast<int>(std::max<std::size_t>(s.tcb.rcvq.capacity(), m.cfg.rcvbuf_initial));
    case SockOpt::sndbuf: return static_cast<int>(m.sndbuf_limit(s));
    case SockOpt::reuseaddr: return o.reuseaddr ? 1 : 0;
    case SockOpt::reuseport: return o.reuseport ? 1 : 0;
    case SockOpt::maxseg:
      if (is_synchronized(s.tcb.state)) return static_cast<int>(s.tcb.snd.mss);
      return o.maxseg ? o.maxseg : 536;
    case SockOpt::user_timeout: return static_cast<int>(o.user_timeout_ms);
  }
  return Errc::no_proto_opt;
}

Errc TcpLayer::take_error(SocketId id) {
  Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  const Errc e = s->so_error;
  s->so_error = Errc::ok;
  return e;
}

Result<Endpoint> TcpLayer::local_endpoint(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  // A socket bound to the wildcard reports 0.0.0.0 as long as it has no connection (Linux keeps
  // inet_rcv_saddr = INADDR_ANY for listeners; connect() fills in the route's source address).
  if (s->bound_any && !s->ever_connected &&
      (s->tcb.state == TcpState::listen || s->tcb.state == TcpState::closed)) {
    return Endpoint{Ipv4Addr{}, s->local.port};
  }
  return s->local;
}

Result<Endpoint> TcpLayer::peer_endpoint(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  switch (s->tcb.state) {
    case TcpState::closed:
    case TcpState::listen:
    case TcpState::syn_sent:
      return Errc::not_conn;
    default:
      return s->remote;
  }
}

Result<TcpInfo> TcpLayer::info(SocketId id) const {
  const Impl& m = *impl_;
  const Sock* sp = m.lookup(id);
  if (sp == nullptr) return Errc::badf;
  const Tcb& t = sp->tcb;
  const auto us = [](Duration d) {
    return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  TcpInfo i;
  i.state = static_cast<std::uint8_t>(t.state);
  i.rto_us = us(t.rtt.rto());
  i.rtt_us = us(t.rtt.srtt());
  i.rttvar_us = us(t.rtt.rttvar());
  i.snd_mss = t.snd.mss;
  i.rcv_mss = t.rcv.mss;
  i.snd_cwnd = t.cc.cwnd();
  i.snd_ssthresh = t.cc.ssthresh();
  i.snd_wnd = t.snd.wnd;
  i.rcv_wnd = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  i.unacked = is_synchronized(t.state) ? t.flight() : 0;
  i.retransmits = t.rto_count;
  i.total_retrans = t.total_retrans;
  i.snd_wscale = t.snd.wscale;
  i.rcv_wscale = t.rcv.wscale;
  i.timestamps = t.ts_ok;
  i.sack = t.sack_ok;
  i.bytes_acked = t.bytes_acked;
  i.bytes_received = t.bytes_received;
  return i;
}

Result<std::size_t> TcpLayer::readable_bytes(SocketId id) const {
  const Sock* s = impl_->lookup(id);
  if (s == nullptr) return Errc::badf;
  if (s->tcb.state == TcpState::listen) return Errc::inval;
  return s->tcb.rcvq.size();
}

}  // namespace pno::tcp
