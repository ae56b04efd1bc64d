// pno-engine's command line: every option as parsed (CLI11), before any validation, and the exit
// codes of the process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "stack/config.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

inline constexpr int kExitFailure = 1;  ///< runtime failure (start-up, a client connection failed)
inline constexpr int kExitUsage = 2;    ///< bad arguments
inline constexpr int kExitLeak = 3;     ///< mbuf leak detected with --check-leaks

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
  // TCP: the fields CLI11 fills directly, and the ones translated into tcp's durations and enums
  TcpConfig tcp;
  std::uint64_t msl_ms = 30000, rto_min_ms = 200, rto_initial_ms = 1000, rto_max_ms = 120000, delack_ms = 40;
  std::uint64_t keep_idle_s = 7200, keep_intvl_s = 75;
  std::string cc = "cubic", ephemeral;
  std::string rcv_budget = "0";
  // which options were given on the command line (for the checks that depend on it)
  bool client_sizing_given = false;  ///< --send-bytes, --recv-bytes or --conns
  bool dma_tuning_given = false;     ///< --dma-gbps or --dma-batch
};

/// Parses the command line into `o`. Returns the exit status when the process is done already:
/// 0 after printing --help, kExitUsage after printing a parse error.
std::optional<int> parse_options(int argc, char** argv, Options& o);

/// Prints "pno-engine: MSG (see --help)" on stderr; returns kExitUsage.
int usage_error(const std::string& msg);

}  // namespace pno::engine
