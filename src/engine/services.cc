#include "engine/services.hh"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

namespace {

constexpr std::size_t kScratch = 64 * 1024;
constexpr int kListenBacklog = 4096;

const char* errc_name(Errc e) {
  const int v = to_errno(e);
  return v == 0 ? "ok" : std::strerror(v);
}

std::string endpoint_str(const Endpoint& e) { return e.addr.str() + ":" + std::to_string(e.port); }

}  // namespace

std::string hex(std::span<const std::uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (auto x : b) {
    s.push_back(kDigits[x >> 4]);
    s.push_back(kDigits[x & 15]);
  }
  return s;
}

// ------------------------------------------------------------------------------------------ Services

Errc Services::start(tcp::TcpLayer& tcp, Instant now, std::string& failed) {
  for (auto& s : list_) {
    if (Errc e = s->start(tcp, now); e != Errc::ok) {
      failed = s->name();
      return e;
    }
  }
  return Errc::ok;
}

std::size_t Services::dispatch(tcp::TcpLayer& tcp, Instant now) {
  std::size_t n = 0;
  SocketEvent ev;
  while (tcp.next_event(ev)) {
    ++n;
    for (auto& s : list_) {
      if (s->on_event(tcp, ev, now)) break;
    }
  }
  return n;
}

void Services::tick(tcp::TcpLayer& tcp, Instant now) {
  for (auto& s : list_) s->on_tick(tcp, now);
}

bool Services::all_clients_done() const {
  if (!has_client_) return false;
  return std::all_of(list_.begin(), list_.end(), [](const auto& s) { return s->done() || std::strcmp(s->name(), "client") != 0; });
}

int Services::finish(tcp::TcpLayer& tcp, Instant now) {
  int rc = 0;
  for (auto& s : list_) rc = std::max(rc, s->finish(tcp, now));
  return rc;
}

// ------------------------------------------------------------------------------------- StreamServer

StreamServer::StreamServer(Mode mode, std::uint16_t port, EngineCounters& counters, bool keepalive)
    : mode_(mode), port_(port), keepalive_(keepalive), counters_(counters), scratch_(kScratch) {}

Errc StreamServer::start(tcp::TcpLayer& tcp, Instant /*now*/) {
  auto s = tcp.socket();
  if (!s) return s.error();
  listener_ = *s;
  tcp.setsockopt(listener_, SockOpt::reuseaddr, 1);
  if (Errc e = tcp.bind(listener_, {Ipv4Addr::any(), port_}); e != Errc::ok) return e;
  return tcp.listen(listener_, kListenBacklog);
}

bool StreamServer::on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant /*now*/) {
  if (ev.id == listener_) {
    accept_all(tcp);
    return true;
  }
  auto it = conns_.find(ev.id);
  if (it == conns_.end()) return false;
  pump(tcp, ev.id, it->second);
  return true;
}

void StreamServer::accept_all(tcp::TcpLayer& tcp) {
  for (;;) {
    auto r = tcp.accept(listener_);
    if (!r) return;  // again: queue empty (other errors: nothing to take either)
    counters_.inc(EngineCounter::svc_accepted);
    // An echo must not sit on small replies waiting for ACKs (Nagle): request/response tests measure it.
    if (mode_ == Mode::echo) tcp.setsockopt(*r, SockOpt::nodelay, 1);
    if (keepalive_) tcp.setsockopt(*r, SockOpt::keepalive, 1);
    auto [it, inserted] = conns_.try_emplace(*r);
    if (inserted) pump(tcp, *r, it->second);
  }
}

bool StreamServer::pump(tcp::TcpLayer& tcp, SocketId id, Conn& c) {
  // Echo bytes the send buffer refused last time go first: order must be kept, and until they are
  // gone nothing more is read, so the peer's window closes (backpressure instead of buffering).
  while (c.pending_off < c.pending.size()) {
    auto r = tcp.send(id, ByteSpan(c.pending).subspan(c.pending_off));
    if (!r) {
      if (r.error() == Errc::again) return true;  // kWritable brings us back
      close_conn(tcp, id, true);
      return false;
    }
    if (*r == 0) return true;
    c.pending_off += *r;
  }
  c.pending.clear();
  c.pending_off = 0;

  while (!c.eof) {
    auto r = tcp.recv(id, scratch_);
    if (!r) {
      if (r.error() == Errc::again) break;
      close_conn(tcp, id, true);
      return false;
    }
    if (*r == 0) {
      c.eof = true;
      break;
    }
    if (mode_ == Mode::discard) continue;
    const ByteSpan data = ByteSpan(scratch_).first(*r);
    std::size_t took = 0;
    if (auto s = tcp.send(id, data); s) {
      took = *s;
    } else if (s.error() != Errc::again) {
      close_conn(tcp, id, true);
      return false;
    }
    if (took < data.size()) {
      if (c.pending.capacity() == 0) c.pending.reserve(kScratch);  // once per connection
      c.pending.assign(data.begin() + static_cast<std::ptrdiff_t>(took), data.end());
      return true;
    }
  }
  if (c.eof) {
    // Half-close: the peer's FIN arrived and every byte before it was echoed; now send ours.
    if (mode_ == Mode::echo) tcp.shutdown(id, ShutdownHow::write);
    close_conn(tcp, id, false);
    return false;
  }
  return true;
}

