// Single-producer/single-consumer rings over the contract's RingIndices, both flavours:
//  - SpscRing: direct access to a mapping (the host side; also tests), atomics via atomic_ref.
//  - DmaRingProducer/DmaRingConsumer: the engine side, every access through a DmaChannel, the
//    ring geometry from the engine's own trusted copy, the other side's index validated.
//  - DmaByteRing: the engine side of a socket's stream ring (bytes at free-running positions).
// Indices are free-running u32; entries is a power of two. Batched: one index load and one index
// store per push/pop call, entries copied in at most two pieces (wraparound).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "channel/contract.hh"
#include "channel/dma.hh"

namespace pno::channel {

template <typename T>
class SpscRing {
 public:
  SpscRing(contract::RingIndices* idx, T* entries, std::uint32_t n) : idx_(idx), e_(entries), n_(n) {}

  /// Producer: appends up to in.size() entries; returns how many fit.
  std::size_t push(std::span<const T> in) {
    const std::uint32_t tail = ref(idx_->tail).load(std::memory_order_relaxed);
    const std::uint32_t head = ref(idx_->head).load(std::memory_order_acquire);
    const std::uint32_t used = tail - head;
    if (used > n_) return 0;  // the consumer wrote nonsense: refuse rather than overwrite
    const std::size_t k = std::min<std::size_t>(in.size(), n_ - used);
    copy_in(tail, in.first(k));
    ref(idx_->tail).store(tail + static_cast<std::uint32_t>(k), std::memory_order_release);
    return k;
  }
  /// Consumer: takes up to out.size() entries; returns how many.
  std::size_t pop(std::span<T> out) {
    const std::uint32_t head = ref(idx_->head).load(std::memory_order_relaxed);
    const std::uint32_t tail = ref(idx_->tail).load(std::memory_order_acquire);
    const std::uint32_t avail = tail - head;
    if (avail > n_) return 0;
    const std::size_t k = std::min<std::size_t>(out.size(), avail);
    const std::uint32_t pos = head & (n_ - 1);
    const std::size_t first = std::min<std::size_t>(k, n_ - pos);
    std::memcpy(out.data(), e_ + pos, first * sizeof(T));
    std::memcpy(out.data() + first, e_, (k - first) * sizeof(T));
    ref(idx_->head).store(head + static_cast<std::uint32_t>(k), std::memory_order_release);
    return k;
  }
  [[nodiscard]] std::uint32_t size() const {
    return ref(idx_->tail).load(std::memory_order_acquire) - ref(idx_->head).load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint32_t capacity() const { return n_; }

 private:
  static std::atomic_ref<std::uint32_t> ref(std::uint32_t& w) { return std::atomic_ref<std::uint32_t>(w); }
  void copy_in(std::uint32_t tail, std::span<const T> in) {
    const std::uint32_t pos = tail & (n_ - 1);
    const std::size_t first = std::min<std::size_t>(in.size(), n_ - pos);
    std::memcpy(e_ + pos, in.data(), first * sizeof(T));
    std::memcpy(e_, in.data() + first, (in.size() - first) * sizeof(T));
  }
  contract::RingIndices* idx_;
  T* e_;
  std::uint32_t n_;
};

/// Copies `src` into a byte ring of `size` bytes (power of two) starting at free-running `pos`.
inline void ring_copy_in(std::byte* ring, std::uint32_t size, std::uint32_t pos, const std::byte* src, std::size_t n) {
  const std::uint32_t p = pos & (size - 1);
  const std::size_t first = std::min<std::size_t>(n, size - p);
  std::memcpy(ring + p, src, first);
  std::memcpy(ring, src + first, n - first);
}
inline void ring_copy_out(const std::byte* ring, std::uint32_t size, std::uint32_t pos, std::byte* dst, std::size_t n) {
  const std::uint32_t p = pos & (size - 1);
  const std::size_t first = std::min<std::size_t>(n, size - p);
  std::memcpy(dst, ring + p, first);
  std::memcpy(dst + first, ring, n - first);
}

/// Engine side: consumer of a host-produced ring at `off` (RingIndices, a spare line, then entries).
template <typename T>
class DmaRingConsumer {
 public:
  DmaRingConsumer() = default;
  DmaRingConsumer(DmaChannel* dma, std::uint64_t off, std::uint32_t n) : dma_(dma), off_(off), n_(n) {}

