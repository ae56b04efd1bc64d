// pno-loadgen conns: N concurrent connections, each echoing B seeded bytes (seed + i), all held open
// until every one is verified, then closed together; connect-time percentiles and errors by kind.
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <vector>

#include "tools/common.hh"
#include "tools/loadgen.hh"

namespace pno::tools {
namespace {

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct Conn {
  Fd fd;
  enum class St { connecting, exchanging, done, failed } st = St::connecting;
  std::uint64_t sent = 0, recvd = 0;
  ByteGen gen{0};
  Sha256 tx, rx;
  std::vector<std::uint8_t> pending;  // generated, not yet sent
  std::size_t poff = 0;
  double connect_ms = 0;
  std::uint32_t interest = 0;
};

struct ConnsOpts {
  sockaddr_in to{};
  std::uint64_t n = 1000;
  std::uint64_t bytes = 4096;
  std::uint64_t seed = 1;
  double timeout = 120;
  std::uint64_t ramp = 1000;  ///< connects started per 10 ms batch
  bool hold = true;
};

/// The N connections and their tallies, from the first connect to the result line.
class ConnsRun {
 public:
  explicit ConnsRun(const ConnsOpts& o) : o_(o), t0_(Clock::now()), cs_(o.n) {}

  /// Returns the exit status.
  int run();

 private:
  /// Starts up to --ramp connects, so a SYN burst can be paced.
  void start_batch();
  void on_ready(std::size_t i);
  void send_some(std::size_t i);
  void recv_some(std::size_t i);
  /// All echoed: verified (held open unless --no-hold) or failed; else waits for more.
  void check_done(std::size_t i);
  void fail(std::size_t i, const std::string& why);
  void set_interest(std::size_t i, std::uint32_t want);
  /// Closes every connection at once and prints the result line.
  int report(const std::string& err);

