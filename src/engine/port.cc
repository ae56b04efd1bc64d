// Port: the data path and the end of a port: tx frames and bursts (checksum offload flags), rx
// bursts through the impairment stages, mbuf accounting, device statistics, close.
#include "engine/port.hh"

#include <linux/if_xdp.h>
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>

namespace pno::engine {

class Port::TxOps final : public FrameOps {
 public:
  explicit TxOps(Port& p) : p_(p) {}
  void emit(rte_mbuf* m) override { p_.enqueue_tx(m); }
  void drop(rte_mbuf* m) override { p_.free_mbuf(m); }
  rte_mbuf* copy(rte_mbuf* m) override { return p_.copy_mbuf(m); }

 private:
  Port& p_;
};

class Port::RxOps final : public FrameOps {
 public:
  RxOps(Port& p, FrameHandler* h) : p_(p), h_(h) {}
  void emit(rte_mbuf* m) override {
    if (h_ != nullptr) {
      p_.deliver_rx(m, *h_);
    } else {
      p_.free_mbuf(m);
    }
  }
  void drop(rte_mbuf* m) override { p_.free_mbuf(m); }
  rte_mbuf* copy(rte_mbuf* m) override { return p_.copy_mbuf(m); }

 private:
  Port& p_;
  FrameHandler* h_;
};

Port::Port(const PortConfig& cfg, EngineCounters& counters) : cfg_(cfg), counters_(counters) {}

void Port::make_stages() {
  tx_ops_ = std::make_unique<TxOps>(*this);
  if (!cfg_.impair.active()) return;
  if (cfg_.impair.on_rx) {
    rx_impair_ = std::make_unique<ImpairStage>(cfg_.impair, cfg_.impair.seed, ImpairCounterIds::rx(), counters_);
  }
  if (cfg_.impair.on_tx) {
    tx_impair_ = std::make_unique<ImpairStage>(cfg_.impair, cfg_.impair.seed ^ 0x5bd1e995u,
                                               ImpairCounterIds::tx(), counters_);
  }
}

Port::~Port() {
  close();
  if (pool_ != nullptr) rte_mempool_free(pool_);
  for (const RxQueue& r : rxq_) {
    if (r.pool != pool_) rte_mempool_free(r.pool);
  }
}

void Port::free_mbuf(rte_mbuf* m) {
  rte_pktmbuf_free(m);
  counters_.inc(EngineCounter::mbuf_free);
}

rte_mbuf* Port::copy_mbuf(rte_mbuf* m) {
  rte_mbuf* c = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
  if (c != nullptr) counters_.inc(EngineCounter::mbuf_alloc);
  return c;
}

MutByteSpan Port::tx_begin(std::size_t max_len) {
  if (open_ != nullptr) tx_abort();  // a frame left open is given back rather than leaked
  if (max_len > mbuf_room_) {
    counters_.inc(EngineCounter::port_tx_too_long);
    return {};
  }
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (m == nullptr) {
    counters_.inc(EngineCounter::port_tx_no_mbuf);
    return {};
  }
  counters_.inc(EngineCounter::mbuf_alloc);
  open_ = m;
  return {rte_pktmbuf_mtod(m, std::byte*), max_len};
}

void Port::tx_commit(std::size_t len, const TxMeta& meta) {
  rte_mbuf* m = open_;
  if (m == nullptr) return;
  open_ = nullptr;
  m->data_len = static_cast<std::uint16_t>(std::min<std::size_t>(len, mbuf_room_));
  m->pkt_len = m->data_len;
  if (meta.ipv4_checksum || meta.tcp_checksum) {
    m->l2_len = meta.l2_len;
    m->l3_len = meta.l3_len;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4;
    if (meta.ipv4_checksum) m->ol_flags |= RTE_MBUF_F_TX_IP_CKSUM;
    if (meta.tcp_checksum) m->ol_flags |= RTE_MBUF_F_TX_TCP_CKSUM;
  }
  if (tx_impair_) {
    tx_impair_->push(m, now_, *tx_ops_);
  } else {
    enqueue_tx(m);
  }
}

void Port::tx_abort() {
  if (open_ == nullptr) return;
  free_mbuf(open_);
  open_ = nullptr;
}

void Port::enqueue_tx(rte_mbuf* m) {
  tx_pending_[tx_count_++] = m;
  if (tx_count_ == kBurst) send_burst();
}

void Port::send_burst() {
  // A full ring usually drains within a few attempts (af_xdp reaps completions inside tx_burst);
  // if it stays full the rest is dropped and counted, and TCP retransmits.
  constexpr int kMaxStalls = 64;
  std::uint16_t sent = 0;
  int stalls = 0;
  while (sent < tx_count_) {
    const std::uint16_t k = rte_eth_tx_burst(port_id_, 0, tx_pending_.data() + sent, tx_count_ - sent);
    sent += k;
    if (k == 0 && ++stalls > kMaxStalls) break;
  }
  counters_.inc(EngineCounter::mbuf_tx, sent);
  counters_.inc(EngineCounter::port_tx_frames, sent);
  tx_sent_in_flush_ += sent;
  for (std::uint16_t i = sent; i < tx_count_; ++i) {
    counters_.inc(EngineCounter::port_tx_drop_full);
    free_mbuf(tx_pending_[i]);
  }
  tx_count_ = 0;
}

void Port::deliver_rx(rte_mbuf* m, FrameHandler& h) {
  if (m->nb_segs != 1) {
    counters_.inc(EngineCounter::port_rx_drop_multiseg);
  } else {
    RxMeta meta;
    if (rx_csum_) {
      meta.ipv4_checksum_good = (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
      meta.l4_checksum_good = (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD;
    }
    h.on_frame({rte_pktmbuf_mtod(m, const std::byte*), m->data_len}, meta);
  }
  // The stack copied what it keeps: the mbuf goes straight back to the pool.
  free_mbuf(m);
}

std::size_t Port::poll_rx(Instant now, FrameHandler& h) {
  std::array<rte_mbuf*, kBurst> burst;
  std::size_t total = 0;
  for (const RxQueue& r : rxq_) total += poll_rx_queue(r.port, now, h, burst);
  return total;
}

std::size_t Port::poll_rx_queue(std::uint16_t port, Instant now, FrameHandler& h,
                                std::array<rte_mbuf*, kBurst>& burst) {
  const std::uint16_t n = rte_eth_rx_burst(port, 0, burst.data(), kBurst);
  counters_.inc(EngineCounter::mbuf_rx, n);
  counters_.inc(EngineCounter::port_rx_frames, n);
  if (rx_impair_) {
    RxOps ops(*this, &h);
    for (std::uint16_t i = 0; i < n; ++i) rx_impair_->push(burst[i], now, ops);
    rx_impair_->poll(now, ops);
  } else {
    for (std::uint16_t i = 0; i < n; ++i) deliver_rx(burst[i], h);
  }
  return n;
}

std::size_t Port::flush(Instant now) {
  now_ = now;
  if (tx_impair_) tx_impair_->poll(now, *tx_ops_);
  if (tx_count_ > 0) send_burst();
  const std::size_t sent = tx_sent_in_flush_;
  tx_sent_in_flush_ = 0;
  return sent;
}

Instant Port::next_timer() const {
  Instant t = kNever;
  if (rx_impair_) t = std::min(t, rx_impair_->next_release());
  if (tx_impair_) t = std::min(t, tx_impair_->next_release());
  return t;
}

bool Port::link_up() const {
  rte_eth_link link{};
  if (rte_eth_link_get_nowait(port_id_, &link) != 0) return false;
  return link.link_status == RTE_ETH_LINK_UP;
}

std::uint64_t Port::rx_missed() const {
  if (closed_) return 0;
  std::uint64_t missed = 0;
  for (const RxQueue& r : rxq_) {
    rte_eth_stats st{};
    if (rte_eth_stats_get(r.port, &st) == 0) missed += st.imissed;
  }
  return missed;
}

Port::XskDrops Port::xsk_drops() const {
  XskDrops d;
  if (closed_ || cfg_.pmd != Pmd::af_xdp) return d;
  for (const int fd : rx_wait_fds_) {
    xdp_statistics xs{};
    socklen_t len = sizeof xs;
    if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, &xs, &len) != 0) continue;
    d.rx_ring_full += xs.rx_ring_full;
    d.fill_ring_empty += xs.rx_fill_ring_empty_descs;
  }
  return d;
}

MbufStats Port::mbuf_stats() const {
  MbufStats s;
  for (const RxQueue& r : rxq_) {
    if (r.pool == nullptr) continue;
    s.pool_size += r.pool->size;
    s.avail_now += rte_mempool_avail_count(r.pool);
  }
  s.avail_at_start = avail_at_start_;
  s.engine_in_flight = static_cast<std::int64_t>(counters_.get(EngineCounter::mbuf_rx) +
                                                 counters_.get(EngineCounter::mbuf_alloc)) -
                       static_cast<std::int64_t>(counters_.get(EngineCounter::mbuf_free) +
                                                 counters_.get(EngineCounter::mbuf_tx));
  return s;
}

void Port::close() {
  if (closed_) return;
  closed_ = true;
  rx_wait_fds_.clear();
  tx_abort();
  RxOps rx_drop(*this, nullptr);
  if (rx_impair_) rx_impair_->drain(rx_drop);
  if (tx_impair_) tx_impair_->drain(*tx_ops_);
  for (std::uint16_t i = 0; i < tx_count_; ++i) free_mbuf(tx_pending_[i]);
  tx_count_ = 0;
  for (RxQueue& r : rxq_) {
    if (r.vdev.empty()) continue;  // this port: below
    if (r.started) rte_eth_dev_stop(r.port);
    r.started = false;
    rte_eth_dev_close(r.port);
    rte_vdev_uninit(r.vdev.c_str());
  }
  if (started_) {
    // Let the PMD reap transmit completions it still holds (af_xdp keeps sent mbufs until then).
    for (int i = 0; i < 4; ++i) {
      rte_eth_tx_done_cleanup(port_id_, 0, 0);
      rte_eth_tx_burst(port_id_, 0, nullptr, 0);
    }
    rte_eth_dev_stop(port_id_);
    started_ = false;
  }
  if (vdev_created_ || pool_ != nullptr) rte_eth_dev_close(port_id_);
  if (vdev_created_) {
    rte_vdev_uninit(name_.c_str());
    vdev_created_ = false;
  }
  // pool_ lives until the destructor so mbuf_stats() can still report what came back.
}

}  // namespace pno::engine
