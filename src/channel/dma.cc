#include "channel/dma.hh"

#include <atomic>
#include <cstring>

#include <sys/mman.h>
#include <unistd.h>

namespace pno::channel {

// The host writes the region concurrently; byte copies race benignly by design (the ring protocol
// only reads bytes the producer published with a release store before them), so they go through
// memcpy, and index words through atomic_ref.

bool MemcpyDma::read(std::uint64_t off, MutByteSpan dst) {
  if (!in_bounds(off, dst.size())) {
    ++stats_.out_of_bounds;
    return false;
  }
  std::memcpy(dst.data(), base_ + off, dst.size());
  std::atomic_thread_fence(std::memory_order_acquire);
  ++stats_.read_ops;
  stats_.read_bytes += dst.size();
  charge_read(dst.size());
  return true;
}

bool MemcpyDma::write(std::uint64_t off, ByteSpan src) {
  if (!in_bounds(off, src.size())) {
    ++stats_.out_of_bounds;
    return false;
  }
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(base_ + off, src.data(), src.size());
  ++stats_.write_ops;
  stats_.write_bytes += src.size();
  charge_write(src.size());
  return true;
}

bool MemcpyDma::read_u32(std::uint64_t off, std::uint32_t& v) {
  if (!in_bounds(off, 4) || off % 4 != 0) {
    ++stats_.out_of_bounds;
    return false;
  }
  v = std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(base_ + off)).load(std::memory_order_acquire);
  ++stats_.read_ops;
  ++stats_.word_reads;
  stats_.read_bytes += 4;
  charge_read(4);
  return true;
}

bool MemcpyDma::write_u32(std::uint64_t off, std::uint32_t v) {
  if (!in_bounds(off, 4) || off % 4 != 0) {
    ++stats_.out_of_bounds;
    return false;
  }
  std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(base_ + off)).store(v, std::memory_order_release);
  ++stats_.write_ops;
  ++stats_.word_writes;
  stats_.write_bytes += 4;
  charge_write(4);
  return true;
}

void MemcpyDma::fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

void MemcpyDma::prepare(std::uint64_t off, std::uint64_t len) {
  if (!in_bounds(off, len) || len == 0) return;
  // madvise wants a page-aligned start; the mapping itself is page-aligned.
  const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  const std::uint64_t start = off / page * page;
  // MADV_POPULATE_WRITE (Linux 5.14): on older kernels EINVAL, and the pages fault in as used.
  (void)::madvise(base_ + start, off + len - start, MADV_POPULATE_WRITE);
}

}  // namespace pno::channel
