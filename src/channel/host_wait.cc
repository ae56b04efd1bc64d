// The host end of the channel (see host.hh, contract.hh and README.md): waiting. Each thread that
// sleeps has a waiter (an eventfd registered with the engine, an entry in the region's waiter
// table); arming it asks the engine to write the eventfd on its next progress.
#include <sys/eventfd.h>

#include <cstring>

#include "channel/host_impl.hh"

namespace pno::channel {

namespace {
struct ThreadWaiter {
  const void* owner = nullptr;  ///< the HostChannel::Impl the waiter belongs to
  std::uint32_t fork_gen = 0;
  Waiter* w = nullptr;
};
thread_local ThreadWaiter t_waiter;
}  // namespace

Waiter* HostChannel::Impl::thread_waiter() {
  const std::uint32_t fg = fork_gen.load(std::memory_order_acquire);
  if (t_waiter.owner == this && t_waiter.fork_gen == fg && t_waiter.w != nullptr) return t_waiter.w;
  if (dead.load(std::memory_order_relaxed)) return nullptr;
  // Claim a table entry.
  std::uint32_t idx = geo.max_waiters;
  for (std::uint32_t i = 0; i < geo.max_waiters; ++i) {
    std::uint32_t expect = 0;
    if (at(waiter(i).in_use).compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
      idx = i;
      break;
    }
  }
  if (idx == geo.max_waiters) return nullptr;
  std::uint32_t hwm = at(hdr->waiter_hwm).load(std::memory_order_relaxed);
  while (hwm < idx + 1 && !at(hdr->waiter_hwm).compare_exchange_weak(hwm, idx + 1, std::memory_order_relaxed)) {
  }
  at(waiter(idx).armed).store(0, std::memory_order_relaxed);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) {
    at(waiter(idx).in_use).store(0, std::memory_order_release);
    return nullptr;
  }
  efd = move_high(efd);
  // Register the eventfd with the engine over the attach connection (shared by the family: the
  // ctl lock keeps request and reply of one thread together).
  bool ok = false;
  {
    RegionLock lk(hdr->ctl_lock.owner, pid);
    c::WaiterRegister req;
    req.index = idx;
    const int fds[1] = {efd};
    if (channel::send_with_fds(conn_fd, &req, sizeof(req), fds, 0) == static_cast<ssize_t>(sizeof(req))) {
      pollfd p{conn_fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) == 1) {
        c::WaiterReply rep;
        const ssize_t r = ::recv(conn_fd, &rep, sizeof(rep), 0);
        if (r == static_cast<ssize_t>(sizeof(rep)) && rep.magic == c::kAttachMagic && rep.err == 0) ok = true;
        if (r == 0) dead.store(true);
      }
    } else if (errno == EPIPE || errno == ECONNRESET) {
      dead.store(true);
    }
  }
  if (!ok) {
    ::close(efd);
    at(waiter(idx).in_use).store(0, std::memory_order_release);
    return nullptr;
  }
  auto w = std::make_unique<Waiter>();
  w->fd_ = efd;
  w->index_ = idx;
  Waiter* raw = w.get();
  {
    LocalLock lk(waiters_lock);
    waiters.push_back(std::move(w));
  }
  t_waiter = ThreadWaiter{this, fg, raw};
  return raw;
}

void HostChannel::Impl::arm(Waiter& w) {
  if (w.index_ >= geo.max_waiters) return;
  const std::uint32_t gen = arm_gen.fetch_add(1, std::memory_order_relaxed) + 1;
  at(waiter(w.index_).armed).store((gen << 1) | 1, std::memory_order_seq_cst);
  at(hdr->armed_waiters).fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void HostChannel::Impl::disarm(Waiter& w) {
  if (w.index_ >= geo.max_waiters) return;
  unarm(w.index_);
  std::uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(w.fd(), &v, sizeof(v));
}

void HostChannel::Impl::drop_parent_waiters() {
  waiters_lock.store(false, std::memory_order_release);
  // The parent's waiters stay registered for the parent's threads; the child drops its copies.
  for (auto& w : waiters) {
    if (w->fd_ >= 0) ::close(w->fd_);
  }
  waiters.clear();
  t_waiter = ThreadWaiter{};
}

Waiter* HostChannel::thread_waiter() { return impl_->thread_waiter(); }
void HostChannel::arm(Waiter& w) { impl_->arm(w); }
void HostChannel::disarm(Waiter& w) { impl_->disarm(w); }

std::size_t HostChannel::waiter_indices(std::span<std::uint32_t> out) const {
  Impl& im = *impl_;
  LocalLock lk(im.waiters_lock);
  std::size_t n = 0;
  for (const auto& w : im.waiters) {
    if (n == out.size()) break;
    out[n++] = w->index_;
  }
  return n;
}

}  // namespace pno::channel
