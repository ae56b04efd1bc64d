// One socket's work: send ring -> TCP, the host's close, TCP -> receive ring, state and publication.
#include <algorithm>

#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

using namespace host;

/// Moves bytes and state for one socket: send ring -> TCP, TCP -> receive ring, accept queue.
void HostService::Impl::pump(Family& f, std::uint32_t i) {
  EngSock& s = f.socks[i];
  s.dirty = false;
  if (s.state == c::SlotState::free || s.id == kInvalidSocket) {
    if (s.closing) free_slot(f, i);
    return;
  }
  busy = true;
  c::SlotHostLine hl{};
  if (!f.dma->read(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, snd_tail), std::as_writable_bytes(std::span(&hl, 1)))) {
    return;
  }
  if (f.dying) hl.snd_tail = s.orphan_tail;  // nothing the host writes after its death counts
  const std::uint32_t R = f.geo.stream_ring_bytes;
  const auto reject = [&] {
    poison(f, i, s);
    publish(f, i, s);
  };

  if (s.state == c::SlotState::listening) {
    pre_accept(f, i, s, hl);
    publish(f, i, s);
    return;
  }

  std::uint32_t pending = hl.snd_tail - s.snd_head;
  if (pending > R) return reject();
  if (pending > 0 && s.state == c::SlotState::connected && (s.flags & c::kFlagSendClosed) == 0) {
    pending = pump_send(f, i, s, hl, pending);
  }
  note_send_room(s, hl, pending, R);
  if (s.closing) {
    pump_close(f, i, s, hl, pending);
    return;
  }

  const std::uint32_t used = s.rcv_tail - hl.rcv_head;
  if (used > R) return reject();
  if (!s.rx_eof && (s.state == c::SlotState::connected || s.state == c::SlotState::connecting)) {
    pump_receive(f, i, s, R - used);
  }
  pump_state(f, i, s, hl);
}

/// Send ring -> TCP: `pending` bytes are in the ring; returns how many are still there.
std::uint32_t HostService::Impl::pump_send(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl,
                                           std::uint32_t pending) {
  const std::uint32_t head0 = s.snd_head;
  channel::DmaByteRing ring = f.send_ring(i);
  // The ring's bytes are read (DMA) straight into the TCP send buffer's free space: no
  // staging copy. A span may cross the ring's end: read it in two transfers.
  while (pending > 0) {
    const auto space = tcp->send_space(s.id, pending);
    if (!space) {
      if (space.error() != Errc::again) {
        s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
        s.changed = true;
      }
      break;
    }
    std::size_t filled = 0;
    bool ok = true;
    for (const MutByteSpan dst : {(*space).first, (*space).second}) {
      if (!ok) break;
      const std::size_t got = ring.read(s.snd_head + static_cast<std::uint32_t>(filled), dst);
      filled += got;
      ok = got == dst.size();
    }
    if (filled == 0) break;
    const bool more = hl.more != 0 && filled == pending;
    const auto n = tcp->send_commit(s.id, filled, more);
    if (!n || *n == 0) break;
    s.snd_head += static_cast<std::uint32_t>(*n);
    pending -= static_cast<std::uint32_t>(*n);
    stats.bytes_to_tcp += *n;
    if (!ok) break;
  }
  if (s.snd_head != head0) {
    if (f.dying) s.orphan_until = now + kDyingLimit;  // the peer takes bytes: keep draining
    f.dma->write_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, snd_head), s.snd_head);
  }
  return pending;
}

/// Send-ring room the host asked for, and a shutdown(write) waiting for the ring to drain.
void HostService::Impl::note_send_room(EngSock& s, const c::SlotHostLine& hl, std::uint32_t pending,
                                       std::uint32_t ring) {
  // Room in the send ring is news only to a host that found too little of it (snd_nospace moved):
  // it gets one event once the free space reaches its writability mark (a quarter of the ring,
  // HostChannel::readiness), as Linux wakes writers past sk_stream_write_space's mark after
  // SOCK_NOSPACE. A writer blocked on a full ring is then not woken for every few segments TCP
  // takes, and a request-response server gets no event for each reply the engine sent. The
  // request is judged on the ring as it is now, whichever pump moved the head: the host may have
  // decided to wait on an older head than the one this pump started from.
  if (hl.snd_nospace != s.nospace_seen && ring - pending >= ring / 4) {
    s.nospace_seen = hl.snd_nospace;
    s.changed = true;
  }
  if (s.shut_wr_pending && !s.shut_wr_done && (pending == 0 || (s.flags & c::kFlagSendClosed) != 0)) {
    s.shut_wr_done = true;
    tcp->shutdown(s.id, ShutdownHow::write);
    s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
    s.changed = true;
  }
}

/// The host closed it: once the send ring is drained (or cannot drain), close the TCP socket.
void HostService::Impl::pump_close(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl,
                                   std::uint32_t pending) {
  if (pending != 0 && (s.flags & c::kFlagSendClosed) == 0 && s.state == c::SlotState::connected) return;
  const bool unread = s.rcv_tail != hl.rcv_head;
  if (s.linger_wait && !unread && !linger_done(f, i, s)) return;
  if (unread) {
    tcp->abort(s.id);  // Linux: close() with unread data sends RST (RFC 2525 §2.17)
  } else {
    tcp->close(s.id);
  }
  finish_linger(f, s);
  free_slot(f, i);
}

