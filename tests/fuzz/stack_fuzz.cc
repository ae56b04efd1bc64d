// libFuzzer target: arbitrary frames and socket calls against one pno::Stack.
//
// A fuzz input is a program of operations. Before it runs, the harness plays a peer at 198.18.0.2:
// it introduces itself by ARP, opens a connection to a listener on port 7 (passive open) and answers
// the stack's SYN for a connection to port 5001 (active open), so that most operations reach
// ESTABLISHED-state code. It follows every segment the stack sends, so fuzzed segments can carry
// sequence and acknowledgment numbers near the right ones (in-window data, SACK blocks, FINs,
// RSTs...) instead of being dropped at the first check. Other operations send raw frames, advance
// virtual time (timers: RTO, keepalive, persist, TIME-WAIT) or call the socket API.
//
// What counts as a bug: any sanitizer report, a crash, or a broken FrameSink protocol (two open
// frames, commit without begin, a committed frame longer than asked for).
#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "base/bytes.hh"
#include "stack/checksum.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"

namespace {

using namespace pno;

constexpr MacAddr kOurMac{{0x02, 0x00, 0xc6, 0x12, 0x00, 0x01}};
constexpr MacAddr kPeerMac{{0x02, 0x00, 0xc6, 0x12, 0x00, 0x02}};
constexpr Ipv4Addr kOurIp = Ipv4Addr::from_octets(198, 18, 0, 1);
constexpr Ipv4Addr kPeerIp = Ipv4Addr::from_octets(198, 18, 0, 2);
constexpr std::uint16_t kListenPort = 7;
constexpr std::uint16_t kPeerServerPort = 5001;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "stack_fuzz: %s\n", what);
  std::abort();
}

/// One TCP connection as the peer sees it: its 4-tuple and the sequence space of both sides.
struct PeerConn {
  std::uint16_t our_port = 0;   ///< the stack's port
  std::uint16_t peer_port = 0;  ///< the simulated peer's port
  std::uint32_t peer_nxt = 0;   ///< next sequence number the peer sends
  std::uint32_t stack_nxt = 0;  ///< highest sequence number the stack has sent (seq + len)
  bool synced = false;          ///< saw the stack's SYN or SYN-ACK
  SocketId sock = kInvalidSocket;
};

/// Checks the FrameSink protocol and hands every committed frame to the tracker.
class FuzzSink : public FrameSink {
 public:
  MutByteSpan tx_begin(std::size_t max_len) override {
    if (open_) die("tx_begin while a frame is open");
    if (max_len > buf_.size()) max_len = buf_.size();
    open_ = true;
    asked_ = max_len;
    return {buf_.data(), max_len};
  }
  void tx_commit(std::size_t len, const TxMeta&) override {
    if (!open_) die("tx_commit without tx_begin");
    if (len > asked_) die("tx_commit longer than tx_begin allowed");
    open_ = false;
    frames.emplace_back(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(len));
  }
  void tx_abort() override {
    if (!open_) die("tx_abort without tx_begin");
    open_ = false;
  }
  std::vector<std::vector<std::byte>> frames;

