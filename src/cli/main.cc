// pno: the PnO command line.
//   pno run [--engine-socket PATH] [--require-engine] [--log-level LEVEL] -- APP ARGS...
#include <CLI/CLI.hpp>

#include "cli/run.hh"

int main(int argc, char** argv) {
  CLI::App app{"PnO: run unmodified Linux programs over the offload engine's TCP stack"};
  app.require_subcommand(1);

  pno::cli::RunOptions ro;
  CLI::App* run = app.add_subcommand("run", "run a program with its TCP sockets offloaded to the engine");
  run->add_option("--engine-socket", ro.engine_socket,
                  "the engine's attach socket (default: $PNO_ENGINE_SOCKET or /run/pno/engine.sock)");
  run->add_flag("--require-engine", ro.require_engine,
                "fail when the engine is not reachable instead of using the kernel stack "
                "(also PNO_REQUIRE_ENGINE=1)");
  run->add_option("--log-level", ro.log_level, "shim diagnostics: error, warn, info or debug")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  run->add_option("--shim", ro.shim, "the libpno.so to preload (default: $PNO_SHIM or ../lib/libpno.so)");
  run->add_option("command", ro.command, "the program and its arguments (after --)")->required();
  run->allow_extras(false);

  CLI11_PARSE(app, argc, argv);
  if (run->parsed()) return pno::cli::run(ro);
  return 2;
}
