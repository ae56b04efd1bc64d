// One machinery for every counter list (the stack's, the engine's, the host service's). A list is an
// X-macro of X(name, description) entries; these expanders turn it into an enum, its size, its
// names and descriptions, and `CounterArray` holds one value per entry, indexed by the enum.
//
//   enum class Counter : std::uint16_t { PNO_COUNTERS(PNO_COUNTER_ENUMERATOR) count_ };
//   inline constexpr std::array<std::string_view, kCount> kNames = {PNO_COUNTERS(PNO_COUNTER_NAME)};
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#define PNO_COUNTER_ENUMERATOR(name, desc) name,
#define PNO_COUNTER_NAME(name, desc) #name,
#define PNO_COUNTER_DESCRIPTION(name, desc) desc,
#define PNO_COUNTER_ONE(name, desc) +1

namespace pno {

/// The values of one counter list, indexed by its enum (no sharing, no atomics: one per owner).
template <typename E, std::size_t N>
struct CounterArray {
  std::array<std::uint64_t, N> v{};
  void inc(E c, std::uint64_t n = 1) { v[static_cast<std::size_t>(c)] += n; }
  [[nodiscard]] std::uint64_t get(E c) const { return v[static_cast<std::size_t>(c)]; }
  [[nodiscard]] std::uint64_t operator[](E c) const { return get(c); }
  /// For totals kept elsewhere, copied in before printing.
  void set(E c, std::uint64_t n) { v[static_cast<std::size_t>(c)] = n; }
};

}  // namespace pno
