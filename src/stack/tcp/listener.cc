// Passive open (RFC 9293 §3.10.7.2, LISTEN): the SYN queue (children in SYN-RECEIVED), the accept
// queue, SYN cookies when the SYN queue is full (Linux's construction: MSS in the ISS, window scale
// and SACK in the low bits of TSval), and ephemeral port selection for connect (RFC 6056 §3.3.3).
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

using wire::TcpRepr;
namespace flag = wire::tcp_flag;

namespace {
/// Low TSval bits carrying the cookie's options (Linux TSBITS / TSMASK).
constexpr std::uint32_t kTsBits = 6;
constexpr std::uint32_t kTsMask = (1u << kTsBits) - 1;
constexpr std::uint32_t kTsNoWscale = 0xf;
constexpr std::uint32_t kTsSackBit = 1u << 4;

}  // namespace

std::uint8_t our_wscale(const TcpConfig& cfg, std::uint32_t rcvbuf) {
  // Smallest shift whose scaled 16-bit window covers the largest receive buffer (RFC 7323 §2.3).
  const std::uint64_t want = std::max<std::uint64_t>(cfg.rcvbuf_max, rcvbuf);
  std::uint8_t ws = 0;
  while (ws < wire::kTcpMaxWindowScale && (std::uint64_t{65535} << ws) < want) ++ws;
  return ws;
}

Sock* TcpLayer::Impl::listener_for(std::uint16_t port, Endpoint remote) {
  const auto it = listeners.find(port);
  if (it == listeners.end() || it->second.empty()) return nullptr;
  const std::vector<std::uint32_t>& group = it->second;
  std::size_t pick = 0;
  if (group.size() > 1) {
    // SO_REUSEPORT (socket(7)): spread connections over the group by a hash of the 4-tuple, as
    // Linux does (inet_ehashfn + reciprocal_scale). Keyed by the stack's secret so a peer cannot
    // steer its connections to one member.
    const std::uint64_t h =
        isn.hash((std::uint64_t{remote.addr.v} << 16) | remote.port,
                 (std::uint64_t{ip.local_addr().v} << 16) | port);
    pick = static_cast<std::size_t>(((h & 0xffffffffu) * group.size()) >> 32);
  }
  Sock& l = at(group[pick]);
  return l.in_use && l.tcb.state == TcpState::listen ? &l : nullptr;
}

void TcpLayer::Impl::listener_add(Sock& l) {
  listeners[l.local.port].push_back(slot_of(l));
}

void TcpLayer::Impl::listener_remove(Sock& l) {
  const auto it = listeners.find(l.local.port);
  if (it == listeners.end()) return;
  std::erase(it->second, slot_of(l));
  if (it->second.empty()) listeners.erase(it);
}

Sock* TcpLayer::Impl::parent_of(Sock& c) {
  if (c.parent == kNoSlot) return nullptr;
  Sock& l = at(c.parent);
  if (!l.in_use || l.gen != c.parent_gen || l.tcb.state != TcpState::listen) return nullptr;
  return &l;
}

void TcpLayer::Impl::init_child(Sock& l, Sock& c, const SegIn& in, SeqNum iss) {
  const TcpRepr& seg = in.seg;
  c.local = Endpoint{ip.local_addr(), seg.dst_port};
  c.remote = Endpoint{in.ip.src, seg.src_port};
  c.bound = true;
  c.opt = l.opt;  // accepted sockets inherit the listener's options, as on Linux
  c.ever_connected = true;
  c.orphan = true;  // no events until accept()
  c.parent = slot_of(l);
  c.parent_gen = l.gen;
  Tcb& t = c.tcb;
  t.init_send(iss);
  t.rcv.irs = seg.seq;
  t.rcv.nxt = seg.seq + 1;
  t.rcv.adv_edge = t.rcv.nxt;
  t.last_ack_sent = t.rcv.nxt;
  t.rcv.wscale = our_wscale(cfg, c.opt.rcvbuf);
  t.ts_offset = isn.ts_offset(FourTuple{c.local, c.remote});
  t.last_rcv = now;
  take_options(c, seg);
  t.snd.wnd = seg.window;  // unscaled in a <SYN> (RFC 7323 §2.2)
  t.snd.max_wnd = t.snd.wnd;
  t.snd.wl1 = seg.seq;
}

