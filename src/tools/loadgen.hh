// What pno-loadgen's subcommand files share (internal header): the stop flag, the usage error, and
// one entry point per subcommand (loadgen_main.cc dispatches to them).
#pragma once

#include <csignal>
#include <cstddef>
#include <string>

namespace pno::tools {

/// Set by SIGTERM / SIGINT: every subcommand leaves its loop and prints its result.
extern volatile std::sig_atomic_t g_stop;

/// Largest --chunk / --buf / --size.
inline constexpr std::size_t kMaxChunk = 1 << 20;

/// "pno-loadgen CMD: MSG (see --help)" on stderr; returns the usage exit status, 64.
int usage_error(const std::string& cmd, const std::string& msg);

int cmd_stream(const std::string& cmd, int argc, char** argv);  ///< stream and halfclose
int cmd_serve(int argc, char** argv);
int cmd_conns(int argc, char** argv);
int cmd_pingpong(int argc, char** argv);

}  // namespace pno::tools
