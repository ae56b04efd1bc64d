// The timer wheel keeps one entry per socket, as Linux keeps one timer per socket and moves it
// (sk_reset_timer / mod_timer): re-arming moves the entry, so a long-lived connection that re-arms
// on every segment (keepalive on, requests a second apart) never grows the wheel. Then the wheel
// itself: moving an entry earlier or later fires it exactly once at the new deadline, cancelling
// removes it, and expiry survives callbacks that cancel or move other entries of the same slot.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "stack/tcp/timer_wheel.hh"
#include "support/tcp_script.hh"

namespace pno::test {
namespace {

using namespace std::chrono_literals;

/// One request/response exchange on h.conn: the peer's request, the reply, the peer's ACK of it.
void exchange(TcpHarness& h) {
  const std::string req = "GET / HTTP/1.1\r\n\r\n";
  h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes(req)});
  h.peer_nxt += static_cast<std::uint32_t>(req.size());
  ASSERT_EQ(h.read(), req);
  const std::string resp = "HTTP/1.1 204 No Content\r\n\r\n";
  ASSERT_EQ(h.write(resp), resp.size());
  h.expect({.flags = kTcpAck, .seq = h.nxt, .ack = h.peer_nxt, .len = resp.size()});
  h.nxt += static_cast<std::uint32_t>(resp.size());
  h.send({.seq = h.peer_nxt, .ack = h.nxt});
  h.poll();
}

TEST(TcpTimerWheel, KeepaliveRequestsASecondApart_OneEntryPerSocket_LinuxSkResetTimer) {
  TcpHarness h;
  h.established_passive();
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  std::size_t most = 0;
  for (int i = 0; i < 600; ++i) {  // ten minutes of requests a second apart
    exchange(h);
    most = std::max(most, h.tcp->timer_entries());
    h.advance(1s);
    h.expect_nothing();
  }
  // The listener has no timer; the connection has one entry (its keepalive deadline now).
  EXPECT_LE(most, h.tcp->socket_count());
  EXPECT_EQ(h.tcp->timer_entries(), 1u);
  EXPECT_EQ(h.state(), st(TcpState::established));
  // The keepalive still fires at its time: 2 h after the last segment from the peer.
  const Instant last = h.now - 1s;
  h.run_until(last + h.cfg.keepalive_idle - 1ms);
  h.expect_nothing();
  h.run_until(last + h.cfg.keepalive_idle);
  h.expect({.flags = kTcpAck, .seq = h.nxt - 1, .ack = h.peer_nxt, .len = 0});
}

TEST(TcpTimerWheel, ClosedConnectionsLeaveNoEntries_Rfc9293_3_10_7_4) {
  TcpHarness h;
  h.established_passive();
  ASSERT_EQ(h.tcp->setsockopt(h.conn, SockOpt::keepalive, 1), Errc::ok);
  for (int i = 0; i < 20; ++i) {
    exchange(h);
    h.advance(1s);
  }
  h.time_wait();  // shutdown, FIN acked, the peer's FIN
  EXPECT_EQ(h.tcp->timer_entries(), 1u);  // the 2*MSL deadline
  ASSERT_EQ(h.tcp->close(h.conn), Errc::ok);
  h.run_until(h.now + 2 * h.cfg.msl);
  EXPECT_EQ(h.tcp->socket_count(), 1u);  // the listener
  EXPECT_EQ(h.tcp->timer_entries(), 0u);
}

