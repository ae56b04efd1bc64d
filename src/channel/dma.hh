// The engine's only way to touch host memory. Today the host region is mapped into the engine and
// MemcpyDma copies; on a DPU this becomes DOCA DMA over PCIe. The interface is deliberately narrow
// (byte ranges and 32-bit index words) and counts every transfer and byte per direction, so a model
// of PCIe latency and bandwidth can be charged per call (PcieModel, attached with set_model()).
// Callers batch: one read of a whole ring span or a slot's host line, never a field at a time.
//
// Trust: every offset is checked against the region size here; a transfer outside the region fails
// (false) and is counted, it never touches memory outside the mapping. The *values* read (indices,
// lengths) are the caller's to validate.
#pragma once

#include <cstddef>
#include <cstdint>

#include "channel/pcie_model.hh"
#include "base/bytes.hh"

namespace pno::channel {

struct DmaStats {
  std::uint64_t read_ops = 0, read_bytes = 0;    ///< host -> engine
  std::uint64_t write_ops = 0, write_bytes = 0;  ///< engine -> host
  std::uint64_t word_reads = 0, word_writes = 0; ///< index words (also counted in ops/bytes)
  std::uint64_t out_of_bounds = 0;               ///< refused transfers

  DmaStats& operator+=(const DmaStats& o) {
    read_ops += o.read_ops;
    read_bytes += o.read_bytes;
    write_ops += o.write_ops;
    write_bytes += o.write_bytes;
    word_reads += o.word_reads;
    word_writes += o.word_writes;
    out_of_bounds += o.out_of_bounds;
    return *this;
  }
};

class DmaChannel {
 public:
  virtual ~DmaChannel() = default;
  /// Copies host bytes [off, off+dst.size()) into engine memory.
  virtual bool read(std::uint64_t off, MutByteSpan dst) = 0;
  /// Copies engine bytes into host memory at `off`.
  virtual bool write(std::uint64_t off, ByteSpan src) = 0;
  /// An aligned 32-bit index word, with acquire ordering (what the other side wrote before it is visible).
  virtual bool read_u32(std::uint64_t off, std::uint32_t& v) = 0;
  /// An aligned 32-bit index word, with release ordering (everything written before it lands first).
  virtual bool write_u32(std::uint64_t off, std::uint32_t v) = 0;
  /// Orders earlier writes before later reads (Dekker-style flag/recheck around sleeping).
  virtual void fence() = 0;
  /// Data will move through [off, off+len) from now on. A channel on a mapping of host memory makes
  /// the range resident in one call rather than a page fault per 4 KiB on the data path; DMA over
  /// PCIe registers (pins) its memory up front and has nothing to do.
  virtual void prepare(std::uint64_t /*off*/, std::uint64_t /*len*/) {}
  [[nodiscard]] virtual std::uint64_t size() const = 0;
  [[nodiscard]] const DmaStats& stats() const { return stats_; }
  /// Charges every later transfer to `m` (shared by all channels of one link); null or a disabled
  /// model: no charge, one predictable branch per transfer.
  void set_model(PcieModel* m) { model_ = m != nullptr && m->enabled() ? m : nullptr; }

 protected:
  void charge_read(std::uint64_t bytes) {
    if (model_ != nullptr) [[unlikely]] model_->note_read(bytes);
  }
  void charge_write(std::uint64_t bytes) {
    if (model_ != nullptr) [[unlikely]] model_->note_write(bytes);
  }
  DmaStats stats_;
  PcieModel* model_ = nullptr;
};

/// DmaChannel on a shared mapping of the host region.
class MemcpyDma final : public DmaChannel {
 public:
  MemcpyDma(std::byte* base, std::uint64_t size) : base_(base), size_(size) {}
  bool read(std::uint64_t off, MutByteSpan dst) override;
  bool write(std::uint64_t off, ByteSpan src) override;
  bool read_u32(std::uint64_t off, std::uint32_t& v) override;
  bool write_u32(std::uint64_t off, std::uint32_t v) override;
  void fence() override;
  void prepare(std::uint64_t off, std::uint64_t len) override;
  [[nodiscard]] std::uint64_t size() const override { return size_; }

 private:
  [[nodiscard]] bool in_bounds(std::uint64_t off, std::uint64_t len) const {
    return off <= size_ && len <= size_ - off;
  }
  std::byte* base_;
  std::uint64_t size_;
};

}  // namespace pno::channel
