// A power-of-two byte ring for a connection's send and receive buffers. Free-running 32-bit
// offsets keep the arithmetic wrap-safe; storage is allocated once when the connection is
// created (or the buffer grows by auto-tuning), never per segment.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include "base/bytes.hh"

namespace pno::tcp {

class ByteRing {
 public:
  ByteRing() = default;
  /// Capacity is rounded up to a power of two.
  explicit ByteRing(std::size_t capacity);

  [[nodiscard]] std::size_t capacity() const { return mask_ + (buf_ ? 1 : 0); }
  [[nodiscard]] std::size_t size() const { return tail_ - head_; }
  [[nodiscard]] std::size_t free_space() const { return capacity() - size(); }
  [[nodiscard]] bool empty() const { return size() == 0; }

  /// Appends up to data.size() bytes; returns how many fit.
  std::size_t push(ByteSpan data);
  /// Copies up to out.size() bytes starting `offset` bytes past the head, without consuming.
  std::size_t peek(std::size_t offset, MutByteSpan out) const;
  /// Removes n bytes from the head (n <= size()).
  void consume(std::size_t n);
  /// Writes `data` at `offset` bytes past the tail (out-of-order receive), without moving the tail.
  /// Returns false if it does not fit in the free space.
  bool write_at(std::size_t offset_past_tail, ByteSpan data);
  /// Moves the tail forward over n bytes already written with write_at.
  void commit(std::size_t n);
  /// Grows the capacity (power of two, keeps contents). Not on the per-segment path.
  void grow(std::size_t new_capacity);
  /// The contiguous readable regions starting `offset` past the head (at most two).
  [[nodiscard]] std::pair<ByteSpan, ByteSpan> readable(std::size_t offset, std::size_t len) const;
  /// The contiguous free regions at the tail, up to len bytes (at most two): filled in place, then
  /// committed with commit(). Lets a producer copy straight into the ring, without staging.
  [[nodiscard]] std::pair<MutByteSpan, MutByteSpan> writable(std::size_t len);

 private:
  std::unique_ptr<std::byte[]> buf_;
  std::size_t mask_ = 0;
  std::uint32_t head_ = 0, tail_ = 0;
};

}  // namespace pno::tcp
