// Helpers for the scripted TCP behaviour suites, layered on TcpHarness (tcp_harness.hh): opening
// connections with chosen peer options, byte patterns whose order can be checked, TcpInfo and
// readiness shorthands, and a peer that fills a window with full segments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stack/config.hh"
#include "support/tcp_harness.hh"

namespace pno::test {

inline constexpr std::uint32_t kMss = 1460;

/// plain_config() with NewReno, so cwnd/ssthresh arithmetic in tests is the RFC 5681 one.
TcpConfig reno_config();
/// plain_config() with SACK on (and timestamps when `ts`).
TcpConfig sack_config(bool ts = false);
/// plain_config() with timestamps on.
TcpConfig ts_config();

/// Passive open where the peer's SYN carries the options of `syn` (flags/seq/ack are set here) and
/// its final ACK the window, timestamps and payload of `ack` (seq/ack set here). Accepts into
/// h.conn; leaves nothing in the sent queue. Returns the SYN-ACK.
Sent accept_with(TcpHarness& h, const Seg& syn, const Seg& ack = {});

/// `n` bytes whose value depends on their position (offset `from`), so reordering shows.
Bytes pattern(std::size_t n, std::size_t from = 0);
std::string pattern_str(std::size_t n, std::size_t from = 0);

TcpInfo info(const TcpHarness& h, SocketId s = kInvalidSocket);
/// Current RTO of the connection.
Duration rto(const TcpHarness& h, SocketId s = kInvalidSocket);

/// Writes n full segments with TCP_NODELAY and expects them on the wire back to back. Returns the
/// sequence number of the first.
std::uint32_t send_full(TcpHarness& h, int n, std::uint32_t mss = kMss);

/// Leaves Linux's quick-ACK mode (one-byte segments until one is not ACKed at once), then reads them.
void leave_quickack(TcpHarness& h);

/// Sequence number plus an offset, for readability in expectations.
constexpr std::uint32_t at(std::uint32_t base, std::uint32_t segs, std::uint32_t mss = kMss) { return base + segs * mss; }

/// Right edge of the window a sent segment advertises (ACK + scaled window).
inline std::uint32_t right_edge(const Sent& s, std::uint8_t wscale) {
  return s.ack + (static_cast<std::uint32_t>(s.window) << wscale);
}

}  // namespace pno::test