/// TCP -> receive ring, `space` bytes free in it; then the ring's EOF and RxBlocked news.
void HostService::Impl::pump_receive(Family& f, std::uint32_t i, EngSock& s, std::uint32_t space) {
  const std::uint32_t tail0 = s.rcv_tail;
  space = fill_recv_ring(f, i, s, space);
  if (space == 0 && !s.rx_eof) note_fin_behind_full_ring(s);
  if (s.rcv_tail != tail0) {
    f.dma->write_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, rcv_tail), s.rcv_tail);
    s.changed = true;
  }
  bool blocked = false;
  if (space == 0 && !s.rx_eof) {
    const auto rb = tcp->readable_bytes(s.id);
    blocked = rb && *rb > 0;
  }
  if (blocked != ((s.flags & c::kFlagRxBlocked) != 0)) {
    s.flags ^= c::kFlagRxBlocked;
    s.changed = true;
  }
}

/// Writes what TCP holds into the receive ring, at most `space` bytes; returns the space left.
std::uint32_t HostService::Impl::fill_recv_ring(Family& f, std::uint32_t i, EngSock& s, std::uint32_t space) {
  channel::DmaByteRing ring = f.recv_ring(i);
  const std::uint32_t R = f.geo.stream_ring_bytes;
  while (space > 0) {
    // Buffered bytes are written (DMA) straight from the TCP receive buffer into the ring:
    // no staging copy. recv() below only runs when nothing is buffered, to learn EOF or error.
    if (const auto [a, b] = tcp->recv_view(s.id, space); !a.empty()) {
      std::size_t moved = 0;
      bool ok = true;
      for (const ByteSpan src : {a, b}) {
        if (!ok) break;
        const std::size_t put = ring.write(s.rcv_tail + static_cast<std::uint32_t>(moved), src);
        moved += put;
        ok = put == src.size();
      }
      tcp->recv_consume(s.id, moved);
      s.rcv_tail += static_cast<std::uint32_t>(moved);
      space -= static_cast<std::uint32_t>(moved);
      stats.bytes_to_host += moved;
      if (!ok) break;
      continue;
    }
    const std::uint32_t pos = s.rcv_tail & (R - 1);
    const std::size_t chunk = std::min<std::size_t>({space, R - pos, staging.size()});
    const auto n = tcp->recv(s.id, std::span(staging).first(chunk));
    if (!n) {
      if (n.error() != Errc::again && n.error() != Errc::not_conn) {
        // The connection is gone (RST, timeout): nothing more will arrive. RxEof is published
        // with the error so that once the host has taken the error (SO_ERROR or recv) it reads
        // EOF and sees IN|HUP, as Linux does after tcp_done(); the error alone is cleared by
        // take_error and would leave the socket looking like an idle live connection.
        set_error(f, i, s, n.error());
        s.rx_eof = true;
        s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed | c::kFlagRxEof;
      }
      break;
    }
    if (*n == 0) {
      s.rx_eof = true;
      s.flags |= c::kFlagRxEof;
      s.changed = true;
      break;
    }
    // One transfer: the chunk stops at the ring's end.
    if (ring.write(s.rcv_tail, std::span(staging).first(*n)) != *n) break;
    s.rcv_tail += static_cast<std::uint32_t>(*n);
    space -= static_cast<std::uint32_t>(*n);
    stats.bytes_to_host += *n;
    // No break on a short read: the next recv() tells EOF (0) from "nothing yet" (again); the
    // TCP layer raises no new event for a FIN that lands behind data already reported.
  }
  return space;
}

/// The ring is full: a FIN right behind the data shows as readable with nothing readable.
void HostService::Impl::note_fin_behind_full_ring(EngSock& s) {
  const auto rb = tcp->readable_bytes(s.id);
  if (rb && *rb == 0 && (tcp->readiness(s.id) & kReadHangup) != 0) {
    if (const auto n = tcp->recv(s.id, std::span(staging).first(1)); n && *n == 0) {
      s.rx_eof = true;
      s.flags |= c::kFlagRxEof;
      s.changed = true;
    }
  }
}

/// The TCP state as the slot shows it, its publication, and the RxBlocked re-check.
void HostService::Impl::pump_state(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl) {
  const std::uint32_t ready = tcp->readiness(s.id);
  if (s.state == c::SlotState::connecting) {
    if ((ready & kError) != 0) {
      set_error(f, i, s, tcp->take_error(s.id));
      s.state = c::SlotState::closed;
      s.flags |= c::kFlagSendClosed;
    } else if ((ready & kWritable) != 0) {
      s.state = c::SlotState::connected;
      s.flags |= c::kFlagSendable | c::kFlagWasConnected;
      s.changed = true;
      if (s.shut_wr_pending) s.flags &= ~c::kFlagSendable;
    }
  } else if (s.state == c::SlotState::connected) {
    if ((ready & kError) != 0) {
      set_error(f, i, s, tcp->take_error(s.id));
      s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
    }
    if ((ready & kHangup) != 0 && (s.flags & c::kFlagSendable) != 0) {
      s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
      s.changed = true;
    }
  }
  if (const std::uint32_t visible = host_visible(ready, s.flags); visible != s.tcp_ready) {
    s.tcp_ready = visible;
    s.changed = true;
  }
  publish(f, i, s);
  if ((s.flags & c::kFlagRxBlocked) != 0) {
    // Dekker with the host's recv(): it stores rcv_head, fences, then reads the flag. If it read
    // the flag before we set it, we see its new rcv_head here and pump again ourselves.
    f.dma->fence();
    std::uint32_t head = hl.rcv_head;
    if (f.dma->read_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, rcv_head), head) && head != hl.rcv_head) {
      mark_dirty(f, i);
    }
  }
}

}  // namespace pno::engine
