// A family's socket slots: handles, allocation and release, errors, and the published status line.
#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

using namespace host;

HostService::Impl::EngSock* HostService::Impl::resolve(Family& f, std::uint32_t h, std::uint32_t& i) {
  i = c::handle_index(h);
  if (h == 0 || i >= f.socks.size()) return nullptr;
  EngSock& s = f.socks[i];
  if (s.state == c::SlotState::free || s.closing || s.gen != c::handle_gen(h)) return nullptr;
  return &s;
}

/// Takes a slot for TCP socket `id`, writes it fresh into the region.
bool HostService::Impl::alloc_slot(Family& f, SocketId id, c::SlotState st, std::uint32_t& out) {
  if (f.free_slots.empty()) return false;
  const std::uint32_t i = f.free_slots.back();
  f.free_slots.pop_back();
  if (!f.prepared[i]) {
    // Once per slot: slots are reused last-freed-first, so few ever get here.
    f.prepared[i] = true;
    f.dma->prepare(c::send_ring_off(f.geo, i), 2 * std::uint64_t{f.geo.stream_ring_bytes});
  }
  EngSock& s = f.socks[i];
  const std::uint16_t gen = static_cast<std::uint16_t>(s.gen + 1 == 0 ? 1 : s.gen + 1);
  s = EngSock{};
  s.id = id;
  s.gen = gen;
  s.state = st;
  if (st == c::SlotState::connected) s.flags = c::kFlagSendable | c::kFlagWasConnected;
  s.tcp_ready = host_visible(tcp->readiness(id), s.flags);
  c::SocketSlot fresh{};
  fresh.gen = gen;
  fresh.state = st;
  fresh.flags = s.flags;
  fresh.tcp_ready = s.tcp_ready;
  f.dma->write(c::slot_off(f.geo, i), std::as_bytes(std::span(&fresh, 1)));
  by_tcp[id] = SlotRef{f.id, i};
  out = i;
  return true;
}

void HostService::Impl::free_slot(Family& f, std::uint32_t i) {
  EngSock& s = f.socks[i];
  if (s.id != kInvalidSocket) by_tcp.erase(s.id);
  s.id = kInvalidSocket;
  s.state = c::SlotState::free;
  s.closing = false;
  // Only the line's generation and state: the slot is free, the rest is rewritten when it is taken.
  const c::SlotEngineLine line{s.gen, c::SlotState::free, 0, 0, 0, 0};
  f.dma->write(c::slot_off(f.geo, i),
               std::as_bytes(std::span(&line, 1)).first(offsetof(c::SlotEngineLine, tcp_ready)));
  f.free_slots.push_back(i);
}

void HostService::Impl::mark_dirty(Family& f, std::uint32_t i) {
  EngSock& s = f.socks[i];
  if (!s.dirty) {
    s.dirty = true;
    f.dirty.push_back(i);
  }
}

void HostService::Impl::set_error(Family& f, std::uint32_t i, EngSock& s, Errc e) {
  if (e == Errc::ok) return;
  s.err = to_errno(e);
  s.flags |= c::kFlagError;
  s.changed = true;
  f.dma->write_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, err_taken), 0);
}

/// A socket whose host-written indices make no sense: only this socket of this family suffers.
void HostService::Impl::poison(Family& f, std::uint32_t i, EngSock& s) {
  ++stats.corrupt;
  if (s.id != kInvalidSocket && s.state != c::SlotState::listening) tcp->abort(s.id);
  if (s.state == c::SlotState::listening) tcp->close(s.id);
  by_tcp.erase(s.id);
  s.id = kInvalidSocket;
  s.state = c::SlotState::closed;
  s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed | c::kFlagRxEof;
  set_error(f, i, s, static_cast<Errc>(kErrCorrupt));
  if (s.closing) free_slot(f, i);
}

void HostService::Impl::publish(Family& f, std::uint32_t i, EngSock& s) {
  if (!s.changed) return;
  s.changed = false;
  ++s.event_seq;
  const c::SlotEngineLine line{s.gen, s.state, s.tcp_ready, s.event_seq, s.flags, s.err};
  f.dma->write(c::slot_off(f.geo, i), std::as_bytes(std::span(&line, 1)));
  const std::uint32_t h = handle(s, i);
  if (f.changed.push(std::span(&h, 1)) == 0) {
    ++f.changed_overflow;
    f.dma->write_u32(offsetof(c::RegionHeader, changed_overflow), f.changed_overflow);
  }
  f.progress = true;
}

}  // namespace pno::engine
