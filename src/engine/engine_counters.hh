// Counters of the engine itself (port, impairment, loop), kept apart from the stack's counters so the
// stack stays free of anything that knows about DPDK. One instance per port/loop: no sharing.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "base/counter_list.hh"

namespace pno::engine {

// X(name, description)
#define PNO_ENGINE_COUNTERS(X)                                                        \
  X(port_rx_frames, "frames received from the port")                                 \
  X(port_tx_frames, "frames handed to the port")                                      \
  X(port_tx_drop_full, "frames dropped: transmit ring stayed full")                   \
  X(port_tx_no_mbuf, "no mbuf for an outgoing frame")                                 \
  X(port_tx_too_long, "outgoing frame larger than an mbuf")                           \
  X(port_rx_drop_multiseg, "received frame spans several mbufs (not handled)")        \
  X(mbuf_alloc, "mbufs the engine allocated (tx and impairment copies)")              \
  X(mbuf_rx, "mbufs the engine received from the port")                              \
  X(mbuf_free, "mbufs the engine freed")                                              \
  X(mbuf_tx, "mbufs the engine handed to the port (the port frees them)")            \
  X(impair_rx_loss, "received frames dropped by the impairment stage")                \
  X(impair_rx_dup, "received frames duplicated by the impairment stage")              \
  X(impair_rx_reorder, "received frames held back and reordered")                     \
  X(impair_rx_delayed, "received frames delayed")                                     \
  X(impair_rx_overflow, "received frames dropped: delay ring full")                   \
  X(impair_tx_loss, "sent frames dropped by the impairment stage")                    \
  X(impair_tx_dup, "sent frames duplicated by the impairment stage")                  \
  X(impair_tx_reorder, "sent frames held back and reordered")                         \
  X(impair_tx_delayed, "sent frames delayed")                                         \
  X(impair_tx_overflow, "sent frames dropped: delay ring full")                       \
  X(loop_iterations, "main loop iterations")                                          \
  X(loop_sleeps, "idle sleeps")                                                       \
  X(loop_idle_iterations, "main loop iterations that found no work")                 \
  X(loop_yields, "sched_yield calls while spinning idle")                             \
  X(loop_rx_wakeups, "idle sleeps ended by a frame on the port's rx fd")              \
  X(port_rx_missed, "frames the port dropped: its rx queue was full (imissed)")       \
  X(port_rx_xsk_ring_full, "frames af_xdp dropped: its rx ring was full")             \
  X(port_rx_xsk_fill_empty, "af_xdp receives that found no fill-ring buffer")        \
  X(svc_accepted, "connections accepted by the built-in services")                    \
  X(svc_closed, "connections the built-in services closed")                           \
  X(svc_errors, "connections the built-in services saw fail")                        \
  X(host_doorbells, "host service: doorbells rung by hosts while the engine slept")    \
  X(host_wakeups, "host service: eventfd writes that woke a host waiter")            \
  X(dma_read_ops, "host service: DMA reads of host memory (incl. index words)")        \
  X(dma_read_bytes, "host service: bytes read from host memory")                     \
  X(dma_write_ops, "host service: DMA writes to host memory (incl. index words)")      \
  X(dma_write_bytes, "host service: bytes written to host memory")                   \
  X(dma_read_batches, "PCIe model: read round trips charged (batches with a read)")  \
  X(dma_write_batches, "PCIe model: batches with a posted write")                     \
  X(dma_stall_ns, "PCIe model: modelled ns the engine spun waiting on the link")

enum class EngineCounter : std::uint16_t { PNO_ENGINE_COUNTERS(PNO_COUNTER_ENUMERATOR) count_ };

inline constexpr std::size_t kEngineCounterCount = static_cast<std::size_t>(EngineCounter::count_);

inline constexpr std::array<std::string_view, kEngineCounterCount> kEngineCounterNames = {
    PNO_ENGINE_COUNTERS(PNO_COUNTER_NAME)};

using EngineCounters = CounterArray<EngineCounter, kEngineCounterCount>;

}  // namespace pno::engine
