// pno-semantics: the socket-semantics suite. The same binary runs on the kernel stack and under the
// shim (`pno run -- pno-semantics ...`), so the assertions are what an app can observe and rely on.
//
//   pno-semantics --local-ip IP --peer-ip IP --control PATH [gtest options]
#include <signal.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace {

// A test that hangs (a call that never returns under a broken stack) must not hang the run: the
// watchdog names it and ends the process, so the failure is visible and attributable.
class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  explicit Watchdog(int limit_s) : limit_s_(limit_s) {
    std::thread([this] { run(); }).detach();
  }
  void OnTestStart(const ::testing::TestInfo& t) override {
    std::lock_guard lk(mu_);
    name_ = std::string(t.test_suite_name()) + "." + t.name();
    started_ = std::chrono::steady_clock::now();
    running_ = true;
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard lk(mu_);
    running_ = false;
  }

 private:
  void run() {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      std::lock_guard lk(mu_);
      if (running_ && std::chrono::steady_clock::now() - started_ > std::chrono::seconds(limit_s_)) {
        std::fprintf(stderr, "\npno-semantics: %s did not finish within %d s: giving up\n", name_.c_str(),
                     limit_s_);
        std::fflush(stdout);
        std::fflush(stderr);
        ::_exit(3);
      }
    }
  }
  int limit_s_;
  std::mutex mu_;
  std::string name_;
  std::chrono::steady_clock::time_point started_;
  bool running_ = false;
};

}  // namespace

namespace pno::semtest {
int exec_helper(int argc, char** argv);  // exec_test.cc: the program the exec tests start
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::strncmp(argv[1], "--exec-", 7) == 0) return pno::semtest::exec_helper(argc, argv);
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
  ::testing::UnitTest::GetInstance()->listeners().Append(new Watchdog(60));
  return RUN_ALL_TESTS();
}
