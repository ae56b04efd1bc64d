// Congestion control behind one small interface: NewReno (RFC 5681, RFC 6582) and CUBIC
// (RFC 9438). A closed std::variant: no heap, no virtual calls on the ACK path.
// All quantities in bytes. The connection owns loss detection (dup ACKs, SACK, RTO) and tells the
// controller what happened; the controller owns cwnd and ssthresh.
#pragma once

#include <cstdint>
#include <variant>

#include "base/socket.hh"
#include "base/time.hh"
#include "stack/config.hh"

namespace pno::tcp {

/// Initial window, RFC 6928 §2 (as Linux): min(10*MSS, max(2*MSS, 14600)) bytes.
std::uint32_t initial_window(std::uint32_t mss);

/// Upper bound on cwnd in bytes, so additions can never wrap.
inline constexpr std::uint32_t kMaxCwnd = 1u << 30;

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
  /// `bytes_in_flight`: bytes outstanding when the ACK arrived, before or after removing the acked
  /// ones (the sum flight + acked is what matters). cwnd grows only while it is validated, i.e. the
  /// sender used at least half of it (RFC 7661 §4.3, like Linux's tcp_is_cwnd_limited): an
  /// application-limited sender does not inflate cwnd it never tested.
  /// `srtt` and `now` are unused by NewReno (CUBIC needs them).
  void on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now);
  /// Entering fast recovery (3 dup ACKs or SACK loss detection): ssthresh = max(flight/2, 2*MSS)
  /// (RFC 5681 §3.2 eq. 4), cwnd = ssthresh (RFC 6675 §5 step 4.2). The connection adds any
  /// RFC 6582 §3.2 inflation (3*SMSS, +SMSS per dup ACK) itself through set_cwnd().
  void on_loss(std::uint32_t bytes_in_flight, Instant now);
  /// Leaving recovery: cwnd = ssthresh (RFC 6582 §3.2 step 3, "full ACK").
  void on_recovery_end(Instant now);
  /// RTO: ssthresh = max(flight/2, 2*MSS), cwnd = 1 MSS (RFC 5681 §3.1 eq. 4).
  void on_rto(std::uint32_t bytes_in_flight, Instant now);
  /// Idle restart (RFC 5681 §4.1): cwnd reduced to the restart window after an idle RTO.
  void on_idle_restart();
  /// The MSS changed (e.g. after the handshake or a PMTU change): cwnd keeps its size in segments.
  void set_mss(std::uint32_t mss);
  [[nodiscard]] const CcState& state() const { return s_; }
  /// Sets cwnd directly (used during recovery, e.g. RFC 6675 pipe-based sending and inflation).
  void set_cwnd(std::uint32_t cwnd) { s_.cwnd = cwnd < kMaxCwnd ? cwnd : kMaxCwnd; }

 private:
  CcState s_;
  std::uint32_t bytes_acked_ca_ = 0;  ///< byte counting in congestion avoidance (RFC 3465)
};

class Cubic {
 public:
  static constexpr double kC = 0.4;     ///< C, RFC 9438 §4.1.1 and §5
  static constexpr double kBeta = 0.7;  ///< beta_cubic, RFC 9438 §4.6
  /// alpha_cubic = 3 * (1 - beta) / (1 + beta), RFC 9438 §4.3.
  static constexpr double kAlpha = 3.0 * (1.0 - kBeta) / (1.0 + kBeta);

  explicit Cubic(std::uint32_t mss);
  /// Same contract as NewReno::on_ack. Slow start below ssthresh (RFC 9438 §4.10), else the
  /// cubic window with the Reno-friendly region (§4.2-§4.5). `srtt` is the RTT in W_cubic(t+RTT).
  void on_ack(std::uint32_t acked_bytes, std::uint32_t bytes_in_flight, Duration srtt, Instant now);
  /// ssthresh = max(flight * beta_cubic, 2*MSS), cwnd = ssthresh (RFC 9438 §4.6); W_max with fast
  /// convergence (§4.7); a new epoch starts with the next congestion-avoidance ACK.
  void on_loss(std::uint32_t bytes_in_flight, Instant now);
  void on_recovery_end(Instant now);
  /// RFC 9438 §4.8: ssthresh as on loss, cwnd = 1 MSS; the next epoch has K = 0, W_max = cwnd.
  void on_rto(std::uint32_t bytes_in_flight, Instant now);
  void on_idle_restart();
  void set_mss(std::uint32_t mss);
  [[nodiscard]] const CcState& state() const { return s_; }
  void set_cwnd(std::uint32_t cwnd) { s_.cwnd = cwnd < kMaxCwnd ? cwnd : kMaxCwnd; }

  // Observers for diagnostics and tests (RFC 9438 names, MSS units / seconds).
  [[nodiscard]] double w_max() const { return w_max_; }
  [[nodiscard]] double k() const { return k_; }
  [[nodiscard]] double w_est() const { return w_est_; }
  /// W_cubic(t) = C*(t-K)^3 + W_max in MSS, t in seconds since the epoch start (RFC 9438 §4.2).
  [[nodiscard]] double w_cubic(double t) const;

 private:
  void start_epoch(Instant now);

  CcState s_;
  // RFC 9438 §4 names.
  double w_max_ = 0;           ///< window before the last reduction, in MSS
  double k_ = 0;               ///< seconds until W_cubic reaches w_max
  double w_est_ = 0;           ///< Reno-friendly estimate, in MSS (§4.3)
  double cwnd_prior_ = 0;      ///< cwnd when ssthresh was last set, in MSS (§4.3, §4.6)
  Instant epoch_start_{};      ///< start of the current congestion-avoidance epoch
  bool epoch_valid_ = false;
  std::uint32_t acked_accum_ = 0;  ///< bytes acked toward the next 1-MSS cubic increase
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
