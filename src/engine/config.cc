// Checks and translations of pno-engine's options, in the order the command line is reported on:
// addresses, port, client, services, PCIe model, TCP.
#include "engine/config.hh"

#include <charconv>
#include <cstdio>
#include <sstream>
#include <vector>

namespace pno::engine {
namespace {

std::optional<Endpoint> parse_endpoint(std::string_view s) {
  const auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto addr = Ipv4Addr::parse(s.substr(0, colon));
  unsigned port = 0;
  auto ps = s.substr(colon + 1);
  auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
  if (!addr || ec != std::errc{} || p != ps.data() + ps.size() || port == 0 || port > 65535) return std::nullopt;
  return Endpoint{*addr, static_cast<std::uint16_t>(port)};
}

std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool addresses(const Options& o, EngineConfig& c, std::string& err) {
  const auto addr = Ipv4Cidr::parse(o.ip);
  if (!addr) {
    err = "--ip: '" + o.ip + "' is not an address/prefix like 198.18.0.1/24";
    return false;
  }
  c.addr = *addr;
  if (!o.gateway.empty()) {
    c.gateway = Ipv4Addr::parse(o.gateway);
    if (!c.gateway) {
      err = "--gateway: '" + o.gateway + "' is not an IPv4 address";
      return false;
    }
    if (!addr->contains(*c.gateway)) {
      err = "--gateway " + o.gateway + " is not on the subnet of --ip";
      return false;
    }
  }
  if (!o.mac.empty()) {
    c.mac = MacAddr::parse(o.mac);
    if (!c.mac || c.mac->is_multicast() || c.mac->is_zero()) {
      err = "--mac: '" + o.mac + "' is not a unicast MAC";
      return false;
    }
  }
  return true;
}

bool port_driver(const Options& o, EngineConfig& c, std::string& err) {
  if (o.pmd == "af_xdp") c.pmd = Pmd::af_xdp;
  if (o.pmd == "af_packet") c.pmd = Pmd::af_packet;
  if (o.pmd == "eal") c.pmd = Pmd::eal;
  if (c.pmd != Pmd::eal && o.iface.empty()) {
    err = "--iface is required (or --pmd eal with --eal)";
    return false;
  }
  if (c.pmd == Pmd::eal && o.eal.empty()) {
    err = "--pmd eal needs --eal with a device";
    return false;
  }
  return true;
}

bool client(const Options& o, EngineConfig& c, std::string& err) {
  if (o.connect.empty()) {
    if (o.client_sizing_given) {
      err = "--send-bytes/--recv-bytes/--conns need --connect";
      return false;
    }
    return true;
  }
  ClientConfig cc;
  auto ep = parse_endpoint(o.connect);
  if (!ep) {
    err = "--connect: '" + o.connect + "' is not IP:PORT";
    return false;
  }
  cc.remote = *ep;
  cc.conns = o.conns;
  cc.keepalive = o.keepalive;
  auto sb = parse_size(o.send_bytes);
  if (!sb) {
    err = "--send-bytes: '" + o.send_bytes + "' is not a size";
    return false;
  }
  cc.send_bytes = *sb;
  if (!o.recv_bytes.empty()) {
    auto rb = parse_size(o.recv_bytes);
    if (!rb) {
      err = "--recv-bytes: '" + o.recv_bytes + "' is not a size";
      return false;
    }
    cc.recv_bytes = *rb;
  }
  cc.seed = o.seed;
  cc.shutdown_after_send = !o.no_shutdown;
  cc.timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(o.client_timeout_s));
  cc.per_conn_lines = o.client_per_conn;
  c.client = cc;
  return true;
}

bool services(const Options& o, const EngineConfig& c, std::string& err) {
  if (!o.echo && !o.discard && !c.client && o.host_socket.empty()) {
    std::fprintf(stderr, "pno-engine: note: no service enabled (--echo, --discard, --connect): ARP and ping only\n");
  }
  if (o.echo && o.discard && o.echo_port == o.discard_port) {
    err = "--echo-port equals --discard-port";
    return false;
  }
  if (o.dma_latency_ns == 0 && o.dma_tuning_given) {
    std::fprintf(stderr, "pno-engine: note: --dma-gbps/--dma-batch have no effect without --dma-latency-ns\n");
  }
  if (o.dma_latency_ns > 0 && o.host_socket.empty()) {
    std::fprintf(stderr, "pno-engine: note: the PCIe model charges the host service only (--host-socket)\n");
  }
  return true;
}

bool tcp(const Options& o, EngineConfig& c, std::string& err) {
  TcpConfig& tcp = c.tcp;
  tcp = o.tcp;
  tcp.msl = std::chrono::milliseconds(o.msl_ms);
  tcp.rto_min = std::chrono::milliseconds(o.rto_min_ms);
  tcp.rto_initial = std::chrono::milliseconds(o.rto_initial_ms);
  tcp.rto_max = std::chrono::milliseconds(o.rto_max_ms);
  tcp.delayed_ack = std::chrono::milliseconds(o.delack_ms);
  tcp.keepalive_idle = std::chrono::seconds(o.keep_idle_s);
  tcp.keepalive_intvl = std::chrono::seconds(o.keep_intvl_s);
  tcp.congestion = o.cc == "newreno" ? CongestionAlgo::new_reno : CongestionAlgo::cubic;
  if (tcp.rto_min > tcp.rto_max || tcp.rto_initial > tcp.rto_max) {
    err = "RTO limits inconsistent";
    return false;
  }
  if (o.rcv_budget != "auto") {
    c.rcv_budget_bytes = parse_size(o.rcv_budget);
    if (!c.rcv_budget_bytes) {
      err = "--tcp-rcv-budget: '" + o.rcv_budget + "' is not a size or auto";
      return false;
    }
  }
  if (!o.ephemeral.empty()) {
    unsigned lo = 0, hi = 0;
    char dash = 0;
    std::istringstream in(o.ephemeral);
    if (!(in >> lo >> dash >> hi) || dash != '-' || lo == 0 || lo > hi || hi > 65535) {
      err = "--tcp-ephemeral: '" + o.ephemeral + "' is not LO-HI";
      return false;
    }
    tcp.ephemeral_lo = static_cast<std::uint16_t>(lo);
    tcp.ephemeral_hi = static_cast<std::uint16_t>(hi);
  }
  return true;
}

/// EAL, port and loop: translations only, nothing to reject.
void eal_port_loop(const Options& o, EngineConfig& c) {
  if (o.log_level == "error") c.log = LogLevel::error;
  if (o.log_level == "info") c.log = LogLevel::info;
  if (o.log_level == "debug") c.log = LogLevel::debug;

  EalConfig& ec = c.eal;
  ec.raw_args = split_ws(o.eal);
  ec.huge = o.huge ? HugeMode::huge : (o.no_huge ? HugeMode::no_huge : HugeMode::auto_);
  ec.lcore = o.lcore;
  ec.log_level = c.log == LogLevel::error ? 4 : c.log == LogLevel::warn ? 5 : c.log == LogLevel::info ? 7 : 8;
  ec.vdev_only = c.pmd != Pmd::eal;

  PortConfig& pc = c.port;
  pc.iface = o.iface;
  pc.pmd = c.pmd;
  pc.port_id = o.port_id;
  pc.nb_mbufs = o.mbufs;
  pc.rx_queues = static_cast<std::uint16_t>(o.rx_queues);
  pc.offloads = !o.no_offload;
  pc.promiscuous = c.mac.has_value();
  pc.impair.loss_pct = o.impair_loss;
  pc.impair.reorder_pct = o.impair_reorder;
  pc.impair.reorder_gap = o.impair_reorder_gap;
  pc.impair.dup_pct = o.impair_dup;
  pc.impair.delay = std::chrono::microseconds(o.impair_delay_us);
  pc.impair.jitter = std::chrono::microseconds(o.impair_jitter_us);
  pc.impair.on_rx = o.impair_dir != "tx";
  pc.impair.on_tx = o.impair_dir != "rx";
  pc.impair.seed = o.impair_seed;

  LoopConfig& lc = c.loop;
  lc.busy_poll = o.busy_poll;
  lc.spin_time = std::chrono::microseconds(o.spin_us);
  lc.client_linger = std::chrono::milliseconds(o.client_linger_ms);
  if (o.stats && o.stats_interval_s > 0) {
    lc.stats_interval = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(o.stats_interval_s));
  }
}

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p == s.data()) return std::nullopt;
  std::string_view suf(p, static_cast<std::size_t>(s.data() + s.size() - p));
  std::uint64_t mult = 1;
  if (suf.empty() || suf == "B") {
    mult = 1;
  } else if (suf == "K" || suf == "k" || suf == "KiB") {
    mult = 1ULL << 10;
  } else if (suf == "M" || suf == "MiB") {
    mult = 1ULL << 20;
  } else if (suf == "G" || suf == "GiB") {
    mult = 1ULL << 30;
  } else {
    return std::nullopt;
  }
  if (v > UINT64_MAX / mult) return std::nullopt;
  return v * mult;
}

