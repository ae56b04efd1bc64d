// TCP header (RFC 9293 §3.1) and options (RFC 9293 §3.2, RFC 7323, RFC 2018).
// Two levels, as everywhere in wire/: TcpView is a bounds-checked view over the segment bytes (only
// obtainable from parse(), after which no accessor can read past the segment); TcpRepr is the
// decoded value with the options parsed out and the payload as a borrowed span.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/seq.hh"
#include "stack/wire/checked.hh"

namespace pno::wire {

/// One SACK block (RFC 2018 §3): the edges of a received range past the cumulative ACK.
struct SackBlock {
  tcp::SeqNum left;   ///< first sequence number of the block
  tcp::SeqNum right;  ///< one past the last
  friend constexpr bool operator==(const SackBlock&, const SackBlock&) = default;
};

inline constexpr std::size_t kTcpMinHeaderLen = 20;
inline constexpr std::size_t kTcpMaxHeaderLen = 60;
inline constexpr std::size_t kTcpMaxOptionsLen = kTcpMaxHeaderLen - kTcpMinHeaderLen;

namespace tcp_field {
inline constexpr std::size_t kSrcPort = 0;
inline constexpr std::size_t kDstPort = 2;
inline constexpr std::size_t kSeq = 4;
inline constexpr std::size_t kAck = 8;
inline constexpr std::size_t kDataOffset = 12;  ///< high nibble: header length in 32-bit words
inline constexpr std::size_t kFlags = 13;
inline constexpr std::size_t kWindow = 14;
inline constexpr std::size_t kChecksum = 16;
inline constexpr std::size_t kUrgent = 18;
}  // namespace tcp_field

/// Control bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR).
namespace tcp_flag {
inline constexpr std::uint8_t kFin = 0x01;
inline constexpr std::uint8_t kSyn = 0x02;
inline constexpr std::uint8_t kRst = 0x04;
inline constexpr std::uint8_t kPsh = 0x08;
inline constexpr std::uint8_t kAck = 0x10;
inline constexpr std::uint8_t kUrg = 0x20;
inline constexpr std::uint8_t kEce = 0x40;
inline constexpr std::uint8_t kCwr = 0x80;
}  // namespace tcp_flag

/// Option kinds (IANA "TCP Option Kind Numbers").
namespace tcp_opt {
inline constexpr std::uint8_t kEnd = 0;
inline constexpr std::uint8_t kNop = 1;
inline constexpr std::uint8_t kMss = 2;            ///< len 4, RFC 9293 §3.2
inline constexpr std::uint8_t kWindowScale = 3;    ///< len 3, RFC 7323 §2.2
inline constexpr std::uint8_t kSackPermitted = 4;  ///< len 2, RFC 2018 §2
inline constexpr std::uint8_t kSack = 5;           ///< len 2 + 8n, RFC 2018 §3
inline constexpr std::uint8_t kTimestamps = 8;     ///< len 10, RFC 7323 §3.2
}  // namespace tcp_opt

/// Largest window shift a peer may ask for (RFC 7323 §2.3: larger values are treated as 14).
inline constexpr std::uint8_t kTcpMaxWindowScale = 14;
/// At most 4 SACK blocks fit the 40 option bytes (3 with timestamps), RFC 2018 §3.
inline constexpr std::size_t kTcpMaxSackBlocks = 4;

class TcpView {
 public:
  /// Structural checks: tcp_drop_truncated if the buffer is shorter than 20 bytes, or the data
  /// offset is below 5 words or beyond the buffer. Checksum and options are checked by TcpRepr.
  static Checked<TcpView> parse(ByteSpan segment);

  [[nodiscard]] std::uint16_t src_port() const { return load_be16(b_.data() + tcp_field::kSrcPort); }
  [[nodiscard]] std::uint16_t dst_port() const { return load_be16(b_.data() + tcp_field::kDstPort); }
  [[nodiscard]] std::uint32_t seq() const { return load_be32(b_.data() + tcp_field::kSeq); }
  [[nodiscard]] std::uint32_t ack() const { return load_be32(b_.data() + tcp_field::kAck); }
  [[nodiscard]] std::size_t header_len() const { return static_cast<std::size_t>(load_u8(b_.data() + tcp_field::kDataOffset) >> 4) * 4; }
  [[nodiscard]] std::uint8_t flags() const { return load_u8(b_.data() + tcp_field::kFlags); }
  [[nodiscard]] std::uint16_t window() const { return load_be16(b_.data() + tcp_field::kWindow); }
  [[nodiscard]] std::uint16_t checksum() const { return load_be16(b_.data() + tcp_field::kChecksum); }
  [[nodiscard]] std::uint16_t urgent() const { return load_be16(b_.data() + tcp_field::kUrgent); }
  [[nodiscard]] ByteSpan options() const { return b_.subspan(kTcpMinHeaderLen, header_len() - kTcpMinHeaderLen); }
  [[nodiscard]] ByteSpan payload() const { return b_.subspan(header_len()); }
  [[nodiscard]] ByteSpan bytes() const { return b_; }
  /// Checksum over the pseudo-header (RFC 9293 §3.1) and the whole segment.
  [[nodiscard]] bool verify_checksum(Ipv4Addr src, Ipv4Addr dst) const;