  /// Takes up to out.size() entries. Returns false when the host's tail is impossible (more than the
  /// ring holds) or a transfer failed: the caller treats the region as corrupt.
  bool pop(std::span<T> out, std::size_t& got) {
    got = 0;
    std::uint32_t tail = 0;
    if (!dma_->read_u32(off_ + offsetof(contract::RingIndices, tail), tail)) return false;
    const std::uint32_t avail = tail - head_;
    if (avail > n_) return false;
    const std::size_t k = std::min<std::size_t>(out.size(), avail);
    if (k == 0) return true;
    const std::uint32_t pos = head_ & (n_ - 1);
    const std::size_t first = std::min<std::size_t>(k, n_ - pos);
    const std::uint64_t base = off_ + contract::kRingEntries;
    if (!dma_->read(base + std::uint64_t{pos} * sizeof(T), std::as_writable_bytes(out.first(first)))) return false;
    if (k > first && !dma_->read(base, std::as_writable_bytes(out.subspan(first, k - first)))) return false;
    head_ += static_cast<std::uint32_t>(k);
    got = k;
    return dma_->write_u32(off_ + offsetof(contract::RingIndices, head), head_);
  }
  /// Whether the host published entries not taken yet (false on a corrupt index too).
  bool pending() {
    std::uint32_t tail = 0;
    return dma_->read_u32(off_ + offsetof(contract::RingIndices, tail), tail) && tail != head_;
  }

 private:
  DmaChannel* dma_ = nullptr;
  std::uint64_t off_ = 0;
  std::uint32_t n_ = 0;
  std::uint32_t head_ = 0;
};

/// Engine side: producer of a host-consumed ring.
template <typename T>
class DmaRingProducer {
 public:
  DmaRingProducer() = default;
  DmaRingProducer(DmaChannel* dma, std::uint64_t off, std::uint32_t n) : dma_(dma), off_(off), n_(n) {}

  /// Room for entries, from the host's head (re-read only when the cached value shows no room).
  /// A head ahead of the tail or more than a ring behind reads as "no room".
  std::uint32_t room() {
    std::uint32_t used = tail_ - head_;
    if (used >= n_) {
      std::uint32_t h = 0;
      if (!dma_->read_u32(off_ + offsetof(contract::RingIndices, head), h)) return 0;
      if (tail_ - h > n_) return 0;
      head_ = h;
      used = tail_ - head_;
    }
    return n_ - used;
  }
  /// Appends entries that fit (call room() first); publishes with one index write.
  std::size_t push(std::span<const T> in) {
    const std::size_t k = std::min<std::size_t>(in.size(), room());
    if (k == 0) return 0;
    const std::uint32_t pos = tail_ & (n_ - 1);
    const std::size_t first = std::min<std::size_t>(k, n_ - pos);
    const std::uint64_t base = off_ + contract::kRingEntries;
    if (!dma_->write(base + std::uint64_t{pos} * sizeof(T), std::as_bytes(in.first(first)))) return 0;
    if (k > first && !dma_->write(base, std::as_bytes(in.subspan(first, k - first)))) return 0;
    tail_ += static_cast<std::uint32_t>(k);
    dma_->write_u32(off_ + offsetof(contract::RingIndices, tail), tail_);
    return k;
  }

 private:
  DmaChannel* dma_ = nullptr;
  std::uint64_t off_ = 0;
  std::uint32_t n_ = 0;
  std::uint32_t head_ = 0, tail_ = 0;
};

/// Engine side: a host stream ring of `size` bytes (power of two) at `off`, read at the consumer's
/// head (send ring) or written at the producer's tail (receive ring). The index itself is the
/// caller's (it lives in the slot's lines). A span that crosses the ring's end is two transfers.
class DmaByteRing {
 public:
  DmaByteRing(DmaChannel* dma, std::uint64_t off, std::uint32_t size) : dma_(dma), off_(off), size_(size) {}

  /// Copies ring bytes from free-running position `pos` into `dst`. Returns how many were copied:
  /// fewer than dst.size() only when a transfer failed.
  std::size_t read(std::uint32_t pos, MutByteSpan dst) {
    return copy(pos, dst.size(), [&](std::uint64_t at, std::size_t done, std::size_t n) {
      return dma_->read(at, dst.subspan(done, n));
    });
  }
  /// Copies `src` into the ring from free-running position `pos`. Returns how many bytes were
  /// copied: fewer than src.size() only when a transfer failed.
  std::size_t write(std::uint32_t pos, ByteSpan src) {
    return copy(pos, src.size(), [&](std::uint64_t at, std::size_t done, std::size_t n) {
      return dma_->write(at, src.subspan(done, n));
    });
  }

 private:
  /// Runs `xfer(ring offset, bytes done, chunk)` for each piece of [pos, pos+n) up to the ring's end.
  template <typename Xfer>
  std::size_t copy(std::uint32_t pos, std::size_t n, Xfer xfer) {
    std::size_t done = 0;
    while (done < n) {
      const std::uint32_t p = (pos + static_cast<std::uint32_t>(done)) & (size_ - 1);
      const std::size_t chunk = std::min<std::size_t>(n - done, size_ - p);
      if (!xfer(off_ + p, done, chunk)) break;
      done += chunk;
    }
    return done;
  }

  DmaChannel* dma_;
  std::uint64_t off_;
  std::uint32_t size_;
};

}  // namespace pno::channel
