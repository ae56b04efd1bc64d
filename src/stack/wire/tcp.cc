#include "stack/wire/tcp.hh"

#include <algorithm>
#include <cstring>

#include "stack/checksum.hh"
#include "stack/ip_output.hh"

namespace pno::wire {

Checked<TcpView> TcpView::parse(ByteSpan segment) {
  if (segment.size() < kTcpMinHeaderLen) return Counter::tcp_drop_truncated;
  const std::size_t hlen = static_cast<std::size_t>(load_u8(segment.data() + tcp_field::kDataOffset) >> 4) * 4;
  // RFC 9293 §3.1: Data Offset counts 32-bit words and is at least 5.
  if (hlen < kTcpMinHeaderLen || hlen > segment.size()) return Counter::tcp_drop_truncated;
  return TcpView(segment);
}

bool TcpView::verify_checksum(Ipv4Addr src, Ipv4Addr dst) const {
  return l4_checksum(src, dst, kIpProtoTcp, b_) == 0;
}

namespace {

// RFC 9293 §3.2: options are kind (End, NOP) or kind, length (counting both bytes), data.
// A length byte below 2 or past the header leaves the rest unparseable: the segment is rejected.
// A known kind with the wrong length is skipped (Linux tcp_parse_options does the same).
bool parse_options(ByteSpan o, TcpOptions& out, bool syn) {
  std::size_t i = 0;
  while (i < o.size()) {
    const std::uint8_t kind = load_u8(o.data() + i);
    if (kind == tcp_opt::kEnd) break;
    if (kind == tcp_opt::kNop) {
      ++i;
      continue;
    }
    if (i + 1 >= o.size()) return false;
    const std::size_t len = load_u8(o.data() + i + 1);
    if (len < 2 || len > o.size() - i) return false;
    const std::byte* d = o.data() + i + 2;
    switch (kind) {
      case tcp_opt::kMss:
        // RFC 9293 §3.7.1: MSS is only meaningful in SYN segments.
        if (len == 4 && syn) {
          out.has_mss = true;
          out.mss = load_be16(d);
        }
        break;
      case tcp_opt::kWindowScale:
        if (len == 3 && syn) {  // RFC 7323 §2.2: ignored outside <SYN>
          out.has_wscale = true;
          out.wscale = load_u8(d);
        }
        break;
      case tcp_opt::kSackPermitted:
        if (len == 2 && syn) out.sack_permitted = true;
        break;
      case tcp_opt::kTimestamps:
        if (len == 10) {
          out.has_timestamps = true;
          out.ts.tsval = load_be32(d);
          out.ts.tsecr = load_be32(d + 4);
        }
        break;
      case tcp_opt::kSack:
        if (len >= 10 && (len - 2) % 8 == 0 && !syn) {
          const std::size_t n = std::min<std::size_t>((len - 2) / 8, kTcpMaxSackBlocks);
          for (std::size_t k = 0; k < n; ++k) {
            out.sack[k] = SackBlock{tcp::SeqNum(load_be32(d + 8 * k)), tcp::SeqNum(load_be32(d + 8 * k + 4))};
          }
          out.sack_count = static_cast<std::uint8_t>(n);
        }
        break;
      default:
        break;  // RFC 9293 §3.2: unknown options are ignored
    }
    i += len;
  }
  return true;
}

}  // namespace

Checked<TcpRepr> TcpRepr::parse(const TcpView& v, Ipv4Addr src, Ipv4Addr dst, bool verify_checksum) {
  if (verify_checksum && !v.verify_checksum(src, dst)) return Counter::tcp_drop_bad_checksum;
  TcpRepr r;
  r.src_port = v.src_port();
  r.dst_port = v.dst_port();
  r.seq = tcp::SeqNum(v.seq());
  r.ack = tcp::SeqNum(v.ack());
  r.flags = v.flags();
  r.window = v.window();
  r.urgent = v.urgent();
  if (!parse_options(v.options(), r.opts, r.syn())) return Counter::tcp_drop_bad_options;
  r.payload = v.payload();
  return r;
}

Checked<TcpRepr> TcpRepr::parse(ByteSpan segment, Ipv4Addr src, Ipv4Addr dst, bool verify_checksum) {
  const auto v = TcpView::parse(segment);
  if (!v) return v.reason();
  return parse(*v, src, dst, verify_checksum);
}

std::size_t TcpRepr::options_len() const {
  std::size_t n = 0;
  if (syn()) {
    if (opts.has_mss) n += 4;
    if (opts.has_timestamps) n += 12;  // [NOP NOP | SACK-OK] TS
    else if (opts.sack_permitted) n += 4;  // NOP NOP SACK-OK
    if (opts.has_wscale) n += 4;       // NOP WS
  } else {
    if (opts.has_timestamps) n += 12;  // NOP NOP TS
    const std::size_t room_blocks = (kTcpMaxOptionsLen - n - 4) / 8;
    const std::size_t blocks = std::min<std::size_t>(opts.sack_count, room_blocks);
    if (blocks > 0) n += 4 + 8 * blocks;  // NOP NOP SACK len
  }
  return n;
}

std::size_t TcpRepr::emit_header(MutByteSpan out) const {
  const std::size_t hlen = header_len();
  if (out.size() < hlen) return 0;
  std::byte* p = out.data();
  store_be16(p + tcp_field::kSrcPort, src_port);
  store_be16(p + tcp_field::kDstPort, dst_port);
  store_be32(p + tcp_field::kSeq, seq.raw());
  store_be32(p + tcp_field::kAck, (flags & tcp_flag::kAck) ? ack.raw() : 0);
  store_u8(p + tcp_field::kDataOffset, static_cast<std::uint8_t>((hlen / 4) << 4));
  store_u8(p + tcp_field::kFlags, flags);
  store_be16(p + tcp_field::kWindow, window);
  store_be16(p + tcp_field::kChecksum, 0);
  store_be16(p + tcp_field::kUrgent, urgent);
  std::byte* o = p + kTcpMinHeaderLen;
  const auto put = [&o](std::uint8_t b) { store_u8(o++, b); };
  const auto put_ts = [&]() {
    put(tcp_opt::kTimestamps);
    put(10);
    store_be32(o, opts.ts.tsval);
    store_be32(o + 4, opts.ts.tsecr);
    o += 8;
  };
  // Linux's layout (tcp_options_write), so the option bytes look like a kernel's.
  if (syn()) {
    if (opts.has_mss) {
      put(tcp_opt::kMss);
      put(4);
      store_be16(o, opts.mss);
      o += 2;
    }
    if (opts.has_timestamps) {
      if (opts.sack_permitted) {
        put(tcp_opt::kSackPermitted);
        put(2);
      } else {
        put(tcp_opt::kNop);
        put(tcp_opt::kNop);
      }
      put_ts();
    } else if (opts.sack_permitted) {
      put(tcp_opt::kNop);
      put(tcp_opt::kNop);
      put(tcp_opt::kSackPermitted);
      put(2);
    }
    if (opts.has_wscale) {
      put(tcp_opt::kNop);
      put(tcp_opt::kWindowScale);
      put(3);
      put(opts.wscale);
    }
  } else {
    std::size_t used = 0;
    if (opts.has_timestamps) {
      put(tcp_opt::kNop);
      put(tcp_opt::kNop);
      put_ts();
      used = 12;
    }
    const std::size_t room_blocks = (kTcpMaxOptionsLen - used - 4) / 8;
    const std::size_t blocks = std::min<std::size_t>(opts.sack_count, room_blocks);
    if (blocks > 0) {
      put(tcp_opt::kNop);
      put(tcp_opt::kNop);
      put(tcp_opt::kSack);
      put(static_cast<std::uint8_t>(2 + 8 * blocks));
      for (std::size_t k = 0; k < blocks; ++k) {
        store_be32(o, opts.sack[k].left.raw());
        store_be32(o + 4, opts.sack[k].right.raw());
        o += 8;
      }
    }
  }
  return hlen;
}

std::size_t TcpRepr::emit(MutByteSpan out, Ipv4Addr src, Ipv4Addr dst, bool checksum_offload) const {
  const std::size_t total = buffer_len();
  if (out.size() < total) return 0;
  const std::size_t hlen = emit_header(out);
  if (!payload.empty()) std::memcpy(out.data() + hlen, payload.data(), payload.size());
  fill_tcp_checksum(out.first(total), src, dst, checksum_offload);
  return total;
}

void fill_tcp_checksum(MutByteSpan segment, Ipv4Addr src, Ipv4Addr dst, bool offload) {
  std::byte* ck = segment.data() + tcp_field::kChecksum;
  store_be16(ck, 0);
  if (offload) {
    // The port adds the segment's sum to this and complements (DPDK's rte_ipv4_phdr_cksum form).
    Checksum c;
    c.add_u32(src.v);
    c.add_u32(dst.v);
    c.add_u16(kIpProtoTcp);
    c.add_u16(static_cast<std::uint16_t>(segment.size()));
    store_be16(ck, static_cast<std::uint16_t>(~c.fold()));
    return;
  }
  store_be16(ck, l4_checksum(src, dst, kIpProtoTcp, segment));
}

}  // namespace pno::wire
