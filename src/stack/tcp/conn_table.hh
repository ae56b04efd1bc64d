// The demux table: (local port, remote address, remote port) -> socket slot. Open addressing with
// linear probing and backward-shift deletion in a table sized once at start (twice the socket
// limit), so lookups and inserts never allocate. The stack has one local address, so the local
// address is not part of the key.
#pragma once

#include <cstdint>
#include <vector>

#include "base/addr.hh"

namespace pno::tcp {

class ConnTable {
 public:
  static constexpr std::uint32_t kNone = 0xffffffffu;

  explicit ConnTable(std::size_t max_entries);
  static std::uint64_t key(std::uint16_t local_port, Endpoint remote) {
    return (std::uint64_t{remote.addr.v} << 32) | (std::uint64_t{remote.port} << 16) | local_port;
  }
  [[nodiscard]] std::uint32_t find(std::uint64_t k) const;
  /// False if the key is present already or the table is full.
  bool insert(std::uint64_t k, std::uint32_t value);
  bool erase(std::uint64_t k);
  [[nodiscard]] std::size_t size() const { return size_; }

 private:
  struct Cell {
    std::uint64_t key;
    std::uint32_t value;  ///< kNone = empty
  };
  [[nodiscard]] std::size_t home(std::uint64_t k) const {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<std::size_t>(k) & mask_;
  }
  std::vector<Cell> cells_;
  std::size_t mask_;
  std::size_t size_ = 0;
  std::size_t limit_;
};

}  // namespace pno::tcp