void StreamServer::close_conn(tcp::TcpLayer& tcp, SocketId id, bool error) {
  tcp.close(id);
  conns_.erase(id);
  counters_.inc(error ? EngineCounter::svc_errors : EngineCounter::svc_closed);
}

// --------------------------------------------------------------------------------------- BulkClient

BulkClient::BulkClient(const ClientConfig& cfg, EngineCounters& counters)
    : cfg_(cfg), counters_(counters), buf_(kScratch) {}

void BulkClient::generate(std::uint64_t seed, std::uint64_t off, std::span<std::byte> out) {
  // Word k of the stream is the k-th output of splitmix64 seeded with `seed`, little-endian; any
  // range can be produced without generating what precedes it (resending after a short write).
  auto word = [seed](std::uint64_t k) {
    std::uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  std::size_t pos = 0;
  std::uint64_t k = off / 8;
  unsigned skip = static_cast<unsigned>(off % 8);
  while (pos < out.size()) {
    const std::uint64_t w = word(k++);
    std::uint8_t b[8];
    for (unsigned j = 0; j < 8; ++j) b[j] = static_cast<std::uint8_t>(w >> (8 * j));
    const std::size_t n = std::min<std::size_t>(8 - skip, out.size() - pos);
    std::memcpy(out.data() + pos, b + skip, n);
    pos += n;
    skip = 0;
  }
}

Errc BulkClient::start(tcp::TcpLayer& tcp, Instant now) {
  t0_ = now;
  conns_.resize(cfg_.conns);
  by_id_.reserve(cfg_.conns);
  for (auto& c : conns_) {
    sha256_init(&c.sent_hash);
    sha256_init(&c.recv_hash);
    c.t_start = now;
  }
  // One connection first: its SYN resolves the server's MAC. Thousands of SYNs at once would
  // overflow the ARP pending queue and wait a whole RTO; the rest start once the first one is up.
  open_next(tcp, now, 1);
  return Errc::ok;
}

void BulkClient::open_next(tcp::TcpLayer& tcp, Instant now, std::size_t n) {
  for (; n > 0 && started_ < conns_.size(); --n) {
    const std::size_t i = started_++;
    Conn& c = conns_[i];
    c.t_start = now;
    auto s = tcp.socket();
    if (!s) {
      complete(tcp, c, now, s.error(), "socket");
      continue;
    }
    c.id = *s;
    tcp.setsockopt(c.id, SockOpt::nodelay, 1);
    if (cfg_.keepalive) tcp.setsockopt(c.id, SockOpt::keepalive, 1);
    const Errc e = tcp.connect(c.id, cfg_.remote);
    if (e != Errc::in_progress && e != Errc::ok) {
      complete(tcp, c, now, e, "connect");
      continue;
    }
    by_id_.emplace(c.id, i);
    if (auto le = tcp.local_endpoint(c.id); le) c.local = *le;
  }
}

bool BulkClient::on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant now) {
  auto it = by_id_.find(ev.id);
  if (it == by_id_.end()) return false;
  Conn& c = conns_[it->second];
  if (c.state == State::connecting) {
    if ((ev.ready & (kError | kHangup)) != 0) {
      Errc e = tcp.take_error(c.id);
      complete(tcp, c, now, e == Errc::ok ? Errc::conn_refused : e, "connect");
      return true;
    }
    if ((ev.ready & kWritable) == 0) return true;
    c.state = State::open;
    if (auto le = tcp.local_endpoint(c.id); le) c.local = *le;
    open_next(tcp, now, conns_.size());
  }
  pump(tcp, c, now);
  return true;
}

