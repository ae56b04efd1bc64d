// Addresses, sequence arithmetic and the Internet checksum.
#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "base/addr.hh"
#include "stack/checksum.hh"
#include "stack/seq.hh"

using namespace pno;

TEST(Addr, ParsesAndPrintsIpv4) {
  auto a = Ipv4Addr::parse("198.18.0.1");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->v, 0xc6120001u);
  EXPECT_EQ(a->str(), "198.18.0.1");
  EXPECT_FALSE(Ipv4Addr::parse("198.18.0"));
  EXPECT_FALSE(Ipv4Addr::parse("198.18.0.256"));
  EXPECT_FALSE(Ipv4Addr::parse("198.18.0.1x"));
  auto c = Ipv4Cidr::parse("198.18.0.1/24");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->contains(*Ipv4Addr::parse("198.18.0.200")));
  EXPECT_FALSE(c->contains(*Ipv4Addr::parse("198.18.1.1")));
  EXPECT_FALSE(Ipv4Cidr::parse("198.18.0.1/33"));
}

TEST(Addr, ParsesAndPrintsMac) {
  auto m = MacAddr::parse("02:00:c6:12:00:01");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->str(), "02:00:c6:12:00:01");
  EXPECT_FALSE(MacAddr::parse("02:00:c6:12:00"));
  EXPECT_FALSE(MacAddr::parse("02-00-c6-12-00-01"));
}

TEST(Seq, ComparesAcrossWrap_Rfc9293_3_4) {
  tcp::SeqNum a(0xfffffff0u), b(0x10u);
  EXPECT_LT(a, b);
  EXPECT_GT(b, a);
  EXPECT_EQ(b - a, 0x20);
  EXPECT_EQ(b.since(a), 0x20u);
  EXPECT_TRUE(tcp::SeqNum(0x5).in_window(a, 0x20));
  EXPECT_FALSE(tcp::SeqNum(0x10).in_window(a, 0x20));
  EXPECT_TRUE(tcp::SeqNum(0x0).in_range(a, b));
}

TEST(Checksum, MatchesRfc1071Example) {
  // RFC 1071 §3 example bytes: 00 01 f2 03 f4 f5 f6 f7 -> sum 0xddf2, checksum 0x220d.
  std::vector<std::byte> d = {std::byte{0x00}, std::byte{0x01}, std::byte{0xf2}, std::byte{0x03},
                              std::byte{0xf4}, std::byte{0xf5}, std::byte{0xf6}, std::byte{0xf7}};
  Checksum c;
  c.add(d);
  EXPECT_EQ(c.fold(), 0x220d);
  // Odd length pads with zero.
  Checksum o;
  o.add(std::span(d).first(3));
  EXPECT_EQ(o.fold(), static_cast<std::uint16_t>(~(0x0001 + 0xf200) & 0xffff));
}

namespace {
/// RFC 1071 §4.1 word by word, in network order: the reference the fast sum must agree with.
std::uint16_t reference_checksum(std::span<const std::byte> d) {
  std::uint32_t sum = 0;
  std::size_t i = 0;
  for (; i + 1 < d.size(); i += 2) sum += (std::to_integer<std::uint32_t>(d[i]) << 8) | std::to_integer<std::uint32_t>(d[i + 1]);
  if (i < d.size()) sum += std::to_integer<std::uint32_t>(d[i]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}
}  // namespace

TEST(Checksum, Rfc1071SumAgreesWithWordByWordSumForEveryLengthAndAlignment) {
  // RFC 1071 §2(B): summing in the machine's byte order must give the network-order result, for
  // every tail length (odd ones padded, §4.1) and any start address.
  std::vector<std::byte> buf(2048 + 8);
  std::uint32_t x = 0x12345678;
  for (auto& b : buf) {
    x = x * 1103515245u + 12345u;
    b = std::byte(static_cast<std::uint8_t>(x >> 16));
  }
  for (std::size_t align = 0; align < 8; ++align) {
    for (std::size_t len = 0; len <= 300; ++len) {
      const auto d = std::span<const std::byte>(buf).subspan(align, len);
      Checksum c;
      c.add(d);
      ASSERT_EQ(c.fold(), reference_checksum(d)) << "len " << len << " align " << align;
    }
  }
  const auto full = std::span<const std::byte>(buf).subspan(3, 2048);
  Checksum c;
  c.add(full);
  EXPECT_EQ(c.fold(), reference_checksum(full));
}

TEST(Checksum, Rfc1071SumOfAllOnesWordsFoldsEndAroundCarries) {
  // 0xffff words stress the end-around carry (RFC 1071 §1 (2)): the sum is 0xffff (negative
  // zero), the checksum 0. A buffer of 0xff bytes this long overflows 32-bit partial sums.
  std::vector<std::byte> d(65536, std::byte{0xff});
  Checksum c;
  c.add(d);
  EXPECT_EQ(c.fold(), 0);
  EXPECT_EQ(reference_checksum(d), 0);
}

TEST(Checksum, Rfc1071IncrementalAddOfEvenChunksEqualsOneAdd) {
  // Headers and payload are summed in pieces (pseudo-header, header, data): even-length pieces
  // (all but the last) must combine to the one-shot sum whatever their sizes.
  std::vector<std::byte> d(1500);
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::byte(static_cast<std::uint8_t>(i * 7 + 3));
  for (std::size_t cut : {0u, 2u, 12u, 20u, 34u, 1000u, 1498u}) {
    Checksum a;
    a.add(std::span<const std::byte>(d).first(cut));
    a.add(std::span<const std::byte>(d).subspan(cut, 1499 - cut));  // odd total: last piece odd
    EXPECT_EQ(a.fold(), reference_checksum(std::span<const std::byte>(d).first(1499))) << "cut " << cut;
  }
}
