// pno-engine's options, one CLI11 option group per concern; --help lists them in this order.
#include "engine/options.hh"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "engine/port.hh"

namespace pno::engine {
namespace {

void add_port_options(CLI::App& app, Options& o) {
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
}

void add_service_options(CLI::App& app, Options& o) {
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
}

void add_loop_and_stats_options(CLI::App& app, Options& o) {
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
}

void add_tcp_options(CLI::App& app, Options& o) {
  TcpConfig& tcp = o.tcp;
  auto* g_tcp = app.add_option_group("TCP");
  g_tcp->add_option("--tcp-msl-ms", o.msl_ms, "MSL; TIME_WAIT lasts 2*MSL");
  g_tcp->add_option("--tcp-rto-min-ms", o.rto_min_ms, "minimum RTO");
  g_tcp->add_option("--tcp-rto-initial-ms", o.rto_initial_ms, "initial RTO (RFC 6298)");
  g_tcp->add_option("--tcp-rto-max-ms", o.rto_max_ms, "maximum RTO");
  g_tcp->add_option("--tcp-delayed-ack-ms", o.delack_ms, "delayed ACK timeout");
  g_tcp->add_option("--tcp-cc", o.cc, "congestion control")->check(CLI::IsMember({"cubic", "newreno"}));
  g_tcp->add_option("--tcp-syn-cookies", tcp.syn_cookies, "SYN cookies when the SYN queue is full");
  g_tcp->add_option("--tcp-timestamps", tcp.timestamps, "RFC 7323 timestamps");
  g_tcp->add_option("--tcp-sack", tcp.sack, "RFC 2018 SACK");
  g_tcp->add_option("--tcp-window-scaling", tcp.window_scaling, "RFC 7323 window scaling");
  g_tcp->add_option("--tcp-rcvbuf", tcp.rcvbuf_initial, "initial receive buffer (bytes)");
  g_tcp->add_option("--tcp-rcvbuf-max", tcp.rcvbuf_max, "receive buffer auto-tuning limit");
  g_tcp->add_option("--tcp-rcv-budget", o.rcv_budget,
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
  g_tcp->add_option("--tcp-keepalive-idle-s", o.keep_idle_s, "keepalive idle time");
  g_tcp->add_option("--tcp-keepalive-intvl-s", o.keep_intvl_s, "keepalive probe interval");
  g_tcp->add_option("--tcp-keepalive-probes", tcp.keepalive_probes, "keepalive probes");
  g_tcp->add_option("--tcp-ephemeral", o.ephemeral, "ephemeral port range LO-HI");
}

}  // namespace

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "pno-engine: %s (see --help)\n", msg.c_str());
  return kExitUsage;
}

std::optional<int> parse_options(int argc, char** argv, Options& o) {
  CLI::App app{"pno-engine: user-space TCP/IP stack on a DPDK port"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);
  add_port_options(app, o);
  add_service_options(app, o);
  add_loop_and_stats_options(app, o);
  add_tcp_options(app, o);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what());
  }
  o.client_sizing_given = app.count("--send-bytes") + app.count("--recv-bytes") + app.count("--conns") > 0;
  o.dma_tuning_given = app.count("--dma-gbps") + app.count("--dma-batch") > 0;
  return std::nullopt;
}

}  // namespace pno::engine
