#include "support/tcp_harness.hh"

#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "stack/tcp/tcp_state.hh"

namespace pno::test {

Bytes bytes(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

std::string Sent::str() const {
  std::ostringstream o;
  o << "[";
  const char* names = "FSRPAUEC";
  for (int i = 0; i < 8; ++i) {
    if (flags & (1 << i)) o << names[i];
  }
  o << " seq=" << seq << " ack=" << ack << " win=" << window << " len=" << payload.size();
  if (opts.has_mss) o << " mss=" << opts.mss;
  if (opts.has_wscale) o << " ws=" << int(opts.wscale);
  if (opts.sack_permitted) o << " sackok";
  if (opts.has_timestamps) o << " ts=" << opts.ts.tsval << "/" << opts.ts.tsecr;
  for (int i = 0; i < opts.sack_count; ++i) o << " sack=" << opts.sack[i].left.raw() << "-" << opts.sack[i].right.raw();
  o << "]";
  return o.str();
}

MutByteSpan FakeIpv4::ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) {
  EXPECT_FALSE(open_) << "ip_begin with a packet already open";
  EXPECT_EQ(proto, kIpProtoTcp);
  EXPECT_LE(l4_len, max_l4_len()) << "segment larger than the MTU";
  if (drop_all) return {};
  buf_.assign(l4_len, std::byte{0});
  dst_ = dst;
  open_ = true;
  return buf_;
}

void FakeIpv4::ip_commit(bool) {
  EXPECT_TRUE(open_);
  open_ = false;
  const auto r = wire::TcpRepr::parse(buf_, kLocalIp, dst_, false);
  EXPECT_TRUE(r.ok()) << "stack emitted an unparseable segment: " << hex(buf_);
  if (!r.ok()) return;
  Sent s;
  s.dst = dst_;
  s.sport = r->src_port;
  s.dport = r->dst_port;
  s.flags = r->flags;
  s.seq = r->seq.raw();
  s.ack = r->ack.raw();
  s.window = r->window;
  s.opts = r->opts;
  s.payload.assign(r->payload.begin(), r->payload.end());
  s.checksum_ok = inet_checksum(buf_, kLocalIp, dst_, kIpProtoTcp) == 0;
  sent.push_back(std::move(s));
}

void FakeIpv4::ip_abort() {
  EXPECT_TRUE(open_);
  open_ = false;
}

TcpConfig plain_config() {
  TcpConfig c;
  c.timestamps = false;
  c.sack = false;
  c.window_scaling = false;
  c.rcvbuf_initial = 65536;
  c.rcvbuf_max = 65536;
  c.max_sockets = 256;
  return c;
}

TcpHarness::TcpHarness(const TcpConfig& c) : cfg(c) {
  tcp = std::make_unique<tcp::TcpLayer>(cfg, ip, counters, 0x5eed5eed5eedULL, now);
}

void TcpHarness::send(const Seg& s) {
  TcpSpec t;
  t.sport = s.sport;
  t.dport = s.dport;
  t.seq = s.seq;
  t.ack = s.ack;
  t.flags = s.flags;
  t.window = s.window;
  t.bad_checksum = s.bad_checksum;
  Bytes& o = t.options;
  if (s.mss) {
    o.insert(o.end(), {std::byte{2}, std::byte{4}, std::byte(*s.mss >> 8), std::byte(*s.mss & 0xff)});
  }
  if (s.sack_perm) o.insert(o.end(), {std::byte{1}, std::byte{1}, std::byte{4}, std::byte{2}});
  if (s.ts) {
    o.insert(o.end(), {std::byte{1}, std::byte{1}, std::byte{8}, std::byte{10}});
    for (std::uint32_t v : {s.ts->first, s.ts->second}) {
      o.insert(o.end(), {std::byte(v >> 24), std::byte(v >> 16), std::byte(v >> 8), std::byte(v)});
    }
  }
  if (s.wscale) o.insert(o.end(), {std::byte{1}, std::byte{3}, std::byte{3}, std::byte{*s.wscale}});
  if (!s.sack.empty()) {
    o.insert(o.end(), {std::byte{1}, std::byte{1}, std::byte{5}, std::byte(2 + 8 * s.sack.size())});
    for (const auto& [l, r] : s.sack) {
      for (std::uint32_t v : {l, r}) {
        o.insert(o.end(), {std::byte(v >> 24), std::byte(v >> 16), std::byte(v >> 8), std::byte(v)});
      }
    }
  }
  o.insert(o.end(), s.raw_options.begin(), s.raw_options.end());
  const Bytes seg = tcp_segment(s.src, kLocalIp, t, s.payload);
  Ipv4RxInfo info;
  info.src = s.src;
  info.dst = kLocalIp;
  info.ttl = 64;
  tcp->on_segment(info, seg, now);
}

void TcpHarness::poll() { tcp->poll(now); }

void TcpHarness::advance(Duration d) {
  now += d;
  poll();
}

void TcpHarness::run_until(Instant deadline) {
  for (int guard = 0; guard < 1000000; ++guard) {
    poll();
    const Instant next = tcp->next_deadline();
    if (next > deadline) break;
    now = std::max(now, next);
  }
  now = deadline;
  poll();
}

Sent TcpHarness::expect(const Want& w) {
  poll();
  if (ip.sent.empty()) {
    ADD_FAILURE() << "expected a segment, nothing was sent";
    return {};
  }
  Sent s = std::move(ip.sent.front());
  ip.sent.pop_front();
  EXPECT_TRUE(s.checksum_ok) << s.str();
  EXPECT_EQ(s.dst, kPeerIp);
  const auto mask = static_cast<std::uint8_t>(~kTcpPsh);  // PSH is checked only through `psh`
  if (w.flags) {
    EXPECT_EQ(s.flags & mask, *w.flags & mask) << "flags of " << s.str();
  }
  if (w.psh) {
    EXPECT_EQ((s.flags & kTcpPsh) != 0, *w.psh) << s.str();
  }
  if (w.seq) {
    EXPECT_EQ(s.seq, *w.seq) << "seq of " << s.str();
  }
  if (w.ack) {
    EXPECT_EQ(s.ack, *w.ack) << "ack of " << s.str();
  }
  if (w.window) {
    EXPECT_EQ(s.window, *w.window) << "window of " << s.str();
  }
  if (w.payload) {
    EXPECT_EQ(s.payload, *w.payload) << "payload of " << s.str();
  }
  if (w.len) {
    EXPECT_EQ(s.payload.size(), *w.len) << "length of " << s.str();
  }
  if (w.sport) {
    EXPECT_EQ(s.sport, *w.sport);
  }
  if (w.dport) {
    EXPECT_EQ(s.dport, *w.dport);
  }
  return s;
}

void TcpHarness::expect_nothing() {
  poll();
  if (!ip.sent.empty()) {
    std::string all;
    for (const Sent& s : ip.sent) all += s.str() + " ";
    ADD_FAILURE() << "expected silence, got " << all;
    ip.sent.clear();
  }
}

std::vector<Sent> TcpHarness::drain() {
  poll();
  std::vector<Sent> v(std::make_move_iterator(ip.sent.begin()), std::make_move_iterator(ip.sent.end()));
  ip.sent.clear();
  return v;
}

SocketId TcpHarness::listen(std::uint16_t port, int backlog) {
  auto s = tcp->socket();
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(tcp->bind(*s, Endpoint{kLocalIp, port}), Errc::ok);
  EXPECT_EQ(tcp->listen(*s, backlog), Errc::ok);
  listener = *s;
  return *s;
}

void TcpHarness::syn_received(const Seg& extra) {
  if (listener == kInvalidSocket) listen();
  Seg syn = extra;
  syn.flags = kTcpSyn;
  syn.seq = kPeerIss;
  syn.ack = 0;
  if (!syn.mss) syn.mss = 1460;
  send(syn);
  const Sent sa = expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1});
  iss = sa.seq;
  nxt = iss + 1;
  peer_nxt = kPeerIss + 1;
}

