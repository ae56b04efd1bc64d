// Receive side: out-of-order queue and the SACK blocks it advertises (RFC 2018 §4), hole filling in
// any order (RFC 9293 §3.10.7.4 seventh step), duplicates and overlapping retransmissions, data
// beyond the window trimmed, and receive-buffer auto-tuning growing the window for a fast reader.
#include <gtest/gtest.h>

#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

void sack_conn(TcpHarness& h, bool ts = false) {
  if (ts) {
    accept_with(h, {.sack_perm = true, .ts = {{100, 0}}});
  } else {
    accept_with(h, {.sack_perm = true});
  }
}

/// Sends bytes [from, from+n) of the peer's stream (pattern), relative to `base`.
void give(TcpHarness& h, std::uint32_t base, std::uint32_t from, std::uint32_t n, std::optional<std::pair<std::uint32_t, std::uint32_t>> ts = {}) {
  h.send({.seq = base + from, .ack = h.nxt, .payload = pattern(n, from), .ts = ts});
}

std::vector<std::pair<std::uint32_t, std::uint32_t>> blocks(const Sent& a, std::uint32_t base) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> v;
  for (int i = 0; i < a.opts.sack_count; ++i) v.emplace_back(a.opts.sack[i].left.raw() - base, a.opts.sack[i].right.raw() - base);
  return v;
}

using Blocks = std::vector<std::pair<std::uint32_t, std::uint32_t>>;

TEST(TcpReceive, Sack_FourBlocksMostRecentFirstWithoutTimestamps_Rfc2018_4) {
  TcpHarness h(sack_config());
  sack_conn(h);
  const std::uint32_t s = h.peer_nxt;
  for (const std::uint32_t at : {10u, 30u, 50u, 70u, 90u}) {
    give(h, s, at, 10);
    h.expect({.flags = kTcpAck, .ack = s});
  }
  give(h, s, 30, 10);  // a duplicate of an older island: it becomes the first block again
  const Sent a = h.expect({.flags = kTcpAck, .ack = s});
  EXPECT_EQ(blocks(a, s), (Blocks{{30, 40}, {90, 100}, {70, 80}, {50, 60}}));
}

TEST(TcpReceive, Sack_ThreeBlocksWithTimestamps_Rfc2018_3) {
  TcpHarness h(sack_config(true));
  sack_conn(h, true);
  const std::uint32_t s = h.peer_nxt;
  Sent a;
  for (const std::uint32_t at : {10u, 30u, 50u, 70u}) {
    give(h, s, at, 10, {{200, 0}});
    a = h.expect({.flags = kTcpAck, .ack = s});
  }
  // 40 bytes of option space: timestamps (10+2) leave room for three blocks (2+2+24).
  EXPECT_EQ(blocks(a, s), (Blocks{{70, 80}, {50, 60}, {30, 40}}));
  EXPECT_TRUE(a.opts.has_timestamps);
}

TEST(TcpReceive, HoleFillInAnyOrderDeliversEverythingInOrder_Rfc9293_3_10_7_4) {
  TcpHarness h(sack_config());
  sack_conn(h);
  const std::uint32_t s = h.peer_nxt;
  give(h, s, 10, 10);
  give(h, s, 30, 10);
  give(h, s, 50, 10);
  h.drain();
  give(h, s, 20, 10);  // joins 10-20 and 30-40 into one block; the first hole remains
  Sent a = h.expect({.flags = kTcpAck, .ack = s});
  EXPECT_EQ(blocks(a, s), (Blocks{{10, 40}, {50, 60}}));
  EXPECT_EQ(*h.tcp->readable_bytes(h.conn), 0u);
  EXPECT_FALSE(h.tcp->readiness(h.conn) & kReadable);
  give(h, s, 0, 10);
  a = h.expect({.flags = kTcpAck, .ack = s + 40});
  EXPECT_EQ(blocks(a, s), (Blocks{{50, 60}}));
  EXPECT_EQ(h.read(), pattern_str(40));
  give(h, s, 40, 10);
  a = h.expect({.flags = kTcpAck, .ack = s + 60});
  EXPECT_EQ(a.opts.sack_count, 0);
  EXPECT_EQ(h.read(), pattern_str(20, 40));
  EXPECT_EQ(info(h).bytes_received, 60u);
}

TEST(TcpReceive, DuplicateOutOfOrderSegmentStoredOnce_Rfc9293_3_10_7_4) {
  TcpHarness h(sack_config());
  sack_conn(h);
  const std::uint32_t s = h.peer_nxt;
  give(h, s, 10, 10);
  h.expect({.flags = kTcpAck, .ack = s});
  give(h, s, 10, 10);
  const Sent a = h.expect({.flags = kTcpAck, .ack = s});  // the duplicate is acknowledged at once
  EXPECT_EQ(blocks(a, s), (Blocks{{10, 20}}));
  give(h, s, 0, 10);
  h.expect({.flags = kTcpAck, .ack = s + 20});
  EXPECT_EQ(h.read(), pattern_str(20));
  EXPECT_EQ(info(h).bytes_received, 20u);
}