 private:
  std::array<std::byte, 16384> buf_{};
  bool open_ = false;
  std::size_t asked_ = 0;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& in) : in_(in) {
    StackConfig cfg;
    cfg.mac = kOurMac;
    cfg.addr = Ipv4Cidr{kOurIp, 24};
    cfg.secret = 0x5eed5eed5eedULL;
    cfg.tcp.msl = std::chrono::seconds(1);  // TIME-WAIT within reach of the time operations
    cfg.tcp.keepalive_idle = std::chrono::seconds(5);
    cfg.tcp.keepalive_intvl = std::chrono::seconds(1);
    cfg.tcp.keepalive_probes = 2;
    // Small tables and buffers: cheap to build per input, and full windows/buffers are easy to reach.
    cfg.tcp.max_sockets = 64;
    cfg.tcp.syn_backlog = 8;
    cfg.tcp.rcvbuf_initial = 8 * 1024;
    cfg.tcp.rcvbuf_max = 64 * 1024;
    cfg.tcp.sndbuf_initial = 16 * 1024;
    cfg.tcp.sndbuf_max = 64 * 1024;
    stack_.emplace(cfg, sink_, now_);
  }

  void setup() {
    auto& tcp = stack_->tcp();
    // Peer announces itself (ARP request for our address: RFC 826 merge gives us its MAC).
    arp(1, kPeerMac, kPeerIp, MacAddr{}, kOurIp);
    // Listener on port 7.
    if (auto s = tcp.socket(); s) {
      listener_ = *s;
      tcp.bind(listener_, Endpoint{Ipv4Addr::any(), kListenPort});
      tcp.listen(listener_, 64);
    }
    // Passive open: SYN from the peer, the stack's SYN-ACK, our ACK.
    PeerConn p;
    p.our_port = kListenPort;
    p.peer_port = 40000;
    p.peer_nxt = 1000;
    conns_.push_back(p);
    segment(0, 0x02, 0, 0, 65535, syn_options(), {});
    conns_[0].peer_nxt += 1;
    step(std::chrono::microseconds(10));
    segment(0, 0x10, 0, 0, 65535, {}, {});
    step(std::chrono::microseconds(10));
    if (auto a = tcp.accept(listener_); a) conns_[0].sock = *a;
    // Active open to the peer's port 5001: answer the stack's SYN with a SYN-ACK.
    if (auto s = tcp.socket(); s) {
      tcp.connect(*s, Endpoint{kPeerIp, kPeerServerPort});
      PeerConn c;
      c.peer_port = kPeerServerPort;
      c.peer_nxt = 77777;
      c.sock = *s;
      conns_.push_back(c);
      step(std::chrono::microseconds(10));  // the SYN goes out; the tracker learns our_port and ISS
      segment(1, 0x12, 0, 0, 65535, syn_options(), {});
      conns_[1].peer_nxt += 1;
      step(std::chrono::microseconds(10));
    }
    // PNO_FUZZ_DEBUG=1: show that the scripted handshakes reached ESTABLISHED (state 1), so fuzzed
    // segments land on established connections rather than on the demux's RST path.
    if (std::getenv("PNO_FUZZ_DEBUG") != nullptr) {
      for (const auto& c : conns_) {
        auto info = tcp.info(c.sock);
        std::fprintf(stderr, "stack_fuzz: conn %u->%u state %d snd_nxt(peer view) %u\n", c.peer_port, c.our_port,
                     info ? static_cast<int>(info.value().state) : -1, c.stack_nxt);
      }
    }
  }

  void run() {
    int ops = 0;
    while (in_.remaining_bytes() > 0 && ops++ < 256) {
      switch (in_.ConsumeIntegralInRange<int>(0, 11)) {
        case 0: raw_frame(); break;
        case 1: raw_ipv4(); break;
        case 2:
        case 3:
        case 4:
        case 5: fuzzed_segment(); break;
        case 6: step(time_step()); break;
        case 7: socket_call(); break;
        case 8: new_connection(); break;
        case 9: icmp(); break;
        case 10: arp(in_.ConsumeIntegralInRange<std::uint16_t>(0, 3), kPeerMac, kPeerIp, MacAddr{},
                     in_.ConsumeBool() ? kOurIp : Ipv4Addr{in_.ConsumeIntegral<std::uint32_t>()});
          break;
        case 11: bulk_exchange(); break;
      }
      step(std::chrono::microseconds(in_.ConsumeIntegralInRange<int>(0, 5000)));
    }
    // Let every timer run out: retransmissions give up, TIME-WAIT ends.
    for (int i = 0; i < 8; ++i) step(std::chrono::seconds(30));
  }

 private:
  // --- time and output ---
  void step(Duration d) {
    now_ += d;
    stack_->poll(now_);
    SocketEvent ev;
    int guard = 0;
    while (stack_->tcp().next_event(ev) && guard++ < 100000) {
    }
    for (auto& f : sink_.frames) track(f);
    sink_.frames.clear();
    // next_deadline() must never be in the past after a poll (else the caller would spin).
    const Instant next = stack_->next_deadline();
    if (next != kNever && next < now_) {
      stack_->poll(now_);
    }
  }

  Duration time_step() {
    switch (in_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: return std::chrono::microseconds(in_.ConsumeIntegralInRange<int>(0, 1000));
      case 1: return std::chrono::milliseconds(in_.ConsumeIntegralInRange<int>(0, 500));
      case 2: return std::chrono::seconds(in_.ConsumeIntegralInRange<int>(0, 10));
      default: return std::chrono::seconds(in_.ConsumeIntegralInRange<int>(0, 300));
    }
  }

  /// Follows the stack's TCP output so fuzzed segments can use nearly right numbers.
  void track(const std::vector<std::byte>& f) {
    if (f.size() < 14 + 20 + 20 || load_be16(&f[12]) != 0x0800) return;
    const std::byte* ip = &f[14];
    const std::size_t ihl = (load_u8(ip) & 0x0f) * 4u;
    if (load_u8(ip + 9) != 6 || f.size() < 14 + ihl + 20) return;
    const std::size_t total = load_be16(ip + 2);
    const std::byte* t = ip + ihl;
    const std::uint16_t sport = load_be16(t), dport = load_be16(t + 2);
    const std::uint32_t seq = load_be32(t + 4);
    const std::size_t doff = (load_u8(t + 12) >> 4) * 4u;
    const std::uint8_t flags = load_u8(t + 13);
    if (total < ihl + doff) return;
    std::uint32_t len = static_cast<std::uint32_t>(total - ihl - doff);
    if (flags & 0x02) ++len;
    if (flags & 0x01) ++len;
    for (auto& c : conns_) {
      const bool match = c.peer_port == dport && (c.our_port == sport || (c.our_port == 0 && (flags & 0x02)));
      if (!match) continue;
      c.our_port = sport;
      if ((flags & 0x02) || !c.synced || static_cast<std::int32_t>(seq + len - c.stack_nxt) > 0) {
        c.stack_nxt = seq + len;
      }
      c.synced = true;
      return;
    }
  }

  // --- frames ---
  void send_frame(const std::vector<std::byte>& f) {
    RxMeta meta;
    meta.ipv4_checksum_good = false;
    meta.l4_checksum_good = false;
    stack_->on_frame({f.data(), f.size()}, now_, meta);
  }

  static void put_eth(std::vector<std::byte>& f, MacAddr dst, MacAddr src, std::uint16_t type) {
    f.resize(14);
    for (int i = 0; i < 6; ++i) {
      f[i] = std::byte{dst.b[i]};
      f[6 + i] = std::byte{src.b[i]};
    }
    store_be16(&f[12], type);
  }

  void arp(std::uint16_t oper, MacAddr sha, Ipv4Addr spa, MacAddr tha, Ipv4Addr tpa) {
    std::vector<std::byte> f;
    put_eth(f, oper == 1 ? MacAddr::broadcast() : kOurMac, sha, 0x0806);
    f.resize(14 + 28);
    std::byte* a = &f[14];
    store_be16(a, 1);
    store_be16(a + 2, 0x0800);
    store_u8(a + 4, 6);
    store_u8(a + 5, 4);
    store_be16(a + 6, oper);
    for (int i = 0; i < 6; ++i) a[8 + i] = std::byte{sha.b[i]};
    store_be32(a + 14, spa.v);
    for (int i = 0; i < 6; ++i) a[18 + i] = std::byte{tha.b[i]};
    store_be32(a + 24, tpa.v);
    send_frame(f);
  }

  /// Ethernet + IPv4 header around `l4`; checksums right unless the input says otherwise.
  std::vector<std::byte> ipv4(std::uint8_t proto, Ipv4Addr src, const std::vector<std::byte>& l4, bool fix_l4) {
    std::vector<std::byte> f;
    put_eth(f, kOurMac, kPeerMac, 0x0800);
    f.resize(14 + 20);
    std::byte* ip = &f[14];
    store_u8(ip, 0x45);
    store_u8(ip + 1, 0);
    store_be16(ip + 2, static_cast<std::uint16_t>(20 + l4.size()));
    store_be16(ip + 4, ip_id_++);
    store_be16(ip + 6, 0x4000);  // DF
    store_u8(ip + 8, 64);
    store_u8(ip + 9, proto);
    store_be32(ip + 12, src.v);
    store_be32(ip + 16, kOurIp.v);
    store_be16(ip + 10, 0);
    store_be16(ip + 10, ipv4_header_checksum({ip, 20}));
    f.insert(f.end(), l4.begin(), l4.end());
    if (fix_l4 && proto == 6 && l4.size() >= 20) {
      std::byte* t = &f[34];
      store_be16(t + 16, 0);
      store_be16(t + 16, l4_checksum(src, kOurIp, 6, {t, l4.size()}));
    }
    if (fix_l4 && proto == 1 && l4.size() >= 4) {
      std::byte* t = &f[34];
      store_be16(t + 2, 0);
      Checksum c;
      c.add({t, l4.size()});
      store_be16(t + 2, c.fold());
    }
    return f;
  }

  std::vector<std::byte> syn_options() {
    // MSS 1460, SACK permitted, timestamps, window scale 7 (the order Linux uses).
    const std::uint8_t o[] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
    std::vector<std::byte> v;
    for (auto b : o) v.push_back(std::byte{b});
    return v;
  }

  /// A TCP segment on connection `ci` with seq = peer_nxt + dseq and ack = stack_nxt + dack.
  void segment(std::size_t ci, std::uint8_t flags, std::int32_t dseq, std::int32_t dack, std::uint16_t wnd,
               std::vector<std::byte> opts, const std::vector<std::byte>& payload, bool fix = true) {
    if (ci >= conns_.size()) return;
    PeerConn& c = conns_[ci];
    while (opts.size() % 4) opts.push_back(std::byte{1});  // NOP padding
    if (opts.size() > 40) opts.resize(40);
    std::vector<std::byte> t(20 + opts.size());
    store_be16(&t[0], c.peer_port);
    store_be16(&t[2], c.our_port);
    store_be32(&t[4], c.peer_nxt + static_cast<std::uint32_t>(dseq));
    store_be32(&t[8], c.stack_nxt + static_cast<std::uint32_t>(dack));
    store_u8(&t[12], static_cast<std::uint8_t>(((20 + opts.size()) / 4) << 4));
    store_u8(&t[13], flags);
    store_be16(&t[14], wnd);
    std::copy(opts.begin(), opts.end(), t.begin() + 20);
    t.insert(t.end(), payload.begin(), payload.end());
    send_frame(ipv4(6, kPeerIp, t, fix));
  }

  void raw_frame() {
    auto v = in_.ConsumeBytes<std::uint8_t>(in_.ConsumeIntegralInRange<std::size_t>(0, 1600));
    std::vector<std::byte> f(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) f[i] = std::byte{v[i]};
    send_frame(f);
  }

  void raw_ipv4() {
    const auto proto = in_.PickValueInArray<std::uint8_t>({1, 6, 17, 0xff});
    auto v = in_.ConsumeBytes<std::uint8_t>(in_.ConsumeIntegralInRange<std::size_t>(0, 1500));
    std::vector<std::byte> l4(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) l4[i] = std::byte{v[i]};
    auto f = ipv4(proto, in_.ConsumeBool() ? kPeerIp : Ipv4Addr{in_.ConsumeIntegral<std::uint32_t>()}, l4,
                  in_.ConsumeBool());
    if (in_.ConsumeBool() && f.size() > 14 + 20) {
      // Corrupt one header byte (then maybe fix the header checksum) to reach the IPv4 checks.
      const std::size_t at = 14 + in_.ConsumeIntegralInRange<std::size_t>(0, 19);
      f[at] = std::byte{in_.ConsumeIntegral<std::uint8_t>()};
      if (in_.ConsumeBool()) {
        store_be16(&f[24], 0);
        store_be16(&f[24], ipv4_header_checksum({&f[14], 20}));
      }
    }
    send_frame(f);
  }

  void icmp() {
    std::vector<std::byte> m(8);
    store_u8(&m[0], in_.ConsumeBool() ? 8 : in_.ConsumeIntegral<std::uint8_t>());
    store_u8(&m[1], in_.ConsumeIntegral<std::uint8_t>());
    store_be32(&m[4], in_.ConsumeIntegral<std::uint32_t>());
    auto v = in_.ConsumeBytes<std::uint8_t>(in_.ConsumeIntegralInRange<std::size_t>(0, 1400));
    for (auto b : v) m.push_back(std::byte{b});
    send_frame(ipv4(1, kPeerIp, m, in_.ConsumeIntegralInRange<int>(0, 7) != 0));
  }

  std::vector<std::byte> fuzzed_options() {
    std::vector<std::byte> o;
    const int kind = in_.ConsumeIntegralInRange<int>(0, 4);
    if (kind == 0) return o;
    if (kind == 1) {  // timestamps near plausible values
      const std::uint8_t ts[] = {1, 1, 8, 10};
      for (auto b : ts) o.push_back(std::byte{b});
      o.resize(12);
      store_be32(&o[4], ts_val_ += in_.ConsumeIntegralInRange<std::uint32_t>(0, 1000));
      store_be32(&o[8], in_.ConsumeIntegral<std::uint32_t>());
      return o;
    }
    if (kind == 2) {  // SACK blocks relative to what the stack has sent
      const int n = in_.ConsumeIntegralInRange<int>(1, 4);
      o.push_back(std::byte{1});
      o.push_back(std::byte{1});
      o.push_back(std::byte{5});
      o.push_back(std::byte{static_cast<std::uint8_t>(2 + 8 * n)});
      const std::uint32_t base = conns_.empty() ? 0 : conns_[in_.ConsumeIntegralInRange<std::size_t>(0, conns_.size() - 1)].stack_nxt;
      for (int i = 0; i < n; ++i) {
        std::byte b[8];
        const std::uint32_t l = base - in_.ConsumeIntegralInRange<std::uint32_t>(0, 300000);
        store_be32(b, l);
        store_be32(b + 4, l + in_.ConsumeIntegralInRange<std::uint32_t>(0, 20000));
        o.insert(o.end(), b, b + 8);
      }
      return o;
    }
    auto v = in_.ConsumeBytes<std::uint8_t>(in_.ConsumeIntegralInRange<std::size_t>(0, 40));
    for (auto b : v) o.push_back(std::byte{b});
    return o;
  }

  std::int32_t near_delta() {
    switch (in_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: return 0;
      case 1: return in_.ConsumeIntegralInRange<std::int32_t>(-3000, 3000);
      case 2: return in_.ConsumeIntegralInRange<std::int32_t>(-(1 << 20), 1 << 20);
      default: return in_.ConsumeIntegral<std::int32_t>();
    }
  }

  void fuzzed_segment() {
    if (conns_.empty()) return;
    const std::size_t ci = in_.ConsumeIntegralInRange<std::size_t>(0, conns_.size() - 1);
    std::uint8_t flags = in_.ConsumeIntegral<std::uint8_t>();
    if (in_.ConsumeBool()) flags = (flags & 0x0f) | 0x10;  // mostly ACK-bearing, like real traffic
    const std::int32_t dseq = near_delta(), dack = near_delta();
    const auto wnd = in_.ConsumeIntegral<std::uint16_t>();
    auto opts = fuzzed_options();
    auto n = in_.ConsumeIntegralInRange<std::size_t>(0, 1460);
    std::vector<std::byte> payload(n);
    auto v = in_.ConsumeBytes<std::uint8_t>(std::min<std::size_t>(n, 64));
    for (std::size_t i = 0; i < n; ++i) payload[i] = std::byte{v.empty() ? std::uint8_t(i) : v[i % v.size()]};
    const bool fix = in_.ConsumeIntegralInRange<int>(0, 15) != 0;
    segment(ci, flags, dseq, dack, wnd, opts, payload, fix);
    // In-order data moves the peer's sequence forward, as a real sender's would.
    if (dseq == 0 && fix && !(flags & 0x04)) {
      conns_[ci].peer_nxt += static_cast<std::uint32_t>(n) + ((flags & 0x02) ? 1 : 0) + ((flags & 0x01) ? 1 : 0);
    }
  }

  void bulk_exchange() {
    // The stack sends a window's worth; the peer acks all of it, some of it, or SACKs around a hole.
    if (conns_.empty()) return;
    const std::size_t ci = in_.ConsumeIntegralInRange<std::size_t>(0, conns_.size() - 1);
    PeerConn& c = conns_[ci];
    if (c.sock != kInvalidSocket) {
      std::vector<std::byte> data(in_.ConsumeIntegralInRange<std::size_t>(1, 70000), std::byte{0x5a});
      (void)stack_->tcp().send(c.sock, {data.data(), data.size()});
    }
    step(std::chrono::microseconds(100));
    const std::int32_t back = in_.ConsumeIntegralInRange<std::int32_t>(0, 100000);
    segment(ci, 0x10, 0, -back, 65535, fuzzed_options(), {});
  }

  SocketId pick_socket() {
    if (conns_.empty() || in_.ConsumeIntegralInRange<int>(0, 7) == 0) return listener_;
    return conns_[in_.ConsumeIntegralInRange<std::size_t>(0, conns_.size() - 1)].sock;
  }

  void socket_call() {
    auto& tcp = stack_->tcp();
    const SocketId s = pick_socket();
    std::array<std::byte, 4096> buf{};
    switch (in_.ConsumeIntegralInRange<int>(0, 10)) {
      case 0: {
        std::vector<std::byte> d(in_.ConsumeIntegralInRange<std::size_t>(0, 70000), std::byte{0x42});
        (void)tcp.send(s, {d.data(), d.size()}, in_.ConsumeBool());
        break;
      }
      case 1: (void)tcp.recv(s, {buf.data(), in_.ConsumeIntegralInRange<std::size_t>(0, buf.size())}, in_.ConsumeBool()); break;
      case 2: (void)tcp.shutdown(s, in_.PickValueInArray({ShutdownHow::read, ShutdownHow::write, ShutdownHow::both})); break;
      case 3: (void)tcp.close(s); break;
      case 4: (void)tcp.abort(s); break;
      case 5: {
        const auto opt = static_cast<SockOpt>(in_.ConsumeIntegralInRange<int>(0, static_cast<int>(SockOpt::user_timeout)));
        (void)tcp.setsockopt(s, opt, in_.ConsumeIntegralInRange<int>(-2, 100000));
        break;
      }
      case 6: {
        Endpoint peer;
        if (auto a = tcp.accept(listener_, &peer); a) {
          for (auto& c : conns_) {
            if (c.peer_port == peer.port && c.sock == kInvalidSocket) c.sock = *a;
          }
        }
        break;
      }
      case 7: (void)tcp.info(s); (void)tcp.readable_bytes(s); (void)tcp.readiness(s); break;
      case 8: (void)tcp.take_error(s); (void)tcp.local_endpoint(s); (void)tcp.peer_endpoint(s); break;
      case 9: {
        const auto opt = static_cast<SockOpt>(in_.ConsumeIntegralInRange<int>(0, static_cast<int>(SockOpt::user_timeout)));
        (void)tcp.getsockopt(s, opt);
        break;
      }
      default: {
        // Bind/listen/connect on a fresh socket with fuzzed endpoints.
        if (auto n = tcp.socket(); n) {
          const Endpoint ep{Ipv4Addr{in_.ConsumeBool() ? kPeerIp.v : in_.ConsumeIntegral<std::uint32_t>()},
                            in_.ConsumeIntegral<std::uint16_t>()};
          if (in_.ConsumeBool()) {
            (void)tcp.bind(*n, ep);
            (void)tcp.listen(*n, in_.ConsumeIntegralInRange<int>(-1, 100));
          } else {
            (void)tcp.connect(*n, ep);
          }
        }
      }
    }
  }

  void new_connection() {
    // Another passive open from a new peer port (or an active one to the peer).
    if (conns_.size() >= 16) return;
    PeerConn p;
    p.peer_nxt = in_.ConsumeIntegral<std::uint32_t>();
    if (in_.ConsumeBool()) {
      p.our_port = in_.ConsumeBool() ? kListenPort : in_.ConsumeIntegral<std::uint16_t>();
      p.peer_port = static_cast<std::uint16_t>(40001 + conns_.size());
      conns_.push_back(p);
      segment(conns_.size() - 1, 0x02, 0, 0, in_.ConsumeIntegral<std::uint16_t>(),
              in_.ConsumeBool() ? syn_options() : fuzzed_options(), {});
      conns_.back().peer_nxt += 1;
    } else if (auto s = stack_->tcp().socket(); s) {
      p.peer_port = static_cast<std::uint16_t>(5002 + conns_.size());
      p.sock = *s;
      (void)stack_->tcp().connect(*s, Endpoint{kPeerIp, p.peer_port});
      conns_.push_back(p);
    }
  }

  FuzzedDataProvider& in_;
  FuzzSink sink_;
  Instant now_ = instant_from_ns(1'000'000'000);
  std::optional<Stack> stack_;
  SocketId listener_ = kInvalidSocket;
  std::vector<PeerConn> conns_;
  std::uint16_t ip_id_ = 1;
  std::uint32_t ts_val_ = 1000;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  Harness h(in);
  h.setup();
  h.run();
  return 0;
}
