#include "support/frames.hh"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

namespace pno::test {

namespace {

void put8(Bytes& b, std::size_t off, std::uint8_t v) { b[off] = std::byte{v}; }
void put16(Bytes& b, std::size_t off, std::uint16_t v) {
  b[off] = std::byte(v >> 8);
  b[off + 1] = std::byte(v & 0xff);
}
void put32(Bytes& b, std::size_t off, std::uint32_t v) {
  put16(b, off, static_cast<std::uint16_t>(v >> 16));
  put16(b, off + 2, static_cast<std::uint16_t>(v & 0xffff));
}
void put_mac(Bytes& b, std::size_t off, const MacAddr& m) {
  for (std::size_t i = 0; i < 6; ++i) b[off + i] = std::byte{m.b[i]};
}
std::uint8_t get8(ByteSpan b, std::size_t off) { return static_cast<std::uint8_t>(b[off]); }
std::uint16_t get16(ByteSpan b, std::size_t off) {
  return static_cast<std::uint16_t>((get8(b, off) << 8) | get8(b, off + 1));
}
std::uint32_t get32(ByteSpan b, std::size_t off) {
  return (std::uint32_t{get16(b, off)} << 16) | get16(b, off + 2);
}
MacAddr get_mac(ByteSpan b, std::size_t off) {
  MacAddr m;
  for (std::size_t i = 0; i < 6; ++i) m.b[i] = get8(b, off + i);
  return m;
}
void append(Bytes& b, ByteSpan tail) { b.insert(b.end(), tail.begin(), tail.end()); }

}  // namespace

Bytes bytes_of(std::initializer_list<int> v) {
  Bytes out;
  out.reserve(v.size());
  for (int x : v) out.push_back(std::byte(static_cast<std::uint8_t>(x)));
  return out;
}

std::string hex(ByteSpan b) {
  std::string s;
  char buf[4];
  for (std::size_t i = 0; i < b.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(b[i]));
    if (i) s += ' ';
    s += buf;
  }
  return s;
}

// --- RecordingSink --------------------------------------------------------------------------------

MutByteSpan RecordingSink::tx_begin(std::size_t max_len) {
  if (open_) ADD_FAILURE() << "tx_begin while a frame is already open";
  ++begins;
  if (buffers_free) {
    if (*buffers_free == 0) return {};
    --*buffers_free;
  }
  // Fill with a marker so bytes the stack forgot to write are visible.
  buf_.assign(max_len, std::byte{0xa5});
  open_ = true;
  return buf_;
}

void RecordingSink::tx_commit(std::size_t len, const TxMeta& meta) {
  if (!open_) {
    ADD_FAILURE() << "tx_commit without an open frame";
    return;
  }
  if (len > buf_.size()) {
    ADD_FAILURE() << "tx_commit of " << len << " bytes into a " << buf_.size() << "-byte buffer";
    len = buf_.size();
  }
  open_ = false;
  ++commits;
  frames.push_back({Bytes(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(len)), meta});
}

void RecordingSink::tx_abort() {
  if (!open_) ADD_FAILURE() << "tx_abort without an open frame";
  open_ = false;
  ++aborts;
}

SentFrame RecordingSink::pop() {
  if (frames.empty()) {
    ADD_FAILURE() << "expected a sent frame, none was sent";
    return {};
  }
  SentFrame f = std::move(frames.front());
  frames.pop_front();
  return f;
}

// --- builders ----------------------------------------------------------------------------------------

Bytes eth_frame(MacAddr dst, MacAddr src, std::uint16_t ethertype, ByteSpan payload, bool pad_to_min) {
  Bytes f(14);
  put_mac(f, 0, dst);
  put_mac(f, 6, src);
  put16(f, 12, ethertype);
  append(f, payload);
  if (pad_to_min && f.size() < 60) f.resize(60, std::byte{0});
  return f;
}

Bytes arp_packet(const ArpSpec& a) {
  Bytes p(28);
  put16(p, 0, a.htype);
  put16(p, 2, a.ptype);
  put8(p, 4, a.hlen);
  put8(p, 5, a.plen);
  put16(p, 6, a.oper);
  put_mac(p, 8, a.sha);
  put32(p, 14, a.spa.v);
  put_mac(p, 18, a.tha);
  put32(p, 24, a.tpa.v);
  return p;
}

Bytes arp_request_frame(MacAddr sha, Ipv4Addr spa, Ipv4Addr tpa) {
  return eth_frame(MacAddr::broadcast(), sha, kEthArp, arp_packet({.oper = 1, .sha = sha, .spa = spa, .tpa = tpa}),
                   true);
}

Bytes arp_reply_frame(MacAddr sha, Ipv4Addr spa, MacAddr tha, Ipv4Addr tpa) {
  return eth_frame(tha, sha, kEthArp, arp_packet({.oper = 2, .sha = sha, .spa = spa, .tha = tha, .tpa = tpa}), true);
}

std::uint16_t inet_checksum(ByteSpan data, Ipv4Addr src, Ipv4Addr dst, std::uint8_t proto) {
  std::uint64_t sum = 0;
  if (proto != 0) {
    sum += (src.v >> 16) + (src.v & 0xffff) + (dst.v >> 16) + (dst.v & 0xffff) + proto + data.size();
  }
  for (std::size_t i = 0; i + 1 < data.size(); i += 2) sum += get16(data, i);
  if (data.size() % 2) sum += std::uint32_t{get8(data, data.size() - 1)} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}

