#include "shim/log.hh"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "shim/real.hh"

namespace pno::shim {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::warn)};
}

LogLevel parse_log_level(const char* s, LogLevel fallback) {
  if (s == nullptr || *s == '\0') return fallback;
  if (std::strcmp(s, "error") == 0 || std::strcmp(s, "0") == 0) return LogLevel::error;
  if (std::strcmp(s, "warn") == 0 || std::strcmp(s, "warning") == 0 || std::strcmp(s, "1") == 0) {
    return LogLevel::warn;
  }
  if (std::strcmp(s, "info") == 0 || std::strcmp(s, "2") == 0) return LogLevel::info;
  if (std::strcmp(s, "debug") == 0 || std::strcmp(s, "3") == 0) return LogLevel::debug;
  return fallback;
}

void set_log_level(LogLevel l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }

bool log_enabled(LogLevel l) {
  return static_cast<int>(l) <= g_level.load(std::memory_order_relaxed);
}

void log(LogLevel l, const char* fmt, ...) {
  if (!log_enabled(l)) return;
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, "pno[%d]: ", static_cast<int>(::getpid()));
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - static_cast<std::size_t>(n) - 1, fmt, ap);
  va_end(ap);
  std::size_t len = static_cast<std::size_t>(n) +
                    (m < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(m), sizeof buf - n - 2));
  buf[len++] = '\n';
  auto* w = PNO_REAL(write);
  if (w != nullptr) (void)w(2, buf, len);
}

}  // namespace pno::shim
