// One-line diagnostics on stderr that never allocate: formatted into a stack buffer and written
// with the real write(), so logging is safe on any interposed path.
#pragma once

#include <cstdarg>

namespace pno::shim {

enum class LogLevel : int { error = 0, warn = 1, info = 2, debug = 3 };

/// Parses "error", "warn", "info", "debug" (or 0..3); `fallback` otherwise.
LogLevel parse_log_level(const char* s, LogLevel fallback);
void set_log_level(LogLevel l);
[[nodiscard]] bool log_enabled(LogLevel l);
void log(LogLevel l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace pno::shim
