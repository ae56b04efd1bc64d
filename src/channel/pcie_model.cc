#include "channel/pcie_model.hh"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace pno::channel {

std::uint64_t SteadySpinClock::now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

void SteadySpinClock::spin_until(std::uint64_t deadline_ns) {
  while (now_ns() < deadline_ns) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

PcieModel::PcieModel(const PcieModelConfig& cfg, PcieClock* clock)
    : cfg_(cfg), clock_(clock != nullptr ? clock : &own_clock_) {}

std::uint64_t PcieModel::batch_cost_ns(std::uint64_t reads, std::uint64_t read_bytes, std::uint64_t writes,
                                       std::uint64_t write_bytes) const {
  if (!cfg_.enabled()) return 0;
  // 1 GB/s = 1 byte/ns; rounded up so a transfer never costs nothing.
  const auto wire = [&](std::uint64_t bytes) {
    return static_cast<std::uint64_t>(std::ceil(static_cast<double>(bytes) / cfg_.gbytes_per_s));
  };
  const std::uint64_t r = reads > 0 ? cfg_.latency_ns + wire(read_bytes) : 0;
  const std::uint64_t w = writes > 0 ? wire(write_bytes) : 0;
  return std::max(r, w);
}

std::uint64_t PcieModel::settle() {
  if (reads_ == 0 && writes_ == 0) return 0;
  const std::uint64_t cost = batch_cost_ns(reads_, read_bytes_, writes_, write_bytes_);
  if (reads_ > 0) ++stats_.read_batches;
  if (writes_ > 0) ++stats_.write_batches;
  reads_ = read_bytes_ = writes_ = write_bytes_ = 0;
  if (cost > 0) {
    stats_.stall_ns += cost;
    clock_->spin_until(clock_->now_ns() + cost);
  }
  return cost;
}

}  // namespace pno::channel
