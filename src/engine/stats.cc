#include "engine/stats.hh"

#include <cinttypes>

namespace pno::engine {

void print_stats_line(std::FILE* out, const char* prefix, const StatsSnapshot& s) {
  std::fprintf(out, "%s", prefix);
  if (s.stack != nullptr) {
    for (std::size_t i = 0; i < kCounterCount; ++i) {
      if (s.stack->v[i] != 0) {
        std::fprintf(out, " %.*s=%" PRIu64, static_cast<int>(kCounterNames[i].size()), kCounterNames[i].data(),
                     s.stack->v[i]);
      }
    }
  }
  if (s.engine != nullptr) {
    for (std::size_t i = 0; i < kEngineCounterCount; ++i) {
      if (s.engine->v[i] != 0) {
        std::fprintf(out, " %.*s=%" PRIu64, static_cast<int>(kEngineCounterNames[i].size()),
                     kEngineCounterNames[i].data(), s.engine->v[i]);
      }
    }
  }
  std::fprintf(out, " tcp_sockets=%zu mbuf_pool_size=%u mbuf_pool_avail=%u mbuf_engine_in_flight=%" PRId64 "\n",
               s.tcp_sockets, s.mbufs.pool_size, s.mbufs.avail_now, s.mbufs.engine_in_flight);
  std::fflush(out);
}

bool write_stats_file(const std::string& path, const StatsSnapshot& s) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  for (std::size_t i = 0; i < kCounterCount; ++i) {
    std::fprintf(f, "%.*s=%" PRIu64 "\n", static_cast<int>(kCounterNames[i].size()), kCounterNames[i].data(),
                 s.stack != nullptr ? s.stack->v[i] : 0);
  }
  for (std::size_t i = 0; i < kEngineCounterCount; ++i) {
    std::fprintf(f, "%.*s=%" PRIu64 "\n", static_cast<int>(kEngineCounterNames[i].size()),
                 kEngineCounterNames[i].data(), s.engine != nullptr ? s.engine->v[i] : 0);
  }
  std::fprintf(f,
               "tcp_sockets=%zu\nmbuf_pool_size=%u\nmbuf_pool_avail_at_start=%u\nmbuf_pool_avail=%u\n"
               "mbuf_pmd_reserved=%" PRId64 "\nmbuf_engine_in_flight=%" PRId64 "\nmbuf_leaked=%" PRId64 "\n",
               s.tcp_sockets, s.mbufs.pool_size, s.mbufs.avail_at_start, s.mbufs.avail_now, s.mbufs.pmd_reserved(),
               s.mbufs.engine_in_flight, s.mbufs.leaked());
  return std::fclose(f) == 0;
}

}  // namespace pno::engine
