#include "stack/tcp/isn.hh"

#include <bit>

namespace pno::tcp {

namespace {
inline void sipround(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) {
  v0 += v1;
  v1 = std::rotl(v1, 13);
  v1 ^= v0;
  v0 = std::rotl(v0, 32);
  v2 += v3;
  v3 = std::rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = std::rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = std::rotl(v1, 17);
  v1 ^= v2;
  v2 = std::rotl(v2, 32);
}

std::uint64_t tuple_word(const FourTuple& t) {
  return (std::uint64_t{t.local.addr.v} << 32) | t.remote.addr.v;
}
std::uint64_t ports_word(const FourTuple& t) {
  return (std::uint64_t{t.local.port} << 16) | t.remote.port;
}
}  // namespace

std::uint64_t siphash24(std::uint64_t k0, std::uint64_t k1, const std::uint64_t* words, std::size_t n) {
  std::uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
  std::uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
  std::uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
  std::uint64_t v3 = 0x7465646279746573ULL ^ k1;
  for (std::size_t i = 0; i < n; ++i) {
    v3 ^= words[i];
    sipround(v0, v1, v2, v3);
    sipround(v0, v1, v2, v3);
    v0 ^= words[i];
  }
  const std::uint64_t b = static_cast<std::uint64_t>(n * 8) << 56;
  v3 ^= b;
  sipround(v0, v1, v2, v3);
  sipround(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) sipround(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

IsnGenerator::IsnGenerator(std::uint64_t secret) {
  // Stretch the 64-bit secret into a 128-bit key (SipHash of the secret under a fixed key).
  const std::uint64_t w[1] = {secret};
  k0_ = secret ^ 0x9e3779b97f4a7c15ULL;
  k1_ = siphash24(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL, w, 1);
}

std::uint32_t IsnGenerator::tuple_hash(const FourTuple& t, std::uint64_t extra, int which) const {
  const std::uint64_t w[3] = {tuple_word(t), ports_word(t) | (std::uint64_t(which) << 40), extra};
  return static_cast<std::uint32_t>(siphash24(k0_, k1_, w, 3));
}

SeqNum IsnGenerator::isn(const FourTuple& t, Instant now) const {
  const auto m = static_cast<std::uint32_t>(to_ns(now) / 4000);  // RFC 6528 §3: 4 µs ticks
  return SeqNum(m + tuple_hash(t, 0, 1));
}

std::uint32_t IsnGenerator::ts_offset(const FourTuple& t) const { return tuple_hash(t, 0, 2); }

std::uint64_t IsnGenerator::hash(std::uint64_t a, std::uint64_t b) const {
  const std::uint64_t w[2] = {a, b};
  return siphash24(k0_, k1_, w, 2);
}

namespace {
constexpr std::uint32_t kCookieBits = 24;
constexpr std::uint32_t kCookieMask = (1u << kCookieBits) - 1;
std::uint32_t cookie_count(Instant now) { return static_cast<std::uint32_t>(to_ns(now) / 64'000'000'000LL); }
}  // namespace

SeqNum IsnGenerator::cookie_iss(const FourTuple& t, SeqNum peer_isn, std::uint16_t peer_mss, Instant now) const {
  std::uint32_t idx = 0;
  for (std::uint32_t i = 0; i < 4; ++i) {
    if (peer_mss >= kCookieMss[i]) idx = i;
  }
  const std::uint32_t count = cookie_count(now);
  // Linux secure_tcp_syn_cookie: H1(tuple) + peer ISN + (count << 24) + (H2(tuple, count) + data) mod 2^24.
  return SeqNum(tuple_hash(t, 0, 3) + peer_isn.raw() + (count << kCookieBits) +
                ((tuple_hash(t, count, 4) + idx) & kCookieMask));
}

std::optional<std::uint16_t> IsnGenerator::cookie_check(const FourTuple& t, SeqNum seg_seq, SeqNum seg_ack,
                                                        Instant now) const {
  const std::uint32_t peer_isn = seg_seq.raw() - 1;
  const std::uint32_t cookie = seg_ack.raw() - 1 - tuple_hash(t, 0, 3) - peer_isn;
  const std::uint32_t count = cookie_count(now);
  const std::uint32_t diff = (count - (cookie >> kCookieBits)) & (0xffffffffu >> kCookieBits);
  if (diff >= kCookieMaxAge) return std::nullopt;
  const std::uint32_t idx = (cookie - tuple_hash(t, count - diff, 4)) & kCookieMask;
  if (idx >= 4) return std::nullopt;
  return kCookieMss[idx];
}

}  // namespace pno::tcp