void TcpLayer::Impl::input_listen(Sock& l, const SegIn& in) {
  const TcpRepr& seg = in.seg;
  // RFC 9293 §3.10.7.2: first check for a RST (ignore), second for an ACK (RST, unless it
  // completes a SYN-cookie handshake), third for a SYN.
  if (seg.rst()) return;
  if (seg.has_ack()) {
    if (!seg.syn() && cfg.syn_cookies && cookie_ack(l, in)) return;
    send_rst_reply(in.ip, seg);
    return;
  }
  if (!seg.syn()) return;
  if (l.accept_len > static_cast<std::uint32_t>(l.backlog)) {
    // Linux drops SYNs while the accept queue is full; the peer retries.
    ctr.inc(Counter::tcp_drop_listen_overflow);
    return;
  }
  Sock* c = nullptr;
  if (l.syn_queue < cfg.syn_backlog) c = alloc();
  if (c == nullptr) {
    if (cfg.syn_cookies) {
      send_cookie_synack(in);
    } else {
      ctr.inc(Counter::tcp_drop_listen_overflow);
    }
    return;
  }
  const FourTuple tuple{Endpoint{ip.local_addr(), seg.dst_port}, Endpoint{in.ip.src, seg.src_port}};
  init_child(l, *c, in, isn.isn(tuple, now));
  if (!hash(*c)) {
    free_sock(*c);
    return;
  }
  ++l.syn_queue;
  set_state(*c, TcpState::syn_received);
  Tcb& t = c->tcb;
  t.rtt_timing = true;  // time the SYN-ACK
  t.rtt_seq = t.snd.iss;
  t.rtt_start = now;
  t.pend.syn = true;
  program(*c);
}

void TcpLayer::Impl::accept_enqueue(Sock& l, Sock& c) {
  if (l.syn_queue > 0) --l.syn_queue;
  c.in_accept_queue = true;
  c.next_accept = kNoSlot;
  const std::uint32_t slot = slot_of(c);
  if (l.accept_tail == kNoSlot) {
    l.accept_head = slot;
  } else {
    at(l.accept_tail).next_accept = slot;
  }
  l.accept_tail = slot;
  ++l.accept_len;
  ctr.inc(Counter::tcp_conn_passive_opens);
  notify(l);
}

void TcpLayer::Impl::child_gone(Sock& c) {
  Sock* l = parent_of(c);
  if (l != nullptr) {
    if (c.in_accept_queue) {
      // Unlink from the accept queue.
      const std::uint32_t slot = slot_of(c);
      std::uint32_t prev = kNoSlot;
      for (std::uint32_t i = l->accept_head; i != kNoSlot; prev = i, i = at(i).next_accept) {
        if (i != slot) continue;
        if (prev == kNoSlot) l->accept_head = c.next_accept;
        else at(prev).next_accept = c.next_accept;
        if (l->accept_tail == slot) l->accept_tail = prev;
        --l->accept_len;
        break;
      }
    } else if (l->syn_queue > 0) {
      --l->syn_queue;
    }
  }
  c.parent = kNoSlot;
  c.in_accept_queue = false;
  free_sock(c);
}

void TcpLayer::Impl::listener_close(Sock& l) {
  // Linux inet_csk_listen_stop: unaccepted connections are reset, embryonic ones dropped.
  const std::uint32_t lslot = slot_of(l);
  for (std::uint32_t i = 0; i < slots; ++i) {
    Sock& c = at(i);
    if (!c.in_use || c.parent != lslot || c.parent_gen != l.gen) continue;
    c.parent = kNoSlot;
    c.orphan = true;
    if (c.in_accept_queue) {
      c.in_accept_queue = false;
      reset_conn(c);
    } else {
      free_sock(c);
    }
  }
  l.accept_head = l.accept_tail = kNoSlot;
  l.accept_len = l.syn_queue = 0;
  free_sock(l);
}