  const ConnsOpts& o_;
  const Clock::time_point t0_;
  Fd ep_{::epoll_create1(EPOLL_CLOEXEC)};
  std::vector<Conn> cs_;
  std::map<std::string, std::uint64_t> errs_;
  std::uint64_t started_ = 0, established_ = 0, done_ = 0, failed_ = 0, open_now_ = 0, peak_open_ = 0;
  std::vector<double> connect_times_;
  std::vector<std::uint8_t> rbuf_ = std::vector<std::uint8_t>(64 * 1024);
};

int ConnsRun::run() {
  std::vector<epoll_event> evs(1024);
  std::string err;
  while (done_ + failed_ < o_.n) {
    if (g_stop) {
      err = "interrupted";
      break;
    }
    if (secs_since(t0_) > o_.timeout) {
      err = "timed out";
      break;
    }
    start_batch();
    int m = ::epoll_wait(ep_.get(), evs.data(), static_cast<int>(evs.size()), started_ < o_.n ? 10 : 200);
    if (m < 0 && errno != EINTR) {
      err = "epoll_wait: " + errno_str(errno);
      break;
    }
    for (int e = 0; e < m; ++e) on_ready(evs[e].data.u64);
  }
  return report(err);
}

void ConnsRun::start_batch() {
  for (std::uint64_t k = 0; k < o_.ramp && started_ < o_.n; ++k) {
    Conn& c = cs_[started_];
    c.gen = ByteGen(o_.seed + started_);
    c.fd = start_connect(o_.to);
    if (!c.fd.valid()) {
      c.st = Conn::St::failed;
      ++failed_;
      ++errs_["connect: " + errno_str(errno)];
    } else {
      ++open_now_;
      peak_open_ = std::max(peak_open_, open_now_);
      epoll_event ev{};
      ev.events = EPOLLOUT;
      ev.data.u64 = started_;
      c.interest = EPOLLOUT;
      ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
    }
    ++started_;
  }
}

void ConnsRun::on_ready(std::size_t i) {
  Conn& c = cs_[i];
  if (!c.fd.valid()) return;
  if (c.st == Conn::St::connecting) {
    if (int se = socket_error(c.fd.get()); se != 0) {
      fail(i, "connect: " + errno_str(se));
      return;
    }
    c.st = Conn::St::exchanging;
    c.connect_ms = secs_since(t0_) * 1e3;
    connect_times_.push_back(c.connect_ms);
    ++established_;
  }
  if (c.st != Conn::St::exchanging) return;
  send_some(i);
  if (c.st != Conn::St::exchanging) return;
  recv_some(i);
  if (c.st != Conn::St::exchanging) return;
  check_done(i);
}

void ConnsRun::send_some(std::size_t i) {
  Conn& c = cs_[i];
  while (c.sent < o_.bytes) {
    if (c.poff == c.pending.size()) {
      c.pending.resize(static_cast<std::size_t>(std::min<std::uint64_t>(16 * 1024, o_.bytes - c.sent)));
      c.gen.fill(c.pending);
      c.tx.update(c.pending);
      c.poff = 0;
    }
    ssize_t w = ::send(c.fd.get(), c.pending.data() + c.poff, c.pending.size() - c.poff, MSG_NOSIGNAL);
    if (w > 0) {
      c.poff += static_cast<std::size_t>(w);
      c.sent += static_cast<std::uint64_t>(w);
    } else {
      if (errno != EAGAIN && errno != EINTR) fail(i, "send: " + errno_str(errno));
      break;
    }
  }
}

void ConnsRun::recv_some(std::size_t i) {
  Conn& c = cs_[i];
  while (true) {
    ssize_t r = ::recv(c.fd.get(), rbuf_.data(), rbuf_.size(), 0);
    if (r > 0) {
      c.rx.update({rbuf_.data(), static_cast<std::size_t>(r)});
      c.recvd += static_cast<std::uint64_t>(r);
    } else if (r == 0) {
      fail(i, c.recvd < o_.bytes ? "early EOF" : "EOF before close");
      break;
    } else {
      if (errno != EAGAIN && errno != EINTR) fail(i, "recv: " + errno_str(errno));
      break;
    }
  }
}

void ConnsRun::check_done(std::size_t i) {
  Conn& c = cs_[i];
  if (c.recvd > o_.bytes) {
    fail(i, "echo longer than sent");
  } else if (c.recvd == o_.bytes && c.sent == o_.bytes) {
    if (c.tx.hex() != c.rx.hex()) {
      fail(i, "echo sha256 mismatch");
    } else {
      c.st = Conn::St::done;
      ++done_;
      set_interest(i, 0);
      if (!o_.hold) {
        ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
        c.fd.reset();
        --open_now_;
      }
    }
  } else {
    set_interest(i, EPOLLIN | (c.sent < o_.bytes ? EPOLLOUT : 0u));
  }
}

void ConnsRun::fail(std::size_t i, const std::string& why) {
  Conn& c = cs_[i];
  if (c.st == Conn::St::failed || c.st == Conn::St::done) return;
  c.st = Conn::St::failed;
  ++failed_;
  ++errs_[why];
  if (c.fd.valid()) {
    ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    c.fd.reset();
    --open_now_;
  }
}

void ConnsRun::set_interest(std::size_t i, std::uint32_t want) {
  Conn& c = cs_[i];
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = i;
  ::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  c.interest = want;
}

int ConnsRun::report(const std::string& err) {
  const double exchange_secs = secs_since(t0_);
  // Close everything at once: the peer sees up to N FINs together.
  const std::uint64_t held = open_now_;
  for (auto& c : cs_) c.fd.reset();
  std::sort(connect_times_.begin(), connect_times_.end());
  auto pct = [&](double p) {
    if (connect_times_.empty()) return 0.0;
    return connect_times_[std::min(connect_times_.size() - 1, static_cast<std::size_t>(p * connect_times_.size()))];
  };
  const bool ok = err.empty() && done_ == o_.n;
  Json j;
  j.s("cmd", "conns").s("peer", endpoint_str(o_.to)).b("ok", ok).u("n", o_.n).u("bytes_each", o_.bytes);
  j.u("established", established_).u("verified", done_).u("failed", failed_).u("peak_open", peak_open_);
  j.u("held_open_at_end", held);
  j.n("connect_p50_ms", pct(0.5)).n("connect_p99_ms", pct(0.99)).n("connect_max_ms", pct(1.0));
  j.n("secs", exchange_secs);
  std::string e = "{";
  for (const auto& [k, v] : errs_) {
    if (e.size() > 1) e += ',';
    Json tmp;
    tmp.u(k, v);
    e += tmp.str().substr(1, tmp.str().size() - 2);
  }
  e += "}";
  j.raw("errors", e);
  if (!err.empty()) j.s("error", err);
  j.print();
  return ok ? 0 : 1;
}

}  // namespace

int cmd_conns(int argc, char** argv) {
  Args a(argc, argv, {"no-hold"}, {"connect", "n", "bytes", "seed", "timeout", "ramp"});
  if (!a.ok()) return usage_error("conns", a.error());
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error("conns", "--connect ADDR:PORT required");
  ConnsOpts o;
  o.to = *to;
  o.n = a.u64("n", 1000);
  o.bytes = a.u64("bytes", 4096);
  o.seed = a.u64("seed", 1);
  o.timeout = a.num("timeout", 120);
  o.ramp = a.u64("ramp", o.n);  // connects started per 10 ms batch
  o.hold = !a.flag("no-hold");
  raise_fd_limit();
  return ConnsRun(o).run();
}

}  // namespace pno::tools
