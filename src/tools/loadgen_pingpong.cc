// pno-loadgen pingpong: request/response round trips on one connection (TCP_NODELAY), latency
// percentiles in microseconds.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tools/common.hh"
#include "tools/loadgen.hh"

namespace pno::tools {

int cmd_pingpong(int argc, char** argv) {
  Args a(argc, argv, {}, {"connect", "size", "count", "warmup", "timeout"});
  if (!a.ok()) return usage_error("pingpong", a.error());
  auto to = parse_endpoint(a.str("connect", ""));
  if (!to) return usage_error("pingpong", "--connect ADDR:PORT required");
  const std::size_t size = std::clamp<std::size_t>(a.u64("size", 64), 1, kMaxChunk);
  const std::uint64_t count = a.u64("count", 10000);
  const std::uint64_t warmup = a.u64("warmup", 100);
  const double timeout = a.num("timeout", 60);
  const auto t0 = Clock::now();
  Json j;
  j.s("cmd", "pingpong").s("peer", endpoint_str(*to)).u("size", size).u("count", count);

  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{static_cast<time_t>(timeout), 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*to), sizeof *to) != 0) {
    j.b("ok", false).s("error", "connect: " + errno_str(errno)).print();
    return 1;
  }
  set_nodelay(fd.get());
  std::vector<std::uint8_t> msg(size), back(size);
  ByteGen(7).fill(msg);
  std::vector<double> rtts;
  rtts.reserve(count);
  std::string err;
  for (std::uint64_t i = 0; i < warmup + count && err.empty(); ++i) {
    if (secs_since(t0) > timeout) {
      err = "timed out";
      break;
    }
    msg[0] = static_cast<std::uint8_t>(i);
    const auto s = Clock::now();
    if (::send(fd.get(), msg.data(), size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) {
      err = "send: " + errno_str(errno);
      break;
    }
    std::size_t got = 0;
    while (got < size) {
      ssize_t r = ::recv(fd.get(), back.data() + got, size - got, 0);
      if (r <= 0) {
        err = r == 0 ? "EOF" : "recv: " + errno_str(errno);
        break;
      }
      got += static_cast<std::size_t>(r);
    }
    if (!err.empty()) break;
    if (std::memcmp(msg.data(), back.data(), size) != 0) {
      err = "echo mismatch";
      break;
    }
    if (i >= warmup) rtts.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
  }
  ::shutdown(fd.get(), SHUT_WR);
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double p) {
    if (rtts.empty()) return 0.0;
    return rtts[std::min(rtts.size() - 1, static_cast<std::size_t>(p * rtts.size()))];
  };
  double sum = 0;
  for (double r : rtts) sum += r;
  const bool ok = err.empty() && rtts.size() == count;
  j.b("ok", ok).u("samples", rtts.size());
  j.n("rtt_min_us", pct(0)).n("rtt_p50_us", pct(0.5)).n("rtt_p90_us", pct(0.9)).n("rtt_p99_us", pct(0.99));
  j.n("rtt_max_us", pct(1.0)).n("rtt_mean_us", rtts.empty() ? 0 : sum / static_cast<double>(rtts.size()));
  j.n("secs", secs_since(t0));
  if (!err.empty()) j.s("error", err);
  j.print();
  return ok ? 0 : 1;
}

}  // namespace pno::tools
