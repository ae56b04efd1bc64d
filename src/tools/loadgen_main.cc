// pno-loadgen: the Linux-side partner of the engine in interop tests and benchmarks.
//
//   pno-loadgen stream    --connect A:P --bytes N [--mode echo|send|recv]   one stream, sha256 both ways
//   pno-loadgen halfclose --connect A:P --bytes N                          send all, SHUT_WR, then read
//   pno-loadgen serve     --listen A:P --mode echo|sink|source              a server (engine-client tests)
//   pno-loadgen conns     --connect A:P --n 1000 --bytes B                  N concurrent verified exchanges
//   pno-loadgen pingpong  --connect A:P --size 64 --count N                 round-trip latency percentiles
//
// Every subcommand prints one JSON object per line on stdout (the last line is the result) and exits 0
// only when the exchange was verified. See src/tools/README.md.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/loadgen.hh"

namespace pno::tools {

volatile std::sig_atomic_t g_stop = 0;

int usage_error(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "pno-loadgen %s: %s (see --help)\n", cmd.c_str(), msg.c_str());
  return 64;
}

namespace {

void on_signal(int) { g_stop = 1; }

void install_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

void print_help() {
  std::puts(
      "pno-loadgen: Linux-side load generator and servers for PnO interop tests and benchmarks.\n"
      "Each command prints JSON lines on stdout (the last one is the result) and exits 0 only when\n"
      "every byte was verified.\n"
      "\n"
      "  stream    --connect A:P [--mode echo|send|recv] [--bytes N] [--seed S] [--chunk B]\n"
      "            [--no-shutdown] [--rst-after N] [--hold SECS] [--linger0] [--nodelay]\n"
      "            [--expect-reset] [--timeout SECS]\n"
      "      echo: send N seeded bytes, read the echo, compare sha256 (SHUT_WR after the last byte,\n"
      "            then read to EOF, unless --no-shutdown). send: send N, SHUT_WR, expect EOF and no\n"
      "            data (discard). recv: read to EOF (--bytes checks the count).\n"
      "            --rst-after N: after N bytes, close with SO_LINGER 0 (the peer gets a RST).\n"
      "            --hold SECS: keep the connection open after the exchange (keepalive tests).\n"
      "  halfclose --connect A:P [--bytes N] [--read-delay-ms MS]\n"
      "            send everything, SHUT_WR, wait, then read the whole echo and the peer's FIN.\n"
      "  serve     --listen A:P | --port P  --mode echo|sink|source [--bytes N] [--seed S]\n"
      "            [--count K] [--rst-after N] [--linger0] [--buf B] [--timeout SECS]\n"
      "            [--ready-file PATH] [--quiet] [--keepalive IDLE:INTVL:CNT]\n"
      "            one JSON line per finished connection (bytes and sha256 each way), a summary at\n"
      "            exit (after K connections, SIGTERM or --timeout).\n"
      "  conns     --connect A:P [--n N] [--bytes B] [--ramp K] [--no-hold] [--timeout SECS]\n"
      "            N concurrent connections, each echoing B seeded bytes; all are held open until\n"
      "            every one is verified, then closed together.\n"
      "  pingpong  --connect A:P [--size 64] [--count N] [--warmup W]\n"
      "            request/response round trips on one connection: RTT min/p50/p90/p99/max in us.\n"
      "\n"
      "Sizes accept K, M, G suffixes (binary). Exit status: 0 ok, 1 failed, 64 usage.");
}

}  // namespace
}  // namespace pno::tools

int main(int argc, char** argv) {
  using namespace pno::tools;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_help();
    return argc < 2 ? 64 : 0;
  }
  install_signals();
  const std::string cmd = argv[1];
  if (cmd == "stream" || cmd == "halfclose") return cmd_stream(cmd, argc - 2, argv + 2);
  if (cmd == "serve") return cmd_serve(argc - 2, argv + 2);
  if (cmd == "conns") return cmd_conns(argc - 2, argv + 2);
  if (cmd == "pingpong") return cmd_pingpong(argc - 2, argv + 2);
  std::fprintf(stderr, "pno-loadgen: unknown command %s (see --help)\n", cmd.c_str());
  return 64;
}
