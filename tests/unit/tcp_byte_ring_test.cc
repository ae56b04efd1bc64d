// The connection byte ring: wrap-around, out-of-order write_at/commit, growth.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "stack/tcp/byte_ring.hh"

using namespace pno;
using pno::tcp::ByteRing;

namespace {
std::vector<std::byte> pattern(std::size_t n, std::uint8_t start) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<std::uint8_t>(start + i));
  return v;
}
std::vector<std::byte> peek_all(const ByteRing& r, std::size_t offset = 0) {
  std::vector<std::byte> out(r.size() > offset ? r.size() - offset : 0);
  EXPECT_EQ(r.peek(offset, out), out.size());
  return out;
}
}  // namespace

TEST(TcpByteRing, CapacityRoundsUpToPowerOfTwo) {
  EXPECT_EQ(ByteRing(1000).capacity(), 1024u);
  EXPECT_EQ(ByteRing(4096).capacity(), 4096u);
  EXPECT_EQ(ByteRing(1).capacity(), 1u);
  ByteRing none;
  EXPECT_EQ(none.capacity(), 0u);
  EXPECT_EQ(none.push(as_bytes("abc")), 0u);
  EXPECT_FALSE(none.write_at(0, as_bytes("a")));
}

TEST(TcpByteRing, PushPeekConsumeKeepFifoOrder) {
  ByteRing r(16);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.push(as_bytes("hello ")), 6u);
  EXPECT_EQ(r.push(as_bytes("world")), 5u);
  EXPECT_EQ(r.size(), 11u);
  EXPECT_EQ(r.free_space(), 5u);
  std::vector<std::byte> out(5);
  EXPECT_EQ(r.peek(6, out), 5u);  // peek leaves the bytes in place
  EXPECT_EQ(0, std::memcmp(out.data(), "world", 5));
  EXPECT_EQ(r.size(), 11u);
  r.consume(6);
  EXPECT_EQ(r.size(), 5u);
  EXPECT_EQ(r.peek(0, out), 5u);
  EXPECT_EQ(0, std::memcmp(out.data(), "world", 5));
  EXPECT_EQ(r.peek(5, out), 0u);  // nothing past the tail
}

TEST(TcpByteRing, PushStopsWhenFull) {
  ByteRing r(8);
  const auto data = pattern(20, 0);
  EXPECT_EQ(r.push(data), 8u);
  EXPECT_EQ(r.free_space(), 0u);
  EXPECT_EQ(r.push(data), 0u);
  EXPECT_EQ(peek_all(r), pattern(8, 0));
}

TEST(TcpByteRing, WrapsAroundTheEndAndExposesTwoSpans) {
  ByteRing r(16);
  r.push(pattern(12, 0));
  r.consume(10);
  EXPECT_EQ(r.push(pattern(12, 100)), 12u);  // occupies slots 12..15 and 0..7
  std::vector<std::byte> expect = pattern(2, 10);
  const auto tail = pattern(12, 100);
  expect.insert(expect.end(), tail.begin(), tail.end());
  EXPECT_EQ(peek_all(r), expect);
  auto [a, b] = r.readable(0, 14);
  EXPECT_EQ(a.size(), 6u);  // slots 10..15
  EXPECT_EQ(b.size(), 8u);  // slots 0..7
  EXPECT_EQ(a[0], std::byte{10});
  EXPECT_EQ(b[0], std::byte{104});
  auto [c, d] = r.readable(7, 100);  // clipped to size, starts past the wrap
  EXPECT_EQ(c.size(), 7u);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(c[0], std::byte{105});
  auto [e, f] = r.readable(14, 1);
  EXPECT_TRUE(e.empty());
  EXPECT_TRUE(f.empty());
}

TEST(TcpByteRing, FreeRunningOffsetsSurvive32BitWrap) {
  ByteRing r(1u << 20);
  // Move head and tail across 2^32 without copying data (commit/consume only move offsets).
  for (std::uint64_t moved = 0; moved + r.capacity() < (std::uint64_t{1} << 32); moved += r.capacity()) {
    r.commit(r.capacity());
    r.consume(r.capacity());
  }
  // Offsets now sit at 2^32 - 2^20: the data below crosses the 32-bit wrap.
  const auto data = pattern(300000, 7);
  std::size_t pushed = 0;
  for (int round = 0; round < 8; ++round) {
    pushed += r.push(data);
    EXPECT_EQ(r.size(), data.size());
    EXPECT_EQ(peek_all(r), data);
    r.consume(data.size());
  }
  EXPECT_EQ(pushed, 8 * data.size());
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.free_space(), r.capacity());
}

TEST(TcpByteRing, WriteAtPastTailThenCommit) {
  ByteRing r(16);
  r.push(as_bytes("ab"));
  // Out-of-order data 3 bytes past the tail, then the gap.
  EXPECT_TRUE(r.write_at(3, as_bytes("XYZ")));
  EXPECT_EQ(r.size(), 2u);  // not readable yet
  EXPECT_TRUE(r.write_at(0, as_bytes("cde")));
  r.commit(6);
  EXPECT_EQ(r.size(), 8u);
  const auto all = peek_all(r);
  EXPECT_EQ(0, std::memcmp(all.data(), "abcdeXYZ", 8));
  // Must fit in the free space (8 bytes left).
  EXPECT_FALSE(r.write_at(6, as_bytes("123")));
  EXPECT_FALSE(r.write_at(9, as_bytes("")));
  EXPECT_TRUE(r.write_at(5, as_bytes("123")));
  r.commit(100);  // clamped to free space
  EXPECT_EQ(r.size(), 16u);
}

TEST(TcpByteRing, WriteAtWrapsAroundTheEnd) {
  ByteRing r(8);
  r.push(pattern(6, 0));
  r.consume(6);  // head = tail = slot 6
  EXPECT_TRUE(r.write_at(1, pattern(4, 50)));  // slots 7, 0, 1, 2
  EXPECT_TRUE(r.write_at(0, pattern(1, 49)));
  r.commit(5);
  EXPECT_EQ(peek_all(r), pattern(5, 49));
}

TEST(TcpByteRing, GrowKeepsContentsAndPendingOutOfOrderBytes) {
  ByteRing r(16);
  r.push(pattern(14, 0));
  r.consume(12);
  r.push(pattern(10, 100));                    // wrapped: size 12
  EXPECT_TRUE(r.write_at(2, as_bytes("QR")));  // uncommitted, also wrapped region
  r.grow(100);
  EXPECT_EQ(r.capacity(), 128u);
  std::vector<std::byte> expect = pattern(2, 12);
  const auto mid = pattern(10, 100);
  expect.insert(expect.end(), mid.begin(), mid.end());
  EXPECT_EQ(peek_all(r), expect);
  EXPECT_TRUE(r.write_at(0, as_bytes("OP")));
  r.commit(4);
  const auto all = peek_all(r);
  EXPECT_EQ(0, std::memcmp(all.data() + 12, "OPQR", 4));
  // New space is usable, and the ring still wraps correctly.
  EXPECT_EQ(r.push(pattern(112, 0)), 112u);
  EXPECT_EQ(r.free_space(), 0u);
  r.grow(64);  // never shrinks
  EXPECT_EQ(r.capacity(), 128u);
}

TEST(TcpByteRing, GrowFromEmptyRingAllocates) {
  ByteRing r;
  r.grow(10);
  EXPECT_EQ(r.capacity(), 16u);
  EXPECT_EQ(r.push(as_bytes("0123456789")), 10u);
  EXPECT_EQ(peek_all(r, 4).size(), 6u);
}
