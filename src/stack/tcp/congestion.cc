// NewReno (RFC 5681, RFC 3465, RFC 6582) and the variant dispatch of CongestionControl.
#include "stack/tcp/congestion.hh"

#include <algorithm>

#include "stack/tcp/cc_common.hh"

namespace pno::tcp {

std::uint32_t initial_window(std::uint32_t mss) {
  // RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)).
  const std::uint64_t m = mss;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>({10 * m, std::max<std::uint64_t>(2 * m, 14600), kMaxCwnd}));
}

// ---------------------------------------------------------------------------------------------
// NewReno

NewReno::NewReno(std::uint32_t mss) {
  s_.mss = std::max<std::uint32_t>(mss, 1);
  s_.cwnd = initial_window(s_.mss);
}

void NewReno::on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration, Instant) {
  if (acked_bytes == 0 || !cc::cwnd_validated(s_, acked_bytes, bytes_in_flight)) return;
  if (s_.cwnd < s_.ssthresh) {
    acked_bytes = cc::slow_start(s_, acked_bytes);
    if (acked_bytes == 0) return;
  }
  // Congestion avoidance with byte counting, RFC 3465 §2.1: +1 SMSS once a full cwnd of bytes
  // has been acked, i.e. +1 SMSS per RTT. As in slow start, every byte an ACK covers counts
  // (Linux tcp_cong_avoid_ai), so a stretch ACK may add more than one SMSS.
  bytes_acked_ca_ += acked_bytes;
  while (bytes_acked_ca_ >= s_.cwnd && s_.cwnd < kMaxCwnd) {
    bytes_acked_ca_ -= s_.cwnd;
    s_.cwnd = std::min(s_.cwnd + s_.mss, kMaxCwnd);
  }
}

void NewReno::on_loss(std::uint32_t bytes_in_flight, Instant) {
  // RFC 5681 §3.2 step 2 (eq. 4): ssthresh = max(FlightSize / 2, 2*SMSS).
  s_.ssthresh = std::max(bytes_in_flight / 2, 2 * s_.mss);
  // RFC 6675 §5 step 4.2: cwnd = ssthresh; inflation, if any, is the connection's.
  s_.cwnd = s_.ssthresh;
  bytes_acked_ca_ = 0;
}

void NewReno::on_recovery_end(Instant) {
  // RFC 6582 §3.2 step 3, full ACK: deflate to ssthresh (option 1).
  s_.cwnd = s_.ssthresh;
  bytes_acked_ca_ = 0;
}

void NewReno::on_rto(std::uint32_t bytes_in_flight, Instant) {
  // RFC 5681 §3.1 eq. 4 and the loss window LW = 1 SMSS.
  s_.ssthresh = std::max(bytes_in_flight / 2, 2 * s_.mss);
  s_.cwnd = s_.mss;
  bytes_acked_ca_ = 0;
}

void NewReno::on_idle_restart() {
  cc::idle_restart(s_);
  bytes_acked_ca_ = 0;
}

void NewReno::set_mss(std::uint32_t mss) { cc::change_mss(s_, mss); }

// ---------------------------------------------------------------------------------------------
// Dispatch. std::visit over two alternatives compiles to a branch; no virtual call, no heap.

namespace {
template <typename V>
auto make_cc(CongestionAlgo algo, std::uint32_t mss) -> V {
  if (algo == CongestionAlgo::new_reno) return V{std::in_place_type<NewReno>, mss};
  return V{std::in_place_type<Cubic>, mss};
}
}  // namespace

CongestionControl::CongestionControl(CongestionAlgo algo, std::uint32_t mss)
    : cc_(make_cc<std::variant<NewReno, Cubic>>(algo, mss)) {}

void CongestionControl::on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt,
                               Instant now) {
  std::visit([&](auto& c) { c.on_ack(acked_bytes, bytes_in_flight, srtt, now); }, cc_);
}
void CongestionControl::on_loss(std::uint32_t bytes_in_flight, Instant now) {
  std::visit([&](auto& c) { c.on_loss(bytes_in_flight, now); }, cc_);
}
void CongestionControl::on_recovery_end(Instant now) {
  std::visit([&](auto& c) { c.on_recovery_end(now); }, cc_);
}
void CongestionControl::on_rto(std::uint32_t bytes_in_flight, Instant now) {
  std::visit([&](auto& c) { c.on_rto(bytes_in_flight, now); }, cc_);
}
void CongestionControl::on_idle_restart() {
  std::visit([](auto& c) { c.on_idle_restart(); }, cc_);
}
void CongestionControl::set_mss(std::uint32_t mss) {
  std::visit([&](auto& c) { c.set_mss(mss); }, cc_);
}
void CongestionControl::set_cwnd(std::uint32_t cwnd) {
  std::visit([&](auto& c) { c.set_cwnd(cwnd); }, cc_);
}
std::uint32_t CongestionControl::cwnd() const {
  return std::visit([](const auto& c) { return c.state().cwnd; }, cc_);
}
std::uint32_t CongestionControl::ssthresh() const {
  return std::visit([](const auto& c) { return c.state().ssthresh; }, cc_);
}
CongestionAlgo CongestionControl::algo() const {
  return std::holds_alternative<NewReno>(cc_) ? CongestionAlgo::new_reno : CongestionAlgo::cubic;
}

}  // namespace pno::tcp
