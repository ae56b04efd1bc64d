// pno-engine: the network engine process. Parses options, starts EAL and the port, builds one stack
// instance and the requested built-in services, runs the loop, and reports on the way out.
//
// Exit codes: 0 success, 1 runtime failure (start-up, a client connection failed),
//             2 bad arguments, 3 mbuf leak detected with --check-leaks.
#include <CLI/CLI.hpp>
#include <sys/random.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/clock.hh"
#include "engine/loop.hh"
#include "engine/port.hh"
#include "engine/host_service.hh"
#include "engine/services.hh"
#include "engine/stats.hh"
#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"

namespace {

using namespace pno;
using namespace pno::engine;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitLeak = 3;

SignalFlags g_signals;  // the only global: written by signal handlers

void on_stop_signal(int) { g_signals.stop = 1; }
void on_stats_signal(int) { g_signals.dump_stats = 1; }

void install_signals() {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop_signal;  // no SA_RESTART: a sleep ends at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = on_stats_signal;
  sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, nullptr);
}

enum class LogLevel { error, warn, info, debug };

struct Options {
  // port
  std::string iface;
  std::string pmd = "auto";
  std::uint16_t port_id = 0;
  std::string eal;
  unsigned lcore = 0;
  bool huge = false, no_huge = false;
  std::uint32_t mbufs = 16383;
  unsigned rx_queues = 0;
  bool no_offload = false;
  // addresses
  std::string ip, gateway, mac;
  // services
  bool echo = false, discard = false;
  std::uint16_t echo_port = 7, discard_port = 9;
  // host channel (src/channel): unmodified Linux apps through libpno.so
  std::string host_socket;
  std::uint32_t host_max_sockets = 1024;
  std::string host_ring_bytes = "256K";
  bool host_allow_any_uid = false;
  // PCIe cost model on the host service's DmaChannel (src/channel/pcie_model.hh)
  std::uint64_t dma_latency_ns = 0;
  double dma_gbps = 25;
  std::string dma_batch = "iteration";
  // client
  std::string connect;
  std::uint32_t conns = 1;
  std::string send_bytes = "0", recv_bytes;
  std::uint64_t seed = 1;
  bool no_shutdown = false;
  double client_timeout_s = 600;
  bool client_per_conn = false;
  std::uint32_t client_linger_ms = 500;
  // loop
  bool busy_poll = false;
  unsigned spin_us = 50;
  bool keepalive = false;
  // impairment
  double impair_loss = 0, impair_reorder = 0, impair_dup = 0;
  std::uint32_t impair_reorder_gap = 1;
  std::uint64_t impair_delay_us = 0, impair_jitter_us = 0;
  std::string impair_dir = "both";
  std::uint64_t impair_seed = 1;
  // stats
  bool stats = false;
  double stats_interval_s = 1;
  std::string stats_file;
  bool check_leaks = false;
  std::string log_level = "warn";
  std::optional<std::uint64_t> secret;
};

/// "1G", "64K", "1500", "2MiB" -> bytes (binary multiples).
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

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "pno-engine: %s (see --help)\n", msg.c_str());
  return kExitUsage;
}

