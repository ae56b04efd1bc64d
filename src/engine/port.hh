// The DPDK side of the engine: EAL start-up, one ethdev port with one tx queue and one or more rx
// queues (af_xdp: one per queue of the kernel interface), their mbuf pools, and the FrameSink the stack writes outgoing frames into. Frames move in bursts; outgoing
// frames collect in a burst that flush() hands to the port once per loop iteration.
//
// The port is an object (no globals), so later several lcores can each own one queue of it.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine_counters.hh"
#include "engine/impair.hh"
#include "base/addr.hh"
#include "stack/frame_sink.hh"
#include "base/time.hh"
#include "stack/config.hh"

struct rte_mempool;
struct rte_mbuf;
struct rte_eth_dev_info;

namespace pno::engine {

enum class Pmd : std::uint8_t {
  auto_,      ///< af_xdp, falling back to af_packet when af_xdp cannot attach
  af_xdp,     ///< net_af_xdp vdev on --iface
  af_packet,  ///< net_af_packet vdev on --iface
  eal,        ///< whatever port the raw EAL arguments created (e.g. mlx5 on a BlueField)
};

enum class HugeMode : std::uint8_t { auto_, huge, no_huge };

struct EalConfig {
  std::vector<std::string> raw_args;  ///< user-given EAL arguments, used as they are
  HugeMode huge = HugeMode::auto_;
  unsigned lcore = 0;
  int log_level = 5;                  ///< RTE_LOG_* (5 = warning)
  bool vdev_only = true;              ///< no PCI scan (the port is a vdev on a kernel interface)
};

/// Owns rte_eal_init/rte_eal_cleanup. Exactly one per process.
class Eal {
 public:
  /// Initialises EAL; on failure returns nullptr with a message in `err`.
  static std::unique_ptr<Eal> init(const EalConfig& cfg, std::string& err);
  ~Eal();
  Eal(const Eal&) = delete;
  Eal& operator=(const Eal&) = delete;
  [[nodiscard]] const std::vector<std::string>& args() const { return args_; }
  [[nodiscard]] bool hugepages() const { return huge_; }

 private:
  Eal() = default;
  std::vector<std::string> args_;
  bool huge_ = false;
};

/// EAL arguments for `cfg` (exposed for --dry-run style diagnostics and tests).
std::vector<std::string> build_eal_args(const EalConfig& cfg, bool& use_huge);

/// Rx queues one port polls at most (the loop sleeps on one af_xdp socket per queue).
inline constexpr std::uint16_t kMaxRxQueues = 4;

struct PortConfig {
  std::string iface;                  ///< kernel interface for the af_xdp/af_packet vdev
  Pmd pmd = Pmd::auto_;
  std::uint16_t port_id = 0;          ///< with Pmd::eal: which port
  std::uint32_t nb_mbufs = 16383;
  std::uint16_t rx_desc = 4096;       ///< af_xdp: the rx ring; 1024 overflowed while the engine was descheduled
  std::uint16_t tx_desc = 1024;
  /// af_xdp: rx queues of the interface to take (one af_xdp socket and fill ring each; frames are
  /// spread over them by the sender's flow hash). 0: every rx queue the interface has, at most
  /// kMaxRxQueues. Other PMDs use one.
  std::uint16_t rx_queues = 0;
  bool promiscuous = false;           ///< needed when the stack uses a MAC other than the port's
  bool offloads = true;               ///< use checksum offloads the port advertises
  ImpairConfig impair;
};

/// Receives frames from the port (the loop's side of the rx path).
class FrameHandler {
 public:
  virtual ~FrameHandler() = default;
  virtual void on_frame(ByteSpan frame, const RxMeta& meta) = 0;
};

struct MbufStats {
  std::uint32_t pool_size = 0;
  std::uint32_t avail_at_start = 0;  ///< after the port started (the PMD keeps some for its rings)
  std::uint32_t avail_now = 0;
  std::int64_t engine_in_flight = 0; ///< mbufs the engine holds: received+allocated-freed-sent
  /// Mbufs the PMD took for its own rings when it started (af_xdp's fill ring keeps them even after
  /// close; af_packet takes none).
  [[nodiscard]] std::int64_t pmd_reserved() const { return std::int64_t{pool_size} - avail_at_start; }
  /// After Port::close(): mbufs that left the pool during the run and never came back.
  [[nodiscard]] std::int64_t leaked() const {
    return std::max<std::int64_t>(0, std::int64_t{avail_at_start} - avail_now);
  }
};

class Port final : public FrameSink {
 public:
  static constexpr std::uint16_t kBurst = 32;

  /// Creates the vdev (if any), the pool, configures and starts the port. nullptr + `err` on failure.
  static std::unique_ptr<Port> open(const PortConfig& cfg, EngineCounters& counters, std::string& err);
  ~Port() override;
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  // --- FrameSink ---
  MutByteSpan tx_begin(std::size_t max_len) override;
  void tx_commit(std::size_t len, const TxMeta& meta) override;
  void tx_abort() override;

  /// The loop's time; the tx impairment stage stamps frames with it.
  void set_now(Instant now) { now_ = now; }
  /// One rx burst through the rx impairment stage into `h`; returns frames taken from the port.
  std::size_t poll_rx(Instant now, FrameHandler& h);
  /// Releases due impaired frames and hands the pending tx burst to the port. Returns frames sent.
  std::size_t flush(Instant now);
  /// Earliest time the impairment stages hold something due (kNever when off or empty).
  [[nodiscard]] Instant next_timer() const;

