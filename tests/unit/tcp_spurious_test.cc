// No spurious retransmissions on a loss-free path: an echo exchange where the peer's data segments
// carry an older ACK (sent before our data arrived) interleaved with its per-segment ACKs, over
// ISNs in both halves of the sequence space (the recovery variables must start at the ISS, not 0).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/tcp_script.hh"

namespace pno::test {
namespace {

/// Harness whose stack has ISN secret `secret`, so tests can pick ISSs across the sequence space.
std::unique_ptr<TcpHarness> harness_with_secret(std::uint64_t secret, const TcpConfig& cfg) {
  auto h = std::make_unique<TcpHarness>(cfg);
  h->tcp = std::make_unique<tcp::TcpLayer>(h->cfg, h->ip, h->counters, secret, h->now);
  return h;
}

void expect_no_retransmission_counters(const TcpHarness& h) {
  EXPECT_EQ(h.counters.get(Counter::tcp_retransmits), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_fast_retransmits), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_loss_probes), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_rack_marks), 0u);
  EXPECT_EQ(h.counters.get(Counter::tcp_rto_expired), 0u);
}

/// Every data segment the stack sends starts at or above the highest sequence number sent so far.
void expect_only_new_data(const std::vector<Sent>& out, std::uint32_t& high) {
  for (const Sent& x : out) {
    if (x.payload.empty()) continue;
    EXPECT_GE(static_cast<std::int32_t>(x.seq - high), 0) << "resent " << x.str();
    high = x.seq + static_cast<std::uint32_t>(x.payload.size());
  }
}

/// The echo of pno-loadgen `conns`: the peer sends 10 segments back to back; the application echoes
/// the first five as soon as they arrive; the peer's last five (still carrying ACK = ISS + 1) and
/// its per-segment ACKs of our echo arrive interleaved.
void run_echo(TcpHarness& h) {
  h.syn_received({.sack_perm = true});
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.conn = *h.tcp->accept(h.listener);
  EXPECT_EQ(h.tcp->setsockopt(h.conn, SockOpt::nodelay, 1), Errc::ok);
  const std::uint32_t a0 = h.nxt;   // the peer's stale ACK value
  const std::uint32_t p0 = h.peer_nxt;
  for (int i = 0; i < 5; ++i) h.send({.seq = at(p0, i), .ack = a0, .payload = pattern(kMss, i * kMss)});
  h.poll();
  h.drain();  // ACKs
  EXPECT_EQ(h.write(h.read()), 5 * kMss);
  std::uint32_t high = a0;
  expect_only_new_data(h.drain(), high);
  ASSERT_EQ(high, at(a0, 5));
  // Interleaved as on the wire: data (old ACK), our echo's per-segment ACK, data, ACK, ...
  // The stack flushes after each one (one segment per receive burst).
  for (int i = 5; i < 10; ++i) {
    h.send({.seq = at(p0, i), .ack = a0, .payload = pattern(kMss, i * kMss)});
    h.poll();
    expect_only_new_data(h.drain(), high);
    h.send({.seq = at(p0, i + 1), .ack = at(a0, i - 4)});
    h.poll();
    expect_only_new_data(h.drain(), high);
  }
  EXPECT_EQ(h.write(h.read()), 5 * kMss);
  h.poll();
  expect_only_new_data(h.drain(), high);
  ASSERT_EQ(high, at(a0, 10));
  for (int i = 6; i <= 10; ++i) h.send({.seq = at(p0, 10), .ack = at(a0, i)});
  h.poll();
  expect_only_new_data(h.drain(), high);
  h.run_until(h.now + 3s);
  expect_only_new_data(h.drain(), high);
  EXPECT_EQ((*h.tcp->info(h.conn)).unacked, 0u);
  expect_no_retransmission_counters(h);
}

TEST(TcpSpurious, EchoDataWithStaleAckIsNotADuplicateAck_Rfc5681_2_AnyIss) {
  bool low = false, high = false;
  for (std::uint64_t secret = 1; secret <= 24; ++secret) {
    auto h = harness_with_secret(secret, sack_config());
    SCOPED_TRACE("secret " + std::to_string(secret));
    run_echo(*h);
    (h->iss >= 0x80000000u ? high : low) = true;
  }
  // The ISSs covered both halves of the sequence space.
  EXPECT_TRUE(low);
  EXPECT_TRUE(high);
}

TEST(TcpSpurious, NewrenoEchoDataWithStaleAckIsNotADuplicateAck_Rfc5681_2_AnyIss) {
  for (std::uint64_t secret = 1; secret <= 24; ++secret) {
    auto h = harness_with_secret(secret, plain_config());
    SCOPED_TRACE("secret " + std::to_string(secret));
    run_echo(*h);
  }
}

}  // namespace
}  // namespace pno::test