void BulkClient::pump(tcp::TcpLayer& tcp, Conn& c, Instant now) {
  const std::size_t idx = static_cast<std::size_t>(&c - conns_.data());
  const std::uint64_t seed = cfg_.seed + idx;
  while (c.sent < cfg_.send_bytes) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(buf_.size(), cfg_.send_bytes - c.sent));
    auto data = std::span(buf_).first(chunk);
    generate(seed, c.sent, data);
    auto r = tcp.send(c.id, data);
    if (!r) {
      if (r.error() == Errc::again) break;
      complete(tcp, c, now, r.error(), "send");
      return;
    }
    sha256_update(&c.sent_hash, *r, reinterpret_cast<const std::uint8_t*>(data.data()));
    c.sent += *r;
    if (*r < chunk) break;
  }
  if (c.sent == cfg_.send_bytes && cfg_.shutdown_after_send && !c.shut_wr) {
    tcp.shutdown(c.id, ShutdownHow::write);
    c.shut_wr = true;
  }
  while (!c.eof) {
    auto r = tcp.recv(c.id, buf_);
    if (!r) {
      if (r.error() == Errc::again) break;
      complete(tcp, c, now, r.error(), "recv");
      return;
    }
    if (*r == 0) {
      c.eof = true;
      break;
    }
    sha256_update(&c.recv_hash, *r, reinterpret_cast<const std::uint8_t*>(buf_.data()));
    c.received += *r;
  }
  const bool recv_done = cfg_.recv_bytes ? c.received >= *cfg_.recv_bytes : c.eof;
  if (c.sent == cfg_.send_bytes && recv_done) {
    if (cfg_.recv_bytes && c.received > *cfg_.recv_bytes) {
      complete(tcp, c, now, Errc::inval, "received more than --recv-bytes");
    } else {
      complete(tcp, c, now, Errc::ok, {});
    }
  } else if (c.eof && cfg_.recv_bytes && c.received < *cfg_.recv_bytes) {
    complete(tcp, c, now, Errc::not_conn, "EOF before --recv-bytes");
  }
}

void BulkClient::complete(tcp::TcpLayer& tcp, Conn& c, Instant now, Errc err, std::string why) {
  if (c.state == State::ok || c.state == State::failed) return;
  c.state = err == Errc::ok ? State::ok : State::failed;
  c.error = err;
  c.why = std::move(why);
  c.t_end = now;
  sha256_digest(&c.sent_hash, SHA256_DIGEST_SIZE, c.sent_digest.data());
  sha256_digest(&c.recv_hash, SHA256_DIGEST_SIZE, c.recv_digest.data());
  if (c.id != kInvalidSocket) {
    if (err == Errc::ok) {
      tcp.close(c.id);
    } else {
      tcp.abort(c.id);
      tcp.close(c.id);
    }
    by_id_.erase(c.id);
  }
  counters_.inc(err == Errc::ok ? EngineCounter::svc_closed : EngineCounter::svc_errors);
  ++finished_;
  if (!stopping_ && finished_ == started_ && started_ < conns_.size()) open_next(tcp, now, conns_.size());
}

void BulkClient::on_tick(tcp::TcpLayer& tcp, Instant now) {
  if (done() || cfg_.timeout.count() <= 0 || now - t0_ < cfg_.timeout) return;
  stopping_ = true;
  for (auto& c : conns_) complete(tcp, c, now, Errc::timed_out, "client timeout");
}

int BulkClient::finish(tcp::TcpLayer& tcp, Instant now) {
  stopping_ = true;
  for (auto& c : conns_) complete(tcp, c, now, Errc::timed_out, "engine stopped");
  std::uint64_t sent = 0, received = 0;
  std::size_t ok = 0;
  Instant t_end = t0_;
  const bool lines = cfg_.per_conn_lines || conns_.size() <= 16;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    const Conn& c = conns_[i];
    sent += c.sent;
    received += c.received;
    t_end = std::max(t_end, c.t_end);
    if (c.state == State::ok) ++ok;
    if (lines || c.state != State::ok) {
      std::printf("pno-client-conn: idx=%zu local=%s remote=%s status=%s error=%s why=\"%s\" sent_bytes=%llu "
                  "recv_bytes=%llu seconds=%.6f sent_sha256=%s recv_sha256=%s\n",
                  i, endpoint_str(c.local).c_str(), endpoint_str(cfg_.remote).c_str(),
                  c.state == State::ok ? "ok" : "failed", errc_name(c.error), c.why.c_str(),
                  static_cast<unsigned long long>(c.sent), static_cast<unsigned long long>(c.received),
                  std::chrono::duration<double>(c.t_end - c.t_start).count(), hex(c.sent_digest).c_str(),
                  hex(c.recv_digest).c_str());
    }
  }
  const double secs = std::chrono::duration<double>(t_end - t0_).count();
  const double denom = secs > 0 ? secs : 1e-9;
  std::printf("pno-client: result=%s conns=%zu ok=%zu failed=%zu sent_bytes=%llu recv_bytes=%llu seconds=%.6f "
              "send_mbit_s=%.1f recv_mbit_s=%.1f",
              ok == conns_.size() ? "ok" : "failed", conns_.size(), ok, conns_.size() - ok,
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(received), secs,
              static_cast<double>(sent) * 8 / denom / 1e6, static_cast<double>(received) * 8 / denom / 1e6);
  if (conns_.size() == 1) {
    std::printf(" sent_sha256=%s recv_sha256=%s", hex(conns_[0].sent_digest).c_str(),
                hex(conns_[0].recv_digest).c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
  return ok == conns_.size() ? 0 : 1;
}

}  // namespace pno::engine
