// Printing the engine's numbers: stack counters, engine counters and mbuf accounting, as key=value.
#pragma once

#include <cstdio>
#include <string>

#include "engine/engine_counters.hh"
#include "engine/port.hh"
#include "stack/counters.hh"

namespace pno::engine {

struct StatsSnapshot {
  const Counters* stack = nullptr;
  const EngineCounters* engine = nullptr;
  MbufStats mbufs;
  std::size_t tcp_sockets = 0;
};

/// One line, `prefix` then the nonzero counters as key=value (for --stats on stdout).
void print_stats_line(std::FILE* out, const char* prefix, const StatsSnapshot& s);
/// Every counter, zero or not, one key=value per line (for --stats-file). False on I/O error.
bool write_stats_file(const std::string& path, const StatsSnapshot& s);

}  // namespace pno::engine
