// pno-channel-echo: a small host program on the channel API (no shim): attaches to a running
// engine, listens, accepts connections one at a time and echoes every byte until EOF, then reports
// bytes, wall time and the host-side CPU cost of the data path (per byte and per call).
//
//   pno-channel-echo [--socket PATH] [--port N] [--conns N]
#include <poll.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "channel/host.hh"

using namespace pno;
using namespace pno::channel;

namespace {

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double sys_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
}

bool wait_ready(HostChannel& ch, Waiter& w, HostSocket s, std::uint32_t mask) {
  for (;;) {
    if ((ch.readiness(s) & mask) != 0) return true;
    ch.arm(w);
    if ((ch.readiness(s) & mask) != 0) {
      ch.disarm(w);
      return true;
    }
    pollfd p[2] = {{w.fd(), POLLIN, 0}, {ch.control_fd(), POLLIN, 0}};
    ::poll(p, 2, 1000);
    ch.disarm(w);
    if (!ch.alive()) return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = "/run/pno/engine.sock";
  std::uint16_t port = 5001;
  int conns = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--socket") == 0) path = argv[i + 1];
    else if (std::strcmp(argv[i], "--port") == 0) port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));
    else if (std::strcmp(argv[i], "--conns") == 0) conns = std::atoi(argv[i + 1]);
  }
  char why[256] = {};
  auto ch = HostChannel::attach(path, why);
  if (!ch) {
    std::fprintf(stderr, "pno-channel-echo: %s\n", why);
    return 1;
  }
  Waiter* w = ch->thread_waiter();
  if (w == nullptr) {
    std::fprintf(stderr, "pno-channel-echo: no waiter\n");
    return 1;
  }
  auto l = ch->socket();
  if (!l || ch->setsockopt(*l, SockOpt::reuseaddr, 1) != Errc::ok || ch->bind(*l, {Ipv4Addr::any(), port}) != Errc::ok ||
      ch->listen(*l, 16) != Errc::ok) {
    std::fprintf(stderr, "pno-channel-echo: cannot listen on port %u\n", port);
    return 1;
  }
  std::printf("pno-channel-echo: listening on port %u (engine ABI %u, rings %u bytes)\n", port,
              ch->engine().abi_version, ch->engine().stream_ring_bytes);
  std::fflush(stdout);
  std::vector<std::byte> buf(256 * 1024);
  for (int n = 0; n < conns; ++n) {
    if (!wait_ready(*ch, *w, *l, kReadable)) return 1;
    Endpoint peer;
    auto s = ch->accept(*l, &peer);
    if (!s) {
      --n;
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds(), s0 = sys_seconds();
    std::uint64_t bytes = 0, recv_calls = 0, send_calls = 0, waits = 0;
    std::chrono::nanoseconds in_calls{0};  // time inside send()/recv() only (the data path proper)
    auto timed = [&](auto&& fn) {
      const auto a = std::chrono::steady_clock::now();
      auto r = fn();
      in_calls += std::chrono::steady_clock::now() - a;
      return r;
    };
    std::size_t have = 0, off = 0;
    bool eof = false;
    while (!eof || off < have) {
      if (off < have) {
        iovec iov{buf.data() + off, have - off};
        auto r = timed([&] { return ch->send(*s, std::span(&iov, 1)); });
        ++send_calls;
        if (r) {
          off += *r;
          if (off == have) off = have = 0;
          continue;
        }
        if (r.error() != Errc::again) break;
      }
      if (!eof && have == 0) {
        iovec iov{buf.data(), buf.size()};
        auto r = timed([&] { return ch->recv(*s, std::span(&iov, 1)); });
        ++recv_calls;
        if (r) {
          if (*r == 0) {
            eof = true;
          } else {
            have = *r;
            off = 0;
            bytes += *r;
          }
          continue;
        }
        if (r.error() != Errc::again) break;
      }
      ++waits;
      if (!wait_ready(*ch, *w, *s, have > 0 ? kWritable | kError | kHangup : kReadable | kError | kHangup)) break;
    }
    ch->close(*s);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = cpu_seconds() - c0, sys = sys_seconds() - s0;
    std::printf(
        "pno-channel-echo: %s:%u echoed %llu bytes in %.3f s (%.1f MB/s each way); host CPU %.3f s (sys %.3f) = "
        "%.3f ns/byte; %llu recv + %llu send calls, %.0f ns/call inside the calls (%.3f ns/byte), %llu waits\n",
        peer.addr.str().c_str(), peer.port, static_cast<unsigned long long>(bytes), secs, bytes / secs / 1e6, cpu, sys,
        cpu * 1e9 / static_cast<double>(bytes ? bytes : 1), static_cast<unsigned long long>(recv_calls),
        static_cast<unsigned long long>(send_calls),
        static_cast<double>(in_calls.count()) / static_cast<double>(recv_calls + send_calls ? recv_calls + send_calls : 1),
        static_cast<double>(in_calls.count()) / static_cast<double>(bytes ? 2 * bytes : 1),
        static_cast<unsigned long long>(waits));
    std::fflush(stdout);
  }
  ch->close(*l);
  return 0;
}