 private:
  explicit TcpView(ByteSpan b) : b_(b) {}
  ByteSpan b_;
};

struct TcpTimestamps {
  std::uint32_t tsval = 0;
  std::uint32_t tsecr = 0;
  friend constexpr bool operator==(const TcpTimestamps&, const TcpTimestamps&) = default;
};

/// Options TCP understands. Unknown kinds are skipped (RFC 9293 §3.2: MUST ignore unknown options).
struct TcpOptions {
  std::uint16_t mss = 0;           ///< 0 = absent
  bool has_mss = false;
  bool has_wscale = false;
  std::uint8_t wscale = 0;         ///< as received (clamping to 14 is the caller's, RFC 7323 §2.3)
  bool sack_permitted = false;
  bool has_timestamps = false;
  TcpTimestamps ts{};
  std::uint8_t sack_count = 0;
  std::array<SackBlock, kTcpMaxSackBlocks> sack{};
  friend bool operator==(const TcpOptions&, const TcpOptions&) = default;
};

/// A decoded segment. `payload` borrows from the parsed bytes.
struct TcpRepr {
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  tcp::SeqNum seq{};
  tcp::SeqNum ack{};
  std::uint8_t flags = 0;
  std::uint16_t window = 0;  ///< raw field, unscaled
  std::uint16_t urgent = 0;
  TcpOptions opts{};
  ByteSpan payload{};

  [[nodiscard]] bool syn() const { return (flags & tcp_flag::kSyn) != 0; }
  [[nodiscard]] bool fin() const { return (flags & tcp_flag::kFin) != 0; }
  [[nodiscard]] bool rst() const { return (flags & tcp_flag::kRst) != 0; }
  [[nodiscard]] bool has_ack() const { return (flags & tcp_flag::kAck) != 0; }
  /// SEG.LEN: payload plus one for each of SYN and FIN (RFC 9293 §3.4).
  [[nodiscard]] tcp::SeqLen seg_len() const {
    return static_cast<tcp::SeqLen>(payload.size()) + (syn() ? 1 : 0) + (fin() ? 1 : 0);
  }

  /// Decodes a checked view. With `verify_checksum`, tcp_drop_bad_checksum if the checksum fails.
  /// tcp_drop_bad_options if an option's length byte is missing, below 2, or runs past the header;
  /// a known option with the wrong length is ignored, as Linux does (tcp_parse_options).
  static Checked<TcpRepr> parse(const TcpView& v, Ipv4Addr src, Ipv4Addr dst, bool verify_checksum);
  /// Convenience: view + repr in one step.
  static Checked<TcpRepr> parse(ByteSpan segment, Ipv4Addr src, Ipv4Addr dst, bool verify_checksum);

  /// Length of the options as emit() writes them, padded to a 4-byte multiple.
  [[nodiscard]] std::size_t options_len() const;
  [[nodiscard]] std::size_t header_len() const { return kTcpMinHeaderLen + options_len(); }
  [[nodiscard]] std::size_t buffer_len() const { return header_len() + payload.size(); }

  /// Writes the header and options (Linux's option layout) into `out`, which must hold at least
  /// header_len() bytes; the checksum field is zero. Returns header_len(), or 0 if `out` is small.
  std::size_t emit_header(MutByteSpan out) const;
  /// Writes header, options and payload, then the checksum (see fill_tcp_checksum).
  /// Returns bytes written (buffer_len()), or 0 if `out` is too small.
  std::size_t emit(MutByteSpan out, Ipv4Addr src, Ipv4Addr dst, bool checksum_offload) const;
};

/// Fills the checksum of a complete segment in place. With `offload`, writes only the
/// pseudo-header sum (not complemented), which is what a checksum-offloading port completes.
void fill_tcp_checksum(MutByteSpan segment, Ipv4Addr src, Ipv4Addr dst, bool offload);

}  // namespace pno::wire
