// Receive-window budget across connections (TcpConfig::rcv_budget): once several connections
// receive, the windows left open (advertised right edge minus what the peer already sent) add up
// to no more than the budget plus each connection's floor of a few segments; a busy connection
// may use what quiet ones leave; a lone receiver keeps its whole window; and no advertised right
// edge ever moves left (RFC 9293 §3.8.6, RFC 7323 §2.4).
//
// The peers are scripted: each fills the window it was offered with full segments, the
// application reads everything, and the test recomputes every connection's right edge from the
// ACKs the stack sends (no window scaling, so edge = SEG.ACK + SEG.WND).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "support/tcp_harness.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kMss = 1460;

struct Peer {
  std::uint16_t sport = 0;
  SocketId conn = kInvalidSocket;
  std::uint32_t our_nxt = 0;   ///< the stack's next sequence number (what the peer ACKs)
  std::uint32_t sent = 0;      ///< the peer's next sequence number (SND.NXT at the peer)
  std::uint32_t edge = 0;      ///< right edge the stack advertised last (SEG.ACK + SEG.WND)
  std::uint64_t received = 0;  ///< bytes the application read
  /// Window still open towards the stack: what the port must be able to absorb.
  [[nodiscard]] std::uint32_t open() const { return static_cast<std::int32_t>(edge - sent) > 0 ? edge - sent : 0; }
};

class Budget {
 public:
  explicit Budget(const TcpConfig& cfg) : h(cfg) { h.listen(kLocalPort, 64); }

  TcpHarness h;
  std::vector<Peer> peers;
  bool edge_moved_left = false;

  /// A passive open from port `sport`; the SYN-ACK's window is the first edge.
  Peer& open(std::uint16_t sport) {
    Peer p;
    p.sport = sport;
    h.send({.flags = kTcpSyn, .seq = kPeerIss, .mss = kMss, .sport = sport});
    const Sent sa = h.expect({.flags = kTcpSyn | kTcpAck, .ack = kPeerIss + 1, .dport = sport});
    p.our_nxt = sa.seq + 1;
    p.sent = kPeerIss + 1;
    p.edge = p.sent + sa.window;
    h.send({.seq = p.sent, .ack = p.our_nxt, .sport = sport});
    auto c = h.tcp->accept(h.listener);
    EXPECT_TRUE(c.ok());
    p.conn = c.ok() ? *c : kInvalidSocket;
    peers.push_back(p);
    return peers.back();
  }

  /// Takes every segment the stack sent and moves each peer's right edge; records a left move.
  void collect() {
    for (const Sent& s : h.drain()) {
      for (Peer& p : peers) {
        if (p.sport != s.dport || (s.flags & kTcpAck) == 0) continue;
        const std::uint32_t edge = s.ack + s.window;
        if (static_cast<std::int32_t>(edge - p.edge) < 0) {
          edge_moved_left = true;
          ADD_FAILURE() << "right edge of port " << p.sport << " moved left: " << p.edge << " -> " << edge;
        }
        p.edge = edge;
      }
    }
  }

  /// The peer sends full segments (a last runt if `runts`) until its window is used up, at most
  /// `limit` bytes; the stack's ACKs are collected as they come.
  std::uint32_t fill(Peer& p, std::uint32_t limit = UINT32_MAX) {
    std::uint32_t total = 0;
    while (p.open() > 0 && total < limit) {
      const std::uint32_t n = std::min({p.open(), kMss, limit - total});
      h.send({.seq = p.sent, .ack = p.our_nxt, .payload = Bytes(n, std::byte{0x5a}), .sport = p.sport});
      p.sent += n;
      total += n;
      collect();
    }
    return total;
  }

  /// The application reads everything on every connection; window updates are collected.
  void read_all() {
    for (Peer& p : peers) p.received += h.read(1 << 20, p.conn).size();
    collect();
  }

  [[nodiscard]] std::uint64_t open_sum() const {
    std::uint64_t s = 0;
    for (const Peer& p : peers) s += p.open();
    return s;
  }
};

TcpConfig budget_config(std::uint64_t budget, std::uint32_t floor_segs) {
  TcpConfig c = plain_config();
  c.rcv_budget = budget;
  c.rcv_budget_floor_segs = floor_segs;
  return c;
}

