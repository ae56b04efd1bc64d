#include "stack/tcp/conn_table.hh"

#include <bit>

namespace pno::tcp {

ConnTable::ConnTable(std::size_t max_entries)
    : cells_(std::bit_ceil(2 * (max_entries < 8 ? std::size_t{8} : max_entries)), Cell{0, kNone}),
      mask_(cells_.size() - 1),
      limit_(max_entries < 8 ? 8 : max_entries) {}

std::uint32_t ConnTable::find(std::uint64_t k) const {
  for (std::size_t i = home(k);; i = (i + 1) & mask_) {
    const Cell& c = cells_[i];
    if (c.value == kNone) return kNone;
    if (c.key == k) return c.value;
  }
}

bool ConnTable::insert(std::uint64_t k, std::uint32_t value) {
  if (size_ >= limit_) return false;
  for (std::size_t i = home(k);; i = (i + 1) & mask_) {
    Cell& c = cells_[i];
    if (c.value == kNone) {
      c = Cell{k, value};
      ++size_;
      return true;
    }
    if (c.key == k) return false;
  }
}

bool ConnTable::erase(std::uint64_t k) {
  std::size_t i = home(k);
  for (;; i = (i + 1) & mask_) {
    if (cells_[i].value == kNone) return false;
    if (cells_[i].key == k) break;
  }
  // Backward-shift deletion: pull later cells of the probe run into the hole so lookups never
  // need tombstones.
  std::size_t hole = i;
  for (std::size_t j = (i + 1) & mask_; cells_[j].value != kNone; j = (j + 1) & mask_) {
    const std::size_t h = home(cells_[j].key);
    // Cell j may move to `hole` if its home is not cyclically in (hole, j].
    const bool in_between = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
    if (!in_between) {
      cells_[hole] = cells_[j];
      hole = j;
    }
  }
  cells_[hole] = Cell{0, kNone};
  --size_;
  return true;
}

}  // namespace pno::tcp