std::optional<EngineConfig> make_config(const Options& o, std::string& err) {
  EngineConfig c;
  if (!addresses(o, c, err) || !port_driver(o, c, err) || !client(o, c, err) || !services(o, c, err) ||
      !tcp(o, c, err)) {
    return std::nullopt;
  }
  eal_port_loop(o, c);
  return c;
}

bool host_service_config(const Options& o, const Ipv4Cidr& addr, HostServiceConfig& hc, std::string& err) {
  hc.socket_path = o.host_socket;
  hc.geometry.max_sockets = o.host_max_sockets;
  const auto rb = parse_size(o.host_ring_bytes);
  if (!rb || *rb > (1u << 30)) {
    err = "--host-ring-bytes: a size up to 1G";
    return false;
  }
  hc.geometry.stream_ring_bytes = static_cast<std::uint32_t>(*rb);
  hc.addrs = {addr};
  hc.allow_any_uid = o.host_allow_any_uid;
  hc.pcie.latency_ns = o.dma_latency_ns;
  hc.pcie.gbytes_per_s = o.dma_gbps;
  hc.pcie.batching = o.dma_batch == "op" ? channel::DmaBatching::op : channel::DmaBatching::iteration;
  if (hc.pcie.enabled()) {
    std::fprintf(stderr, "pno-engine: PCIe model: %llu ns DMA latency, %.3g GB/s, batch per %s\n",
                 static_cast<unsigned long long>(hc.pcie.latency_ns), hc.pcie.gbytes_per_s, o.dma_batch.c_str());
  }
  channel::contract::RegionHeader probe;
  if (!channel::contract::layout(hc.geometry, probe)) {
    err = "--host-ring-bytes must be a power of two >= 4096";
    return false;
  }
  return true;
}

}  // namespace pno::engine
