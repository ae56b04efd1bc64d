// The host end of the channel (see host.hh, contract.hh and README.md): the data path. Bytes go
// through the socket's stream rings under its send or receive lock; readiness and edge marks are
// computed from the shared indices and flags. No system call, no command.
#include <algorithm>

#include "channel/host_impl.hh"

namespace pno::channel {

namespace {
std::size_t iov_total(std::span<const iovec> iov) {
  std::size_t n = 0;
  for (const auto& v : iov) n += v.iov_len;
  return n;
}
}  // namespace

/// One send into the send ring of `s`, for send() and sendfile() alike: under the send lock, the
/// checks (engine gone, pending error, shut down, not connected, ring full), then `fill(ring, size,
/// tail, room)` writes up to `room` bytes at `tail` and says how many (or an error). Written bytes
/// are published with `more` and the engine kicked; a fill of 0 bytes publishes nothing.
template <typename Fill>
Result<std::size_t> HostChannel::Impl::send_with(HostSocket s, bool more, Fill fill) {
  c::SocketSlot* sl = lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t R = geo.stream_ring_bytes;
  std::size_t total = 0;
  {
    RegionLock lk(sl->send_lock.owner, pid);
    if (dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
    const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
    // The pending error comes before EPIPE, for sendfile() as for send(): Linux's
    // tcp_sendmsg_locked() (which sendfile's splice reaches too) reports sk_err first.
    if (error_pending(*sl, flags) && (flags & c::kFlagSendable) == 0) return take_pending_error(*sl);
    if (at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0 || (flags & c::kFlagSendClosed) != 0) {
      return Errc::pipe;
    }
    if ((flags & c::kFlagSendable) == 0) return Errc::not_conn;
    const std::uint32_t tail = at(sl->snd_tail).load(std::memory_order_relaxed);
    const std::uint32_t head = at(sl->snd_head).load(std::memory_order_acquire);
    const std::uint32_t used = tail - head;
    if (used >= R) {
      note_nospace(*sl, i);
      return Errc::again;
    }
    const Result<std::size_t> put = fill(send_ring(i), R, tail, std::size_t{R - used});
    if (!put || *put == 0) return put;
    total = *put;
    const std::uint32_t pos = tail + static_cast<std::uint32_t>(total);
    at(sl->more).store(more ? 1 : 0, std::memory_order_relaxed);
    if (R - (pos - head) < R / 4) bump_nospace(*sl);
    at(sl->snd_tail).store(pos, std::memory_order_release);
  }
  kick(i);
  return total;
}

Result<std::size_t> HostChannel::send(HostSocket s, std::span<const iovec> iov, bool more) {
  auto copy = [iov](std::byte* ring, std::uint32_t R, std::uint32_t tail, std::size_t room) -> Result<std::size_t> {
    std::size_t total = 0;
    std::uint32_t pos = tail;
    for (const auto& v : iov) {
      const std::size_t n = std::min(room, v.iov_len);
      ring_copy_in(ring, R, pos, static_cast<const std::byte*>(v.iov_base), n);
      pos += static_cast<std::uint32_t>(n);
      room -= n;
      total += n;
      if (room == 0) break;
    }
    if (total == 0) return iov_total(iov) == 0 ? Result<std::size_t>(std::size_t{0}) : Result<std::size_t>(Errc::again);
    return total;
  };
  return impl_->send_with(s, more, copy);
}

Result<std::size_t> HostChannel::send_file(HostSocket s, int in_fd, off_t* offset, std::size_t count) {
  auto read_in = [=](std::byte* ring, std::uint32_t R, std::uint32_t tail, std::size_t room) -> Result<std::size_t> {
    std::size_t want = std::min(count, room);
    std::size_t total = 0;
    std::uint32_t pos = tail;
    while (want > 0) {
      const std::uint32_t p = pos & (R - 1);
      const std::size_t chunk = std::min<std::size_t>(want, R - p);
      const ssize_t r = offset != nullptr ? ::pread(in_fd, ring + p, chunk, *offset) : ::read(in_fd, ring + p, chunk);
      if (r < 0) {
        if (total == 0) return static_cast<Errc>(errno);
        break;
      }
      if (r == 0) break;
      if (offset != nullptr) *offset += r;
      pos += static_cast<std::uint32_t>(r);
      total += static_cast<std::size_t>(r);
      want -= static_cast<std::size_t>(r);
      if (static_cast<std::size_t>(r) < chunk) break;
    }
    return total;
  };
  return impl_->send_with(s, false, read_in);
}

Result<std::size_t> HostChannel::recv(HostSocket s, std::span<const iovec> iov, bool peek) {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t i = c::handle_index(s);
  const std::uint32_t R = im.geo.stream_ring_bytes;
  std::size_t total = 0;
  bool kick = false;
  {
    RegionLock lk(sl->recv_lock.owner, im.pid);
    const std::uint32_t head = at(sl->rcv_head).load(std::memory_order_relaxed);
    const std::uint32_t tail = at(sl->rcv_tail).load(std::memory_order_acquire);
    std::uint32_t avail = tail - head;
    if (avail > R) avail = 0;
    if (avail == 0) {
      if (im.dead.load(std::memory_order_relaxed)) return Errc::conn_reset;
      const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
      if (Impl::error_pending(*sl, flags)) return Impl::take_pending_error(*sl);
      if ((flags & c::kFlagRxEof) != 0 || (flags & c::kFlagError) != 0) return std::size_t{0};
      const auto st = at(sl->state).load(std::memory_order_relaxed);
      if (st == c::SlotState::open || st == c::SlotState::listening) return Errc::not_conn;
      if (iov_total(iov) == 0) return std::size_t{0};
      return Errc::again;
    }
    const std::byte* ring = im.recv_ring(i);
    std::uint32_t pos = head;
    for (const auto& v : iov) {
      const std::size_t n = std::min<std::size_t>(avail, v.iov_len);
      ring_copy_out(ring, R, pos, static_cast<std::byte*>(v.iov_base), n);
      pos += static_cast<std::uint32_t>(n);
      avail -= static_cast<std::uint32_t>(n);
      total += n;
      if (avail == 0) break;
    }
    if (!peek && total > 0) {
      at(sl->rcv_head).store(pos, std::memory_order_release);
      // The engine sets RxBlocked, fences, re-reads rcv_head: one of us sees the other.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      kick = (at(sl->flags).load(std::memory_order_acquire) & c::kFlagRxBlocked) != 0;
    }
  }
  if (kick) im.kick(i);
  return total;
}

Result<std::size_t> HostChannel::readable_bytes(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr) return Errc::badf;
  const std::uint32_t avail = at(sl->rcv_tail).load(std::memory_order_acquire) - at(sl->rcv_head).load(std::memory_order_acquire);
  return avail > impl_->geo.stream_ring_bytes ? std::size_t{0} : std::size_t{avail};
}

std::uint32_t HostChannel::readiness(HostSocket s) const {
  Impl& im = *impl_;
  c::SocketSlot* sl = im.lookup(s);
  if (sl == nullptr) return kError | kHangup;
  if (im.dead.load(std::memory_order_relaxed)) return kReadable | kWritable | kError | kHangup;
  const std::uint32_t R = im.geo.stream_ring_bytes;
  const auto st = at(sl->state).load(std::memory_order_acquire);
  const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire);
  const std::uint32_t tcp_ready = at(sl->tcp_ready).load(std::memory_order_acquire);
  if (st == c::SlotState::listening) {
    const std::uint32_t q = at(sl->acc_tail).load(std::memory_order_acquire) - at(sl->acc_head).load(std::memory_order_relaxed);
    return (q != 0 && q <= c::kAcceptQueue) ? std::uint32_t{kReadable} : std::uint32_t{0};
  }
  std::uint32_t r = tcp_ready & (kHangup | kReadHangup);
  // The TCP layer shows RDHUP/HUP as soon as the FIN arrives; the host may see them only once every
  // byte before the FIN is in the receive ring (as on Linux, where reading until EAGAIN after RDHUP
  // gets everything), or on an error.
  if ((flags & (c::kFlagRxEof | c::kFlagError)) == 0) r = 0;
  if (Impl::error_pending(*sl, flags)) r |= kError;
  const std::uint32_t avail = at(sl->rcv_tail).load(std::memory_order_acquire) - at(sl->rcv_head).load(std::memory_order_relaxed);
  if ((avail != 0 && avail <= R) || (flags & (c::kFlagRxEof | c::kFlagError)) != 0) r |= kReadable;
  const bool shut_wr = at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0;
  if ((flags & c::kFlagSendable) != 0 && !shut_wr) {
    const std::uint32_t used = at(sl->snd_tail).load(std::memory_order_relaxed) - at(sl->snd_head).load(std::memory_order_acquire);
    if (used <= R && R - used >= R / 4) r |= kWritable;
  } else if ((shut_wr || (tcp_ready & kWritable) != 0) && st != c::SlotState::connecting) {
    // After shutdown(SHUT_WR) a socket polls writable at once (tcp_poll: SEND_SHUTDOWN gives OUT),
    // before the engine has even drained the ring and published the FIN.
    r |= kWritable;
  }
  return r;
}