TEST(TcpRcvBudget, SumOfOpenWindowsStaysWithinBudgetWithManyReceivers) {
  // What may be open: the budget, plus the floor (2 segments) of each of the 4 connections, which
  // a connection gets even when the others hold the whole budget.
  constexpr std::uint64_t kBudget = 16 * kMss + 4 * 2 * kMss;
  Budget b(budget_config(16 * kMss, 2));
  for (std::uint16_t i = 0; i < 4; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  // The handshakes offered 64 KiB each (more than the budget, and never taken back). Rounds of
  // "every peer fills its window, the application reads, delayed ACKs fire": once the first
  // windows are used up, what stays open never exceeds the budget.
  for (int round = 0; round < 30; ++round) {
    for (Peer& p : b.peers) {
      b.fill(p);
      if (round > 0) {
        EXPECT_LE(b.open_sum(), kBudget) << "round " << round << " after port " << p.sport;
      }
    }
    b.read_all();
    b.h.advance(40ms);
    b.collect();
    if (round > 0) {
      EXPECT_LE(b.open_sum(), kBudget) << "round " << round;
    }
  }
  EXPECT_FALSE(b.edge_moved_left);
  // The budget held without stalling anyone: every connection kept receiving.
  for (const Peer& p : b.peers) EXPECT_GT(p.received, 65535u + 29u * 2 * kMss) << "port " << p.sport;
  EXPECT_GT(b.h.counters.get(Counter::tcp_rcv_budget_limited), 0u);
}

TEST(TcpRcvBudget, BusyConnectionGetsAtMostAnEqualShareWhileOthersReceive) {
  constexpr std::uint64_t kBudget = 16 * kMss;
  Budget b(budget_config(kBudget, 2));
  for (std::uint16_t i = 0; i < 4; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  // All four receive once (they count as receivers from now on), then only the first keeps
  // sending: its window reopens to a quarter of the budget, not to what the others leave, so a
  // window it would hold while going quiet never keeps the others at their floor.
  for (Peer& p : b.peers) b.fill(p);
  b.read_all();
  for (int round = 0; round < 5; ++round) {
    b.fill(b.peers[0]);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
    EXPECT_EQ(b.peers[0].open(), kBudget / 4) << "round " << round;
  }
  for (std::size_t i = 1; i < b.peers.size(); ++i) EXPECT_EQ(b.peers[i].open(), kBudget / 4) << "port " << b.peers[i].sport;
  EXPECT_FALSE(b.edge_moved_left);
}

TEST(TcpRcvBudget, StarvedWindowIsAckedAtOnce_Rfc9293_3_8_6_3) {
  // Windows at their floor (2 segments): one segment leaves the peer less than two segments of
  // window, so no second segment can come to trigger the ACK. It goes out at once, not after the
  // 40 ms delayed-ACK timer, and opens the window again.
  Budget b(budget_config(kMss, 2));
  for (std::uint16_t i = 0; i < 2; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  for (int round = 0; round < 2; ++round) {
    for (Peer& p : b.peers) b.fill(p);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
  }
  Peer& p = b.peers[0];
  ASSERT_EQ(p.open(), 2 * kMss);
  b.h.send({.seq = p.sent, .ack = p.our_nxt, .payload = Bytes(kMss, std::byte{1}), .sport = p.sport});
  p.sent += kMss;
  const std::vector<Sent> out = b.h.drain();
  ASSERT_EQ(out.size(), 1u) << "ACK at once for a starved window";
  EXPECT_EQ(out[0].ack, p.sent);
  EXPECT_EQ(out[0].ack + out[0].window, p.sent + 2 * kMss);
}

TEST(TcpRcvBudget, RightEdgeNeverMovesLeftWhenTheBudgetTightens_Rfc7323_2_4) {
  constexpr std::uint64_t kBudget = 8 * kMss;
  Budget b(budget_config(kBudget, 2));
  // A alone receives (until its buffer is full), reads: its window reopens to the whole buffer.
  b.fill(b.open(kPeerPort));
  b.read_all();
  b.h.advance(40ms);
  b.collect();
  const std::uint32_t a_edge = b.peers[0].edge;
  EXPECT_EQ(a_edge - b.peers[0].sent, 65535u) << "a lone receiver keeps its full window";
  // Three more connections start receiving: A's right edge stays where it was (the peer may still
  // send up to it), though the budget is far smaller than what A has open.
  for (std::uint16_t i = 1; i < 4; ++i) b.fill(b.open(static_cast<std::uint16_t>(kPeerPort + i)), 2 * kMss);
  b.read_all();
  // A's peer sends one segment; the ACK may not open A's window again, and may not shrink it.
  b.fill(b.peers[0], kMss);
  b.h.advance(40ms);
  b.collect();
  EXPECT_EQ(b.peers[0].edge, a_edge) << "edge neither retreats nor advances past the budget";
  // A uses up the window it was given: from then on it gets at most its share of the budget.
  b.fill(b.peers[0]);
  b.read_all();
  b.h.advance(40ms);
  b.collect();
  EXPECT_LE(b.peers[0].open(), kBudget / 4) << "A reopens to its share only";
  EXPECT_GE(b.peers[0].open(), 2 * kMss) << "but at least the floor";
  EXPECT_FALSE(b.edge_moved_left);
}

TEST(TcpRcvBudget, LoneReceiverKeepsItsWholeWindowIdleConnectionsDoNotCount) {
  Budget b(budget_config(4 * kMss, 2));
  b.open(kPeerPort);
  b.open(kPeerPort + 1);  // connected, never sends
  b.open(kPeerPort + 2);
  for (int round = 0; round < 5; ++round) {
    b.fill(b.peers[0], 30 * kMss);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
    EXPECT_EQ(b.peers[0].open(), 65535u) << "round " << round;
  }
  EXPECT_EQ(b.h.counters.get(Counter::tcp_rcv_budget_limited), 0u);
}

TEST(TcpRcvBudget, FloorKeepsEveryConnectionOpenWhenTheBudgetIsTiny) {
  // A budget below one segment per connection: each connection still reopens to the floor, so
  // none stalls on a zero window.
  Budget b(budget_config(kMss, 3));
  for (std::uint16_t i = 0; i < 4; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  for (int round = 0; round < 10; ++round) {
    for (Peer& p : b.peers) b.fill(p);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
    if (round == 0) continue;
    for (const Peer& p : b.peers) {
      EXPECT_GE(p.open(), 3 * kMss) << "round " << round << " port " << p.sport;
      EXPECT_LE(p.open(), 3 * kMss + kMss) << "round " << round << " port " << p.sport;
    }
  }
  EXPECT_FALSE(b.edge_moved_left);
}

TEST(TcpRcvBudget, ZeroBudgetMeansNoLimit) {
  Budget b(budget_config(0, 2));
  for (std::uint16_t i = 0; i < 4; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  for (int round = 0; round < 3; ++round) {
    for (Peer& p : b.peers) b.fill(p);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
  }
  for (const Peer& p : b.peers) EXPECT_EQ(p.open(), 65535u) << "port " << p.sport;
  EXPECT_EQ(b.h.counters.get(Counter::tcp_rcv_budget_limited), 0u);
}

TEST(TcpRcvBudget, BudgetReturnsWhenReceiversGoQuietOrClose) {
  constexpr std::uint64_t kBudget = 8 * kMss;
  Budget b(budget_config(kBudget, 2));
  for (std::uint16_t i = 0; i < 3; ++i) b.open(static_cast<std::uint16_t>(kPeerPort + i));
  for (int round = 0; round < 4; ++round) {
    for (Peer& p : b.peers) b.fill(p);
    b.read_all();
    b.h.advance(40ms);
    b.collect();
  }
  EXPECT_LE(b.open_sum(), kBudget + 3 * 2 * kMss);  // the budget plus three floors
  // Peers 1 and 2 finish: one sends FIN (it can send nothing more, so it holds no budget), the
  // other just goes quiet for longer than two epochs.
  Peer& p1 = b.peers[1];
  b.h.send({.flags = kTcpFin | kTcpAck, .seq = p1.sent, .ack = p1.our_nxt, .sport = p1.sport});
  p1.sent += 1;
  b.collect();
  b.h.advance(250ms);
  b.collect();
  // Peer 0 is the only receiver again: its window reopens to the whole buffer.
  b.fill(b.peers[0]);
  b.read_all();
  b.h.advance(40ms);
  b.collect();
  EXPECT_EQ(b.peers[0].open(), 65535u);
  EXPECT_FALSE(b.edge_moved_left);
}

}  // namespace
}  // namespace pno::test
