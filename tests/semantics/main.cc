// pno-semantics: the socket-semantics suite. The same binary runs on the kernel stack and under the
// shim (`pno run -- pno-semantics ...`), so the assertions are what an app can observe and rely on.
//
//   pno-semantics --local-ip IP --peer-ip IP --control PATH [gtest options]
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "harness.hh"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& e = pno::semtest::env();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](std::string& out) {
      if (i + 1 < argc) out = argv[++i];
    };
    if (a == "--local-ip") {
      next(e.local_ip);
    } else if (a == "--peer-ip") {
      next(e.peer_ip);
    } else if (a == "--control") {
      next(e.control);
    } else {
      std::fprintf(stderr, "pno-semantics: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (e.local_ip.empty() || e.peer_ip.empty() || e.control.empty()) {
    std::fprintf(stderr, "usage: pno-semantics --local-ip IP --peer-ip IP --control PATH [gtest options]\n");
    return 2;
  }
  // SIGPIPE is counted, never fatal: a test checks that a write raised it (or did not), and a
  // broken connection in one test must not end the whole run.
  pno::semtest::install_sigpipe_counter();
  return RUN_ALL_TESTS();
}
