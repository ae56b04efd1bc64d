// ICMP for IPv4 (RFC 792): the common 8-byte header; echo request/reply carry identifier and
// sequence number in its second half.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/bytes.hh"
#include "stack/wire/checked.hh"

namespace pno::wire {

inline constexpr std::size_t kIcmpHeaderLen = 8;
inline constexpr std::uint8_t kIcmpEchoReply = 0;
inline constexpr std::uint8_t kIcmpDestUnreachable = 3;
inline constexpr std::uint8_t kIcmpEchoRequest = 8;

namespace icmp_field {
inline constexpr std::size_t kType = 0;
inline constexpr std::size_t kCode = 1;
inline constexpr std::size_t kChecksum = 2;
inline constexpr std::size_t kIdent = 4;  ///< echo only
inline constexpr std::size_t kSeq = 6;    ///< echo only
}  // namespace icmp_field

class IcmpView {
 public:
  /// Fails with icmp_drop_malformed when shorter than the 8-byte header. The checksum is checked
  /// separately (verify_checksum()) so callers can count it under the same reason.
  static Checked<IcmpView> parse(ByteSpan message);

  [[nodiscard]] std::uint8_t type() const { return load_u8(b_.data() + icmp_field::kType); }
  [[nodiscard]] std::uint8_t code() const { return load_u8(b_.data() + icmp_field::kCode); }
  [[nodiscard]] std::uint16_t checksum() const { return load_be16(b_.data() + icmp_field::kChecksum); }
  [[nodiscard]] std::uint16_t echo_ident() const { return load_be16(b_.data() + icmp_field::kIdent); }
  [[nodiscard]] std::uint16_t echo_seq() const { return load_be16(b_.data() + icmp_field::kSeq); }
  /// Bytes after the 8-byte header (echo data).
  [[nodiscard]] ByteSpan data() const { return b_.subspan(kIcmpHeaderLen); }
  /// The whole message, header included.
  [[nodiscard]] ByteSpan bytes() const { return b_; }
  /// RFC 792: checksum over the whole ICMP message.
  [[nodiscard]] bool verify_checksum() const;

 private:
  explicit IcmpView(ByteSpan b) : b_(b) {}
  ByteSpan b_;
};

struct IcmpEchoRepr {
  std::uint8_t type = kIcmpEchoRequest;  ///< kIcmpEchoRequest or kIcmpEchoReply
  std::uint16_t ident = 0;
  std::uint16_t seq = 0;
};

/// Writes an echo header followed by `data` into `out` and fills the checksum. Returns the bytes
/// written, or 0 when `out` is too small. `data` may alias out's data area (it is moved, not copied).
std::size_t emit_icmp_echo(MutByteSpan out, const IcmpEchoRepr& h, ByteSpan data);

}  // namespace pno::wire
