// Scripted-segment harness for the TCP layer (smoltcp style): a fake Ipv4Output that records what
// TcpLayer sends, a virtual clock, send()/expect()/expect_nothing(), and fixtures that drive a
// connection into each RFC 9293 state through the public API and real segments.
//
//   TcpHarness h;
//   auto c = h.established_passive();          // LISTEN -> SYN-RECEIVED -> ESTABLISHED, accepted
//   h.send({.seq = h.peer_nxt, .ack = h.nxt, .payload = bytes("abc")});
//   h.advance(40ms);
//   h.expect({.flags = kTcpAck, .ack = h.peer_nxt + 3});
//
// Sent segments are decoded with wire::TcpRepr, and their checksum is verified with the
// independent checksum of frames.hh.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stack/counters.hh"
#include "stack/ip_output.hh"
#include "base/socket.hh"
#include "stack/config.hh"
#include "stack/tcp/tcp_layer.hh"
#include "stack/tcp/tcp_state.hh"
#include "stack/wire/tcp.hh"
#include "support/frames.hh"

namespace pno::test {

inline constexpr std::uint16_t kLocalPort = 80;
inline constexpr std::uint16_t kPeerPort = 49152;
inline constexpr std::uint32_t kPeerIss = 10000;  ///< the scripted peer's ISN

Bytes bytes(std::string_view s);

using tcp::TcpState;
/// A TCP state as TcpHarness::state() reports it, for EXPECT_EQ(h.state(), st(TcpState::...)).
constexpr std::uint8_t st(TcpState s) { return static_cast<std::uint8_t>(s); }

/// A segment the scripted peer sends. Defaults: ACK from kPeerIp:kPeerPort to kLocalPort.
struct Seg {
  std::uint8_t flags = kTcpAck;
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint16_t window = 65535;
  Bytes payload{};
  std::optional<std::uint16_t> mss{};
  std::optional<std::uint8_t> wscale{};
  bool sack_perm = false;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> ts{};  ///< {TSval, TSecr}
  std::vector<std::pair<std::uint32_t, std::uint32_t>> sack{};  ///< SACK blocks [left, right)
  std::uint16_t sport = kPeerPort;
  std::uint16_t dport = kLocalPort;
  Ipv4Addr src = kPeerIp;
  bool bad_checksum = false;
  Bytes raw_options{};  ///< appended after the typed options (for malformed-option tests)
};

/// What the test expects the stack to send: unset fields are not compared.
struct Want {
  std::optional<std::uint8_t> flags{};  ///< compared exactly, PSH ignored unless `psh` is set
  std::optional<std::uint32_t> seq{};
  std::optional<std::uint32_t> ack{};
  std::optional<std::uint16_t> window{};
  std::optional<Bytes> payload{};
  std::optional<std::size_t> len{};     ///< payload length
  std::optional<bool> psh{};
  std::optional<std::uint16_t> sport{}, dport{};
};

/// A segment the stack sent, decoded.
struct Sent {
  Ipv4Addr dst{};
  std::uint16_t sport = 0, dport = 0;
  std::uint8_t flags = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint16_t window = 0;
  wire::TcpOptions opts{};
  Bytes payload{};
  bool checksum_ok = false;
  [[nodiscard]] std::string str() const;
};

/// Records what TCP sends, in order; local address kLocalIp, MTU 1500 (1480 bytes of L4).
class FakeIpv4 : public Ipv4Output {
 public:
  MutByteSpan ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) override;
  void ip_commit(bool l4_checksum_offload) override;
  void ip_abort() override;
  [[nodiscard]] Ipv4Addr local_addr() const override { return kLocalIp; }
  [[nodiscard]] std::size_t max_l4_len() const override { return mtu - 20; }
  [[nodiscard]] bool tcp_checksum_offload() const override { return false; }

  std::size_t mtu = 1500;
  std::deque<Sent> sent;
  bool drop_all = false;  ///< ip_begin fails (no buffer)

 private:
  Bytes buf_;
  Ipv4Addr dst_{};
  bool open_ = false;
};

/// Defaults for scripted tests: no window scaling, SACK or timestamps unless a test turns them on,
/// so expected windows and option-free segments stay readable.
TcpConfig plain_config();

class TcpHarness {
 public:
  explicit TcpHarness(const TcpConfig& cfg = plain_config());

  TcpConfig cfg;
  Counters counters;
  FakeIpv4 ip;
  std::unique_ptr<tcp::TcpLayer> tcp;
  Instant now = instant_from_ns(1'000'000'000'000);  ///< virtual clock (starts at 1000 s)

  // Sequence bookkeeping the fixtures fill in.
  std::uint32_t iss = 0;        ///< the stack's ISS (from its SYN or SYN-ACK)
  std::uint32_t nxt = 0;        ///< next sequence number expected from the stack
  std::uint32_t peer_nxt = 0;   ///< next sequence number the peer sends
  SocketId listener = kInvalidSocket;
  SocketId conn = kInvalidSocket;

  /// Moves the clock forward and polls.
  void advance(Duration d);
  /// Delivers a segment from the peer at the current time (no poll).
  void send(const Seg& s);
  /// Polls at the current time and moves what the stack sent into the queue.
  void poll();
  /// Polls, then pops the oldest sent segment and checks it against `w` (gtest failure if none).
  Sent expect(const Want& w);
  /// Polls and asserts nothing was sent.
  void expect_nothing();
  /// Pops everything sent so far (after a poll).
  std::vector<Sent> drain();
  /// Runs timers until `deadline`, polling at each next_deadline() in between.
  void run_until(Instant deadline);

  // --- fixtures (each leaves nothing unread in the sent queue) ---
  SocketId listen(std::uint16_t port = kLocalPort, int backlog = 16);
  /// LISTEN + peer SYN -> SYN-RECEIVED; consumes the SYN-ACK.
  void syn_received(const Seg& syn_extra = {});
  /// SYN-RECEIVED + peer ACK -> ESTABLISHED, accepted into `conn`.
  SocketId established_passive();
  /// connect() -> SYN-SENT; consumes the SYN.
  SocketId syn_sent();
  /// SYN-SENT + SYN-ACK -> ESTABLISHED; consumes the ACK.
  SocketId established_active();
  /// ESTABLISHED + shutdown(write) -> FIN-WAIT-1; consumes the FIN.
  void fin_wait_1();
  /// FIN-WAIT-1 + ACK of FIN -> FIN-WAIT-2.
  void fin_wait_2();
  /// FIN-WAIT-2 + FIN -> TIME-WAIT; consumes the ACK.
  void time_wait();
  /// ESTABLISHED + peer FIN -> CLOSE-WAIT; consumes the ACK.
  void close_wait();
  /// CLOSE-WAIT + shutdown(write) -> LAST-ACK; consumes the FIN.
  void last_ack();
  /// FIN-WAIT-1 + peer FIN (ours unacked) -> CLOSING; consumes the ACK.
  void closing();

  /// State of `conn` as TcpInfo::state.
  [[nodiscard]] std::uint8_t state(SocketId s = kInvalidSocket) const;
  /// Writes and reads on `conn`.
  std::size_t write(std::string_view data, SocketId s = kInvalidSocket);
  std::string read(std::size_t max = 1 << 20, SocketId s = kInvalidSocket);
};

}  // namespace pno::test
