// key=value output of one X-macro counter list: its names and its values, both in list order
// (stack/counters.hh, engine_counters.hh, host_service.hh's PNO_HOST_COUNTERS).
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string_view>

namespace pno::engine {

/// " name=value" for every nonzero counter (one line is built from several lists).
inline void print_nonzero_counters(std::FILE* out, std::span<const std::string_view> names,
                                   std::span<const std::uint64_t> values) {
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (values[i] != 0) {
      std::fprintf(out, " %.*s=%" PRIu64, static_cast<int>(names[i].size()), names[i].data(), values[i]);
    }
  }
}

/// "name=value\n" for every counter, zero or not.
inline void print_counter_lines(std::FILE* out, std::span<const std::string_view> names,
                                std::span<const std::uint64_t> values) {
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    std::fprintf(out, "%.*s=%" PRIu64 "\n", static_cast<int>(names[i].size()), names[i].data(), values[i]);
  }
}

}  // namespace pno::engine
