// A cost model of the host<->DPU PCIe link, charged on the engine's DmaChannel transfers, so the same
// benchmark predicts how the design behaves when every host access is a DMA (DOCA DMA on a
// BlueField) instead of a load from a shared mapping.
//
// The model (off unless latency_ns > 0):
//  - The transfers between two settle() calls form one batch per direction. The engine settles once
//    per loop iteration (HostService::on_tick) and once per pre-sleep check, so "a batch" is what one
//    iteration of the engine's host service reads and writes, over all families (one link).
//  - A batch with reads costs latency + read_bytes / bandwidth: the engine core spins (a DPU core
//    polls for DMA completion) before the data is usable. The data is copied at once (the transfer
//    itself is functional); only time is charged, at settle().
//  - Writes are posted: no latency for the engine. Their bytes still cross the link, so a batch with
//    writes costs write_bytes / bandwidth of link time. Reads and writes use opposite directions of a
//    full-duplex link and overlap: settle() spins max(read cost, write cost).
//  - Not modelled: the delay before a posted write becomes visible to the host (the host sees it at
//    once), the link's per-TLP header overhead, and a read that depends on the data of an earlier
//    read in the same batch (the default batching charges one round trip for both; `op` batching
//    charges every read its own round trip, the pessimistic bound of the same code).
//
// Hot path: DmaChannel calls note_read()/note_write() only when a model is attached (one predictable
// branch when it is off); nothing here allocates.
#pragma once

#include <cstdint>

namespace pno::channel {

enum class DmaBatching : std::uint8_t {
  iteration,  ///< every transfer between two settle() calls is one batch per direction (default)
  op,         ///< every read call is its own round trip, charged when it is made (no overlap)
};

struct PcieModelConfig {
  std::uint64_t latency_ns = 0;      ///< DMA completion latency; 0 = model off
  double gbytes_per_s = 25.0;        ///< usable link bandwidth, 10^9 bytes/s (PCIe Gen4 x16 ~ 25)
  DmaBatching batching = DmaBatching::iteration;
  [[nodiscard]] bool enabled() const { return latency_ns > 0 && gbytes_per_s > 0; }
};

struct PcieModelStats {
  std::uint64_t stall_ns = 0;       ///< modelled time the engine spent waiting on the link
  std::uint64_t read_batches = 0;   ///< round trips charged (batches with at least one read)
  std::uint64_t write_batches = 0;  ///< batches with at least one write
  std::uint64_t read_ops = 0, read_bytes = 0, write_ops = 0, write_bytes = 0;  ///< what the model saw
};

/// Where the model's time comes from and how the engine waits. The default is the steady clock and a
/// busy spin; tests inject a virtual clock whose spin advances time.
class PcieClock {
 public:
  virtual ~PcieClock() = default;
  [[nodiscard]] virtual std::uint64_t now_ns() = 0;
  /// Returns no earlier than `deadline_ns` (busy-waits: a DPU core polling a completion queue).
  virtual void spin_until(std::uint64_t deadline_ns) = 0;
};

class SteadySpinClock final : public PcieClock {
 public:
  std::uint64_t now_ns() override;
  void spin_until(std::uint64_t deadline_ns) override;
};

/// One link, shared by every DmaChannel of the engine (see DmaChannel::set_model).
class PcieModel {
 public:
  /// `clock` null: a SteadySpinClock owned by the model.
  explicit PcieModel(const PcieModelConfig& cfg, PcieClock* clock = nullptr);
  PcieModel(const PcieModel&) = delete;  // clock_ may point at own_clock_
  PcieModel& operator=(const PcieModel&) = delete;

  [[nodiscard]] bool enabled() const { return cfg_.enabled(); }
  [[nodiscard]] const PcieModelConfig& config() const { return cfg_; }

  void note_read(std::uint64_t bytes) {
    ++stats_.read_ops;
    stats_.read_bytes += bytes;
    ++reads_;
    read_bytes_ += bytes;
    if (cfg_.batching == DmaBatching::op) settle();
  }
  void note_write(std::uint64_t bytes) {
    ++stats_.write_ops;
    stats_.write_bytes += bytes;
    ++writes_;
    write_bytes_ += bytes;
  }
  /// Ends the open batch: spins for its cost (see the file comment); returns the modelled ns.
  std::uint64_t settle();

  /// Cost of one batch, without charging it: latency + read/bw if any read, max with write/bw.
  [[nodiscard]] std::uint64_t batch_cost_ns(std::uint64_t reads, std::uint64_t read_bytes, std::uint64_t writes,
                                            std::uint64_t write_bytes) const;

  [[nodiscard]] const PcieModelStats& stats() const { return stats_; }

 private:
  PcieModelConfig cfg_;
  SteadySpinClock own_clock_;
  PcieClock* clock_;
  PcieModelStats stats_;
  std::uint64_t reads_ = 0, read_bytes_ = 0, writes_ = 0, write_bytes_ = 0;  ///< open batch
};

}  // namespace pno::channel
