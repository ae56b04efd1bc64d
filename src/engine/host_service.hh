// The engine's end of the host<->engine channel: a Service that lets unmodified Linux processes
// (through libpno.so and src/channel/host.hh) use the engine's TCP layer.
//
// It listens on a path-named Unix socket, attaches process families (one shared region each, see
// src/channel/contract.hh), executes their commands on the TcpLayer, moves bytes between TcpLayer
// sockets and the regions' stream rings, pre-accepts connections into listeners' accept queues,
// publishes readiness and wakes the host's armed waiters. Host memory is touched only through a
// DmaChannel, and everything read from it is validated: a hostile family can only hurt itself.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "channel/contract.hh"
#include "channel/dma.hh"
#include "channel/pcie_model.hh"
#include "engine/services.hh"
#include "stack/addr.hh"

namespace pno::engine {

/// What the main loop sleeps on when idle (see Loop::set_idle_wake): a file descriptor that becomes
/// readable when someone needs the engine, and a check-then-sleep protocol around it.
class IdleWake {
 public:
  virtual ~IdleWake() = default;
  [[nodiscard]] virtual int wait_fd() const = 0;
  /// True when there was work since the last call (the loop must not count the iteration idle).
  virtual bool take_busy() = 0;
  /// About to sleep: publishes "asleep" to the other side, re-checks for work; false = do not sleep.
  virtual bool prepare_sleep() = 0;
  /// Woke up; `fd_ready`: wait_fd() was readable (else the timeout or a signal ended the sleep).
  virtual void woke(bool fd_ready) = 0;
};

struct HostServiceConfig {
  std::string socket_path = channel::contract::kDefaultSocketPath;
  channel::contract::Geometry geometry;
  std::vector<Ipv4Cidr> addrs;         ///< the engine's addresses, published to the host
  bool allow_any_uid = false;          ///< else only the engine's uid and root may attach
  bool quiet = false;                  ///< no log lines (tests)
  channel::PcieModelConfig pcie;       ///< PCIe cost charged on every family's DmaChannel (off by default)
  channel::PcieClock* pcie_clock = nullptr;  ///< tests: a virtual clock for the model (default: steady, spin)
};

struct HostServiceStats {
  std::uint64_t attached = 0, refused = 0, families_closed = 0, corrupt = 0;
  std::uint64_t commands = 0, kicks = 0, bytes_to_tcp = 0, bytes_to_host = 0, accepted = 0;
  std::uint64_t wakeups = 0, doorbells = 0, bad_index = 0;
  std::uint64_t proc_deaths = 0;   ///< watched processes that died (process table entries dropped)
  std::uint64_t death_closes = 0;  ///< sockets closed because the last process holding them died
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

  /// One line per family and per socket (engine state and the host's indices), for debugging.
  void dump(std::FILE* out) const;

  /// Tests: attaches an in-process "host" region without a socket (for hostile-region tests); the
  /// region is returned mapped. Returns the family index or -1.
  int attach_for_test(std::byte** base, std::uint64_t* bytes);
  /// Tests: re-runs one service pass over all families.
  void service_for_test(Instant now);
  /// Tests: process table entry `entry` of family `family` (attach_for_test's index) died now.
  bool proc_died_for_test(int family, std::uint32_t entry);
  /// Process table entries whose pid is watched (pidfd), over all families.
  [[nodiscard]] int watched_procs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pno::engine
