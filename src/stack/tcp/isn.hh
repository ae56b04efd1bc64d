// Initial sequence numbers (RFC 6528) and SYN cookies, both keyed by the stack's secret.
#pragma once

#include <cstdint>
#include <optional>

#include "base/addr.hh"
#include "stack/seq.hh"
#include "base/time.hh"

namespace pno::tcp {

/// SipHash-2-4 (Aumasson & Bernstein) of up to three 64-bit words under a 128-bit key.
std::uint64_t siphash24(std::uint64_t k0, std::uint64_t k1, const std::uint64_t* words, std::size_t n);

/// The 4-tuple as seen from our side.
struct FourTuple {
  Endpoint local;
  Endpoint remote;
  friend constexpr bool operator==(const FourTuple&, const FourTuple&) = default;
};

class IsnGenerator {
 public:
  explicit IsnGenerator(std::uint64_t secret);

  /// RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs timer.
  [[nodiscard]] SeqNum isn(const FourTuple& t, Instant now) const;
  /// Per-connection timestamp offset (RFC 7323 §7.1: randomized TSval start, like Linux).
  [[nodiscard]] std::uint32_t ts_offset(const FourTuple& t) const;
  /// A keyed hash for other uses (ephemeral port selection, RFC 6056 §3.3.3).
  [[nodiscard]] std::uint64_t hash(std::uint64_t a, std::uint64_t b) const;

  // --- SYN cookies (the Linux construction, net/ipv4/syncookies.c) ---
  /// MSS values a cookie can carry; the peer's MSS is rounded down to one of these.
  static constexpr std::uint16_t kCookieMss[4] = {536, 1300, 1440, 1460};
  /// Cookie time unit: 64 s; a cookie is valid for kCookieMaxAge units.
  static constexpr std::uint32_t kCookieMaxAge = 2;

  /// Our ISS for a SYN from `t` with ISN `peer_isn` carrying `peer_mss`.
  [[nodiscard]] SeqNum cookie_iss(const FourTuple& t, SeqNum peer_isn, std::uint16_t peer_mss, Instant now) const;
  /// Checks the ACK completing a cookie handshake (SEG.SEQ = peer_isn + 1, SEG.ACK = cookie + 1).
  /// Returns the MSS the cookie carried, or nullopt if it is forged or too old.
  [[nodiscard]] std::optional<std::uint16_t> cookie_check(const FourTuple& t, SeqNum seg_seq, SeqNum seg_ack,
                                                          Instant now) const;

 private:
  [[nodiscard]] std::uint32_t tuple_hash(const FourTuple& t, std::uint64_t extra, int which) const;
  std::uint64_t k0_, k1_;
};

}  // namespace pno::tcp
