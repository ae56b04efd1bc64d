// Congestion control behind one small interface: NewReno (RFC 5681, RFC 6582) and CUBIC
// (RFC 9438). A closed std::variant: no heap, no virtual calls on the ACK path.
// All quantities in bytes. The connection owns loss detection (dup ACKs, SACK, RTO) and tells the
// controller what happened; the controller owns cwnd and ssthresh.
#pragma once

#include <cstdint>
#include <variant>

#include "stack/socket.hh"
#include "stack/time.hh"

namespace pno::tcp {

/// State and hooks shared by every algorithm.
struct CcState {
  std::uint32_t mss = 536;
  std::uint32_t cwnd = 0;
  std::uint32_t ssthresh = 0x7fffffff;
};

class NewReno {
 public:
  explicit NewReno(std::uint32_t mss);
  /// New data cumulatively acked outside recovery: slow start or congestion avoidance (RFC 5681 §3.1).
  void on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now);
  /// Entering fast recovery (3 dup ACKs or SACK loss detection): ssthresh = max(flight/2, 2*MSS).
  void on_loss(std::uint32_t bytes_in_flight, Instant now);
  /// Leaving recovery: cwnd = ssthresh (RFC 6582 §3.2 step 3, "full ACK").
  void on_recovery_end(Instant now);
  /// RTO: ssthresh = max(flight/2, 2*MSS), cwnd = 1 MSS (RFC 5681 §3.1 eq. 4).
  void on_rto(std::uint32_t bytes_in_flight, Instant now);
  /// Idle restart (RFC 5681 §4.1): cwnd reduced to the restart window after an idle RTO.
  void on_idle_restart();
  void set_mss(std::uint32_t mss);
  [[nodiscard]] const CcState& state() const { return s_; }
  /// Sets cwnd directly (used during recovery, e.g. RFC 6675 pipe-based sending and inflation).
  void set_cwnd(std::uint32_t cwnd) { s_.cwnd = cwnd; }

 private:
  CcState s_;
  std::uint32_t bytes_acked_ca_ = 0;  ///< byte counting in congestion avoidance (RFC 3465)
};

class Cubic {
 public:
  explicit Cubic(std::uint32_t mss);
  void on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now);
  void on_loss(std::uint32_t bytes_in_flight, Instant now);  ///< beta_cubic = 0.7 (RFC 9438 §4.6)
  void on_recovery_end(Instant now);
  void on_rto(std::uint32_t bytes_in_flight, Instant now);
  void on_idle_restart();
  void set_mss(std::uint32_t mss);
  [[nodiscard]] const CcState& state() const { return s_; }
  void set_cwnd(std::uint32_t cwnd) { s_.cwnd = cwnd; }

 private:
  CcState s_;
  // RFC 9438 §4 names.
  double w_max_ = 0;           ///< window before the last reduction, in MSS
  double k_ = 0;               ///< seconds until W_cubic reaches w_max
  double w_est_ = 0;           ///< Reno-friendly estimate, in MSS (§4.3)
  Instant epoch_start_{};      ///< start of the current congestion-avoidance epoch
  bool epoch_valid_ = false;
  std::uint32_t acked_accum_ = 0;
};

/// The controller a connection holds.
class CongestionControl {
 public:
  CongestionControl(CongestionAlgo algo, std::uint32_t mss);
  void on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now);
  void on_loss(std::uint32_t bytes_in_flight, Instant now);
  void on_recovery_end(Instant now);
  void on_rto(std::uint32_t bytes_in_flight, Instant now);
  void on_idle_restart();
  void set_mss(std::uint32_t mss);
  void set_cwnd(std::uint32_t cwnd);
  [[nodiscard]] std::uint32_t cwnd() const;
  [[nodiscard]] std::uint32_t ssthresh() const;
  [[nodiscard]] CongestionAlgo algo() const;

 private:
  std::variant<NewReno, Cubic> cc_;
};

}  // namespace pno::tcp