class Wheel : public ::testing::Test {
 protected:
  const Instant t0 = instant_from_ns(1'000'000'000);
  tcp::TimerWheel w{t0};
  std::vector<std::pair<std::uint32_t, Instant>> fired;
  void run(Instant to) {
    w.expire(to, [&](std::uint32_t id, Instant d) { fired.emplace_back(id, d); });
  }
};

TEST_F(Wheel, RescheduleMovesTheOneEntryEarlierOrLater) {
  w.reserve(4);
  for (int i = 1; i <= 1000; ++i) w.schedule(1, t0 + std::chrono::milliseconds(i));
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.deadline(1), t0 + 1000ms);
  w.schedule(1, t0 + 3ms);  // earlier
  w.schedule(2, t0 + 3ms);
  w.schedule(2, t0 + 7s);   // later, past one revolution (4096 ms)
  EXPECT_EQ(w.size(), 2u);
  run(t0 + 1000ms);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0], (std::pair<std::uint32_t, Instant>{1, t0 + 3ms}));
  EXPECT_EQ(w.deadline(1), kNever);
  run(t0 + 7s - 1ms);
  EXPECT_EQ(fired.size(), 1u);
  run(t0 + 7s);
  ASSERT_EQ(fired.size(), 2u);
  EXPECT_EQ(fired[1], (std::pair<std::uint32_t, Instant>{2, t0 + 7s}));
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), kNever);
}

TEST_F(Wheel, CancelRemovesAndSameTickUpdatesInPlace) {
  w.schedule(5, t0 + 2ms);
  w.cancel(5);
  w.cancel(6);  // never scheduled
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), kNever);
  w.schedule(5, t0 + 1500us);
  w.schedule(5, t0 + 1900us);  // same 1 ms tick: the deadline handed back is the newest
  run(t0 + 2ms);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0].second, t0 + 1900us);
}

TEST_F(Wheel, CallbackMayCancelOrMoveEntriesOfTheSameSlot) {
  w.reserve(8);
  // 0..3 due in the same tick; 4 in the same slot one revolution later.
  for (std::uint32_t id = 0; id < 4; ++id) w.schedule(id, t0 + 5ms);
  w.schedule(4, t0 + 5ms + 4096ms);
  w.expire(t0 + 5ms, [&](std::uint32_t id, Instant d) {
    fired.emplace_back(id, d);
    // The first one fired cancels one sibling, moves another later and itself back into this slot.
    if (fired.size() == 1) {
      for (std::uint32_t o = 0; o < 4; ++o) {
        if (o == id) continue;
        if (w.deadline(o) != kNever) {
          w.cancel(o);
          break;
        }
      }
      for (std::uint32_t o = 0; o < 4; ++o) {
        if (o != id && w.deadline(o) != kNever) {
          w.schedule(o, t0 + 9ms);
          break;
        }
      }
      w.schedule(id, t0 + 5ms + 4096ms);
      w.schedule(4, t0 + 6ms);  // the later-revolution entry moves too
    }
  });
  // One fired first, one was cancelled, one moved to 9 ms, the fourth fired now.
  EXPECT_EQ(fired.size(), 2u);
  EXPECT_EQ(w.size(), 3u);
  run(t0 + 6ms);
  ASSERT_EQ(fired.size(), 3u);
  EXPECT_EQ(fired[2].first, 4u);
  run(t0 + 9ms);
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[3].second, t0 + 9ms);
  run(t0 + 5ms + 4096ms);
  ASSERT_EQ(fired.size(), 5u);
  EXPECT_EQ(fired[4].first, fired[0].first);
  EXPECT_EQ(w.size(), 0u);
}

TEST_F(Wheel, NextDeadlineNeverLateAfterMoves) {
  w.schedule(1, t0 + 50ms);
  w.schedule(2, t0 + 20ms);
  EXPECT_LE(w.next_deadline(), t0 + 20ms);
  w.schedule(2, t0 + 80ms);
  EXPECT_LE(w.next_deadline(), t0 + 50ms);
  EXPECT_GT(w.next_deadline(), t0 + 20ms);  // the moved entry left its old slot
  w.cancel(1);
  EXPECT_LE(w.next_deadline(), t0 + 80ms);
  EXPECT_GT(w.next_deadline(), t0 + 50ms);
}

}  // namespace
}  // namespace pno::test