std::uint16_t TcpLayer::Impl::pick_ephemeral(Endpoint remote) {
  // RFC 6056 §3.3.3 (Algorithm 3): offset = F(local, remote, secret), then probe sequentially
  // from offset + next_ephemeral, skipping listeners, explicit binds and 4-tuples in use.
  const std::uint32_t lo = cfg.ephemeral_lo;
  const std::uint32_t hi = std::max<std::uint32_t>(cfg.ephemeral_hi, lo);
  const std::uint32_t n = hi - lo + 1;
  const std::uint32_t offset = static_cast<std::uint32_t>(
      isn.hash((std::uint64_t{remote.addr.v} << 16) | remote.port, ip.local_addr().v));
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto port = static_cast<std::uint16_t>(lo + (offset + port_counter + i) % n);
    if (listeners.contains(port)) continue;
    if (remote.port != 0 ? tuple_in_use(port, remote) : port_bound(port, nullptr, false)) continue;
    if (remote.port != 0 && port_bound(port, nullptr, true, true)) continue;  // someone bound it explicitly
    port_counter += i + 1;
    return port;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// SYN cookies

void TcpLayer::Impl::send_cookie_synack(const SegIn& in) {
  const TcpRepr& syn = in.seg;
  const FourTuple tuple{Endpoint{ip.local_addr(), syn.dst_port}, Endpoint{in.ip.src, syn.src_port}};
  const std::uint16_t peer_mss = syn.opts.has_mss ? syn.opts.mss : 536;
  TcpRepr r;
  r.src_port = syn.dst_port;
  r.dst_port = syn.src_port;
  r.seq = isn.cookie_iss(tuple, syn.seq, peer_mss, now);
  r.ack = syn.seq + 1;
  r.flags = flag::kSyn | flag::kAck;
  r.window = static_cast<std::uint16_t>(std::min<std::uint32_t>(cfg.rcvbuf_initial, 65535));
  r.opts.has_mss = true;
  r.opts.mss = our_mss();
  // Without timestamps there is nowhere to keep window scale and SACK-permitted: offer neither.
  if (cfg.timestamps && syn.opts.has_timestamps) {
    std::uint32_t bits = kTsNoWscale;
    if (cfg.window_scaling && syn.opts.has_wscale) {
      bits = std::min(syn.opts.wscale, wire::kTcpMaxWindowScale);
      r.opts.has_wscale = true;
      r.opts.wscale = our_wscale(cfg, 0);
    }
    if (cfg.sack && syn.opts.sack_permitted) {
      bits |= kTsSackBit;
      r.opts.sack_permitted = true;
    }
    const std::uint32_t ts_clock = static_cast<std::uint32_t>(to_ns(now) / 1'000'000) + isn.ts_offset(tuple);
    std::uint32_t tsval = (ts_clock & ~kTsMask) | bits;
    if (static_cast<std::int32_t>(tsval - ts_clock) > 0) tsval -= kTsMask + 1;  // never ahead of the clock
    r.opts.has_timestamps = true;
    r.opts.ts = {tsval, syn.opts.ts.tsval};
  }
  ctr.inc(Counter::tcp_syn_cookies_sent);
  send_raw(in.ip.src, r);
}

bool TcpLayer::Impl::cookie_ack(Sock& l, const SegIn& in) {
  const TcpRepr& seg = in.seg;
  const FourTuple tuple{Endpoint{ip.local_addr(), seg.dst_port}, Endpoint{in.ip.src, seg.src_port}};
  const auto mss = isn.cookie_check(tuple, seg.seq, seg.ack, now);
  if (!mss) {
    ctr.inc(Counter::tcp_drop_bad_syn_cookie);
    return false;
  }
  if (l.accept_len > static_cast<std::uint32_t>(l.backlog)) {
    ctr.inc(Counter::tcp_drop_listen_overflow);
    return true;  // dropped silently: the peer's retransmission may find room
  }
  Sock* c = alloc();
  if (c == nullptr) {
    ctr.inc(Counter::tcp_drop_listen_overflow);
    return true;
  }
  // Rebuild the SYN the cookie stands for, then let the normal path finish the handshake.
  TcpRepr syn;
  syn.src_port = seg.src_port;
  syn.dst_port = seg.dst_port;
  syn.seq = seg.seq - 1;
  syn.flags = flag::kSyn;
  syn.window = seg.window;
  syn.opts.has_mss = true;
  syn.opts.mss = *mss;
  if (seg.opts.has_timestamps && seg.opts.ts.tsecr != 0 && cfg.timestamps) {
    const std::uint32_t bits = seg.opts.ts.tsecr & kTsMask;
    syn.opts.has_timestamps = true;
    syn.opts.ts = {seg.opts.ts.tsval, 0};
    if ((bits & 0xf) != kTsNoWscale) {
      syn.opts.has_wscale = true;
      syn.opts.wscale = static_cast<std::uint8_t>(bits & 0xf);
    }
    syn.opts.sack_permitted = (bits & kTsSackBit) != 0;
  }
  const SegIn syn_in{in.ip, syn};
  init_child(l, *c, syn_in, seg.ack - 1);
  if (!c->tcb.ws_ok) c->tcb.rcv.wscale = 0;
  if (!hash(*c)) {
    free_sock(*c);
    return true;
  }
  Tcb& t = c->tcb;
  t.snd.nxt = t.snd.max = seg.ack;  // the SYN-ACK was sent
  t.rcv.adv_edge = t.rcv.nxt + std::min<std::uint32_t>(cfg.rcvbuf_initial, 65535);
  ++l.syn_queue;
  set_state(*c, TcpState::syn_received);
  input_synchronized(*c, in);  // ACK processing: ESTABLISHED, accept queue, any data
  if (c->in_use) arm(*c);
  return true;
}

}  // namespace pno::tcp
