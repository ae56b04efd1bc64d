#include "support/tcp_pair.hh"

#include <gtest/gtest.h>

#include <algorithm>

namespace pno::test {

MutByteSpan TcpPair::Side::ip_begin(Ipv4Addr dst, std::uint8_t, std::size_t l4_len) {
  EXPECT_FALSE(open_);
  EXPECT_LE(l4_len, max_l4_len());
  buf_.assign(l4_len, std::byte{0});
  dst_ = dst;
  open_ = true;
  return buf_;
}

void TcpPair::Side::ip_commit(bool) {
  EXPECT_TRUE(open_);
  open_ = false;
  pair_.transmit(index_, addr_, dst_, std::move(buf_));
  buf_ = {};
}

TcpPair::TcpPair(const TcpConfig& cfg, const LinkConfig& l)
    : a(*this, kLocalIp, 0), b(*this, kPeerIp, 1), link(l), rng_(l.seed) {
  a.tcp = std::make_unique<tcp::TcpLayer>(cfg, a, a.counters, 0x1111, now);
  b.tcp = std::make_unique<tcp::TcpLayer>(cfg, b, b.counters, 0x2222, now);
}

void TcpPair::transmit(int from, Ipv4Addr src, Ipv4Addr dst, Bytes bytes) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (link.loss > 0 && u(rng_) < link.loss) {
    ++dropped;
    return;
  }
  const int to = from ^ 1;
  Instant at = now + link.delay;
  if (link.reorder > 0 && u(rng_) < link.reorder) at += link.reorder_delay;
  if (link.duplicate > 0 && u(rng_) < link.duplicate) in_flight_.push_back({at + std::chrono::microseconds(10), to, src, dst, bytes});
  in_flight_.push_back({at, to, src, dst, std::move(bytes)});
}

bool TcpPair::run(const std::function<bool()>& done, Duration limit, const std::function<void()>& each_step) {
  const Instant end = now + limit;
  while (now <= end) {
    // Deliver what is due, oldest first (stable for equal times: FIFO).
    std::stable_sort(in_flight_.begin(), in_flight_.end(), [](const Packet& x, const Packet& y) { return x.at < y.at; });
    std::size_t n = 0;
    while (n < in_flight_.size() && in_flight_[n].at <= now) ++n;
    std::vector<Packet> due(std::make_move_iterator(in_flight_.begin()), std::make_move_iterator(in_flight_.begin() + static_cast<std::ptrdiff_t>(n)));
    in_flight_.erase(in_flight_.begin(), in_flight_.begin() + static_cast<std::ptrdiff_t>(n));
    for (Packet& p : due) {
      Ipv4RxInfo info;
      info.src = p.src;
      info.dst = p.dst;
      info.ttl = 64;
      (p.to == 0 ? a : b).tcp->on_segment(info, p.bytes, now);
      ++delivered;
    }
    a.tcp->poll(now);
    b.tcp->poll(now);
    if (each_step) each_step();
    a.tcp->poll(now);
    b.tcp->poll(now);
    if (done()) return true;
    Instant next = std::min(a.tcp->next_deadline(), b.tcp->next_deadline());
    for (const Packet& p : in_flight_) next = std::min(next, p.at);
    if (next == kNever) return done();
    now = std::max(next, now + std::chrono::microseconds(1));
  }
  return done();
}

}  // namespace pno::test
