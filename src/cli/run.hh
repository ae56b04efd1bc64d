// `pno run`: the environment a program needs to run over the engine, and the exec.
#pragma once

#include <string>
#include <vector>

namespace pno::cli {

struct RunOptions {
  std::string engine_socket;  ///< empty: $PNO_ENGINE_SOCKET, else /run/pno/engine.sock
  bool require_engine = false;
  std::string log_level;      ///< empty: leave PNO_LOG_LEVEL as it is
  std::string shim;           ///< empty: $PNO_SHIM, else ../lib/libpno.so next to this program
  std::vector<std::string> command;
};

/// The LD_PRELOAD value with `shim` first: kept as is if `shim` is already in `current`.
std::string preload_with(const std::string& shim, const char* current);

/// Where libpno.so is when nobody says: next to the `pno` binary's ../lib (the build tree and the
/// install layout agree on that).
std::string default_shim_path();

/// Sets up the environment and execs the command; returns only on failure (exit status).
int run(const RunOptions& o);

}  // namespace pno::cli
