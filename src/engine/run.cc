// pno-engine's start-up order, loop and exit report. All engine state lives in the objects made here
// (EAL, port, stack, services, loop); the only global is the signal flag block.
#include "engine/run.hh"

#include <sys/random.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>

#include "engine/clock.hh"
#include "engine/stats.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {
namespace {

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

std::uint64_t random_secret() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) v = 0x6a09e667f3bcc908ULL ^ static_cast<std::uint64_t>(time(nullptr));
  return v;
}

/// The stack's config: addresses from the options, MAC and capabilities from the open port.
StackConfig stack_config(const Options& o, const EngineConfig& cfg, Port& port) {
  StackConfig sc;
  sc.mac = cfg.mac.value_or(port.mac());
  sc.addr = cfg.addr;
  sc.gateway = cfg.gateway;
  sc.caps = port.caps();
  TcpConfig tcp = cfg.tcp;
  // The receive budget: what the port can hold while the engine is not running (its rx buffers
  // times a full segment), halved because not every frame the peers send is a full segment
  // (ACKs for what we send, requests smaller than a segment).
  const std::uint32_t seg = sc.caps.mtu > 52 ? sc.caps.mtu - 52u : 536u;  // IPv4 + TCP + timestamps
  tcp.rcv_budget = cfg.rcv_budget_bytes.value_or(std::uint64_t{port.rx_buffers()} * seg / 2);
  if (cfg.log >= LogLevel::info) {
    std::fprintf(stderr, "pno-engine: receive budget %llu bytes (port rx buffers %u, %u-byte segments)\n",
                 static_cast<unsigned long long>(tcp.rcv_budget), port.rx_buffers(), seg);
  }
  sc.tcp = tcp;
  sc.secret = o.secret.value_or(random_secret());
  return sc;
}

/// The echo, discard and host services the options ask for. 0, or the exit status of a usage error.
int add_services(const Options& o, const StackConfig& sc, EngineCounters& ecounters, Services& services,
                 HostService*& host) {
  if (o.echo) services.add(std::make_unique<StreamServer>(StreamServer::Mode::echo, o.echo_port, ecounters, o.keepalive));
  if (o.discard) {
    services.add(std::make_unique<StreamServer>(StreamServer::Mode::discard, o.discard_port, ecounters,
                                                 o.keepalive));
  }
  if (!o.host_socket.empty()) {
    HostServiceConfig hc;
    std::string err;
    if (!host_service_config(o, sc.addr, hc, err)) return usage_error(err);
    auto hs = std::make_unique<HostService>(hc);
    host = hs.get();
    services.add(std::move(hs));
  }
  return 0;
}

void print_ready(const Options& o, const EngineConfig& cfg, const StackConfig& sc, Port& port, const Eal& eal,
                 bool host) {
  const std::string where = cfg.pmd == Pmd::eal ? port.name() : o.iface;
  std::printf("pno-engine: ready on %s %s mac %s mtu %u driver %s%s%s%s%s\n", where.c_str(), o.ip.c_str(),
              sc.mac.str().c_str(), static_cast<unsigned>(sc.caps.mtu), port.driver().c_str(),
              eal.hugepages() ? " hugepages" : " no-huge", o.echo ? " echo" : "",
              o.discard ? (host ? " discard host" : " discard") : (host ? " host" : ""),
              cfg.client ? " client" : "");
  if (!port.link_up()) std::printf("pno-engine: warning: link is down\n");
  std::fflush(stdout);
}

/// The counters the port and the host service keep themselves, copied into the engine counters
/// before they are printed.
void copy_port_and_dma(EngineCounters& ecounters, Port& port, const HostService* host) {
  ecounters.set(EngineCounter::port_rx_missed, port.rx_missed());
  const Port::XskDrops xd = port.xsk_drops();
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
}

/// What the stack counted, kept for the exit report after the stack is gone.
struct StackTotals {
  bool loop_ran = false;  ///< false: start-up failed, the process exits without the report
  Counters counters;
  std::size_t sockets = 0;
};

