// pno-loadgen stream / halfclose: one connection that sends seeded bytes and/or reads, with SHA-256
// of each direction, a verdict per mode (echo, send to a discard server, recv to EOF), and the
// abortive-close, hold and expect-reset variants.
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <vector>

#include "tools/common.hh"
#include "tools/loadgen.hh"

namespace pno::tools {
namespace {

struct StreamOpts {
  sockaddr_in to{};
  std::string mode = "echo";
  std::uint64_t bytes = 1 << 20;
  std::uint64_t seed = 1;
  std::size_t chunk = 64 * 1024;
  double timeout = 120;
  bool shutdown_after_send = true;
  double read_delay_ms = 0;    ///< halfclose: read nothing until everything is sent and SHUT_WR done
  std::uint64_t rst_after = 0; ///< abort with RST after this many bytes sent (0 = never)
  double hold = 0;             ///< keep the connection open this long after the exchange
  bool linger0 = false;
  bool nodelay = false;
  bool expect_reset = false;   ///< a reset by the peer is the expected outcome
};

/// One stream exchange, from connect to the result line.
class StreamRun {
 public:
  StreamRun(const std::string& cmd, const StreamOpts& o)
      : o_(o),
        t0_(Clock::now()),
        deadline_(t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout))),
        gen_(o.seed) {
    out_.s("cmd", cmd).s("mode", o.mode).s("peer", endpoint_str(o.to)).u("bytes", o.bytes).u("seed", o.seed);
  }

  /// Returns the exit status.
  int run();

 private:
  /// Waits for the handshake; an error message, empty once connected.
  std::string await_connect();
  /// The poll loop until EOF, the echo is complete, or an error (returned; empty if none).
  std::string exchange();
  /// All sent: RST (--rst-after, sets aborted_), else SHUT_WR and the halfclose read delay.
  void end_of_data();
  std::string on_readable(short revents);
  /// Keeps writing until the socket is full: one poll per 64 KiB is too slow for 1 GiB.
  std::string write_some();
  /// The mode's verdict on a finished exchange; `err` gets why it failed.
  bool judge(std::string& err);
  /// Prints the result line; returns the exit status.
  int finish(bool ok, const std::string& err);

  const StreamOpts& o_;
  const Clock::time_point t0_, deadline_;
  Json out_;
  Fd fd_;
  Sha256 tx_, rx_;
  std::uint64_t sent_ = 0, recvd_ = 0;
  bool eof_ = false, reset_ = false;
  double connect_ms_ = 0;

  ByteGen gen_;
  std::vector<std::uint8_t> wbuf_, rbuf_;
  std::size_t woff_ = 0, wlen_ = 0;  // unsent part of wbuf_
  std::uint64_t to_send_ = 0;
  bool wr_shut_ = false;
  bool reading_allowed_ = false;
  bool aborted_ = false;
};

int StreamRun::run() {
  fd_ = start_connect(o_.to);
  if (!fd_.valid()) return finish(false, "socket/connect: " + errno_str(errno));
  if (o_.nodelay) set_nodelay(fd_.get());
  if (const std::string e = await_connect(); !e.empty()) return finish(false, e);
  connect_ms_ = secs_since(t0_) * 1e3;

  wbuf_.resize(o_.chunk);
  rbuf_.resize(std::max<std::size_t>(o_.chunk, 64 * 1024));
  const bool sending = o_.mode != "recv";
  to_send_ = sending ? (o_.rst_after ? std::min(o_.rst_after, o_.bytes) : o_.bytes) : 0;
  reading_allowed_ = o_.read_delay_ms <= 0;
  std::string err = exchange();
  if (aborted_) {
    // The abortive close's result reports neither EOF nor a reset.
    eof_ = false;
    return finish(true, "");
  }

  const bool ok = judge(err);
  if (ok && o_.hold > 0) {
    Json().s("event", "holding").s("peer", endpoint_str(o_.to)).print();
    const auto until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.hold));
    while (Clock::now() < until && !g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (o_.linger0) set_linger0(fd_.get());
  fd_.reset();
  return finish(ok, err);
}

std::string StreamRun::await_connect() {
  pollfd p{fd_.get(), POLLOUT, 0};
  while (true) {
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count());
    if (ms <= 0 || g_stop) return "connect timed out";
    int r = ::poll(&p, 1, std::min(ms, 200));
    if (r > 0) break;
  }
  if (int e = socket_error(fd_.get()); e != 0) {
    reset_ = e == ECONNRESET;
    return "connect: " + errno_str(e);
  }
  return {};
}

std::string StreamRun::exchange() {
  while (true) {
    if (g_stop) return "interrupted";
    if (Clock::now() > deadline_) return "timed out";
    // Done sending?
    if (sent_ == to_send_ && !wr_shut_) {
      end_of_data();
      if (aborted_) return {};
    }
    // Finished?
    if (eof_) return {};
    if (o_.mode == "echo" && !o_.shutdown_after_send && wr_shut_ && recvd_ >= o_.bytes) return {};

    short events = 0;
    if (sent_ < to_send_) events |= POLLOUT;
    if (reading_allowed_) events |= POLLIN;
    pollfd p{fd_.get(), events, 0};
    int r = ::poll(&p, 1, 200);
    if (r < 0 && errno != EINTR) return "poll: " + errno_str(errno);
    if (r <= 0) continue;
    if ((p.revents & POLLIN) || (p.revents & (POLLERR | POLLHUP))) {
      if (std::string e = on_readable(p.revents); !e.empty()) return e;
    }
    if ((p.revents & POLLOUT) && sent_ < to_send_) {
      if (std::string e = write_some(); !e.empty()) return e;
    }
  }
}