TEST(TcpReceive, OverlappingRetransmissionsTrimmedAndMerged_Rfc9293_3_10_7_4) {
  TcpHarness h(sack_config());
  sack_conn(h);
  const std::uint32_t s = h.peer_nxt;
  give(h, s, 0, 10);
  h.expect({.ack = s + 10});
  give(h, s, 5, 15);  // 5 old bytes, 10 new
  h.expect({.ack = s + 20});
  give(h, s, 30, 10);
  h.expect({.ack = s + 20});
  give(h, s, 25, 20);  // overlaps the island on both sides
  Sent a = h.expect({.ack = s + 20});
  EXPECT_EQ(blocks(a, s), (Blocks{{25, 45}}));
  give(h, s, 15, 12);  // overlaps in-order data and the island
  a = h.expect({.ack = s + 45});
  EXPECT_EQ(a.opts.sack_count, 0);
  EXPECT_EQ(h.read(), pattern_str(45));
}

TEST(TcpReceive, DataBeyondWindowTrimmedAndFarSegmentsDropped_Rfc9293_3_10_7_4) {
  TcpConfig cfg = sack_config();
  cfg.rcvbuf_initial = 4096;
  TcpHarness h(cfg);
  sack_conn(h);
  const std::uint32_t s = h.peer_nxt;
  // Out of order, straddling the right edge (4096): only the part inside is kept.
  give(h, s, 3000, 2000);
  Sent a = h.expect({.flags = kTcpAck, .ack = s});
  EXPECT_EQ(blocks(a, s), (Blocks{{3000, 4096}}));
  // Entirely beyond the window: not acceptable, an ACK goes back.
  give(h, s, 5000, 100);
  a = h.expect({.flags = kTcpAck, .ack = s});
  EXPECT_EQ(h.counters.get(Counter::tcp_drop_out_of_window), 1u);
  // In order and too long: trimmed to the window.
  give(h, s, 0, 3500);
  a = h.expect({.flags = kTcpAck, .ack = s + 4096, .window = 0});
  EXPECT_EQ(h.read(), pattern_str(4096));
}

TEST(TcpReceive, AutoTuning_FastReaderGrowsAdvertisedWindow_Linux_Drs) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 65536;
  cfg.rcvbuf_max = 4 << 20;
  TcpHarness h(cfg);
  accept_with(h, {.wscale = 7});
  const std::uint8_t ws = info(h).rcv_wscale;
  ASSERT_EQ(ws, 7);
  std::uint32_t seq = h.peer_nxt;
  std::uint32_t best = 0;
  for (int round = 0; round < 4; ++round) {
    h.advance(10ms);
    // The peer sends 40 segments back to back; the application reads everything at once.
    for (int i = 0; i < 40; ++i) {
      h.send({.seq = seq, .ack = h.nxt, .payload = pattern(1460, seq)});
      seq += 1460;
    }
    h.drain();
    EXPECT_EQ(h.read(1 << 22).size(), 40u * 1460);
    for (const Sent& a : h.drain()) best = std::max(best, static_cast<std::uint32_t>(a.window) << ws);
  }
  EXPECT_GE(best, 4u * 65536) << "window never grew past the initial buffer";
  EXPECT_LE(best, cfg.rcvbuf_max);
  EXPECT_GT(static_cast<std::uint32_t>(*h.tcp->getsockopt(h.conn, SockOpt::rcvbuf)), 65536u);
}

TEST(TcpReceive, AutoTuning_OffWithExplicitSoRcvbuf_Linux) {
  TcpConfig cfg = plain_config();
  cfg.window_scaling = true;
  cfg.rcvbuf_initial = 65536;
  cfg.rcvbuf_max = 4 << 20;
  TcpHarness h(cfg);
  h.listen();
  ASSERT_EQ(h.tcp->setsockopt(h.listener, SockOpt::rcvbuf, 32768), Errc::ok);  // 64 KiB, inherited
  accept_with(h, {.wscale = 7});
  const std::uint8_t ws = info(h).rcv_wscale;
  std::uint32_t seq = h.peer_nxt;
  for (int round = 0; round < 4; ++round) {
    h.advance(10ms);
    for (int i = 0; i < 40; ++i) {
      h.send({.seq = seq, .ack = h.nxt, .payload = pattern(1460, seq)});
      seq += 1460;
    }
    h.read(1 << 22);
    for (const Sent& a : h.drain()) EXPECT_LE(static_cast<std::uint32_t>(a.window) << ws, 65536u + (1u << ws)) << a.str();
  }
}

}  // namespace
}  // namespace pno::test
