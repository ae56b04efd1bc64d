// Error codes of the stack's socket API. Each value is the errno Linux returns for the same
// condition, so the shim can hand them to applications unchanged.
#pragma once

#include <cerrno>
#include <cstdint>
#include <utility>

namespace pno {

enum class Errc : int {
  ok = 0,
  again = EAGAIN,              ///< would block: no data, no buffer space, no pending connection
  inval = EINVAL,              ///< bad argument or wrong state for the call
  badf = EBADF,                ///< unknown or closed socket id
  addr_in_use = EADDRINUSE,    ///< port already bound / 4-tuple in use
  addr_not_avail = EADDRNOTAVAIL,  ///< no ephemeral port left, or not a local address
  conn_refused = ECONNREFUSED, ///< RST in answer to our SYN
  conn_reset = ECONNRESET,     ///< RST on an established connection
  conn_aborted = ECONNABORTED, ///< connection aborted before accept
  timed_out = ETIMEDOUT,       ///< retransmissions or keepalive probes exhausted
  not_conn = ENOTCONN,         ///< not connected (yet)
  is_conn = EISCONN,           ///< already connected
  in_progress = EINPROGRESS,   ///< connect started, completion comes as an event
  already = EALREADY,          ///< connect already in progress
  pipe = EPIPE,                ///< send after shutdown(SHUT_WR) or after the connection closed
  no_mem = ENOMEM,             ///< a fixed-size table is full
  no_bufs = ENOBUFS,           ///< no frame buffer available
  host_unreach = EHOSTUNREACH, ///< ARP resolution failed
  net_unreach = ENETUNREACH,   ///< destination not on the link and no gateway
  no_proto_opt = ENOPROTOOPT,  ///< unsupported socket option
  op_not_supp = EOPNOTSUPP,    ///< operation not supported on this socket kind
  too_many = EMFILE,           ///< socket table full
};

inline constexpr int to_errno(Errc e) { return static_cast<int>(e); }

/// A value or an error code; no exceptions on the packet path.
template <typename T>
class Result {
 public:
  Result(T v) : value_(std::move(v)), err_(Errc::ok) {}  // NOLINT(google-explicit-constructor)
  Result(Errc e) : value_{}, err_(e) {}                  // NOLINT(google-explicit-constructor)
  [[nodiscard]] bool ok() const { return err_ == Errc::ok; }
  explicit operator bool() const { return ok(); }
  [[nodiscard]] Errc error() const { return err_; }
  [[nodiscard]] const T& value() const { return value_; }
  [[nodiscard]] T& value() { return value_; }
  const T& operator*() const { return value_; }
  T& operator*() { return value_; }

 private:
  T value_;
  Errc err_;
};

}  // namespace pno
