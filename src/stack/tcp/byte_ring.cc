// Power-of-two byte ring. head_/tail_ are free-running 32-bit byte counters: the distance
// tail_ - head_ is the fill level even across 2^32 wrap, and `offset & mask_` is the slot.
// Capacity is at most 2^31 so the fill level always fits the 32-bit difference.
#include "stack/tcp/byte_ring.hh"

#include <algorithm>
#include <bit>
#include <cstring>

namespace pno::tcp {

namespace {
constexpr std::size_t kMaxCapacity = std::size_t{1} << 31;

std::size_t round_capacity(std::size_t c) {
  return std::bit_ceil(std::min(c, kMaxCapacity));
}
}  // namespace

ByteRing::ByteRing(std::size_t capacity) {
  if (capacity == 0) return;
  const std::size_t cap = round_capacity(capacity);
  buf_ = std::make_unique_for_overwrite<std::byte[]>(cap);
  mask_ = cap - 1;
}

std::size_t ByteRing::push(ByteSpan data) {
  const std::size_t n = std::min(data.size(), free_space());
  if (n == 0) return 0;
  const bool ok = write_at(0, data.first(n));
  (void)ok;  // n <= free_space(), so it fits
  tail_ += static_cast<std::uint32_t>(n);
  return n;
}

std::size_t ByteRing::peek(std::size_t offset, MutByteSpan out) const {
  const auto [a, b] = readable(offset, out.size());
  if (!a.empty()) std::memcpy(out.data(), a.data(), a.size());
  if (!b.empty()) std::memcpy(out.data() + a.size(), b.data(), b.size());
  return a.size() + b.size();
}

void ByteRing::consume(std::size_t n) { head_ += static_cast<std::uint32_t>(std::min(n, size())); }

bool ByteRing::write_at(std::size_t offset_past_tail, ByteSpan data) {
  const std::size_t room = free_space();
  if (offset_past_tail > room || data.size() > room - offset_past_tail) return false;
  if (data.empty()) return true;
  const std::size_t start = (tail_ + offset_past_tail) & mask_;
  const std::size_t first = std::min(data.size(), capacity() - start);
  std::memcpy(buf_.get() + start, data.data(), first);
  if (first < data.size()) std::memcpy(buf_.get(), data.data() + first, data.size() - first);
  return true;
}

void ByteRing::commit(std::size_t n) { tail_ += static_cast<std::uint32_t>(std::min(n, free_space())); }

void ByteRing::grow(std::size_t new_capacity) {
  const std::size_t old_cap = capacity();
  const std::size_t cap = round_capacity(new_capacity);
  if (cap <= old_cap) return;
  auto nb = std::make_unique_for_overwrite<std::byte[]>(cap);
  // Copy the whole old ring starting at head, not only [head, tail): bytes written past the tail
  // by write_at (out-of-order data not yet committed) must survive too. Offsets stay the same;
  // only their slots change with the new mask.
  const std::size_t new_mask = cap - 1;
  for (std::size_t done = 0; done < old_cap;) {
    const std::size_t src = (head_ + done) & mask_;
    const std::size_t dst = (head_ + done) & new_mask;
    const std::size_t n = std::min({old_cap - done, old_cap - src, cap - dst});
    std::memcpy(nb.get() + dst, buf_.get() + src, n);
    done += n;
  }
  buf_ = std::move(nb);
  mask_ = new_mask;
}

std::pair<ByteSpan, ByteSpan> ByteRing::readable(std::size_t offset, std::size_t len) const {
  const std::size_t sz = size();
  if (offset >= sz || len == 0) return {};
  len = std::min(len, sz - offset);
  const std::size_t start = (head_ + offset) & mask_;
  const std::size_t first = std::min(len, capacity() - start);
  return {ByteSpan(buf_.get() + start, first), ByteSpan(buf_.get(), len - first)};
}

std::pair<MutByteSpan, MutByteSpan> ByteRing::writable(std::size_t len) {
  len = std::min(len, free_space());
  if (len == 0) return {};
  const std::size_t start = tail_ & mask_;
  const std::size_t first = std::min(len, capacity() - start);
  return {MutByteSpan(buf_.get() + start, first), MutByteSpan(buf_.get(), len - first)};
}

}  // namespace pno::tcp