/// One stack with its services on the open port, from start to the end of the loop. Returns the
/// services' exit status; start-up failures return early with theirs.
int serve(const Options& o, const EngineConfig& cfg, Port& port, const Eal& eal, EngineCounters& ecounters,
          StackTotals& totals) {
  const TscClock clock;
  const StackConfig sc = stack_config(o, cfg, port);
  Stack stack(sc, port, clock.now());
  Services services;
  HostService* host = nullptr;
  if (int rc = add_services(o, sc, ecounters, services, host); rc != 0) return rc;

  stack.announce();
  port.flush(clock.now());
  std::string failed;
  if (Errc e = services.start(stack.tcp(), clock.now(), failed); e != Errc::ok) {
    std::fprintf(stderr, "pno-engine: cannot start the %s service: %s\n", failed.c_str(), std::strerror(to_errno(e)));
    return kExitFailure;
  }
  print_ready(o, cfg, sc, port, eal, host != nullptr);
  // The client starts after the ready line so a test watching for it sees the whole transfer.
  if (cfg.client) {
    auto bc = std::make_unique<BulkClient>(*cfg.client, ecounters);
    if (Errc e = bc->start(stack.tcp(), clock.now()); e != Errc::ok) {
      std::fprintf(stderr, "pno-engine: client: %s\n", std::strerror(to_errno(e)));
      return kExitFailure;
    }
    services.add(std::move(bc));
    services.set_has_client(true);
  }

  // The host service keeps its DMA figures itself; they join the engine counters when printed.
  auto snapshot = [&]() {
    copy_port_and_dma(ecounters, port, host);
    StatsSnapshot s;
    s.stack = &stack.counters();
    s.engine = &ecounters;
    s.mbufs = port.mbuf_stats();
    s.tcp_sockets = stack.tcp().socket_count();
    return s;
  };
  Loop loop(cfg.loop, port, stack, services, clock, ecounters, g_signals, [&](const char* why) {
    if (o.stats) print_stats_line(stdout, (std::string("pno-stats: why=") + why).c_str(), snapshot());
    // On request (SIGUSR1) the host sockets too: what a stuck host process waits for.
    if (host != nullptr && std::strcmp(why, "signal") == 0) {
      host->dump(stdout);
      std::fflush(stdout);
    }
  });
  if (host != nullptr) loop.set_idle_wake(host);
  loop.run();

  const int rc = services.finish(stack.tcp(), clock.now());
  copy_port_and_dma(ecounters, port, host);
  stack.poll(clock.now());
  port.flush(clock.now());
  totals.loop_ran = true;
  totals.counters = stack.counters();
  totals.sockets = stack.tcp().socket_count();
  return rc;
}

/// Final counters, the stats file and the mbuf check, once the port is closed. Returns the exit
/// status given the services' `rc`.
int exit_report(const Options& o, Port& port, const EngineCounters& ecounters, const StackTotals& totals, int rc) {
  StatsSnapshot s;
  s.stack = &totals.counters;
  s.engine = &ecounters;
  s.mbufs = port.mbuf_stats();
  s.tcp_sockets = totals.sockets;
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
  return leak && o.check_leaks ? kExitLeak : rc;
}

}  // namespace

int run_engine(const Options& o, const EngineConfig& cfg) {
  if (cfg.pmd != Pmd::eal) {
    // Checked before EAL starts so a missing or down interface is reported plainly and at once.
    std::string warn;
    const std::string e = check_kernel_iface(o.iface, cfg.pmd, warn);
    if (!e.empty()) {
      std::fprintf(stderr, "pno-engine: %s\n", e.c_str());
      return kExitFailure;
    }
  }

  install_signals();

  std::string err;
  auto eal = Eal::init(cfg.eal, err);
  if (!eal) {
    std::fprintf(stderr, "pno-engine: %s\n", err.c_str());
    return kExitFailure;
  }
  if (cfg.log >= LogLevel::info) {
    std::string joined;
    for (const auto& a : eal->args()) joined += " " + a;
    std::fprintf(stderr, "pno-engine: EAL args:%s\n", joined.c_str());
  }
  EngineCounters ecounters;
  auto port = Port::open(cfg.port, ecounters, err);
  if (!port) {
    std::fprintf(stderr, "pno-engine: cannot open the port: %s\n", err.c_str());
    return kExitFailure;
  }

  StackTotals totals;
  // The stack lives in serve(): it goes before the port it writes into.
  int rc = serve(o, cfg, *port, *eal, ecounters, totals);
  if (!totals.loop_ran) return rc;
  port->close();
  rc = exit_report(o, *port, ecounters, totals, rc);
  port.reset();
  eal.reset();
  return rc;
}

}  // namespace pno::engine