std::uint32_t HostChannel::event_seq(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr || impl_->dead.load(std::memory_order_relaxed)) return 0xffffffffu;
  return at(sl->event_seq).load(std::memory_order_acquire);
}

EdgeMarks HostChannel::edge_marks(HostSocket s) const {
  c::SocketSlot* sl = impl_->lookup(s);
  if (sl == nullptr || impl_->dead.load(std::memory_order_relaxed)) return EdgeMarks{0, 0, ~std::uint64_t{0}};
  EdgeMarks e;
  e.in = at(sl->rcv_tail).load(std::memory_order_acquire) + at(sl->acc_tail).load(std::memory_order_acquire);
  e.out = at(sl->snd_head).load(std::memory_order_acquire);
  // Disjoint bit fields, so two different states never give the same word. shutdown(SHUT_WR) is in
  // it (the socket turns writable at once); RxBlocked is not (the engine's backlog, unseen by the
  // application).
  const std::uint32_t flags = at(sl->flags).load(std::memory_order_acquire) & ~std::uint32_t{c::kFlagRxBlocked};
  const std::uint32_t ready = at(sl->tcp_ready).load(std::memory_order_acquire) & 0xffffu;
  const auto state = static_cast<std::uint32_t>(at(sl->state).load(std::memory_order_acquire));
  static_assert(c::kFlagRxBlocked < (1u << 8) && static_cast<std::uint32_t>(c::SlotState::closed) < 16);
  const std::uint32_t shut_wr = at(sl->host_shut_wr).load(std::memory_order_relaxed) != 0 ? 1u : 0u;
  e.status = (std::uint64_t{static_cast<std::uint32_t>(at(sl->err).load(std::memory_order_acquire))} << 32) |
             (state << 28) | (shut_wr << 24) | (ready << 8) | (flags & 0xffu);
  return e;
}

std::size_t HostChannel::drain_changed(std::span<HostSocket> out, bool& overflowed) {
  Impl& im = *impl_;
  overflowed = false;
  if (im.dead.load(std::memory_order_relaxed)) {
    overflowed = true;  // everything changed: the engine is gone
    return 0;
  }
  RegionLock lk(im.hdr->changed_lock.owner, im.pid);
  const std::uint32_t ov = at(im.hdr->changed_overflow).load(std::memory_order_acquire);
  if (ov != at(im.hdr->changed_overflow_seen).load(std::memory_order_relaxed)) {
    at(im.hdr->changed_overflow_seen).store(ov, std::memory_order_relaxed);
    overflowed = true;
  }
  return im.ring<std::uint32_t>(im.geo.changed_off, im.geo.changed_entries).pop(out);
}

}  // namespace pno::channel