SocketId TcpHarness::established_passive() {
  syn_received();
  send({.seq = peer_nxt, .ack = nxt});
  Endpoint peer{};
  auto c = tcp->accept(listener, &peer);
  EXPECT_TRUE(c.ok()) << "accept: " << to_errno(c.error());
  EXPECT_EQ(peer, (Endpoint{kPeerIp, kPeerPort}));
  conn = c.ok() ? *c : kInvalidSocket;
  expect_nothing();
  return conn;
}

SocketId TcpHarness::syn_sent() {
  auto s = tcp->socket();
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(tcp->bind(*s, Endpoint{kLocalIp, kLocalPort}), Errc::ok);
  EXPECT_EQ(tcp->connect(*s, Endpoint{kPeerIp, kPeerPort}), Errc::in_progress);
  conn = *s;
  const Sent syn = expect({.flags = kTcpSyn});
  iss = syn.seq;
  nxt = iss + 1;
  return conn;
}

SocketId TcpHarness::established_active() {
  syn_sent();
  send({.flags = kTcpSyn | kTcpAck, .seq = kPeerIss, .ack = nxt, .mss = 1460});
  peer_nxt = kPeerIss + 1;
  expect({.flags = kTcpAck, .seq = nxt, .ack = peer_nxt});
  return conn;
}