  /// Frees held frames, stops and closes the port. Idempotent; the destructor calls it.
  void close();

  [[nodiscard]] MacAddr mac() const { return mac_; }
  [[nodiscard]] const DeviceCaps& caps() const { return caps_; }
  [[nodiscard]] std::uint16_t port_id() const { return port_id_; }
  [[nodiscard]] const std::string& driver() const { return driver_; }
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] bool link_up() const;
  [[nodiscard]] MbufStats mbuf_stats() const;
  /// Pollable fds that become readable when a frame waits in the port's rx queue (the af_xdp or
  /// af_packet socket the PMD opened); empty when the PMD has none (e.g. a hardware port). The loop
  /// sleeps on them so a frame wakes it at once instead of at the end of a timed sleep.
  [[nodiscard]] const std::vector<int>& rx_wait_fds() const { return rx_wait_fds_; }
  /// Frames the port dropped because its rx queue was full (rte_eth_stats imissed).
  [[nodiscard]] std::uint64_t rx_missed() const;
  /// What the kernel's af_xdp socket dropped before the engine saw it (XDP_STATISTICS): frames
  /// that found the rx ring full (the engine did not drain it in time) and receives that found no
  /// buffer in the fill ring. Zero for other PMDs.
  struct XskDrops {
    std::uint64_t rx_ring_full = 0, fill_ring_empty = 0;
  };
  [[nodiscard]] XskDrops xsk_drops() const;
  /// Frames the port can hold for the engine between two polls: once senders have more than this
  /// in flight towards an engine that is not running, the port drops. Sizes the stack's receive
  /// budget (TcpConfig::rcv_budget).
  [[nodiscard]] std::uint32_t rx_buffers() const { return rx_buffers_; }

 private:
  class TxOps;
  class RxOps;
  friend class TxOps;
  friend class RxOps;

  Port(const PortConfig& cfg, EngineCounters& counters);
  /// The steps of open(), in order; each false + `err` on failure (close() undoes what was done).
  bool setup(std::string& err);
  bool create_vdev(std::string& err);  ///< af_xdp / af_packet: the vdev on the kernel interface
  bool find_port(std::string& err);    ///< a port the EAL already probed (--port-id)
  bool create_pool(int socket, std::string& err);
  bool configure(const rte_eth_dev_info& info, std::string& err);  ///< offloads, one rx/tx queue
  /// Queue 0's rx and tx rings; `nrx` in: descriptors wanted, out: what the device took.
  bool setup_queues(int socket, std::uint16_t& nrx, std::string& err);
  bool start(int socket, std::uint16_t nrx, std::string& err);  ///< this port, then further rx queues
  void read_link();    ///< MAC address and MTU (capped to one mbuf)
  void make_stages();  ///< tx ops and the impairment stages
  void enqueue_tx(rte_mbuf* m);
  void send_burst();
  void free_mbuf(rte_mbuf* m);
  rte_mbuf* copy_mbuf(rte_mbuf* m);
  void deliver_rx(rte_mbuf* m, FrameHandler& h);
  std::size_t poll_rx_queue(std::uint16_t port, Instant now, FrameHandler& h, std::array<rte_mbuf*, kBurst>& burst);
  bool open_extra_rx(std::uint16_t q, std::uint16_t nrx, int socket, std::string& err);

  PortConfig cfg_;
  EngineCounters& counters_;
  std::uint16_t port_id_ = 0;
  bool vdev_created_ = false;
  bool started_ = false;
  bool closed_ = false;
  std::string name_, driver_;
  rte_mempool* pool_ = nullptr;    ///< rx queue 0's pool; every mbuf the engine allocates comes from it
  /// The ports polled for frames: this one (queue 0, pool_), then one af_xdp device per further
  /// queue of the interface, each with its own pool (the PMD registers a pool as its queue's UMEM).
  struct RxQueue {
    std::uint16_t port = 0;
    rte_mempool* pool = nullptr;
    std::string vdev;  ///< empty for this port
    bool started = false;
  };
  std::vector<RxQueue> rxq_;
  std::uint16_t rx_queues_ = 1;
  unsigned per_pool_ = 0;
  MacAddr mac_;
  DeviceCaps caps_;
  bool rx_csum_ = false;
  std::uint32_t avail_at_start_ = 0;
  std::uint16_t mbuf_room_ = 0;
  std::uint32_t rx_buffers_ = 0;
  Instant now_{};
  std::vector<int> rx_wait_fds_;

  rte_mbuf* open_ = nullptr;
  std::array<rte_mbuf*, kBurst> tx_pending_{};
  std::uint16_t tx_count_ = 0;
  std::uint64_t tx_sent_in_flush_ = 0;

  std::unique_ptr<ImpairStage> rx_impair_, tx_impair_;
  std::unique_ptr<TxOps> tx_ops_;
};

/// Checks a kernel interface before a vdev is attached to it: exists, is up, has a usable MTU.
/// Returns an empty string when fine, else what is wrong and how to fix it. `warn` gets soft problems.
std::string check_kernel_iface(const std::string& iface, Pmd pmd, std::string& warn);

}  // namespace pno::engine
