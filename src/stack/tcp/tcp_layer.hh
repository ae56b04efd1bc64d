// The TCP layer: every connection and listener of one stack instance, the demux from 4-tuples to
// connections, the timer wheel, and the native socket API (which Stack forwards to).
//
// Sans-IO: segments, time and socket calls come in; segments go out through Ipv4Output; readiness
// changes come out as SocketEvents; the next deadline comes out of next_deadline().
// Socket calls take no time argument: they use the time of the last on_segment()/poll(), and the
// segments they cause are sent by the next poll() (program, then flush).
#pragma once

#include <memory>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/counters.hh"
#include "base/errc.hh"
#include "stack/ip_output.hh"
#include "base/socket.hh"
#include "base/time.hh"
#include "stack/config.hh"

namespace pno::tcp {

class TcpLayer {
 public:
  /// `secret` keys ISNs (RFC 6528) and SYN cookies; the engine passes random bytes.
  TcpLayer(const TcpConfig& cfg, Ipv4Output& ip, Counters& counters, std::uint64_t secret, Instant now);
  ~TcpLayer();
  TcpLayer(const TcpLayer&) = delete;
  TcpLayer& operator=(const TcpLayer&) = delete;

  /// A TCP segment from the IPv4 layer (header + payload, IPv4 already validated).
  void on_segment(const Ipv4RxInfo& ip, ByteSpan segment, Instant now);
  /// Fires due timers and sends everything pending (ACKs, data, retransmissions).
  void poll(Instant now);
  /// Earliest time poll() has work, kNever if none. Immediate work gives a time <= now.
  [[nodiscard]] Instant next_deadline() const;

  // --- socket API (Linux semantics, errors as Errc) ---
  Result<SocketId> socket();
  Errc bind(SocketId s, Endpoint local);
  Errc listen(SocketId s, int backlog);
  /// A connection from the accept queue; `peer` filled if non-null. Errc::again when empty.
  Result<SocketId> accept(SocketId listener, Endpoint* peer = nullptr);
  /// Starts the handshake; returns Errc::in_progress. Completion (or failure) shows as kWritable
  /// (or kError + so_error) readiness.
  Errc connect(SocketId s, Endpoint remote);
  /// Copies up to data.size() bytes into the send buffer. `more`: MSG_MORE/cork for this call.
  Result<std::size_t> send(SocketId s, ByteSpan data, bool more = false);
  /// Copies received bytes out; 0 means EOF. `peek` leaves them in place.
  Result<std::size_t> recv(SocketId s, MutByteSpan buf, bool peek = false);
  /// In-place send: up to `max` bytes of free send-buffer space (at most two spans), after the
  /// same checks as send() (so a pending error is returned and cleared; Errc::again when full).
  /// The caller fills a prefix of the spans, in order, and queues it with send_commit(); the
  /// spans are valid until the next call into the layer. Saves the copy through a staging buffer.
  Result<std::pair<MutByteSpan, MutByteSpan>> send_space(SocketId s, std::size_t max);
  /// Queues `n` bytes written into send_space()'s spans, as send() of those bytes would.
  Result<std::size_t> send_commit(SocketId s, std::size_t n, bool more = false);
  /// In-place receive: up to `max` readable bytes (at most two spans), empty when recv() would
  /// not return data (nothing buffered, EOF, error: call recv() to learn which). Valid until the
  /// next call into the layer; recv_consume() then takes what the caller used.
  [[nodiscard]] std::pair<ByteSpan, ByteSpan> recv_view(SocketId s, std::size_t max) const;
  /// Removes `n` bytes shown by recv_view(), as recv() of them would (window update, auto-tuning).
  void recv_consume(SocketId s, std::size_t n);
  Errc shutdown(SocketId s, ShutdownHow how);
  /// close(): graceful FIN, or RST when unread data is pending or linger is 0 (as Linux does).
  Errc close(SocketId s);
  /// Abortive close: RST now.
  Errc abort(SocketId s);
  Errc setsockopt(SocketId s, SockOpt opt, int value);
  Result<int> getsockopt(SocketId s, SockOpt opt) const;
  /// Pending asynchronous error (SO_ERROR), cleared by reading it. Errc::ok if none.
  Errc take_error(SocketId s);
  [[nodiscard]] std::uint32_t readiness(SocketId s) const;
  [[nodiscard]] Result<Endpoint> local_endpoint(SocketId s) const;
  [[nodiscard]] Result<Endpoint> peer_endpoint(SocketId s) const;
  [[nodiscard]] Result<TcpInfo> info(SocketId s) const;
  /// Bytes readable now (FIONREAD).
  [[nodiscard]] Result<std::size_t> readable_bytes(SocketId s) const;

  /// Next readiness change, oldest first; false when none is pending.
  bool next_event(SocketEvent& out);

  /// Sockets still held (open by the user, or closing in the protocol, or in TIME_WAIT).
  [[nodiscard]] std::size_t socket_count() const;
  /// Entries in the timer wheel: at most one per socket (for tests and diagnostics).
  [[nodiscard]] std::size_t timer_entries() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pno::tcp
