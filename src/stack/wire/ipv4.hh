// IPv4 header (RFC 791). The checked view guarantees a whole header, options included, and a total
// length that fits the buffer; payload() is cut at the total length, so Ethernet padding is gone.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/wire/checked.hh"

namespace pno::wire {

inline constexpr std::size_t kIpv4MinHeaderLen = 20;
inline constexpr std::size_t kIpv4MaxHeaderLen = 60;
inline constexpr std::uint8_t kIpv4DefaultTtl = 64;

namespace ipv4_field {
inline constexpr std::size_t kVerIhl = 0;
inline constexpr std::size_t kTos = 1;
inline constexpr std::size_t kTotalLen = 2;
inline constexpr std::size_t kIdent = 4;
inline constexpr std::size_t kFlagsFrag = 6;
inline constexpr std::size_t kTtl = 8;
inline constexpr std::size_t kProto = 9;
inline constexpr std::size_t kChecksum = 10;
inline constexpr std::size_t kSrc = 12;
inline constexpr std::size_t kDst = 16;
inline constexpr std::uint16_t kFlagDf = 0x4000;
inline constexpr std::uint16_t kFlagMf = 0x2000;
inline constexpr std::uint16_t kFragOffsetMask = 0x1fff;
}  // namespace ipv4_field

/// Option kinds with no length byte (RFC 791 §3.1).
inline constexpr std::uint8_t kIpv4OptEnd = 0;
inline constexpr std::uint8_t kIpv4OptNop = 1;

class Ipv4View {
 public:
  /// Structural checks, in order: ip_drop_truncated (no room for a header), ip_drop_bad_version,
  /// ip_drop_bad_ihl (IHL < 5), ip_drop_truncated (IHL beyond the buffer), ip_drop_bad_total_len
  /// (below IHL or beyond the buffer), ip_drop_options (an option overruns the header).
  /// The header checksum is not checked here: the port may have verified it (see verify_checksum()).
  static Checked<Ipv4View> parse(ByteSpan packet);

  [[nodiscard]] std::uint8_t version() const { return load_u8(b_.data()) >> 4; }
  [[nodiscard]] std::size_t header_len() const { return std::size_t{load_u8(b_.data()) & 0x0fu} * 4; }
  [[nodiscard]] std::uint8_t tos() const { return load_u8(b_.data() + ipv4_field::kTos); }
  [[nodiscard]] std::uint16_t total_len() const { return load_be16(b_.data() + ipv4_field::kTotalLen); }
  [[nodiscard]] std::uint16_t ident() const { return load_be16(b_.data() + ipv4_field::kIdent); }
  [[nodiscard]] bool dont_fragment() const { return (flags_frag() & ipv4_field::kFlagDf) != 0; }
  [[nodiscard]] bool more_fragments() const { return (flags_frag() & ipv4_field::kFlagMf) != 0; }
  /// In 8-byte units.
  [[nodiscard]] std::uint16_t frag_offset() const { return flags_frag() & ipv4_field::kFragOffsetMask; }
  [[nodiscard]] bool is_fragment() const { return more_fragments() || frag_offset() != 0; }
  [[nodiscard]] std::uint8_t ttl() const { return load_u8(b_.data() + ipv4_field::kTtl); }
  [[nodiscard]] std::uint8_t protocol() const { return load_u8(b_.data() + ipv4_field::kProto); }
  [[nodiscard]] std::uint16_t checksum() const { return load_be16(b_.data() + ipv4_field::kChecksum); }
  [[nodiscard]] Ipv4Addr src() const { return {load_be32(b_.data() + ipv4_field::kSrc)}; }
  [[nodiscard]] Ipv4Addr dst() const { return {load_be32(b_.data() + ipv4_field::kDst)}; }
  /// True if the header checksum (RFC 791 §3.1, RFC 1071) verifies.
  [[nodiscard]] bool verify_checksum() const;
  [[nodiscard]] ByteSpan header() const { return b_.first(header_len()); }
  [[nodiscard]] ByteSpan options() const { return b_.subspan(kIpv4MinHeaderLen, header_len() - kIpv4MinHeaderLen); }
  /// The L4 bytes, up to the total length.
  [[nodiscard]] ByteSpan payload() const { return b_.subspan(header_len()); }

 private:
  explicit Ipv4View(ByteSpan b) : b_(b) {}
  [[nodiscard]] std::uint16_t flags_frag() const { return load_be16(b_.data() + ipv4_field::kFlagsFrag); }
  ByteSpan b_;  ///< exactly total_len() bytes
};

/// The fields PnO sends: no options, so the header is always 20 bytes.
struct Ipv4Repr {
  Ipv4Addr src{};
  Ipv4Addr dst{};
  std::uint8_t protocol = 0;
  std::uint8_t ttl = kIpv4DefaultTtl;
  std::uint8_t tos = 0;
  std::uint16_t ident = 0;
  bool dont_fragment = true;
  std::uint16_t payload_len = 0;
};

/// Writes a 20-byte header at the start of `out`. With `fill_checksum` false the checksum field is
/// left 0 for the port to fill (TxMeta::ipv4_checksum). Returns false (writing nothing) if `out` is
/// too small or the total length would not fit 16 bits.
bool emit_ipv4(MutByteSpan out, const Ipv4Repr& h, bool fill_checksum = true);

}  // namespace pno::wire
