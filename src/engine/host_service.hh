// The engine's end of the host<->engine channel: a Service that lets unmodified Linux processes
// (through libpno.so and src/channel/host.hh) use the engine's TCP layer.
//
// It listens on a path-named Unix socket, attaches process families (one shared region each, see
// src/channel/contract.hh), executes their commands on the TcpLayer, moves bytes between TcpLayer
// sockets and the regions' stream rings, pre-accepts connections into listeners' accept queues,
// publishes readiness and wakes the host's armed waiters. Host memory is touched only through a
// DmaChannel, and everything read from it is validated: a hostile family can only hurt itself.
// The implementation is src/engine/host/ (impl.hh says what one instance owns).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/counter_list.hh"
#include "channel/contract.hh"
#include "channel/dma.hh"
#include "channel/pcie_model.hh"
#include "engine/idle_wake.hh"
#include "engine/service.hh"
#include "base/addr.hh"

namespace pno::engine {

struct HostServiceConfig {
  std::string socket_path = channel::contract::kDefaultSocketPath;
  channel::contract::Geometry geometry;
  std::vector<Ipv4Cidr> addrs;         ///< the engine's addresses, published to the host
  bool allow_any_uid = false;          ///< else only the engine's uid and root may attach
  /// Attach limits, so that connecting processes cannot exhaust the engine (its descriptors, its
  /// memory, its attention). Root is held only to the global ones, as RLIMIT_NPROC exempts it.
  Duration handshake_timeout = std::chrono::seconds(1);  ///< a connection silent this long is closed
  std::uint32_t max_pending_attaches = 64;  ///< connections not yet handshaken, all uids
  std::uint32_t max_pending_per_uid = 8;    ///< of those, per uid
  std::uint32_t max_families_per_uid = 256; ///< attached families per uid
  bool quiet = false;                  ///< no log lines (tests)
  channel::PcieModelConfig pcie;       ///< PCIe cost charged on every family's DmaChannel (off by default)
  channel::PcieClock* pcie_clock = nullptr;  ///< tests: a virtual clock for the model (default: steady, spin)
};

// The host service's counters. X(name, description); one field of HostServiceStats each.
#define PNO_HOST_COUNTERS(X)                                                                     \
  X(attached, "families attached")                                                               \
  X(refused, "attach requests refused (uid, ABI version, no resources)")                         \
  X(attach_shed, "attach connections closed unanswered (pending caps, handshake timeout, EMFILE)") \
  X(families_closed, "attached families closed after their last process went")                  \
  X(corrupt, "impossible values a family wrote (the socket aborted or the family detached)")     \
  X(commands, "commands executed")                                                               \
  X(kicks, "kicks taken from the kick rings")                                                    \
  X(bytes_to_tcp, "send-ring bytes handed to TCP")                                               \
  X(bytes_to_host, "received bytes written into receive rings")                                  \
  X(accepted, "connections pre-accepted into accept queues")                                     \
  X(wakeups, "eventfd writes that woke a host waiter")                                           \
  X(doorbells, "doorbells rung by hosts while the engine slept")                                 \
  X(bad_index, "kicks naming no slot")                                                           \
  X(proc_deaths, "watched processes that died (process table entries dropped)")                  \
  X(death_closes, "sockets closed because the last process holding them died")

inline constexpr std::size_t kHostCounterCount = 0 PNO_HOST_COUNTERS(PNO_COUNTER_ONE);

inline constexpr std::array<std::string_view, kHostCounterCount> kHostCounterNames = {
    PNO_HOST_COUNTERS(PNO_COUNTER_NAME)};

/// One host service's counters, by name (no sharing, no atomics).
struct HostServiceStats {
#define PNO_HOST_COUNTER_FIELD(name, desc) std::uint64_t name = 0;
  PNO_HOST_COUNTERS(PNO_HOST_COUNTER_FIELD)
#undef PNO_HOST_COUNTER_FIELD

  /// The counters in list order (kHostCounterNames), for printing.
  [[nodiscard]] std::array<std::uint64_t, kHostCounterCount> values() const {
#define PNO_HOST_COUNTER_VALUE(name, desc) name,
    return {PNO_HOST_COUNTERS(PNO_HOST_COUNTER_VALUE)};
#undef PNO_HOST_COUNTER_VALUE
  }
};

class HostService final : public Service, public IdleWake {
 public:
  explicit HostService(HostServiceConfig cfg);
  ~HostService() override;
  HostService(const HostService&) = delete;
  HostService& operator=(const HostService&) = delete;

  // Service
  Errc start(tcp::TcpLayer& tcp, Instant now) override;
  bool on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant now) override;
  void on_tick(tcp::TcpLayer& tcp, Instant now) override;
  [[nodiscard]] const char* name() const override { return "host"; }

  // IdleWake
  [[nodiscard]] int wait_fd() const override;
  bool take_busy() override;
  bool prepare_sleep() override;
  void woke(bool fd_ready) override;

  /// Checks the attach socket and control connections now (normally rate-limited inside on_tick).
  void poll_control();

  [[nodiscard]] const HostServiceStats& stats() const;
  /// DMA totals over all families, current and past.
  [[nodiscard]] channel::DmaStats dma_stats() const;
  /// The PCIe model's batches and modelled stall (all zero when the model is off).
  [[nodiscard]] const channel::PcieModelStats& pcie_stats() const;
  [[nodiscard]] std::size_t families() const;
  /// Sockets held for families (open, listening, pre-accepted).
  [[nodiscard]] std::size_t sockets() const;
  /// Credentials of attached families (SO_PEERCRED), oldest first.
  [[nodiscard]] std::vector<pid_t> family_pids() const;

  /// The nonzero counters, then one line per family and per socket (engine state and the host's
  /// indices), for debugging.
  void dump(std::FILE* out) const;

  /// Tests: attaches an in-process "host" region without a socket (for hostile-region tests); the
  /// region is returned mapped. Returns the family index or -1.
  int attach_for_test(std::byte** base, std::uint64_t* bytes);
  /// Tests: re-runs one service pass over all families.
  void service_for_test(Instant now);
  /// Tests: process table entry `entry` of family `family` (attach_for_test's index) died now.
  bool proc_died_for_test(int family, std::uint32_t entry);
  /// Tests: family `family` (attach_for_test's index) hangs up, as when its last process exits.
  bool hang_up_for_test(int family);
  /// Process table entries whose pid is watched (pidfd), over all families.
  [[nodiscard]] int watched_procs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pno::engine
