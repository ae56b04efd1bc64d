// pno-engine: the network engine process. Parses options (options.cc), checks and translates them
// into the configs of each part (config.cc), then starts EAL and the port, builds one stack instance
// and the requested built-in services, runs the loop, and reports on the way out (run.cc).
//
// Exit codes: 0 success, 1 runtime failure (start-up, a client connection failed),
//             2 bad arguments, 3 mbuf leak detected with --check-leaks.
#include <string>

#include "engine/config.hh"
#include "engine/options.hh"
#include "engine/run.hh"

int main(int argc, char** argv) {
  using namespace pno::engine;
  Options o;
  if (auto done = parse_options(argc, argv, o)) return *done;
  std::string err;
  const auto cfg = make_config(o, err);
  if (!cfg) return usage_error(err);
  return run_engine(o, *cfg);
}