Bytes ipv4_packet(const Ipv4Spec& s, ByteSpan payload) {
  Bytes opts = s.options;
  while (opts.size() % 4) opts.push_back(std::byte{0});
  const std::size_t hlen = 20 + opts.size();
  Bytes p(20);
  append(p, opts);
  const std::uint8_t ihl = s.ihl.value_or(static_cast<std::uint8_t>(hlen / 4));
  put8(p, 0, static_cast<std::uint8_t>((s.version << 4) | (ihl & 0x0f)));
  put8(p, 1, s.tos);
  put16(p, 2, s.total_len.value_or(static_cast<std::uint16_t>(hlen + payload.size())));
  put16(p, 4, s.ident);
  put16(p, 6, static_cast<std::uint16_t>((s.df ? 0x4000 : 0) | (s.mf ? 0x2000 : 0) | (s.frag_offset & 0x1fff)));
  put8(p, 8, s.ttl);
  put8(p, 9, s.proto);
  put16(p, 10, 0);
  put32(p, 12, s.src.v);
  put32(p, 16, s.dst.v);
  put16(p, 10, s.checksum.value_or(inet_checksum(p)));
  append(p, payload);
  return p;
}

Bytes icmp_echo(std::uint8_t type, std::uint16_t ident, std::uint16_t seq, ByteSpan data, bool bad_checksum) {
  Bytes m(8);
  put8(m, 0, type);
  put8(m, 1, 0);
  put16(m, 4, ident);
  put16(m, 6, seq);
  append(m, data);
  std::uint16_t c = inet_checksum(m);
  if (bad_checksum) c = static_cast<std::uint16_t>(c ^ 0x5a5a);
  put16(m, 2, c);
  return m;
}

Bytes tcp_segment(Ipv4Addr src, Ipv4Addr dst, const TcpSpec& t, ByteSpan payload) {
  Bytes opts = t.options;
  while (opts.size() % 4) opts.push_back(std::byte{0});
  Bytes s(20);
  append(s, opts);
  put16(s, 0, t.sport);
  put16(s, 2, t.dport);
  put32(s, 4, t.seq);
  put32(s, 8, t.ack);
  const std::uint8_t doff = t.data_offset.value_or(static_cast<std::uint8_t>((20 + opts.size()) / 4));
  put8(s, 12, static_cast<std::uint8_t>(doff << 4));
  put8(s, 13, t.flags);
  put16(s, 14, t.window);
  put16(s, 16, 0);
  put16(s, 18, t.urgent);
  append(s, payload);
  std::uint16_t c = inet_checksum(s, src, dst, 6);
  if (t.bad_checksum) c = static_cast<std::uint16_t>(c ^ 0x5a5a);
  put16(s, 16, c);
  return s;
}

Bytes ipv4_frame(MacAddr dst_mac, MacAddr src_mac, const Ipv4Spec& ip, ByteSpan l4, bool pad_to_min) {
  return eth_frame(dst_mac, src_mac, kEthIpv4, ipv4_packet(ip, l4), pad_to_min);
}

// --- decoders ----------------------------------------------------------------------------------------

std::optional<DecodedEth> decode_eth(ByteSpan f) {
  if (f.size() < 14) return std::nullopt;
  DecodedEth d;
  d.dst = get_mac(f, 0);
  d.src = get_mac(f, 6);
  d.ethertype = get16(f, 12);
  d.payload.assign(f.begin() + 14, f.end());
  return d;
}

std::optional<DecodedArp> decode_arp(ByteSpan a) {
  if (a.size() < 28 || get16(a, 0) != 1 || get16(a, 2) != 0x0800 || get8(a, 4) != 6 || get8(a, 5) != 4) {
    return std::nullopt;
  }
  DecodedArp d;
  d.oper = get16(a, 6);
  d.sha = get_mac(a, 8);
  d.spa = {get32(a, 14)};
  d.tha = get_mac(a, 18);
  d.tpa = {get32(a, 24)};
  return d;
}

std::optional<DecodedIpv4> decode_ipv4(ByteSpan p) {
  if (p.size() < 20 || (get8(p, 0) >> 4) != 4) return std::nullopt;
  DecodedIpv4 d;
  d.ihl = get8(p, 0) & 0x0f;
  const std::size_t hlen = std::size_t{d.ihl} * 4;
  d.total_len = get16(p, 2);
  if (hlen < 20 || hlen > p.size() || d.total_len < hlen || d.total_len > p.size()) return std::nullopt;
  d.tos = get8(p, 1);
  d.ident = get16(p, 4);
  const std::uint16_t ff = get16(p, 6);
  d.df = (ff & 0x4000) != 0;
  d.mf = (ff & 0x2000) != 0;
  d.frag_offset = ff & 0x1fff;
  d.ttl = get8(p, 8);
  d.proto = get8(p, 9);
  d.checksum = get16(p, 10);
  d.src = {get32(p, 12)};
  d.dst = {get32(p, 16)};
  d.checksum_ok = inet_checksum(p.first(hlen)) == 0;
  d.payload.assign(p.begin() + static_cast<std::ptrdiff_t>(hlen), p.begin() + d.total_len);
  return d;
}

}  // namespace pno::test
