// Blind-attack defences: RFC 5961 (RST, SYN and ACK acceptability, challenge ACK limit) and
// RFC 7323 §5 PAWS; plus hostile options and checksums.
#include <gtest/gtest.h>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

TEST(TcpSecurity, Established_RstInWindowNotExactChallengeAck_Rfc5961_3_2) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt + 100});
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  EXPECT_EQ(h.counters.get(Counter::tcp_challenge_acks), 1u);
}

TEST(TcpSecurity, Established_RstOutOfWindowDroppedSilently_Rfc5961_3_2) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt + 1000000});
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.expect_nothing();
}

TEST(TcpSecurity, Established_SynChallengeAck_Rfc5961_4_2) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpSyn, .seq = h.peer_nxt + 5, .mss = 1460});
  EXPECT_EQ(h.state(), st(TcpState::established));
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
}

TEST(TcpSecurity, ChallengeAcksRateLimitedPerConnection) {
  TcpHarness h;
  h.established_passive();
  h.send({.flags = kTcpRst, .seq = h.peer_nxt + 100});
  h.send({.flags = kTcpRst, .seq = h.peer_nxt + 200});
  h.expect({.flags = kTcpAck});
  h.expect_nothing();
  h.advance(500ms);
  h.send({.flags = kTcpRst, .seq = h.peer_nxt + 300});
  h.expect({.flags = kTcpAck});
}

TEST(TcpSecurity, Established_AckOfUnsentDataAckedAndDropped_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt + 1000, .payload = bytes("evil")});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
}

TEST(TcpSecurity, Established_AckTooOldDropped_Rfc5961_5_2) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt - 200000, .payload = bytes("evil")});
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  h.expect({.flags = kTcpAck, .ack = h.peer_nxt});  // challenge ACK
}

TEST(TcpSecurity, Established_OutOfWindowDataGetsDupAck_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt + 200000, .ack = h.nxt, .payload = bytes("far")});
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_out_of_window), 1u);
}

TEST(TcpSecurity, BadChecksumDroppedAndCounted) {
  TcpHarness h;
  h.established_passive();
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("x"), .bad_checksum = true});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_checksum), 1u);
}

TEST(TcpSecurity, OptionLengthOverrunDropped_Rfc9293_3_2) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn, .seq = 1, .raw_options = {std::byte{2}, std::byte{40}, std::byte{5}, std::byte{0}}});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_options), 1u);
  h.send({.flags = kTcpSyn, .seq = 1, .raw_options = {std::byte{8}, std::byte{0}, std::byte{0}, std::byte{0}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_options), 2u);
}

TEST(TcpSecurity, SynFinDropped) {
  TcpHarness h;
  h.listen();
  h.send({.flags = kTcpSyn | kTcpFin, .seq = 1});
  h.expect_nothing();
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_bad_flags), 1u);
}

TEST(TcpSecurity, Established_PawsOldTimestampDropped_Rfc7323_5_3) {
  TcpConfig cfg = plain_config();
  cfg.timestamps = true;
  TcpHarness h(cfg);
  h.syn_received({.ts = {{1000, 0}}});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .ts = {{1001, 0}}});
  h.conn = *h.tcp->accept(h.listener);
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("new"), .ts = {{1005, 0}}});
  h.expect({.ack = h.peer_nxt + 3});
  // An old duplicate from before the sequence space wrapped: TSval older than TS.Recent.
  h.send({.seq = h.peer_nxt + 3, .ack = h.nxt, .payload = bytes("old"), .ts = {{900, 0}}});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_paws), 1u);
  EXPECT_EQ(h.read(), "new");
  const Sent a = h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 3});
  ASSERT_TRUE(a.opts.has_timestamps);
  EXPECT_EQ(a.opts.ts.tsecr, 1005u);  // TS.Recent echoed
}

TEST(TcpSecurity, Established_TimestampsOnEverySegment_Rfc7323_3_2) {
  TcpConfig cfg = plain_config();
  cfg.timestamps = true;
  TcpHarness h(cfg);
  h.syn_received({.ts = {{1000, 0}}});
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .ts = {{1001, 0}}});
  h.conn = *h.tcp->accept(h.listener);
  h.write("x");
  const Sent d = h.expect({.seq = h.nxt, .payload = bytes("x")});
  ASSERT_TRUE(d.opts.has_timestamps);
  EXPECT_EQ(d.opts.ts.tsecr, 1001u);
}

}  // namespace
}  // namespace pno::test
