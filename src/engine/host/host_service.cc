// The public HostService: the Service and IdleWake faces of one Impl, its figures, test hooks.
#include "engine/host_service.hh"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/counter_print.hh"
#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

using namespace host;

HostService::Impl::Impl(HostServiceConfig c) : cfg(std::move(c)), pcie(cfg.pcie, cfg.pcie_clock) {}

HostService::Impl::~Impl() {
  fams.clear();
  close_fd(epfd);
  if (listen_fd >= 0) {
    close_fd(listen_fd);
    ::unlink(cfg.socket_path.c_str());
  }
}

HostService::HostService(HostServiceConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
HostService::~HostService() = default;

Errc HostService::start(tcp::TcpLayer& tcp, Instant now) {
  Impl& im = *impl_;
  im.tcp = &tcp;
  im.next_control = now;
  im.epfd = epoll_create1(EPOLL_CLOEXEC);
  if (im.epfd < 0) return static_cast<Errc>(errno);
  if (im.cfg.socket_path.empty()) return Errc::ok;  // tests: attach_for_test only
  return im.listen_socket();
}

bool HostService::on_event(tcp::TcpLayer& /*tcp*/, const SocketEvent& ev, Instant /*now*/) {
  Impl& im = *impl_;
  const auto it = im.by_tcp.find(ev.id);
  if (it == im.by_tcp.end()) return false;
  if (Family* f = im.family(it->second.family); f != nullptr && it->second.index < f->socks.size()) {
    im.mark_dirty(*f, it->second.index);
  }
  return true;
}

void HostService::on_tick(tcp::TcpLayer& /*tcp*/, Instant now) {
  Impl& im = *impl_;
  im.now = now;
  if (im.control_due || (!im.idle && now >= im.next_control)) {
    im.control_due = false;
    im.next_control = now + kControlInterval;
    im.poll_control();
  }
  im.recheck_lingering();
  for (auto& f : im.fams) im.serve(*f);
  im.reap();
  // One iteration's transfers, over all families, are one batch per direction (pcie_model.hh).
  if (im.pcie.enabled()) im.pcie.settle();
  if (im.busy) im.idle = false;
}

void HostService::poll_control() { impl_->poll_control(); }

int HostService::wait_fd() const { return impl_->epfd; }

bool HostService::take_busy() {
  const bool b = impl_->busy;
  impl_->busy = false;
  return b;
}

bool HostService::prepare_sleep() {
  Impl& im = *impl_;
  bool work = false;
  for (auto& f : im.fams) {
    if (!f->active) continue;
    f->dma->write_u32(offsetof(c::RegionHeader, engine_sleeping), 1);
  }
  for (auto& f : im.fams) {
    if (!f->active) continue;
    f->dma->fence();
    if (!f->dirty.empty() || !f->backlog.empty() || f->cmd.pending() || f->kicks.pending()) work = true;
  }
  if (im.pcie.enabled()) im.pcie.settle();  // the re-check's index reads are one round trip
  if (work) {
    woke(false);
    im.idle = false;
  }
  return !work;
}

void HostService::woke(bool fd_ready) {
  Impl& im = *impl_;
  for (auto& f : im.fams) {
    if (f->active) f->dma->write_u32(offsetof(c::RegionHeader, engine_sleeping), 0);
  }
  // While the loop sleeps between iterations, the sleep itself tells whether a socket or doorbell
  // needs looking at: no epoll_wait per idle wake-up.
  im.control_due = fd_ready;
  im.idle = true;
}

const HostServiceStats& HostService::stats() const { return impl_->stats; }

channel::DmaStats HostService::dma_stats() const {
  channel::DmaStats s = impl_->dma_past;
  for (const auto& f : impl_->fams) {
    if (f->dma) s += f->dma->stats();
  }
  return s;
}

const channel::PcieModelStats& HostService::pcie_stats() const { return impl_->pcie.stats(); }

std::size_t HostService::families() const { return impl_->fams.size(); }

std::size_t HostService::sockets() const {
  std::size_t n = 0;
  for (const auto& f : impl_->fams) {
    for (const auto& s : f->socks) n += s.state != c::SlotState::free ? 1 : 0;
  }
  return n;
}

std::vector<pid_t> HostService::family_pids() const {
  std::vector<pid_t> v;
  for (const auto& f : impl_->fams) v.push_back(f->pid);
  return v;
}

int HostService::attach_for_test(std::byte** base, std::uint64_t* bytes) {
  Impl& im = *impl_;
  auto f = std::make_unique<Family>();
  f->id = im.next_family++;
  int memfd = -1;
  if (!im.create_region(*f, 0, memfd)) {
    close_fd(memfd);
    return -1;
  }
  void* map = mmap(nullptr, f->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  close_fd(memfd);
  if (map == MAP_FAILED) return -1;
  *base = static_cast<std::byte*>(map);
  *bytes = f->bytes;
  f->active = true;
  f->pid = ::getpid();
  f->watch_pids = true;
  im.fams.push_back(std::move(f));
  return static_cast<int>(im.fams.size() - 1);
}

void HostService::dump(std::FILE* out) const {
  std::fprintf(out, "host");
  print_nonzero_counters(out, kHostCounterNames, impl_->stats.values());
  std::fprintf(out, "\n");
  for (const auto& f : impl_->fams) {
    std::fprintf(out, "family pid %d active %d dirty %zu backlog %zu\n", static_cast<int>(f->pid), f->active ? 1 : 0,
                 f->dirty.size(), f->backlog.size());
    for (std::uint32_t i = 0; i < f->socks.size(); ++i) {
      const EngSock& s = f->socks[i];
      if (s.state == c::SlotState::free) continue;
      c::SlotHostLine hl{};
      f->dma->read(c::slot_off(f->geo, i) + offsetof(c::SocketSlot, snd_tail), std::as_writable_bytes(std::span(&hl, 1)));
      std::uint32_t kd = 0;
      f->dma->read_u32(c::slot_off(f->geo, i) + offsetof(c::SocketSlot, kick_done), kd);
      const auto rb = s.id != kInvalidSocket ? impl_->tcp->readable_bytes(s.id) : Result<std::size_t>(Errc::badf);
      std::fprintf(out,
                   "  slot %u tcp %u state %u flags %#x ready %#x seq %u snd %u/%u rcv %u/%u kick %u/%u "
                   "closing %d dirty %d tcp_readable %zu tcp_ready %#x\n",
                   i, s.id, static_cast<unsigned>(s.state), s.flags, s.tcp_ready, s.event_seq, s.snd_head, hl.snd_tail,
                   hl.rcv_head, s.rcv_tail, hl.kick_req, kd, s.closing ? 1 : 0, s.dirty ? 1 : 0, rb ? *rb : 0,
                   s.id != kInvalidSocket ? impl_->tcp->readiness(s.id) : 0);
    }
  }
}

void HostService::service_for_test(Instant now) { on_tick(*impl_->tcp, now); }

bool HostService::proc_died_for_test(int family, std::uint32_t entry) {
  Impl& im = *impl_;
  if (family < 0 || static_cast<std::size_t>(family) >= im.fams.size()) return false;
  Family& f = *im.fams[static_cast<std::size_t>(family)];
  if (entry >= f.procs.size()) return false;
  im.proc_died(f, entry);
  return true;
}

int HostService::watched_procs() const {
  int n = 0;
  for (const auto& f : impl_->fams) {
    for (const auto& w : f->procs) n += w.pidfd >= 0 ? 1 : 0;
  }
  return n;
}

}  // namespace pno::engine
