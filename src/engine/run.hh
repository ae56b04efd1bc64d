// pno-engine's run: start-up in order (interface check, signals, EAL, port, stack, services, ready
// line, client), the loop, and the exit report (counters, stats file, mbuf leak check).
#pragma once

#include "engine/config.hh"
#include "engine/options.hh"

namespace pno::engine {

/// Runs the engine until a stop signal or the end of its clients; returns the process's exit status.
int run_engine(const Options& o, const EngineConfig& cfg);

}  // namespace pno::engine
