// Stack = NetIf (Ethernet, ARP, IPv4, ICMP) + TcpLayer, wired both ways: NetIf hands TCP packets
// up through TransportRx, TCP sends down through NetIf's Ipv4Output.
#include "stack/stack.hh"

#include <algorithm>
#include <cstring>
#include <vector>

#include "stack/net/ipv4.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno {

namespace {

/// Local delivery: TCP packets to our own address never reach the wire (as Linux routes them over
/// `lo`); they are queued here and handed back up by Stack::poll(). Two applications on one engine
/// can so talk to each other. Buffers are reused: after warm-up nothing is allocated.
class LocalOutput final : public Ipv4Output {
 public:
  explicit LocalOutput(net::NetIf& netif) : netif_(netif) {}

  MutByteSpan ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) override {
    if (dst != netif_.local_addr()) {
      local_open_ = false;
      return netif_.ip_begin(dst, proto, l4_len);
    }
    if (l4_len > max_l4_len() || queued_ >= kMaxQueued) return {};
    if (queued_ == queue_.size()) queue_.emplace_back();
    Packet& p = queue_[queued_];
    p.bytes.resize(l4_len);
    p.proto = proto;
    local_open_ = true;
    return p.bytes;
  }
  void ip_commit(bool l4_checksum_offload) override {
    if (!local_open_) {
      netif_.ip_commit(l4_checksum_offload);
      return;
    }
    local_open_ = false;
    ++queued_;
  }
  void ip_abort() override {
    if (!local_open_) {
      netif_.ip_abort();
      return;
    }
    local_open_ = false;
  }
  [[nodiscard]] Ipv4Addr local_addr() const override { return netif_.local_addr(); }
  [[nodiscard]] std::size_t max_l4_len() const override { return netif_.max_l4_len(); }
  [[nodiscard]] bool tcp_checksum_offload() const override { return netif_.tcp_checksum_offload(); }

  [[nodiscard]] bool pending() const { return queued_ > 0; }

  /// Hands every queued packet to `rx` (packets they cause are queued for the next round).
  template <typename Rx>
  void deliver(Rx&& rx) {
    const std::size_t n = queued_;
    // Swap the batch out so sends during delivery queue behind it.
    batch_.swap(queue_);
    queued_ = 0;
    for (std::size_t k = 0; k < n; ++k) rx(batch_[k]);
  }

  struct Packet {
    std::vector<std::byte> bytes;
    std::uint8_t proto = 0;
  };

 private:
  static constexpr std::size_t kMaxQueued = 4096;
  net::NetIf& netif_;
  std::vector<Packet> queue_, batch_;
  std::size_t queued_ = 0;
  bool local_open_ = false;
};

}  // namespace

struct Stack::Impl final : net::TransportRx {
  Impl(const StackConfig& c, FrameSink& sink, Instant now)
      : cfg(c), netif(cfg, sink, counters, now), local(netif), tcp(cfg.tcp, local, counters, cfg.secret, now) {
    netif.set_transport(this);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { netif.set_transport(nullptr); }

  void on_ipv4(const Ipv4RxInfo& info, ByteSpan l4, Instant now) override { tcp.on_segment(info, l4, now); }

  /// Delivers locally addressed packets, and what answering them sends, until none is left (bounded).
  void deliver_local(Instant now) {
    for (int round = 0; round < 64 && local.pending(); ++round) {
      local.deliver([&](const LocalOutput::Packet& p) {
        counters.inc(Counter::ip_tx);
        counters.inc(Counter::ip_rx);
        if (p.proto != kIpProtoTcp) return;
        // The checksum is not computed for a packet that never leaves memory (as on Linux's lo).
        const Ipv4Addr self = netif.local_addr();
        tcp.on_segment(Ipv4RxInfo{.src = self, .dst = self, .ttl = 64, .tos = 0, .l4_checksum_good = true}, p.bytes,
                       now);
      });
      tcp.poll(now);
    }
  }

  // Declaration order is construction order: counters before the layers that count into them,
  // NetIf before the TcpLayer that sends through it.
  StackConfig cfg;
  Counters counters;
  net::NetIf netif;
  LocalOutput local;
  tcp::TcpLayer tcp;
};

Stack::Stack(const StackConfig& cfg, FrameSink& sink, Instant now) : impl_(std::make_unique<Impl>(cfg, sink, now)) {}

Stack::~Stack() = default;

void Stack::announce() { impl_->netif.announce(); }

void Stack::on_frame(ByteSpan frame, Instant now, const RxMeta& meta) { impl_->netif.on_frame(frame, now, meta); }

Instant Stack::poll(Instant now) {
  impl_->netif.poll(now);
  impl_->tcp.poll(now);
  impl_->deliver_local(now);
  return next_deadline();
}

Instant Stack::next_deadline() const {
  if (impl_->local.pending()) return Instant{};  // locally addressed packets wait for the next poll()
  return std::min(impl_->netif.next_deadline(), impl_->tcp.next_deadline());
}

tcp::TcpLayer& Stack::tcp() { return impl_->tcp; }
const tcp::TcpLayer& Stack::tcp() const { return impl_->tcp; }

const Counters& Stack::counters() const { return impl_->counters; }
const StackConfig& Stack::config() const { return impl_->cfg; }

}  // namespace pno