void TcpHarness::fin_wait_1() {
  if (conn == kInvalidSocket) established_passive();
  EXPECT_EQ(tcp->shutdown(conn, ShutdownHow::write), Errc::ok);
  expect({.flags = kTcpFin | kTcpAck, .seq = nxt, .ack = peer_nxt});
  nxt += 1;
}

void TcpHarness::fin_wait_2() {
  fin_wait_1();
  send({.seq = peer_nxt, .ack = nxt});
  expect_nothing();
}

void TcpHarness::time_wait() {
  fin_wait_2();
  send({.flags = kTcpFin | kTcpAck, .seq = peer_nxt, .ack = nxt});
  peer_nxt += 1;
  expect({.flags = kTcpAck, .seq = nxt, .ack = peer_nxt});
}

void TcpHarness::close_wait() {
  if (conn == kInvalidSocket) established_passive();
  send({.flags = kTcpFin | kTcpAck, .seq = peer_nxt, .ack = nxt});
  peer_nxt += 1;
  expect({.flags = kTcpAck, .seq = nxt, .ack = peer_nxt});
}

void TcpHarness::last_ack() {
  close_wait();
  EXPECT_EQ(tcp->shutdown(conn, ShutdownHow::write), Errc::ok);
  expect({.flags = kTcpFin | kTcpAck, .seq = nxt, .ack = peer_nxt});
  nxt += 1;
}

void TcpHarness::closing() {
  fin_wait_1();
  send({.flags = kTcpFin | kTcpAck, .seq = peer_nxt, .ack = nxt - 1});
  peer_nxt += 1;
  expect({.flags = kTcpAck, .seq = nxt, .ack = peer_nxt});
}

std::uint8_t TcpHarness::state(SocketId s) const {
  auto i = tcp->info(s == kInvalidSocket ? conn : s);
  return i.ok() ? (*i).state : 0;
}

std::size_t TcpHarness::write(std::string_view data, SocketId s) {
  auto r = tcp->send(s == kInvalidSocket ? conn : s, as_bytes(data));
  EXPECT_TRUE(r.ok()) << "send: " << to_errno(r.error());
  return r.ok() ? *r : 0;
}

std::string TcpHarness::read(std::size_t max, SocketId s) {
  std::string out(max, '\0');
  auto r = tcp->recv(s == kInvalidSocket ? conn : s, MutByteSpan(reinterpret_cast<std::byte*>(out.data()), out.size()));
  if (!r.ok()) return {};
  out.resize(*r);
  return out;
}

}  // namespace pno::test
