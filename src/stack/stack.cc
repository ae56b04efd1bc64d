// Stack = NetIf (Ethernet, ARP, IPv4, ICMP) + TcpLayer, wired both ways: NetIf hands TCP packets
// up through TransportRx, TCP sends down through NetIf's Ipv4Output.
#include "stack/stack.hh"

#include <algorithm>

#include "stack/net/ipv4.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno {

struct Stack::Impl final : net::TransportRx {
  Impl(const StackConfig& c, FrameSink& sink, Instant now)
      : cfg(c), netif(cfg, sink, counters, now), tcp(cfg.tcp, netif, counters, cfg.secret, now) {
    netif.set_transport(this);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { netif.set_transport(nullptr); }

  void on_ipv4(const Ipv4RxInfo& info, ByteSpan l4, Instant now) override { tcp.on_segment(info, l4, now); }

  // Declaration order is construction order: counters before the layers that count into them,
  // NetIf before the TcpLayer that sends through it.
  StackConfig cfg;
  Counters counters;
  net::NetIf netif;
  tcp::TcpLayer tcp;
};

Stack::Stack(const StackConfig& cfg, FrameSink& sink, Instant now) : impl_(std::make_unique<Impl>(cfg, sink, now)) {}

Stack::~Stack() = default;

void Stack::announce() { impl_->netif.announce(); }

void Stack::on_frame(ByteSpan frame, Instant now, const RxMeta& meta) { impl_->netif.on_frame(frame, now, meta); }

Instant Stack::poll(Instant now) {
  impl_->netif.poll(now);
  impl_->tcp.poll(now);
  return next_deadline();
}

Instant Stack::next_deadline() const {
  return std::min(impl_->netif.next_deadline(), impl_->tcp.next_deadline());
}

tcp::TcpLayer& Stack::tcp() { return impl_->tcp; }
const tcp::TcpLayer& Stack::tcp() const { return impl_->tcp; }

const Counters& Stack::counters() const { return impl_->counters; }
const StackConfig& Stack::config() const { return impl_->cfg; }

}  // namespace pno