void StreamRun::end_of_data() {
  if (o_.rst_after) {
    // Abortive close: the peer sees a RST (RFC 9293 §3.10.5); our side is finished here.
    set_linger0(fd_.get());
    fd_.reset();
    aborted_ = true;
    return;
  }
  if (o_.shutdown_after_send || o_.mode == "send") ::shutdown(fd_.get(), SHUT_WR);
  wr_shut_ = true;
  if (!reading_allowed_) {
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(o_.read_delay_ms));
    reading_allowed_ = true;
  }
}

std::string StreamRun::on_readable(short revents) {
  if (reading_allowed_) {
    ssize_t n = ::recv(fd_.get(), rbuf_.data(), rbuf_.size(), 0);
    if (n > 0) {
      rx_.update({rbuf_.data(), static_cast<std::size_t>(n)});
      recvd_ += static_cast<std::uint64_t>(n);
    } else if (n == 0) {
      eof_ = true;
    } else if (errno != EAGAIN && errno != EINTR) {
      reset_ = errno == ECONNRESET;
      return "recv: " + errno_str(errno);
    }
  } else if (revents & POLLERR) {
    int e = socket_error(fd_.get());
    reset_ = e == ECONNRESET;
    return "socket error: " + errno_str(e);
  }
  return {};
}

std::string StreamRun::write_some() {
  for (int k = 0; k < 64 && sent_ < to_send_; ++k) {
    if (woff_ == wlen_) {
      wlen_ = static_cast<std::size_t>(std::min<std::uint64_t>(wbuf_.size(), to_send_ - sent_));
      gen_.fill({wbuf_.data(), wlen_});
      tx_.update({wbuf_.data(), wlen_});
      woff_ = 0;
    }
    ssize_t n = ::send(fd_.get(), wbuf_.data() + woff_, wlen_ - woff_, MSG_NOSIGNAL);
    if (n > 0) {
      woff_ += static_cast<std::size_t>(n);
      sent_ += static_cast<std::uint64_t>(n);
    } else {
      if (errno != EAGAIN && errno != EINTR) {
        reset_ = errno == ECONNRESET || errno == EPIPE;
        return "send: " + errno_str(errno);
      }
      break;
    }
  }
  return {};
}

bool StreamRun::judge(std::string& err) {
  bool ok = err.empty();
  if (ok) {
    if (o_.mode == "echo") {
      ok = sent_ == o_.bytes && recvd_ == o_.bytes && tx_.hex() == rx_.hex();
      if (!ok) err = "echo mismatch";
    } else if (o_.mode == "send") {
      ok = sent_ == o_.bytes && recvd_ == 0 && eof_;
      if (!ok) err = recvd_ ? "discard peer sent data" : "no EOF from peer";
    } else {
      ok = eof_ && (o_.bytes == 0 || recvd_ == o_.bytes);
      if (!ok) err = "short read";
    }
  }
  if (o_.expect_reset) {
    // The test wanted a reset by the peer: success is seeing one.
    ok = reset_;
    err = reset_ ? "" : (err.empty() ? "expected a reset, got none" : err);
  }
  return ok;
}

int StreamRun::finish(bool ok, const std::string& err) {
  double secs = secs_since(t0_);
  out_.b("ok", ok).u("bytes_sent", sent_).u("bytes_recv", recvd_);
  out_.s("sha256_sent", tx_.hex()).s("sha256_recv", rx_.hex());
  out_.b("eof", eof_).b("reset", reset_).n("connect_ms", connect_ms_).n("secs", secs);
  const double moved = static_cast<double>(std::max(sent_, recvd_));
  out_.n("mbytes_per_s", secs > 0 ? moved / secs / 1e6 : 0);
  if (!err.empty()) out_.s("error", err);
  out_.print();
  return ok ? 0 : 1;
}

}  // namespace

int cmd_stream(const std::string& cmd, int argc, char** argv) {
  Args a(argc, argv, {"no-shutdown", "linger0", "nodelay", "expect-reset"},
         {"connect", "mode", "bytes", "seed", "chunk", "timeout", "read-delay-ms", "rst-after", "hold"});
  if (!a.ok()) return usage_error(cmd, a.error());
  StreamOpts o;
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error(cmd, "--connect ADDR:PORT required");
  o.to = *to;
  o.mode = a.str("mode", "echo");
  if (o.mode != "echo" && o.mode != "send" && o.mode != "recv") return usage_error(cmd, "bad --mode");
  o.bytes = a.u64("bytes", cmd == "halfclose" ? 256 * 1024 : 1 << 20);
  o.seed = a.u64("seed", 1);
  o.chunk = std::clamp<std::size_t>(a.u64("chunk", 64 * 1024), 1, kMaxChunk);
  o.timeout = a.num("timeout", 120);
  o.shutdown_after_send = !a.flag("no-shutdown");
  o.read_delay_ms = a.num("read-delay-ms", cmd == "halfclose" ? 300 : 0);
  o.rst_after = a.u64("rst-after", 0);
  o.hold = a.num("hold", 0);
  o.linger0 = a.flag("linger0");
  o.nodelay = a.flag("nodelay");
  o.expect_reset = a.flag("expect-reset");
  if (cmd == "halfclose") {
    o.mode = "echo";
    o.shutdown_after_send = true;
  }
  return StreamRun(cmd, o).run();
}

}  // namespace pno::tools
