// Micro-benchmarks of the sans-IO stack on one core, with no port and no kernel: what the protocol
// code itself costs per byte and per segment. Two Stack instances are joined back to back in memory
// (frames are copied from one's FrameSink into the other's on_frame), so every Ethernet, ARP, IPv4 and
// TCP path a real frame takes runs, checksums included.
#include <benchmark/benchmark.h>

#include <array>
#include <deque>
#include <vector>

#include "stack/checksum.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"

namespace {

using namespace pno;

/// A FrameSink that queues committed frames for the other side. Buffers are reused: after warm-up
/// the link allocates nothing.
class MemLink final : public FrameSink {
 public:
  MutByteSpan tx_begin(std::size_t max_len) override {
    if (free_.empty()) free_.emplace_back();
    open_ = std::move(free_.back());
    free_.pop_back();
    open_.resize(max_len);
    return open_;
  }
  void tx_commit(std::size_t len, const TxMeta&) override {
    open_.resize(len);
    queue_.push_back(std::move(open_));
  }
  void tx_abort() override { free_.push_back(std::move(open_)); }

  /// Hands every queued frame to `to`; returns how many.
  std::size_t deliver(Stack& to, Instant now) {
    std::size_t n = 0;
    while (!queue_.empty()) {
      std::vector<std::byte> f = std::move(queue_.front());
      queue_.pop_front();
      to.on_frame(f, now);
      free_.push_back(std::move(f));
      ++n;
    }
    return n;
  }

 private:
  std::vector<std::byte> open_;
  std::deque<std::vector<std::byte>> queue_;
  std::vector<std::vector<std::byte>> free_;
};

StackConfig config(std::uint8_t host) {
  StackConfig c;
  c.mac = MacAddr{{0x02, 0, 0, 0, 0, host}};
  c.addr = Ipv4Cidr{Ipv4Addr::from_octets(198, 18, 0, host), 24};
  c.secret = host;
  return c;
}

/// A client and a server stack with one established connection between them.
struct Pair {
  MemLink a_out, b_out;
  Instant now = instant_from_ns(1'000'000'000);
  Stack a{config(1), a_out, now};
  Stack b{config(2), b_out, now};
  SocketId client = kInvalidSocket, server = kInvalidSocket;

  Pair() {
    auto l = b.tcp().socket();
    b.tcp().bind(*l, {Ipv4Addr::any(), 7});
    b.tcp().listen(*l, 16);
    client = *a.tcp().socket();
    a.tcp().connect(client, {Ipv4Addr::from_octets(198, 18, 0, 2), 7});
    for (int i = 0; i < 50 && server == kInvalidSocket; ++i) {
      step();
      if (auto s = b.tcp().accept(*l); s) server = *s;
    }
    a.tcp().setsockopt(client, SockOpt::nodelay, 1);
    b.tcp().setsockopt(server, SockOpt::nodelay, 1);
  }

  /// One round of both event loops: poll, deliver, and let virtual time pass a little.
  std::size_t step() {
    now += std::chrono::microseconds(20);
    a.poll(now);
    b.poll(now);
    std::size_t n = a_out.deliver(b, now) + b_out.deliver(a, now);
    a.poll(now);
    b.poll(now);
    return n;
  }
};

/// One-way bulk transfer: bytes per second of payload the stack moves per core (both ends on it).
void BM_StackBulkTransfer(benchmark::State& state) {
  Pair p;
  if (p.server == kInvalidSocket) {
    state.SkipWithError("handshake failed");
    return;
  }
  std::vector<std::byte> chunk(64 * 1024, std::byte{0x5a});
  std::vector<std::byte> sink(256 * 1024);
  std::uint64_t moved = 0;
  for (auto _ : state) {
    auto w = p.a.tcp().send(p.client, chunk);
    p.step();
    for (;;) {
      auto r = p.b.tcp().recv(p.server, sink);
      if (!r || *r == 0) break;
      moved += *r;
    }
    benchmark::DoNotOptimize(w);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(moved));
}
BENCHMARK(BM_StackBulkTransfer);

/// Request/response: one 64-byte message each way per iteration (an echo's round trip in software).
void BM_StackPingPong64(benchmark::State& state) {
  Pair p;
  if (p.server == kInvalidSocket) {
    state.SkipWithError("handshake failed");
    return;
  }
  std::array<std::byte, 64> msg{};
  std::array<std::byte, 4096> buf{};
  for (auto _ : state) {
    p.a.tcp().send(p.client, msg);
    p.step();
    auto r = p.b.tcp().recv(p.server, buf);
    if (r && *r > 0) p.b.tcp().send(p.server, std::span(buf).first(*r));
    p.step();
    auto back = p.a.tcp().recv(p.client, buf);
    benchmark::DoNotOptimize(back);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_StackPingPong64);

/// The Internet checksum over one full-size TCP payload.
void BM_Checksum1448(benchmark::State& state) {
  std::vector<std::byte> data(1448, std::byte{0xa5});
  for (auto _ : state) {
    Checksum c;
    c.add(data);
    benchmark::DoNotOptimize(c.fold());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 1448);
}
BENCHMARK(BM_Checksum1448);

}  // namespace

BENCHMARK_MAIN();
