// Addresses, sequence arithmetic and the Internet checksum.
#include <gtest/gtest.h>

#include <vector>

#include "stack/addr.hh"
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
