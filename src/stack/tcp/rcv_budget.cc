// Receive-window budget across connections. A receiver whose frame buffers are few and fixed (an
// AF_XDP fill ring, a NIC's rx descriptors) loses frames, not just time, when every connection's
// window is open at once and the senders fill them while the stack is not running: the port finds
// no buffer and drops. The kernel avoids this by absorbing into socket memory and pressuring
// windows; here the layer keeps the sum of open windows (advertised right edge minus RCV.NXT)
// within `TcpConfig::rcv_budget` while more than one connection receives. A connection only ever
// stops *opening* its window: the advertised right edge never moves left (RFC 9293 §3.8.6,
// RFC 7323 §2.4; window_field enforces it), so a sender never sees a shrunk window.
#include <algorithm>

#include "stack/tcp/layer_impl.hh"

namespace pno::tcp {

namespace {

/// States in which the peer may still send us data.
bool may_receive(const Sock& s) {
  if (!s.in_use || s.tcb.fin_rcvd) return false;
  switch (s.tcb.state) {
    case TcpState::syn_received:
    case TcpState::established:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::uint32_t TcpLayer::Impl::rcv_receivers() {
  if (now - rcv_epoch_start >= kRcvBudgetEpoch) {
    // Connections of the ending epoch become the previous one's; after a longer quiet spell
    // nobody is receiving any more.
    const bool next = now - rcv_epoch_start < 2 * kRcvBudgetEpoch;
    rcv_active_prev = next ? rcv_active_cur : 0;
    rcv_active_cur = 0;
    rcv_epoch_no += next ? 1 : 2;
    rcv_epoch_start = now;
  }
  return rcv_active_cur + rcv_active_prev;
}

void TcpLayer::Impl::rcv_budget_note_data(Sock& s) {
  (void)rcv_receivers();  // roll the epoch first so the connection lands in the current one
  if (s.rcv_epoch == rcv_epoch_no) return;
  if (s.rcv_epoch != 0 && s.rcv_epoch + 1 == rcv_epoch_no) --rcv_active_prev;
  ++rcv_active_cur;
  s.rcv_epoch = rcv_epoch_no;
}

void TcpLayer::Impl::rcv_budget_forget(Sock& s) {
  rcv_held_sum -= s.rcv_held;
  s.rcv_held = 0;
  if (s.rcv_epoch != 0) {
    if (s.rcv_epoch == rcv_epoch_no) {
      --rcv_active_cur;
    } else if (s.rcv_epoch + 1 == rcv_epoch_no) {
      --rcv_active_prev;
    }
    s.rcv_epoch = 0;
  }
}

void TcpLayer::Impl::rcv_budget_sync(Sock& s) {
  if (!may_receive(s)) {
    rcv_budget_forget(s);
    return;
  }
  const Tcb& t = s.tcb;
  const std::uint32_t open = t.rcv.adv_edge > t.rcv.nxt ? t.rcv.adv_edge.since(t.rcv.nxt) : 0;
  rcv_held_sum = rcv_held_sum - s.rcv_held + open;
  s.rcv_held = open;
}

std::uint32_t TcpLayer::Impl::rcv_budget_cap(Sock& s, std::uint32_t w, bool count) {
  if (cfg.rcv_budget == 0) return w;
  const std::uint32_t receivers = rcv_receivers();
  const bool self = s.rcv_epoch != 0 && (s.rcv_epoch == rcv_epoch_no || s.rcv_epoch + 1 == rcv_epoch_no);
  const std::uint32_t others = receivers - (self ? 1 : 0);
  // A lone receiver (one bulk stream) keeps the window its buffer allows: the budget is about
  // many windows adding up, and a single stream's window is what carries its throughput.
  if (others == 0) return w;
  // Every connection may open a few segments whatever the others hold, so none stalls; beyond
  // that it gets what the others leave of the budget, but no more than an equal share: a window
  // drains only as its peer sends into it, so one granted to a connection that then goes quiet
  // (a pipelined client waiting for its answers) would keep the others at their floor.
  const std::uint64_t floor = std::uint64_t{cfg.rcv_budget_floor_segs} * std::max<std::uint32_t>(s.tcb.rcv.mss, 536);
  const std::uint64_t others_held = rcv_held_sum - s.rcv_held;
  const std::uint64_t room = cfg.rcv_budget > others_held ? cfg.rcv_budget - others_held : 0;
  const std::uint64_t share = cfg.rcv_budget / (std::uint64_t{others} + 1);
  const std::uint64_t allow = std::max(floor, std::min(room, share));
  if (allow >= w) return w;
  if (count) ctr.inc(Counter::tcp_rcv_budget_limited);
  return static_cast<std::uint32_t>(allow);
}

}  // namespace pno::tcp
