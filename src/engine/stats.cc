#include "engine/stats.hh"

#include <cinttypes>

#include "engine/counter_print.hh"

namespace pno::engine {

void print_stats_line(std::FILE* out, const char* prefix, const StatsSnapshot& s) {
  std::fprintf(out, "%s", prefix);
  if (s.stack != nullptr) print_nonzero_counters(out, kCounterNames, s.stack->v);
  if (s.engine != nullptr) print_nonzero_counters(out, kEngineCounterNames, s.engine->v);
  std::fprintf(out, " tcp_sockets=%zu mbuf_pool_size=%u mbuf_pool_avail=%u mbuf_engine_in_flight=%" PRId64 "\n",
               s.tcp_sockets, s.mbufs.pool_size, s.mbufs.avail_now, s.mbufs.engine_in_flight);
  std::fflush(out);
}

bool write_stats_file(const std::string& path, const StatsSnapshot& s) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  const Counters no_stack{};
  const EngineCounters no_engine{};
  print_counter_lines(f, kCounterNames, (s.stack != nullptr ? *s.stack : no_stack).v);
  print_counter_lines(f, kEngineCounterNames, (s.engine != nullptr ? *s.engine : no_engine).v);
  std::fprintf(f,
               "tcp_sockets=%zu\nmbuf_pool_size=%u\nmbuf_pool_avail_at_start=%u\nmbuf_pool_avail=%u\n"
               "mbuf_pmd_reserved=%" PRId64 "\nmbuf_engine_in_flight=%" PRId64 "\nmbuf_leaked=%" PRId64 "\n",
               s.tcp_sockets, s.mbufs.pool_size, s.mbufs.avail_at_start, s.mbufs.avail_now, s.mbufs.pmd_reserved(),
               s.mbufs.engine_in_flight, s.mbufs.leaked());
  return std::fclose(f) == 0;
}

}  // namespace pno::engine