std::uint64_t random_secret() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) v = 0x6a09e667f3bcc908ULL ^ static_cast<std::uint64_t>(time(nullptr));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  TcpConfig tcp;
  std::uint64_t msl_ms = 30000, rto_min_ms = 200, rto_initial_ms = 1000, rto_max_ms = 120000, delack_ms = 40;
  std::uint64_t keep_idle_s = 7200, keep_intvl_s = 75;
  std::string cc = "cubic", ephemeral;
  std::string rcv_budget = "0";

  CLI::App app{"pno-engine: user-space TCP/IP stack on a DPDK port"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);

  auto* g_port = app.add_option_group("Port");
  g_port->add_option("--iface", o.iface, "kernel interface to attach (af_xdp/af_packet vdev)");
  g_port->add_option("--pmd", o.pmd, "auto (af_xdp, else af_packet) | af_xdp | af_packet | eal (port from --eal)")
      ->check(CLI::IsMember({"auto", "af_xdp", "af_packet", "eal"}));
  g_port->add_option("--port-id", o.port_id, "with --pmd eal: which DPDK port");
  g_port->add_option("--eal", o.eal, "raw EAL arguments, e.g. \"-a 0000:03:00.0\" (added to the defaults)");
  g_port->add_option("--lcore", o.lcore, "lcore (CPU) the engine runs on");
  auto* huge = g_port->add_flag("--huge", o.huge, "force hugepages (--in-memory)");
  g_port->add_flag("--no-huge", o.no_huge, "force no hugepages (--no-huge -m 512)")->excludes(huge);
  g_port->add_option("--mbufs", o.mbufs, "mbufs in the pool")->check(CLI::Range(1024u, 1u << 22));
  g_port->add_option("--rx-queues", o.rx_queues,
                     "af_xdp: rx queues of the interface to poll (default 0: all it has, at most 4)")
      ->check(CLI::Range(0u, unsigned{kMaxRxQueues}));
  g_port->add_flag("--no-offload", o.no_offload, "compute every checksum in software");

  auto* g_addr = app.add_option_group("Addresses");
  g_addr->add_option("--ip", o.ip, "our address and subnet, e.g. 198.18.0.1/24")->required();
  g_addr->add_option("--gateway", o.gateway, "next hop for destinations off the subnet");
  g_addr->add_option("--mac", o.mac, "our MAC (default: the port's)");
  g_addr->add_option("--secret", o.secret, "key for ISNs and SYN cookies (default: random)");

  auto* g_svc = app.add_option_group("Services");
  g_svc->add_flag("--echo", o.echo, "TCP echo server (RFC 862)");
  g_svc->add_option("--echo-port", o.echo_port, "echo port");
  g_svc->add_flag("--discard", o.discard, "TCP discard server (RFC 863)");
  g_svc->add_option("--discard-port", o.discard_port, "discard port");
  g_svc->add_option("--host-socket", o.host_socket,
                    "serve host processes (libpno.so) attaching at this Unix socket path, e.g. /run/pno/engine.sock");
  g_svc->add_option("--host-max-sockets", o.host_max_sockets, "socket slots per attached process family")
      ->check(CLI::Range(1u, 65534u));
  g_svc->add_option("--host-ring-bytes", o.host_ring_bytes, "per-socket send and receive ring size (power of two)");
  g_svc->add_flag("--host-allow-any-uid", o.host_allow_any_uid, "let processes of any uid attach (default: ours and root)");
  g_svc->add_flag("--keepalive", o.keepalive,
                  "SO_KEEPALIVE on service and client connections (timing: --tcp-keepalive-*)");

  auto* g_dma = app.add_option_group("PCIe model (host service; off by default)");
  g_dma->add_option("--dma-latency-ns", o.dma_latency_ns,
                    "charge every DMA batch this completion latency (0: model off; BlueField ~1000-2000)");
  g_dma->add_option("--dma-gbps", o.dma_gbps, "link bandwidth in GB/s (10^9 bytes/s) once the model is on")
      ->check(CLI::PositiveNumber);
  g_dma->add_option("--dma-batch", o.dma_batch,
                    "iteration: one loop iteration's reads are one round trip | op: every read is its own")
      ->check(CLI::IsMember({"iteration", "op"}));

  auto* g_cli = app.add_option_group("Client (engine connects to a server, then exits)");
  g_cli->add_option("--connect", o.connect, "server IP:PORT");
  g_cli->add_option("--conns", o.conns, "concurrent connections")->check(CLI::Range(1u, 1000000u));
  g_cli->add_option("--send-bytes", o.send_bytes, "bytes to send per connection (K/M/G suffixes)");
  g_cli->add_option("--recv-bytes", o.recv_bytes, "bytes to read per connection (default: until EOF)");
  g_cli->add_option("--seed", o.seed, "data seed; connection i sends splitmix64 stream seed+i");
  g_cli->add_flag("--no-shutdown", o.no_shutdown, "do not half-close after sending");
  g_cli->add_option("--client-timeout", o.client_timeout_s, "seconds before unfinished connections fail");
  g_cli->add_flag("--client-per-conn", o.client_per_conn, "print one line per connection even when many");
  g_cli->add_option("--client-linger-ms", o.client_linger_ms, "keep running after the last connection finished");

  auto* g_loop = app.add_option_group("Loop");
  g_loop->add_flag("--busy-poll", o.busy_poll, "never sleep when idle");
  g_loop->add_option("--spin-us", o.spin_us, "idle spin before sleeping, in microseconds")
      ->check(CLI::Range(0u, 1'000'000u));

  auto* g_imp = app.add_option_group("Impairment (tests only; off by default)");
  g_imp->add_option("--impair-loss", o.impair_loss, "drop PCT % of frames")->check(CLI::Range(0.0, 100.0));
  g_imp->add_option("--impair-reorder", o.impair_reorder, "hold back PCT % of frames behind later ones")
      ->check(CLI::Range(0.0, 100.0));
  g_imp->add_option("--impair-reorder-gap", o.impair_reorder_gap, "frames that overtake a held one")
      ->check(CLI::Range(1u, 1000u));
  g_imp->add_option("--impair-dup", o.impair_dup, "duplicate PCT % of frames")->check(CLI::Range(0.0, 100.0));
  g_imp->add_option("--impair-delay", o.impair_delay_us, "delay every frame by USEC");
  g_imp->add_option("--impair-jitter", o.impair_jitter_us, "plus uniform 0..USEC (order kept)");
  g_imp->add_option("--impair-dir", o.impair_dir, "rx | tx | both")->check(CLI::IsMember({"rx", "tx", "both"}));
  g_imp->add_option("--impair-seed", o.impair_seed, "random seed (runs are repeatable)");

  auto* g_st = app.add_option_group("Statistics");
  g_st->add_flag("--stats", o.stats, "print counters periodically, on SIGUSR1 and at exit");
  g_st->add_option("--stats-interval", o.stats_interval_s, "seconds between --stats lines (0: exit only)");
  g_st->add_option("--stats-file", o.stats_file, "write every counter as key=value at exit");
  g_st->add_flag("--check-leaks", o.check_leaks, "exit 3 if mbufs did not all return to the pool");
  g_st->add_option("--log-level", o.log_level, "error | warn | info | debug")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

  auto* g_tcp = app.add_option_group("TCP");
  g_tcp->add_option("--tcp-msl-ms", msl_ms, "MSL; TIME_WAIT lasts 2*MSL");
  g_tcp->add_option("--tcp-rto-min-ms", rto_min_ms, "minimum RTO");
  g_tcp->add_option("--tcp-rto-initial-ms", rto_initial_ms, "initial RTO (RFC 6298)");
  g_tcp->add_option("--tcp-rto-max-ms", rto_max_ms, "maximum RTO");
  g_tcp->add_option("--tcp-delayed-ack-ms", delack_ms, "delayed ACK timeout");
  g_tcp->add_option("--tcp-cc", cc, "congestion control")->check(CLI::IsMember({"cubic", "newreno"}));
  g_tcp->add_option("--tcp-syn-cookies", tcp.syn_cookies, "SYN cookies when the SYN queue is full");
  g_tcp->add_option("--tcp-timestamps", tcp.timestamps, "RFC 7323 timestamps");
  g_tcp->add_option("--tcp-sack", tcp.sack, "RFC 2018 SACK");
  g_tcp->add_option("--tcp-window-scaling", tcp.window_scaling, "RFC 7323 window scaling");
  g_tcp->add_option("--tcp-rcvbuf", tcp.rcvbuf_initial, "initial receive buffer (bytes)");
  g_tcp->add_option("--tcp-rcvbuf-max", tcp.rcvbuf_max, "receive buffer auto-tuning limit");
  g_tcp->add_option("--tcp-rcv-budget", rcv_budget,
                    "open receive windows summed over connections, while more than one receives: "
                    "bytes (K/M suffixes), 0 = no limit, auto = half of what the port's rx buffers hold");
  g_tcp->add_option("--tcp-rcv-budget-floor-segs", tcp.rcv_budget_floor_segs,
                    "segments every connection may open whatever the budget")
      ->check(CLI::Range(1u, 1024u));
  g_tcp->add_option("--tcp-sndbuf", tcp.sndbuf_initial, "initial send buffer (bytes)");
  g_tcp->add_option("--tcp-sndbuf-max", tcp.sndbuf_max, "send buffer limit");
  g_tcp->add_option("--tcp-max-sockets", tcp.max_sockets, "socket table size");
  g_tcp->add_option("--tcp-syn-backlog", tcp.syn_backlog, "SYN queue per listener");
  g_tcp->add_option("--tcp-syn-retries", tcp.syn_retries, "SYN retransmissions");
  g_tcp->add_option("--tcp-synack-retries", tcp.synack_retries, "SYN-ACK retransmissions");
  g_tcp->add_option("--tcp-retries2", tcp.retries2, "retransmissions before a connection is dropped");
  g_tcp->add_option("--tcp-keepalive-idle-s", keep_idle_s, "keepalive idle time");
  g_tcp->add_option("--tcp-keepalive-intvl-s", keep_intvl_s, "keepalive probe interval");
  g_tcp->add_option("--tcp-keepalive-probes", tcp.keepalive_probes, "keepalive probes");
  g_tcp->add_option("--tcp-ephemeral", ephemeral, "ephemeral port range LO-HI");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what());
  }

  // ---- validate and translate
  const auto addr = Ipv4Cidr::parse(o.ip);
  if (!addr) return usage_error("--ip: '" + o.ip + "' is not an address/prefix like 198.18.0.1/24");
  std::optional<Ipv4Addr> gateway;
  if (!o.gateway.empty()) {
    gateway = Ipv4Addr::parse(o.gateway);
    if (!gateway) return usage_error("--gateway: '" + o.gateway + "' is not an IPv4 address");
    if (!addr->contains(*gateway)) return usage_error("--gateway " + o.gateway + " is not on the subnet of --ip");
  }
  std::optional<MacAddr> mac;
  if (!o.mac.empty()) {
    mac = MacAddr::parse(o.mac);
    if (!mac || mac->is_multicast() || mac->is_zero()) return usage_error("--mac: '" + o.mac + "' is not a unicast MAC");
  }
  Pmd pmd = Pmd::auto_;
  if (o.pmd == "af_xdp") pmd = Pmd::af_xdp;
  if (o.pmd == "af_packet") pmd = Pmd::af_packet;
  if (o.pmd == "eal") pmd = Pmd::eal;
  if (pmd != Pmd::eal && o.iface.empty()) return usage_error("--iface is required (or --pmd eal with --eal)");
  if (pmd == Pmd::eal && o.eal.empty()) return usage_error("--pmd eal needs --eal with a device");

  std::optional<ClientConfig> client;
  if (!o.connect.empty()) {
    ClientConfig c;
    auto ep = parse_endpoint(o.connect);
    if (!ep) return usage_error("--connect: '" + o.connect + "' is not IP:PORT");
    c.remote = *ep;
    c.conns = o.conns;
    c.keepalive = o.keepalive;
    auto sb = parse_size(o.send_bytes);
    if (!sb) return usage_error("--send-bytes: '" + o.send_bytes + "' is not a size");
    c.send_bytes = *sb;
    if (!o.recv_bytes.empty()) {
      auto rb = parse_size(o.recv_bytes);
      if (!rb) return usage_error("--recv-bytes: '" + o.recv_bytes + "' is not a size");
      c.recv_bytes = *rb;
    }
    c.seed = o.seed;
    c.shutdown_after_send = !o.no_shutdown;
    c.timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(o.client_timeout_s));
    c.per_conn_lines = o.client_per_conn;
    client = c;
  } else if (app.count("--send-bytes") + app.count("--recv-bytes") + app.count("--conns") > 0) {
    return usage_error("--send-bytes/--recv-bytes/--conns need --connect");
  }
  if (!o.echo && !o.discard && !client && o.host_socket.empty()) {
    std::fprintf(stderr, "pno-engine: note: no service enabled (--echo, --discard, --connect): ARP and ping only\n");
  }
  if (o.echo && o.discard && o.echo_port == o.discard_port) return usage_error("--echo-port equals --discard-port");
  if (o.dma_latency_ns == 0 && app.count("--dma-gbps") + app.count("--dma-batch") > 0) {
    std::fprintf(stderr, "pno-engine: note: --dma-gbps/--dma-batch have no effect without --dma-latency-ns\n");
  }
  if (o.dma_latency_ns > 0 && o.host_socket.empty()) {
    std::fprintf(stderr, "pno-engine: note: the PCIe model charges the host service only (--host-socket)\n");
  }

  tcp.msl = std::chrono::milliseconds(msl_ms);
  tcp.rto_min = std::chrono::milliseconds(rto_min_ms);
  tcp.rto_initial = std::chrono::milliseconds(rto_initial_ms);
  tcp.rto_max = std::chrono::milliseconds(rto_max_ms);
  tcp.delayed_ack = std::chrono::milliseconds(delack_ms);
  tcp.keepalive_idle = std::chrono::seconds(keep_idle_s);
  tcp.keepalive_intvl = std::chrono::seconds(keep_intvl_s);
  tcp.congestion = cc == "newreno" ? CongestionAlgo::new_reno : CongestionAlgo::cubic;
  if (tcp.rto_min > tcp.rto_max || tcp.rto_initial > tcp.rto_max) return usage_error("RTO limits inconsistent");
  std::optional<std::uint64_t> rcv_budget_bytes;  // unset: auto, from the port
  if (rcv_budget != "auto") {
    rcv_budget_bytes = parse_size(rcv_budget);
    if (!rcv_budget_bytes) return usage_error("--tcp-rcv-budget: '" + rcv_budget + "' is not a size or auto");
  }
  if (!ephemeral.empty()) {
    unsigned lo = 0, hi = 0;
    char dash = 0;
    std::istringstream in(ephemeral);
    if (!(in >> lo >> dash >> hi) || dash != '-' || lo == 0 || lo > hi || hi > 65535) {
      return usage_error("--tcp-ephemeral: '" + ephemeral + "' is not LO-HI");
    }
    tcp.ephemeral_lo = static_cast<std::uint16_t>(lo);
    tcp.ephemeral_hi = static_cast<std::uint16_t>(hi);
  }

  LogLevel log = LogLevel::warn;
  if (o.log_level == "error") log = LogLevel::error;
  if (o.log_level == "info") log = LogLevel::info;
  if (o.log_level == "debug") log = LogLevel::debug;

  EalConfig ec;
  ec.raw_args = split_ws(o.eal);
  ec.huge = o.huge ? HugeMode::huge : (o.no_huge ? HugeMode::no_huge : HugeMode::auto_);
  ec.lcore = o.lcore;
  ec.log_level = log == LogLevel::error ? 4 : log == LogLevel::warn ? 5 : log == LogLevel::info ? 7 : 8;
  ec.vdev_only = pmd != Pmd::eal;

  PortConfig pc;
  pc.iface = o.iface;
  pc.pmd = pmd;
  pc.port_id = o.port_id;
  pc.nb_mbufs = o.mbufs;
  pc.rx_queues = static_cast<std::uint16_t>(o.rx_queues);
  pc.offloads = !o.no_offload;
  pc.promiscuous = mac.has_value();
  pc.impair.loss_pct = o.impair_loss;
  pc.impair.reorder_pct = o.impair_reorder;
  pc.impair.reorder_gap = o.impair_reorder_gap;
  pc.impair.dup_pct = o.impair_dup;
  pc.impair.delay = std::chrono::microseconds(o.impair_delay_us);
  pc.impair.jitter = std::chrono::microseconds(o.impair_jitter_us);
  pc.impair.on_rx = o.impair_dir != "tx";
  pc.impair.on_tx = o.impair_dir != "rx";
  pc.impair.seed = o.impair_seed;

  if (pmd != Pmd::eal) {
    // Checked before EAL starts so a missing or down interface is reported plainly and at once.
    std::string warn;
    const std::string e = check_kernel_iface(o.iface, pmd, warn);
    if (!e.empty()) {
      std::fprintf(stderr, "pno-engine: %s\n", e.c_str());
      return kExitFailure;
    }
  }

  install_signals();

  // ---- start
  std::string err;
  auto eal = Eal::init(ec, err);
  if (!eal) {
    std::fprintf(stderr, "pno-engine: %s\n", err.c_str());
    return kExitFailure;
  }
  if (log >= LogLevel::info) {
    std::string joined;
    for (const auto& a : eal->args()) joined += " " + a;
    std::fprintf(stderr, "pno-engine: EAL args:%s\n", joined.c_str());
  }
  EngineCounters ecounters;
  auto port = Port::open(pc, ecounters, err);
  if (!port) {
    std::fprintf(stderr, "pno-engine: cannot open the port: %s\n", err.c_str());
    return kExitFailure;
  }
  const TscClock clock;

  StackConfig sc;
  sc.mac = mac.value_or(port->mac());
  sc.addr = *addr;
  sc.gateway = gateway;
  sc.caps = port->caps();
  // The receive budget: what the port can hold while the engine is not running (its rx buffers
  // times a full segment), halved because not every frame the peers send is a full segment
  // (ACKs for what we send, requests smaller than a segment).
  const std::uint32_t seg = sc.caps.mtu > 52 ? sc.caps.mtu - 52u : 536u;  // IPv4 + TCP + timestamps
  tcp.rcv_budget = rcv_budget_bytes.value_or(std::uint64_t{port->rx_buffers()} * seg / 2);
  if (log >= LogLevel::info) {
    std::fprintf(stderr, "pno-engine: receive budget %llu bytes (port rx buffers %u, %u-byte segments)\n",
                 static_cast<unsigned long long>(tcp.rcv_budget), port->rx_buffers(), seg);
  }
  sc.tcp = tcp;
  sc.secret = o.secret.value_or(random_secret());

  int rc = 0;
  Counters final_stack_counters;
  std::size_t final_sockets = 0;
  {
    Stack stack(sc, *port, clock.now());
    Services services;
    if (o.echo) services.add(std::make_unique<StreamServer>(StreamServer::Mode::echo, o.echo_port, ecounters, o.keepalive));
    if (o.discard) {
      services.add(std::make_unique<StreamServer>(StreamServer::Mode::discard, o.discard_port, ecounters,
                                                   o.keepalive));
    }

    HostService* host = nullptr;
    if (!o.host_socket.empty()) {
      HostServiceConfig hc;
      hc.socket_path = o.host_socket;
      hc.geometry.max_sockets = o.host_max_sockets;
      const auto rb = parse_size(o.host_ring_bytes);
      if (!rb || *rb > (1u << 30)) return usage_error("--host-ring-bytes: a size up to 1G");
      hc.geometry.stream_ring_bytes = static_cast<std::uint32_t>(*rb);
      hc.addrs = {sc.addr};
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
        return usage_error("--host-ring-bytes must be a power of two >= 4096");
      }
      auto hs = std::make_unique<HostService>(hc);
      host = hs.get();
      services.add(std::move(hs));
    }

    stack.announce();
    port->flush(clock.now());
    std::string failed;
    if (Errc e = services.start(stack.tcp(), clock.now(), failed); e != Errc::ok) {
      std::fprintf(stderr, "pno-engine: cannot start the %s service: %s\n", failed.c_str(),
                   std::strerror(to_errno(e)));
      return kExitFailure;
    }
    const std::string where = pmd == Pmd::eal ? port->name() : o.iface;
    std::printf("pno-engine: ready on %s %s mac %s mtu %u driver %s%s%s%s%s\n", where.c_str(), o.ip.c_str(),
                sc.mac.str().c_str(), static_cast<unsigned>(sc.caps.mtu), port->driver().c_str(),
                eal->hugepages() ? " hugepages" : " no-huge", o.echo ? " echo" : "",
                o.discard ? (host != nullptr ? " discard host" : " discard") : (host != nullptr ? " host" : ""),
                client ? " client" : "");
    if (!port->link_up()) std::printf("pno-engine: warning: link is down\n");
    std::fflush(stdout);
    // The client starts after the ready line so a test watching for it sees the whole transfer.
    if (client) {
      auto bc = std::make_unique<BulkClient>(*client, ecounters);
      if (Errc e = bc->start(stack.tcp(), clock.now()); e != Errc::ok) {
        std::fprintf(stderr, "pno-engine: client: %s\n", std::strerror(to_errno(e)));
        return kExitFailure;
      }
      services.add(std::move(bc));
      services.set_has_client(true);
    }

    // The host service keeps its DMA figures itself; they join the engine counters when printed.
    auto copy_dma = [&]() {
      ecounters.set(EngineCounter::port_rx_missed, port->rx_missed());
      const Port::XskDrops xd = port->xsk_drops();
      ecounters.set(EngineCounter::port_rx_xsk_ring_full, xd.rx_ring_full);
      ecounters.set(EngineCounter::port_rx_xsk_fill_empty, xd.fill_ring_empty);
      if (host == nullptr) return;
      const auto d = host->dma_stats();
      const auto& p = host->pcie_stats();
      ecounters.set(EngineCounter::host_doorbells, host->stats().doorbells);
      ecounters.set(EngineCounter::host_wakeups, host->stats().wakeups);
      ecounters.set(EngineCounter::dma_read_ops, d.read_ops);
      ecounters.set(EngineCounter::dma_read_bytes, d.read_bytes);
      ecounters.set(EngineCounter::dma_write_ops, d.write_ops);
      ecounters.set(EngineCounter::dma_write_bytes, d.write_bytes);
      ecounters.set(EngineCounter::dma_read_batches, p.read_batches);
      ecounters.set(EngineCounter::dma_write_batches, p.write_batches);
      ecounters.set(EngineCounter::dma_stall_ns, p.stall_ns);
    };
    auto snapshot = [&]() {
      copy_dma();
      StatsSnapshot s;
      s.stack = &stack.counters();
      s.engine = &ecounters;
      s.mbufs = port->mbuf_stats();
      s.tcp_sockets = stack.tcp().socket_count();
      return s;
    };
    LoopConfig lc;
    lc.busy_poll = o.busy_poll;
    lc.spin_time = std::chrono::microseconds(o.spin_us);
    lc.client_linger = std::chrono::milliseconds(o.client_linger_ms);
    if (o.stats && o.stats_interval_s > 0) {
      lc.stats_interval = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(o.stats_interval_s));
    }
    Loop loop(lc, *port, stack, services, clock, ecounters, g_signals, [&](const char* why) {
      if (o.stats) print_stats_line(stdout, (std::string("pno-stats: why=") + why).c_str(), snapshot());
      // On request (SIGUSR1) the host sockets too: what a stuck host process waits for.
      if (host != nullptr && std::strcmp(why, "signal") == 0) {
        host->dump(stdout);
        std::fflush(stdout);
      }
    });
    if (host != nullptr) loop.set_idle_wake(host);
    loop.run();

    rc = services.finish(stack.tcp(), clock.now());
    copy_dma();
    stack.poll(clock.now());
    port->flush(clock.now());
    final_stack_counters = stack.counters();
    final_sockets = stack.tcp().socket_count();
  }  // the stack goes before the port it writes into

  port->close();
  StatsSnapshot s;
  s.stack = &final_stack_counters;
  s.engine = &ecounters;
  s.mbufs = port->mbuf_stats();
  s.tcp_sockets = final_sockets;
  if (o.stats) print_stats_line(stdout, "pno-stats: why=exit", s);
  if (!o.stats_file.empty() && !write_stats_file(o.stats_file, s)) {
    std::fprintf(stderr, "pno-engine: cannot write %s: %s\n", o.stats_file.c_str(), std::strerror(errno));
    rc = std::max(rc, kExitFailure);
  }
  // A leak: the engine still holds mbufs, or fewer came back to the pool than were there once the
  // port had started (what the PMD reserved for its rings at start is its own, not a leak).
  const bool leak = s.mbufs.engine_in_flight != 0 || s.mbufs.leaked() != 0;
  if (o.stats || o.check_leaks || leak) {
    std::printf("pno-engine: mbufs pool=%u pmd_reserved=%lld returned=%u engine_in_flight=%lld leaked=%lld%s\n",
                s.mbufs.pool_size, static_cast<long long>(s.mbufs.pmd_reserved()), s.mbufs.avail_now,
                static_cast<long long>(s.mbufs.engine_in_flight), static_cast<long long>(s.mbufs.leaked()),
                leak ? " LEAK" : " (no leak)");
  }
  std::fflush(stdout);
  port.reset();
  eal.reset();
  if (leak && o.check_leaks) return kExitLeak;
  return rc;
}
